"""LoRA finetuning with training-time interventions, cached and resumable.

The paper (§4, §5.2, Appendix D.3, J.4-J.5) finetunes with rs-LoRA (rank 32, alpha 64, on every
attention and MLP projection), with the loss on the assistant's answer only, and compares three
ways to intervene *during* training, all through hooks on the decoder layers that are removed
when training ends (inference then runs unsteered):

- **preventative steering** (:func:`preventative`): add ``alpha * v`` at one layer, or the all-layer
  incremental vectors at every layer, at all positions. The push toward the trait is supplied from
  outside, so the optimiser need not move the weights that way to fit trait-laden data;
- **CAFT** (:func:`caft`): zero the projection on the unit persona direction at every layer;
- **L2 on the projection** (:func:`l2_projection`): an extra loss ``weight * mean((p - p_base)^2)``,
  where ``p`` is the projection of the training tokens' activations on the unit vector at one layer
  and ``p_base`` the same projection with the adapter switched off.

:func:`finetune` trains the Hugging Face twin of a :class:`~pvlens.models.loading.ChatModel` with peft
(TransformerLens models have no ``nn.Linear`` for peft to wrap), removes every LoRA layer and hook
afterwards, and returns an :class:`Adapter`. Adapters are cached under
``cache_dir("adapters", "<model>-<fingerprint>", "<key>")`` where the key hashes the model, the
tokenized dataset, the settings and the intervention, so a rebuilt book never retrains what exists.
While training, a checkpoint (adapter, optimiser, step) is written every few steps to
``<key>.partial/``; a killed run resumes from it, and the cache slot itself appears only by an atomic
rename of a finished adapter. A non-finite loss stops training with a :class:`TrainingError`; the
last good weights are saved to ``<key>.failed/`` for inspection, never to the cache slot.

:func:`finetuned` merges an adapter into the loaded model's weights for a ``with`` block
(``W + (alpha / sqrt(r)) B A`` for rs-LoRA) and restores the base weights exactly afterwards, so one
loaded model serves the base and every finetune, and every pvlens tool (generation, activations,
steering, the capability suite, their caches keyed by weights) works on the finetuned model.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from pvlens.core.chat import prompt_and_response
from pvlens.core.config import cache_dir
from pvlens.core.errors import PVLensError
from pvlens.core.keys import digest, model_folder, tensor_digest
from pvlens.data.datasets import Message, check_conversation
from pvlens.lens.checks import unit
from pvlens.lens.generation import end_of_turn_ids
from pvlens.lens.hooks import ablate, on_resid_post, steer
from pvlens.models.loading import ChatModel

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE = -100
GROUP = 16  # batches per length-sorted group in schedule()


class TrainingError(PVLensError):
    """Training that cannot go on (non-finite loss or gradients); the message says what was kept."""


@dataclass(frozen=True)
class LoRASettings:
    """Adapter and optimiser settings. Defaults: the paper's adapter, a schedule for a small model on CPU.

    The paper trains 7-8B models for one epoch at ``lr 1e-5`` on ~5-10k answers (effective batch 16).
    A 135M model on at most a few hundred answers needs a larger step to move in a dozen updates, so the
    default is one epoch at ``lr 2e-4`` (the usual LoRA rate) and batch 8. A set too small for
    ``min_steps`` optimiser steps in one epoch is repeated, in whole epochs, until it has them (13 rows
    at batch 8 would otherwise be two updates). Batches group rows of similar length (see
    :func:`schedule`), which cuts the padding the CPU computes by about a quarter on the book's sets.
    """

    rank: int = 32
    alpha: int = 64
    rslora: bool = True
    targets: tuple[str, ...] = TARGETS
    learning_rate: float = 2e-4
    epochs: int = 1  # at least; see min_steps
    min_steps: int = 10  # small sets repeat (whole epochs) until they reach this many optimiser steps
    batch_size: int = 8  # sequences per optimiser step
    micro_batch: int = 8  # sequences per forward pass (gradient accumulation when smaller)
    max_seq_len: int = 384  # tokens; longer answers are cut (and counted)
    warmup_steps: int = 5
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_steps: int | None = None  # stop early (fast mode)
    seed: int = 0
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        for name in ("rank", "alpha", "epochs", "min_steps", "batch_size", "micro_batch", "max_seq_len",
                     "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LoRASettings.{name} must be a positive integer, got {value!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 1):
            raise ValueError(f"LoRASettings.learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"LoRASettings.max_steps must be None or a positive integer, got {self.max_steps!r}")
        if self.batch_size % self.micro_batch:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batch {self.micro_batch}")

    @property
    def scaling(self) -> float:
        return self.alpha / math.sqrt(self.rank) if self.rslora else self.alpha / self.rank

    def key(self) -> dict:
        d = asdict(self)
        d.pop("checkpoint_every")  # where checkpoints fall does not change the result
        d["targets"] = list(self.targets)
        return d


@dataclass(frozen=True)
class Intervention:
    """A training-time edit. Build with :func:`preventative`, :func:`caft` or :func:`l2_projection`."""

    kind: Literal["steer", "ablate", "l2"]
    vectors: Tensor  # (d_model,) or (n_layers, d_model)
    layers: int | tuple[int, ...] | str
    alpha: float = 0.0  # steering coefficient, or the L2 loss weight
    units: Literal["raw", "resid"] = "raw"

    def key(self) -> dict:
        layers = self.layers if isinstance(self.layers, (int, str)) else list(self.layers)
        return {"kind": self.kind, "vectors": tensor_digest(self.vectors), "layers": layers,
                "alpha": float(self.alpha), "units": self.units}

    def context(self, model: ChatModel):
        """The forward-pass hooks (none for L2, which acts through the loss)."""
        if self.kind == "steer":
            return steer(model, self.vectors, self.layers, self.alpha, positions="all", units=self.units)
        if self.kind == "ablate":
            return ablate(model, self.vectors, self.layers)
        return nullcontext()

    @property
    def label(self) -> str:
        where = "all layers" if self.layers == "all" else f"layer {self.layers}"
        return {"steer": f"preventative {self.alpha:g} ({where})", "ablate": f"CAFT ({where})",
                "l2": f"L2 x{self.alpha:g} (layer {self.layers})"}[self.kind]


def _vectors(vectors) -> Tensor:
    return getattr(vectors, "vectors", vectors).detach().float().cpu()


def preventative(vectors, layers: int | Sequence[int] | Literal["all"], alpha: float,
                 units: Literal["raw", "resid"] = "raw") -> Intervention:
    """Steer toward the trait during training: ``alpha * v`` after block(s) ``layers``, all positions.

    For the paper's all-layer variant pass ``pv.incremental(v.vectors)`` with ``layers="all"``.
    """
    layers = layers if isinstance(layers, (int, str)) else tuple(layers)
    return Intervention("steer", _vectors(vectors), layers, float(alpha), units)


def caft(vectors, layers: int | Sequence[int] | Literal["all"] = "all") -> Intervention:
    """CAFT: zero-ablate the unit persona direction at ``layers`` (default all, as in the paper)."""
    layers = layers if isinstance(layers, (int, str)) else tuple(layers)
    return Intervention("ablate", _vectors(vectors), layers)


def l2_projection(vector, layer: int, weight: float) -> Intervention:
    """Penalise the shift of the projection on ``v/|v|`` at ``layer`` away from the base model's."""
    if not (isinstance(weight, (int, float)) and weight > 0):
        raise ValueError(f"the L2 weight must be positive, got {weight!r}")
    v = _vectors(vector)
    if v.ndim == 2:
        v = v[layer]
    return Intervention("l2", v, int(layer), float(weight))


