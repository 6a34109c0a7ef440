"""Sparse autoencoders on the residual stream, and what a persona vector is made of.

The paper (§7, Appendix M) opens its persona vectors with a BatchTopK SAE: each decoder direction is
a candidate feature, and the features whose directions are closest (by cosine) to a persona vector
are read through the contexts that activate them most, and steered with one at a time.

This module does that with sae-lens on a model that runs here:

- :func:`corpus_windows`: training text, a mix of real chats (ShareGPT, formatted with the model's chat
  template) and plain English (npm ``nlp-corpus``), tokenized and packed into fixed windows; a train
  and a held-out split that never share a document;
- :class:`ActivationStream`: the residual stream after block ``layer`` for those windows, read from the
  Hugging Face twin with the forward pass stopped at the layer, shuffled in a buffer and served in
  training batches (sae-lens's ``DataProvider``). Position 0 (the attention sink, whose norm is tens
  of times the rest) is left out, as SAE trainers usually do;
- :func:`train_sae`: sae-lens's ``BatchTopKTrainingSAE`` and ``SAETrainer`` with checkpoints that a
  killed run resumes from; the result is saved in sae-lens's own format (a BatchTopK SAE is saved as
  a JumpReLU SAE) with a model card, and loads with :func:`load_sae` (``SAE.load_from_disk`` plus a
  check that the model and hook match);
- :func:`evaluate_sae`: fraction of variance explained, cross-entropy loss recovered when the
  reconstruction replaces the activations, L0, dead and dense latents, on held-out windows;
- :func:`decoder_cosines`, :func:`top_features`, :func:`max_activating`: the decomposition.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from pvlens.core.errors import PVLensError
from pvlens.data.labelled import sharegpt
from pvlens.lens.checks import check_layer, unit
from pvlens.lens.hooks import Steering
from pvlens.lens.projection import block_outputs
from pvlens.methods.persona import Persona
from pvlens.models.external import npm_members
from pvlens.models.loading import ChatModel

NLP_CORPUS = ("nlp-corpus", "4.4.0", "099df43749ba6bb26953f98863a5d38ff764648ce21872ceb1515a3eacb5682a")


class SAEMismatchError(PVLensError, ValueError):
    """A checkpoint that does not fit the model or hook it is loaded for."""


def hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


# ---------------------------------------------------------------- text


def plain_documents() -> list[str]:
    """English text from npm ``nlp-corpus`` (MIT): 100k sentences in 100 files, joined per file into
    paragraphs of 8 sentences. One document = one paragraph."""
    docs = []
    for name, data in npm_members(*NLP_CORPUS, prefix="package/builds/doc-"):
        sentences = [s.strip() for s in json.loads(data) if isinstance(s, str) and s.strip()]
        docs += [" ".join(sentences[i:i + 8]) for i in range(0, len(sentences), 8)]
    return docs


def chat_documents(tokenizer, limit: int | None = None) -> list[str]:
    """ShareGPT first exchanges (user turn + assistant turn), each rendered with the model's chat template."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": c.user},
                                           {"role": "assistant", "content": c.assistant}], tokenize=False)
            for c in sharegpt(limit=limit)]


def _split(docs: list[str], split: str, heldout_fraction: float = 0.1) -> list[str]:
    """A fixed split by position: the last ``heldout_fraction`` of documents is held out."""
    cut = int(len(docs) * (1 - heldout_fraction))
    return docs[:cut] if split == "train" else docs[cut:]


