"""The Ray engine (``pvlens screen --engine ray``) on a local Ray instance gives the local engine's scores."""

import pytest

from pvlens.methods import screening
from pvlens.methods.screening import Probe, Sample, ScreenSettings

LAYER = 12
N_SAMPLES = 48  # four chunks: enough to ship several work items to the replica (200 took 7 min on 2 cores)


@pytest.fixture(scope="module")
def probes(direction):
    return [Probe.from_vector("evil", direction[LAYER], LAYER), Probe.from_vector("deep", direction[20], 20)]


def test_ray_engine_gives_the_local_scores(model, probes, tmp_path):
    import ray  # a dev dependency: make test installs it

    from pvlens.methods.screening.ray import ray_engine

    samples = screening.sharegpt_samples(model.hf_tokenizer, N_SAMPLES, max_prompt_tokens=128)
    samples = [Sample(s.id, s.line, s.prompt, s.response[:600]) for s in samples]
    assert len(samples) == N_SAMPLES
    settings = ScreenSettings(base_max_new_tokens=6, chunk_size=12, max_tokens=1024)  # four chunks
    local = screening.screen(model, samples, probes, settings, log_path=tmp_path / "local.jsonl",
                             base_log_path=tmp_path / "local-base.jsonl", progress=False)
    try:  # its own base-response log, so the Ray replicas generate the base answers themselves
        distributed = screening.screen(model, samples, probes, settings, log_path=tmp_path / "ray.jsonl",
                                       base_log_path=tmp_path / "ray-base.jsonl",
                                       engine=ray_engine(model, probes, settings, replicas=1), progress=False)
    finally:
        ray.shutdown()
    unique = len({s.key for s in samples})  # ShareGPT repeats some conversations: each is scored once
    assert unique > 40 and local.computed == distributed.computed == unique
    assert len((tmp_path / "ray-base.jsonl").read_text().splitlines()) == len({s.prompt_key for s in samples})
    cols = ["id", "trait", "delta_p", "projection", "base_projection", "proxy_delta_p"]
    merged = local.scores[cols].merge(distributed.scores[cols], on=["id", "trait"], suffixes=("", "_ray"))
    assert len(merged) == N_SAMPLES * len(probes)
    for c in cols[2:]:
        gap = (merged[c] - merged[c + "_ray"]).abs()
        assert not gap.isna().any() or merged[c].isna().equals(merged[c + "_ray"].isna())
        assert gap.max() < 1e-4, c