# ---------------------------------------------------------------- data


@dataclass
class Encoded:
    """A tokenized dataset: ids and labels (``-100`` on prompt tokens) per conversation."""

    ids: list[list[int]]
    labels: list[list[int]]
    truncated: int  # conversations whose answer was cut at max_seq_len
    response_tokens: int

    def digest(self) -> str:
        return digest({"ids": self.ids, "labels": self.labels})


def encode_dataset(model: ChatModel, conversations: Sequence[Sequence[Message]], max_seq_len: int) -> Encoded:
    """Tokenize chats for answer-only loss: the last assistant turn (plus end of turn) is the target.

    Earlier turns, system prompt included, are context. A conversation longer than ``max_seq_len`` has
    its answer cut (counted in ``truncated``); one whose prompt alone leaves no room is rejected.
    """
    if isinstance(conversations, (str, bytes)) or len(conversations) == 0:
        raise ValueError("the dataset must be a non-empty list of conversations")
    tok, eot = model.hf_tokenizer, end_of_turn_ids(model)[0]
    ids, labels, truncated, n_response = [], [], 0, 0
    for i, conv in enumerate(conversations):
        messages = check_conversation(list(conv) if isinstance(conv, tuple) else conv, f"conversation {i}")
        prompt, answer = prompt_and_response(tok, messages[:-1], messages[-1]["content"])
        answer = answer + [eot]
        if len(prompt) >= max_seq_len:
            raise ValueError(f"conversation {i}: its prompt is {len(prompt)} tokens, at or over max_seq_len "
                             f"{max_seq_len}; no answer token would be trained. Shorten it or raise max_seq_len")
        if len(prompt) + len(answer) > max_seq_len:
            answer = answer[: max_seq_len - len(prompt)]
            truncated += 1
        ids.append(prompt + answer)
        labels.append([IGNORE] * len(prompt) + answer)
        n_response += len(answer)
    return Encoded(ids, labels, truncated, n_response)