def pack(tokenizer, docs: Sequence[str], context_size: int, chat: bool, limit: int | None = None) -> list[list[int]]:
    """Documents tokenized, joined with the end-of-text token and cut into windows of ``context_size``
    (stopping once ``limit`` windows are full)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    windows = []
    for doc in docs:
        if limit is not None and len(windows) >= limit:
            break
        stream += tokenizer(doc, add_special_tokens=not chat)["input_ids"] + [eos]
        while len(stream) >= context_size:
            windows.append(stream[:context_size])
            stream = stream[context_size:]
    return windows


def corpus_windows(tokenizer, split: str, n_windows: int, context_size: int = 128, chat_fraction: float = 0.5,
                   seed: int = 0) -> Float[Tensor, "n_windows context_size"]:
    """``n_windows`` token windows of the chat/plain mix, shuffled with ``seed`` (train or held-out split)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if not 0 <= chat_fraction <= 1:
        raise ValueError(f"chat_fraction must be in [0, 1], got {chat_fraction}")
    n_chat = round(n_windows * chat_fraction)
    want = {"chat": n_chat, "plain": n_windows - n_chat}
    sources = {"chat": lambda: chat_documents(tokenizer), "plain": plain_documents}
    windows = []
    for kind, n in want.items():
        if n == 0:
            continue
        got = pack(tokenizer, _split(sources[kind](), split), context_size, chat=kind == "chat", limit=n)
        if len(got) < n:
            raise PVLensError(f"the {split} split has {len(got)} {kind} windows of {context_size} tokens; asked {n}")
        windows += got[:n]  # documents run in file order: a window never mixes the two splits
    random.Random(seed).shuffle(windows)
    return torch.tensor(windows, dtype=torch.long)


# ---------------------------------------------------------------- activations


@torch.no_grad()
def layer_activations(model: ChatModel, windows: Tensor, layer: int,
                      batch_size: int = 32) -> Iterator[Float[Tensor, "tokens d"]]:
    """Residual stream after block ``layer`` for each batch of windows, position 0 dropped, flattened."""
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(model.cfg.device)
        acts = block_outputs(model.hf_model, ids, torch.ones_like(ids), [layer])[layer]
        yield acts[:, 1:].reshape(-1, acts.shape[-1]).float()


MASSIVE_FACTOR = 10.0  # a token whose residual norm exceeds 10x the median is a "massive activation"


def massive_tokens(acts: Float[Tensor, "... d"], factor: float = MASSIVE_FACTOR) -> Bool[Tensor, "..."]:
    """Tokens carrying a massive activation (Sun et al. 2024): norm above ``factor`` x the median norm.

    On SmolLM2 layer 16 about one token in a thousand (mostly one delimiter token and ``<|im_start|>``) has a
    norm of 3,000-30,000 against a median of ~185, and those tokens hold ~99% of the held-out variance. Like
    the BOS position, they act as attention sinks rather than carrying content; the SAE neither trains on them
    nor is scored on them (its reconstruction leaves them untouched), as sae-lens leaves out special tokens.
    """
    norms = acts.norm(dim=-1)
    return norms > factor * norms.median()


@torch.no_grad()
def activation_mean(model: ChatModel, windows: Tensor, layer: int, n_windows: int = 256) -> Float[Tensor, " d"]:
    """Mean residual activation over the first ``n_windows`` windows (position 0 and massive tokens left out).

    sae-lens starts ``b_dec`` at zero: at Adam's step size the SAE would need thousands of steps to learn the
    activations' offset, and its latents spend themselves on it instead (held-out variance explained stayed
    below zero for the first 100 steps of an uncentred run). So the SAE trains on centred activations and the
    mean is folded into ``b_dec`` afterwards, which is exact because sae-lens subtracts ``b_dec`` before encoding.
    """
    total, count = torch.zeros(model.cfg.d_model, dtype=torch.float64), 0
    for acts in layer_activations(model, windows[:n_windows], layer):
        acts = acts[~massive_tokens(acts)]
        total += acts.double().sum(0)
        count += len(acts)
    return (total / count).float()


