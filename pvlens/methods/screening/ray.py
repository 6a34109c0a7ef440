"""ΔP screening on Ray Data: the same chunks as the local engine, scored by model replicas on a cluster.

:func:`ray_engine` returns an engine for :func:`pvlens.methods.screening.screen`. The driver keeps every
cache and the results log, exactly as in a local run; what travels to the cluster is one JSON item
per chunk (its samples and the base responses already known). ``Dataset.map_batches`` runs a pool
of ``replicas`` actors (:class:`_Replica`), each loading the model once and applying
:func:`~pvlens.methods.screening.score_chunk` to one chunk at a time, so a Ray run computes what a local run
computes, chunk for chunk, and finished chunks stream back to the driver's log as they complete (a
killed run resumes from it). Each replica checks that its model has the driver's fingerprint.

On a cluster every node needs pvlens and the model: ``pvlens fetch`` on each node, or a shared
``PVLENS_CACHE``. Pass ``address="auto"`` (or ``ray://...``) to join it; with no address a local Ray
instance is started, which is what the tests use. Base responses can come from a vLLM server
(``screen(..., base_server=...)``); the replicas then only run forward passes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from typing import Iterator, Sequence

import numpy as np
import torch

from pvlens.methods.screening.screen import Engine, Probe, Sample, ScreenError, ScreenSettings, score_chunk
from pvlens.models.loading import ChatModel, load_model

# Environment a replica needs to find the same model, caches and offline switches as the driver.
FORWARDED_ENV = ("PVLENS_CACHE", "PVLENS_MODEL", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME")


class _Replica:
    """One model replica: loads the model once, then scores one chunk per item."""

    def __init__(self, model_name: str, fingerprint: str, probes: list[dict], settings: dict, torch_threads: int):
        torch.set_num_threads(torch_threads)
        self.model = load_model(model_name)
        if self.model.info.fingerprint != fingerprint:
            raise ScreenError(f"the replica's {model_name} has fingerprint {self.model.info.fingerprint}, the driver's "
                              f"{fingerprint}: the nodes hold different weights")
        self.probes = [Probe(p["name"], p["layer"], tuple(p["direction"])) for p in probes]
        self.settings = ScreenSettings(**settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for payload in batch["work"]:
            work = json.loads(payload)
            samples = [Sample.from_json(s) for s in work["samples"]]
            out.append(json.dumps(score_chunk(self.model, samples, self.probes, self.settings, work["known_base"])))
        return {"records": np.array(out, dtype=object)}


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    try:
        # Ray is an optional dependency (pvlens[ray]): imported only when the Ray engine runs
        import ray
        import ray.data
    except ImportError:
        raise ScreenError("--engine ray needs Ray Data: pip install -e '.[ray]' (or 'ray[data]')") from None

    if ray.is_initialized():
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver's own bar counts samples; Ray's would log every 10 s
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    options = dict(runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False,
                   configure_logging=True, logging_level="warning")
    if address is None:  # a local instance: keep its object store small on a laptop-sized machine
        options |= dict(num_cpus=num_cpus or os.cpu_count(), object_store_memory=512 * 1024 ** 2)
    ray.init(address=address, **options)


def ray_engine(model: ChatModel, probes: Sequence[Probe], settings: ScreenSettings, *, address: str | None = None,
               replicas: int = 1, torch_threads: int | None = None, gpus_per_replica: float = 0) -> Engine:
    """An engine that scores chunks on Ray Data with ``replicas`` model actors.

    Args:
        model: the driver's model (its name and fingerprint are what each replica loads and checks).
        address: a running cluster (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local instance.
        replicas: actors in the pool, each holding one copy of the model.
        torch_threads: threads per replica (default: this machine's cores divided by ``replicas``).
        gpus_per_replica: GPUs each actor reserves (0 on CPU).
    """
    if replicas < 1:
        raise ScreenError(f"replicas must be >= 1, got {replicas}")
    threads = torch_threads or max(1, (os.cpu_count() or 1) // replicas)
    constructor = dict(model_name=model.info.name, fingerprint=model.info.fingerprint,
                       probes=[{"name": p.name, "layer": p.layer, "direction": list(p.direction)} for p in probes],
                       settings=asdict(settings), torch_threads=threads)

    def run(work: list[list[Sample]], known_base: dict[str, str]) -> Iterator[list[dict]]:
        if not work:
            return
        _init_ray(address, None)
        import ray  # optional dependency, see _init_ray

        items = [{"work": json.dumps({"samples": [s.to_json() for s in chunk],
                                      "known_base": {s.prompt_key: known_base[s.prompt_key]
                                                     for s in chunk if s.prompt_key in known_base}})}
                 for chunk in work]
        dataset = ray.data.from_items(items, override_num_blocks=len(items))
        scored = dataset.map_batches(_Replica, fn_constructor_kwargs=constructor, batch_size=1,
                                     concurrency=replicas, num_cpus=1, num_gpus=gpus_per_replica)
        for row in scored.iter_rows():
            yield json.loads(row["records"])

    return run


__all__ = [
    "ray_engine",
]