def _batch(encoded: Encoded, rows: Sequence[int], pad: int) -> tuple[Tensor, Tensor, Tensor]:
    width = max(len(encoded.ids[r]) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for k, r in enumerate(rows):
        n = len(encoded.ids[r])
        ids[k, :n], labels[k, :n], mask[k, :n] = torch.tensor(encoded.ids[r]), torch.tensor(encoded.labels[r]), 1
    return ids, labels, mask


def schedule(lengths: Sequence[int], settings: LoRASettings) -> list[list[int]]:
    """Row indices of each optimiser step, given each row's length in tokens.

    Each epoch is a seeded shuffle cut into groups of ``GROUP`` batches; within a group rows are sorted by
    length (ties keep the shuffled order) and cut into batches, and the order of all the epoch's batches
    is shuffled again. Rows of similar length then share a batch and little of it is padding, as with
    Hugging Face's ``group_by_length``. Epochs: ``settings.epochs``, or more whole epochs when that is
    fewer than ``settings.min_steps`` steps; ``settings.max_steps`` cuts the list (fast mode).
    """
    n_rows, size = len(lengths), settings.batch_size
    if n_rows == 0:
        raise ValueError("schedule() needs at least one row")
    per_epoch = math.ceil(n_rows / size)
    epochs = max(settings.epochs, math.ceil(settings.min_steps / per_epoch))
    rng = random.Random(settings.seed)
    steps = []
    for _ in range(epochs):
        order = list(range(n_rows))
        rng.shuffle(order)
        batches = []
        for start in range(0, n_rows, GROUP * size):
            group = sorted(order[start:start + GROUP * size], key=lengths.__getitem__)
            batches += [group[i:i + size] for i in range(0, len(group), size)]
        rng.shuffle(batches)
        steps += batches
    return steps[: settings.max_steps] if settings.max_steps else steps


# ---------------------------------------------------------------- adapters


@dataclass
class Adapter:
    """A finished LoRA adapter on disk: peft's files plus ``pvlens.json`` (its recipe and training log)."""

    path: Path
    manifest: dict = field(repr=False)

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def losses(self) -> list[float]:
        return self.manifest["losses"]

    @classmethod
    def load(cls, path: str | Path) -> "Adapter":
        path = Path(path)
        manifest_path = path / "pvlens.json"
        if not manifest_path.exists() or not (path / "adapter_model.safetensors").exists():
            raise PVLensError(f"{path} is not a finished pvlens adapter (no pvlens.json / adapter_model.safetensors)")
        return cls(path, json.loads(manifest_path.read_text()))

    def deltas(self) -> dict[str, Tensor]:
        """``{hf module path: scaling * B @ A}``, the weight update each adapted linear layer receives."""
        state = load_file(str(self.path / "adapter_model.safetensors"))
        config = json.loads((self.path / "adapter_config.json").read_text())
        r, alpha = config["r"], config["lora_alpha"]
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        out = {}
        for name, a in state.items():
            if ".lora_A." not in name:
                continue
            b = state[name.replace(".lora_A.", ".lora_B.")]
            module = name.split(".lora_A.")[0].removeprefix("base_model.model.")
            out[module] = scaling * (b.float() @ a.float())
        return out


def adapter_folder(model: ChatModel, key: str) -> Path:
    """The cache folder of one trained adapter."""
    return cache_dir("adapters", model_folder(model.info)) / key


def training_key(model: ChatModel, encoded: Encoded, settings: LoRASettings, intervention: Intervention | None) -> str:
    return digest({"model": model.info.name, "fingerprint": model.info.fingerprint, "data": encoded.digest(),
                   "settings": settings.key(), "intervention": intervention.key() if intervention else None})


def _lora_state(peft_model) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}