class ActivationStream:
    """sae-lens ``DataProvider``: shuffled batches of residual-stream activations, generated on the fly.

    Windows are read in order from ``start_window``; activations (massive tokens left out, ``center``
    subtracted) fill a buffer of ``buffer_tokens``, which is shuffled (seeded) and served in ``batch_tokens``
    batches, refilled when half empty.
    """

    def __init__(self, model: ChatModel, windows: Tensor, layer: int, batch_tokens: int, buffer_tokens: int = 2 ** 16,
                 forward_batch: int = 32, seed: int = 0, start_window: int = 0, center: Tensor | None = None):
        self.model, self.windows, self.layer = model, windows, check_layer(model, layer)
        self.center = center  # subtracted from every activation (see activation_mean)
        self.batch_tokens, self.buffer_tokens, self.forward_batch = batch_tokens, buffer_tokens, forward_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.next_window = start_window
        self.buffer = torch.empty(0, model.cfg.d_model)
        self.tokens_read = 0
        self.massive_dropped = 0
        self.seconds_in_model = 0.0

    def _refill(self) -> None:
        parts = [self.buffer]
        have = len(self.buffer)
        while have < self.buffer_tokens:
            if self.next_window >= len(self.windows):
                self.next_window = 0  # a second pass over the windows (the run asked for more tokens)
            start = time.perf_counter()
            chunk = self.windows[self.next_window:self.next_window + self.forward_batch]
            acts = next(layer_activations(self.model, chunk, self.layer, self.forward_batch))
            massive = massive_tokens(acts)
            self.massive_dropped += int(massive.sum())
            acts = acts[~massive]
            if self.center is not None:
                acts = acts - self.center
            self.seconds_in_model += time.perf_counter() - start
            self.next_window += len(chunk)
            self.tokens_read += len(acts)
            parts.append(acts)
            have += len(acts)
        buffer = torch.cat(parts)
        self.buffer = buffer[torch.randperm(len(buffer), generator=self.generator)]

    def __iter__(self) -> "ActivationStream":
        return self

    def __next__(self) -> Float[Tensor, "batch d"]:
        if len(self.buffer) < max(self.batch_tokens, self.buffer_tokens // 2):
            self._refill()
        batch, self.buffer = self.buffer[: self.batch_tokens], self.buffer[self.batch_tokens:]
        return batch


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class SAERecipe:
    """Everything that determines a trained SAE (the model card records it)."""

    layer: int
    d_sae: int = 4608                 # 8 x d_model for SmolLM2-135M
    k: float = 64.0                   # BatchTopK: mean active latents per token (the paper's 64)
    context_size: int = 128
    train_tokens: int = 3_400_000     # nearly all the plain-English corpus holds at a 50/50 mix (3.46M)
    batch_tokens: int = 2048          # ~1660 optimiser steps on 3.4M tokens
    buffer_tokens: int = 2 ** 16      # shuffle buffer (activations of ~500 windows)
    lr: float = 3e-4
    lr_warm_up_steps: int = 50
    chat_fraction: float = 0.5
    seed: int = 0
    n_checkpoints: int = 4
    dtype: str = "float32"

    @property
    def n_windows(self) -> int:
        return math.ceil(self.train_tokens / (self.context_size - 1))


def fast_recipe(layer: int, seed: int = 0) -> SAERecipe:
    """A tiny SAE for a few steps: what fast mode (``PVLENS_FAST=1``, ``train_sae --fast``) trains."""
    return SAERecipe(layer=layer, d_sae=256, k=16, train_tokens=8 * 1024, batch_tokens=1024, buffer_tokens=2048,
                     lr_warm_up_steps=1, n_checkpoints=1, seed=seed)


@dataclass
class TrainedSAE:
    sae: object  # sae_lens SAE (inference form)
    path: Path
    card: dict = field(default_factory=dict)


def _trainer(recipe: SAERecipe, d_in: int, stream: ActivationStream, checkpoint_dir: Path):
    # sae-lens is imported where it is used: importing it costs ~0.6 s and pulls in its own stack, which only
    # the SAE chapter and recipe need (deferred on purpose)
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    class LoggingTrainer(SAETrainer):
        """sae-lens's trainer, with L0, dead fraction and variance explained on the progress bar and appended
        to ``checkpoint_dir/log.jsonl`` every ``update_interval`` steps (sae-lens logs those to W&B only)."""

        def _update_pbar(self, step_output, pbar, update_interval: int = 50):
            super()._update_pbar(step_output, pbar, update_interval)
            if self.n_training_steps % update_interval:
                return
            x, x_hat = step_output.sae_in.float(), step_output.sae_out.float()
            row = {"step": self.n_training_steps, "tokens": self.n_training_samples,
                   "loss": float(step_output.loss), "l0": float((step_output.feature_acts > 0).float().sum(-1).mean()),
                   "dead_fraction": float(self.dead_neurons.float().mean()),
                   "fve": float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())}
            pbar.set_postfix(l0=f"{row['l0']:.1f}", dead=f"{row['dead_fraction']:.1%}", fve=f"{row['fve']:.3f}")
            with open(checkpoint_dir / "log.jsonl", "a") as log:
                log.write(json.dumps(row) + "\n")

    torch.manual_seed(recipe.seed)
    cfg = BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=recipe.d_sae, k=recipe.k, dtype=recipe.dtype,
                                     normalize_activations="expected_average_only_in",
                                     apply_b_dec_to_input=True)  # train_sae's mean fold relies on it
    sae = BatchTopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(total_training_samples=recipe.train_tokens,
                                   train_batch_size_samples=recipe.batch_tokens, lr=recipe.lr, lr_end=recipe.lr,
                                   lr_warm_up_steps=recipe.lr_warm_up_steps, n_checkpoints=recipe.n_checkpoints,
                                   checkpoint_path=str(checkpoint_dir), n_batches_for_norm_estimate=20,
                                   dead_feature_window=250, feature_sampling_window=250)
    return LoggingTrainer(trainer_cfg, sae, stream)


@torch.no_grad()
def fold_mean(sae, mean: Float[Tensor, " d"]):
    """An SAE trained on ``x - mean`` turned into one that reads ``x``: ``b_dec += mean``. Exact, because sae-lens
    encodes ``W_enc (x - b_dec) + b_enc`` and decodes ``W_dec f + b_dec`` (``apply_b_dec_to_input``)."""
    if not sae.cfg.apply_b_dec_to_input:
        raise ValueError("fold_mean needs an SAE with apply_b_dec_to_input=True")
    sae.b_dec += mean.to(sae.b_dec)
    return sae


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the most training tokens under ``folder`` (sae-lens names them by token count)."""
    found = [p for p in folder.glob("*")
             if p.is_dir() and (p / "cfg.json").exists() and p.name.split("_")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("_")[-1]), default=None)


def train_sae(model: ChatModel, recipe: SAERecipe, out_dir: str | Path) -> TrainedSAE:
    """Train a BatchTopK SAE on the residual stream after block ``recipe.layer`` and save it to ``out_dir``.

    Checkpoints go to ``out_dir/checkpoints``; a run started again with the same recipe resumes from the
    latest one (weights, optimizer, schedules, firing statistics; the data stream restarts at the next
    unread window). The folder then holds ``cfg.json`` + ``sae_weights.safetensors`` (sae-lens's format)
    and ``README.md``/``card.json`` (the model card).
    """
    out_dir = Path(out_dir)
    check_layer(model, recipe.layer)
    if (out_dir / "card.json").exists():  # finished before: nothing to train
        return TrainedSAE(load_sae(out_dir, model), out_dir, json.loads((out_dir / "card.json").read_text()))
    checkpoints = out_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "recipe.json").write_text(json.dumps(asdict(recipe), indent=1))
    windows = corpus_windows(model.hf_tokenizer, "train", recipe.n_windows, recipe.context_size,
                             recipe.chat_fraction, recipe.seed)
    resume = latest_checkpoint(checkpoints)
    done_tokens = int(resume.name.split("_")[-1]) if resume else 0
    mean = activation_mean(model, windows, recipe.layer)  # deterministic: a resumed run gets the same one
    stream = ActivationStream(model, windows, recipe.layer, recipe.batch_tokens, recipe.buffer_tokens, seed=recipe.seed,
                              start_window=done_tokens // (recipe.context_size - 1), center=mean)
    trainer = _trainer(recipe, model.cfg.d_model, stream, checkpoints)
    if resume is not None:
        trainer.load_trainer_state(resume)
        trainer.sae.load_weights_from_checkpoint(resume)
        print(f"resuming from {resume.name} ({done_tokens} of {recipe.train_tokens} tokens)")
    start = time.perf_counter()
    trained = fold_mean(trainer.fit(), mean)  # fit() folded the norm scaling: the SAE now reads raw activations
    seconds = time.perf_counter() - start
    trained.cfg.metadata.hook_name = hook_name(recipe.layer)
    trained.cfg.metadata.model_name = model.info.name
    trained.cfg.metadata.context_size = recipe.context_size
    trained.cfg.metadata.prepend_bos = False
    trained.save_inference_model(out_dir)
    card = {"model": model.info.name, "model_fingerprint": model.info.fingerprint, "hook": hook_name(recipe.layer),
            "recipe": asdict(recipe), "training_seconds_this_run": seconds,
            "training_tokens_per_s_this_run": (recipe.train_tokens - done_tokens) / seconds if seconds else None,
            "seconds_in_model_forward": stream.seconds_in_model, "resumed_from_tokens": done_tokens,
            "massive_tokens_left_out": stream.massive_dropped,
            "final_train_l0": trained.cfg.metadata.l0, "final_dead_features": trained.cfg.metadata.num_dead_features}
    (out_dir / "card.json").write_text(json.dumps(card, indent=1, default=float))
    return TrainedSAE(load_sae(out_dir, model), out_dir, card)


# ---------------------------------------------------------------- loading


def load_sae(path: str | Path, model: ChatModel, layer: int | None = None, allow_other_model: bool = False):
    """``SAE.load_from_disk(path)``, checked against the model (d_model, name) and the hook it reads.

    ``layer`` (optional) must match the checkpoint's hook. Raises :class:`SAEMismatchError` naming both sides.
    """
    from sae_lens import SAE  # deferred on purpose, as in _trainer

    path = Path(path)
    if not (path / "cfg.json").exists():
        raise SAEMismatchError(f"no SAE checkpoint at {path} (expected cfg.json and sae_weights.safetensors)")
    cfg = json.loads((path / "cfg.json").read_text())  # checked before any weight is read
    d_in, meta = cfg.get("d_in"), cfg.get("metadata") or {}
    model_name, hook = meta.get("model_name"), meta.get("hook_name") or ""
    if d_in != model.cfg.d_model:
        raise SAEMismatchError(f"{path} reads vectors of size {d_in} ({model_name}, {hook}); "
                               f"{model.info.name} has d_model {model.cfg.d_model}")
    if model_name and model_name != model.info.name and not allow_other_model:
        raise SAEMismatchError(f"{path} was trained on {model_name}, not {model.info.name} "
                               "(pass allow_other_model=True to use it anyway)")
    if layer is not None and hook != hook_name(layer):
        raise SAEMismatchError(f"{path} reads {hook}, not {hook_name(layer)}")
    if not hook.startswith("blocks.") or not hook.endswith(".hook_resid_post"):
        raise SAEMismatchError(f"{path} reads {hook!r}; pvlens SAEs read blocks.L.hook_resid_post")
    return SAE.load_from_disk(str(path), device=str(model.cfg.device), dtype="float32")  # committed as float16


def sae_layer(sae) -> int:
    return int(sae.cfg.metadata.hook_name.split(".")[1])


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_sae(model: ChatModel, sae, windows: Tensor, batch_size: int = 16, dense_threshold: float = 0.1) -> dict:
    """Held-out quality: variance explained, CE loss recovered, L0, dead and dense latents.

    Scored on the tokens the SAE is for: position 0 and massive tokens (:func:`massive_tokens`) are left out.
    - fraction of variance explained: ``1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2`` over those tokens (and,
      for comparison, ``..._with_massive`` over all tokens, with massive ones reconstructed as themselves);
    - CE loss recovered: ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``, next-token loss with the layer's
      output replaced by the reconstruction (``CE_sae``) or by zeros (``CE_zero``) at those tokens;
    - dead latents never fire on them; dense ones fire on more than ``dense_threshold`` of them.
    """
    layer = sae_layer(sae)
    sq_err = sq = massive_var = 0.0
    sums = torch.zeros(model.cfg.d_model, dtype=torch.float64)
    all_sums = torch.zeros(model.cfg.d_model, dtype=torch.float64)
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    active, n_tokens, n_massive = 0.0, 0, 0
    ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(model.cfg.device)
        n = ids[:, 1:].numel()  # predicted tokens (positions 1..): the CE is averaged over all of them
        clean, acts = _ce_with(model.hf_model, ids, layer, "clean")
        ce["clean"] += clean * n
        ce["sae"] += _ce_with(model.hf_model, ids, layer, "sae", sae)[0] * n
        ce["zero"] += _ce_with(model.hf_model, ids, layer, "zero")[0] * n
        acts = acts.reshape(-1, model.cfg.d_model)
        massive = massive_tokens(acts)
        all_sums += acts.sum(0).double()
        massive_var += float(acts[massive].double().pow(2).sum())
        acts = acts[~massive]
        feats = sae.encode(acts)
        sq_err += float((acts - sae.decode(feats)).pow(2).sum())
        sums += acts.sum(0).double()
        sq += float(acts.double().pow(2).sum())
        n_tokens += len(acts)
        n_massive += int(massive.sum())
        on = feats > 0
        fires += on.sum(0).double()
        active += float(on.sum())
    total = sq - float(sums.pow(2).sum()) / n_tokens
    total_with_massive = sq + massive_var - float(all_sums.pow(2).sum()) / (n_tokens + n_massive)
    ce = {k: v / (n_tokens + n_massive) for k, v in ce.items()}
    frequency = fires / n_tokens
    return {"tokens": n_tokens, "massive_tokens_left_out": n_massive,
            "fraction_variance_explained": 1 - sq_err / total,
            "fraction_variance_explained_with_massive": 1 - sq_err / total_with_massive,
            "ce_clean": ce["clean"], "ce_with_sae": ce["sae"], "ce_zero_ablation": ce["zero"],
            "ce_loss_recovered": (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]),
            "l0": active / n_tokens, "dead_fraction": float((frequency == 0).float().mean()),
            "dense_fraction": float((frequency > dense_threshold).float().mean()),
            "dense_threshold": dense_threshold}


def _ce_with(hf, ids: Tensor, layer: int, mode: str, sae=None) -> tuple[float, Float[Tensor, "batch seq_1 d"]]:
    """Mean next-token cross-entropy with block ``layer``'s output at positions >= 1 kept (``"clean"``),
    replaced by the SAE's reconstruction (``"sae"``) or by zeros (``"zero"``), massive tokens kept in all
    three; and that block's original output at those positions (float32), read in the same pass."""
    seen = {}

    def edit(module, inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        acts = seen["acts"] = hidden[:, 1:].detach().float()
        if mode == "clean":
            return output
        replaced = torch.zeros_like(acts) if mode == "zero" else sae.decode(sae.encode(acts))
        keep = massive_tokens(acts)
        new = hidden.clone()
        new[:, 1:] = torch.where(keep[..., None], acts, replaced).to(hidden.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = hf.model.layers[layer].register_forward_hook(edit)
    try:
        logits = hf(input_ids=ids, use_cache=False).logits
    finally:
        handle.remove()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             ids[:, 1:].reshape(-1))
    return float(loss), seen["acts"]


# ---------------------------------------------------------------- decomposition


def decoder_directions(sae) -> Float[Tensor, "d_sae d_model"]:
    """Unit decoder rows: the direction each latent writes."""
    w = sae.W_dec.detach().float().cpu()
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def decoder_cosines(sae, vector: Float[Tensor, " d_model"]) -> Float[Tensor, " d_sae"]:
    """Cosine similarity between a persona vector and every decoder direction."""
    return decoder_directions(sae) @ unit(vector.detach().float().cpu())


def top_features(sae, vector: Float[Tensor, " d_model"], n: int = 10) -> pd.DataFrame:
    """The ``n`` latents whose decoder directions are closest to ``vector`` (columns feature, cosine)."""
    cos = decoder_cosines(sae, vector)
    values, index = cos.topk(n)
    return pd.DataFrame({"feature": index.tolist(), "cosine": values.tolist()})


@torch.no_grad()
def max_activating(model: ChatModel, sae, windows: Tensor, features: Sequence[int], top: int = 5, context: int = 16,
                   batch_size: int = 16) -> dict[int, list[dict]]:
    """For each feature, its ``top`` most activating windows over ``windows`` (one example per window, so the
    examples are different contexts), each cut to its peak token and the ``context`` tokens before it.

    Each example: ``{"tokens": [str], "acts": [float], "max": float, "window": i, "position": j}``; the last
    token is the peak (``acts[-1] == max``), examples are sorted by ``max``, and a feature that never fires
    has none. Massive tokens (:func:`massive_tokens`) count as not firing.
    """
    layer, feats = sae_layer(sae), list(features)
    per_batch = []
    for start in range(0, len(windows), batch_size):
        ids = windows[start:start + batch_size].to(model.cfg.device)
        acts = block_outputs(model.hf_model, ids, torch.ones_like(ids), [layer])[layer][:, 1:].float()
        f_acts = sae.encode(acts)[..., feats]
        f_acts[massive_tokens(acts)] = 0  # not the SAE's tokens
        per_batch.append(f_acts.cpu())
    f_acts = torch.cat(per_batch)  # [n_windows, seq-1, n_feats]: one forward pass per window, kept for the examples
    peak_values, peak_positions = f_acts.max(dim=1)  # [n_windows, n_feats]
    tok, out = model.hf_tokenizer, {}
    for j, f in enumerate(feats):
        values, best_windows = peak_values[:, j].topk(min(top, len(windows)))
        examples = []
        for v, w in zip(values.tolist(), best_windows.tolist()):
            if v <= 0:
                break
            pos = 1 + int(peak_positions[w, j])  # position in the window (position 0 was left out)
            lo = max(1, pos - context)
            examples.append({"tokens": [tok.decode([t]) for t in windows[w, lo:pos + 1].tolist()],
                             "acts": f_acts[w, lo - 1:pos, j].tolist(), "max": v, "window": w, "position": pos})
        out[f] = examples
    return out


def feature_vector(sae, feature: int) -> Float[Tensor, " d_model"]:
    """The unit decoder direction of one latent, for steering."""
    return decoder_directions(sae)[feature]


def steering_scores(model: ChatModel, persona: Persona, sae, features: Sequence[int], alpha: float,
                    **sampling) -> pd.DataFrame:
    """Judged trait expression when steering with single decoder directions (the paper's TES), beside the
    persona vector itself, all as ``alpha`` x the layer's mean residual norm at the SAE's layer.

    One row per direction: ``direction`` ("persona vector" or "feature N"), ``trait_score``, ``coherence``.
    ``sampling`` goes to :meth:`pvlens.Persona.expression` (``questions``, ``n_per_question``...).
    """
    layer = sae_layer(sae)
    directions = {"persona vector": unit(persona.vectors[layer])} | {f"feature {f}": feature_vector(sae, f)
                                                                     for f in features}
    rows = []
    for name, v in directions.items():
        frame = persona.expression(model, steering=Steering(v, layer, alpha, positions="response", units="resid"),
                           **sampling)
        rows.append({"direction": name, "trait_score": frame["trait"].mean(), "coherence": frame["coherence"].mean(),
                     "n": len(frame)})
    return pd.DataFrame(rows)


__all__ = [
    "activation_mean",
    "ActivationStream",
    "chat_documents",
    "corpus_windows",
    "decoder_cosines",
    "decoder_directions",
    "evaluate_sae",
    "fast_recipe",
    "feature_vector",
    "fold_mean",
    "hook_name",
    "latest_checkpoint",
    "layer_activations",
    "load_sae",
    "MASSIVE_FACTOR",
    "massive_tokens",
    "max_activating",
    "pack",
    "plain_documents",
    "sae_layer",
    "SAEMismatchError",
    "SAERecipe",
    "steering_scores",
    "top_features",
    "train_sae",
    "TrainedSAE",
]