def _save_dir(folder: Path, files: dict[str, callable]) -> None:
    """Write files into ``folder`` atomically: into a sibling temp dir, then one rename."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, write in files.items():
        write(tmp / name)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _adapter_files(peft_model, manifest: dict, extra: dict | None = None) -> dict:
    state = _lora_state(peft_model)
    config = peft_model.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    files = {"adapter_model.safetensors": lambda p: save_file(state, str(p)),
             "adapter_config.json": lambda p: p.write_text(json.dumps(config, indent=1, default=str)),
             "pvlens.json": lambda p: p.write_text(json.dumps(manifest, indent=1))}
    files.update(extra or {})
    return files


def finetune(model: ChatModel, conversations: Sequence[Sequence[Message]], *, settings: LoRASettings | None = None,
             intervention: Intervention | None = None, name: str = "finetune",
             progress: bool = True) -> Adapter:
    """Train a LoRA adapter on ``conversations`` (answer-only loss), or return the cached one.

    Args:
        model: a :class:`~pvlens.models.loading.ChatModel`; its Hugging Face twin is trained in place and left
            exactly as it was (LoRA layers unloaded, hooks removed, base weights never touched).
        conversations: chat message lists ending with the assistant answer to learn
            (:func:`pvlens.data.datasets.load_dataset` or :func:`~pvlens.data.datasets.read_dataset`).
        settings: :class:`LoRASettings` (default: the paper's adapter, a small-model schedule).
        intervention: a training-time edit (:func:`preventative`, :func:`caft`, :func:`l2_projection`).
        name: a label for the progress bar and the manifest.
    """
    settings = settings or LoRASettings()
    if intervention is not None:  # validate the edit (layers, vector shape) before anything is trained
        if not isinstance(intervention, Intervention):
            raise TypeError("intervention must be built with preventative(), caft() or l2_projection()")
        with intervention.context(model):
            pass
    encoded = encode_dataset(model, conversations, settings.max_seq_len)
    key = training_key(model, encoded, settings, intervention)
    folder = adapter_folder(model, key)
    if (folder / "pvlens.json").exists():
        return Adapter.load(folder)
    return _train(model, encoded, settings, intervention, name, key, folder, progress)


def _train(model: ChatModel, encoded: Encoded, settings: LoRASettings, intervention: Intervention | None, name: str,
           key: str, folder: Path, progress: bool) -> Adapter:
    hf = model.hf_model
    steps = schedule([len(ids) for ids in encoded.ids], settings)
    partial = folder.with_name(folder.name + ".partial")
    grad_flags = {n: p.requires_grad for n, p in hf.named_parameters()}
    torch.manual_seed(settings.seed)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, use_rslora=settings.rslora,
                        target_modules=list(settings.targets), lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(hf, config)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        warm = max(1, settings.warmup_steps)
        lr_at = lambda s: min((s + 1) / warm, max(0.0, (len(steps) - s) / max(1, len(steps) - warm)))  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
        start, losses = 0, []
        if (partial / "progress.json").exists():  # resume an interrupted run
            state = json.loads((partial / "progress.json").read_text())
            if state.get("key") == key:
                set_peft_model_state_dict(peft_model, load_file(str(partial / "adapter_model.safetensors")))
                optimiser.load_state_dict(torch.load(partial / "optimiser.pt", weights_only=True))
                scheduler.load_state_dict(torch.load(partial / "scheduler.pt", weights_only=True))
                start, losses = state["step"], state["losses"]
        manifest = {"key": key, "name": name, "model": model.info.name, "base_fingerprint": model.info.fingerprint,
                    "settings": settings.key(), "intervention": intervention.key() if intervention else None,
                    "rows": len(encoded.ids), "response_tokens": encoded.response_tokens,
                    "truncated": encoded.truncated, "steps": len(steps)}
        began = time.perf_counter()
        peft_model.train()
        pad = model.hf_tokenizer.pad_token_id if model.hf_tokenizer.pad_token_id is not None else 0
        bar = tqdm(total=len(steps), initial=start, desc=f"finetune {name}", unit="step", disable=not progress)
        with intervention.context(model) if intervention else nullcontext():
            for step in range(start, len(steps)):
                loss = _step(peft_model, model, encoded, steps[step], settings, intervention, pad)
                if not math.isfinite(loss):
                    _stop(peft_model, manifest, losses, folder, step, f"the loss became {loss} at step {step + 1} "
                          f"of {len(steps)}", settings)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                if not torch.isfinite(grad_norm):
                    optimiser.zero_grad(set_to_none=True)
                    _stop(peft_model, manifest, losses, folder, step, f"non-finite gradients at step {step + 1}",
                          settings)
                optimiser.step()
                scheduler.step()
                optimiser.zero_grad(set_to_none=True)
                losses.append(round(loss, 5))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                done = step + 1
                if done % settings.checkpoint_every == 0 and done < len(steps):
                    progress_state = {"key": key, "step": done, "losses": losses}
                    _save_dir(partial, _adapter_files(peft_model, manifest, {
                        "optimiser.pt": lambda p: torch.save(optimiser.state_dict(), p),
                        "scheduler.pt": lambda p: torch.save(scheduler.state_dict(), p),
                        "progress.json": lambda p: p.write_text(json.dumps(progress_state))}))
        bar.close()
        manifest.update(losses=losses, seconds=round(time.perf_counter() - began, 1), resumed_from=start or None)
        _save_dir(folder, _adapter_files(peft_model, manifest))
        shutil.rmtree(partial, ignore_errors=True)
    finally:
        peft_model.unload()  # the LoRA layers come out; hf is the untouched base model again
        for n, p in hf.named_parameters():
            p.requires_grad_(grad_flags.get(n, p.requires_grad))
        hf.eval()
    return Adapter.load(folder)


def _stop(peft_model, manifest: dict, losses: list[float], folder: Path, step: int, what: str,
          settings: LoRASettings) -> None:
    """Keep the current (last good: the failing update was not applied) weights in ``<key>.failed/`` and raise."""
    kept = folder.with_name(folder.name + ".failed")
    _save_dir(kept, _adapter_files(peft_model, {**manifest, "failed_at_step": step, "losses": losses}))
    raise TrainingError(f"finetune {manifest['name']!r}: {what}; training stopped. The last good adapter (after "
                        f"{step} steps) is in {kept}; try a lower learning rate (now {settings.learning_rate:g})")


def _step(peft_model, model: ChatModel, encoded: Encoded, rows: list[int], settings: LoRASettings,
          intervention: Intervention | None, pad: int) -> float:
    """One optimiser step's forward and backward passes (gradients accumulate); returns its loss."""
    n_tokens = sum(sum(1 for t in encoded.labels[r] if t != IGNORE) for r in rows)
    total = 0.0
    for start in range(0, len(rows), settings.micro_batch):
        ids, labels, mask = (t.to(model.cfg.device)
                             for t in _batch(encoded, rows[start:start + settings.micro_batch], pad))
        if intervention is not None and intervention.kind == "l2":
            loss = _l2_loss(peft_model, model, ids, labels, mask, intervention, n_tokens)
        else:
            loss = _token_loss(peft_model(input_ids=ids, attention_mask=mask).logits, labels, n_tokens)
        if not torch.isfinite(loss):
            return float("nan")
        loss.backward()
        total += loss.item()
    return total


def _token_loss(logits: Tensor, labels: Tensor, n_tokens: int) -> Tensor:
    """Summed next-token cross-entropy on answer tokens, divided by the step's answer-token count."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                             ignore_index=IGNORE, reduction="sum") / n_tokens


def _l2_loss(peft_model, model: ChatModel, ids, labels, mask, intervention: Intervention, n_tokens: int) -> Tensor:
    q = unit(intervention.vectors.to(model.cfg.device))
    layer = intervention.layers
    seen: list[Tensor] = []

    def record(hidden: Tensor) -> None:
        seen.append(hidden.float() @ q)

    answer = (labels != IGNORE).float()
    with torch.no_grad(), peft_model.disable_adapter(), on_resid_post(model, layer, record):
        peft_model(input_ids=ids, attention_mask=mask)
    base = seen.pop().detach()
    with on_resid_post(model, layer, record):
        logits = peft_model(input_ids=ids, attention_mask=mask).logits
    shift = (seen.pop() - base) * answer
    return _token_loss(logits, labels, n_tokens) + intervention.alpha * shift.pow(2).sum() / n_tokens


# ---------------------------------------------------------------- using an adapter


@contextmanager
def finetuned(model: ChatModel, adapter: Adapter | None) -> Iterator:
    """Merge ``adapter`` into ``model``'s weights inside the block; restore the base weights after.

    ``model.info.fingerprint`` changes to the finetune's own for the block, so every pvlens cache
    (answers, judge scores, capability) keeps base and finetuned results apart. ``None`` is the base
    model (a no-op), which lets one loop cover both.
    """
    if adapter is None:
        yield model
        return
    if adapter.manifest.get("base_fingerprint") != model.info.fingerprint:
        raise PVLensError(f"adapter {adapter.path.name} was trained on weights "
                          f"{adapter.manifest.get('base_fingerprint')}, "
                          f"not on the loaded {model.info.name} ({model.info.fingerprint})")
    hf, saved = model.hf_model, {}
    base_fp, norms = model.info.fingerprint, model.__dict__.pop("_resid_norms", None)
    try:
        with torch.no_grad():
            for module_name, delta in adapter.deltas().items():
                weight = hf.get_submodule(module_name).weight
                saved[module_name] = weight.detach().clone()
                weight.add_(delta.to(weight.device, weight.dtype))
        model.share_weights()
        model.info.fingerprint = digest([base_fp, adapter.key])
        yield model
    finally:
        with torch.no_grad():
            for module_name, original in saved.items():
                hf.get_submodule(module_name).weight.copy_(original)
        model.share_weights()
        model.info.fingerprint = base_fp
        model.__dict__.pop("_resid_norms", None)
        if norms is not None:
            model.__dict__["_resid_norms"] = norms


__all__ = [
    "Adapter",
    "adapter_folder",
    "caft",
    "encode_dataset",
    "Encoded",
    "finetune",
    "finetuned",
    "Intervention",
    "l2_projection",
    "LoRASettings",
    "preventative",
    "schedule",
    "TrainingError",
]
