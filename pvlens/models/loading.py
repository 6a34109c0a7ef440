"""Loading chat models into TransformerLens, with a Hugging Face twin that shares every weight.

A persona-vector workflow needs two things from one model: TransformerLens' hook points for
reading and editing the residual stream, and fast batched generation. TransformerLens 3.9's own
``generate`` runs below Hugging Face's (0.39x at the paper's 7B shape on a GPU; 0.86x at batch 1
on this CPU even with the shared weights below; see ``benchmarks/``),
so :func:`load_model` builds both views over *one* set of tensors:

- ``model`` is a :class:`ChatModel`, a genuine ``HookedTransformer`` (``run_with_cache``,
  ``run_with_hooks``, hook names all work as in any TransformerLens tutorial);
- ``model.hf_model`` is the Hugging Face model its parameters are views of. pvlens generates
  through it and places hooks on its decoder layers, in TransformerLens coordinates.

No weight processing is applied (no LayerNorm folding, no centring), so
``blocks[L].hook_resid_post`` equals HF ``hidden_states[L + 1]`` and a vector extracted on one
side steers the other. The paper's layer ``ℓ`` (1-indexed block output) is TransformerLens
``layer = ℓ - 1``. Because the TransformerLens parameters are views of Hugging Face's
``[out, in]`` weights, the ``W.T.contiguous()`` copies that make stock TransformerLens slow
become free, and the model costs one copy of memory, not two.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_llama_weights, convert_qwen2_weights
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from pvlens.core.config import default_model_name
from pvlens.core.errors import PVLensError
from pvlens.models import registry

CONVERTERS = {"LlamaForCausalLM": convert_llama_weights, "Qwen2ForCausalLM": convert_qwen2_weights}
DEFAULT_N_CTX = 4096  # TransformerLens allocates an n_ctx x n_ctx mask per layer: cap it


@dataclass
class ModelInfo:
    """What a loaded model is: enough to tell whether a saved vector belongs to it."""

    name: str  # registry name, hub id or directory
    original: str  # the checkpoint it corresponds to
    architecture: str
    fingerprint: str  # hash of a fixed sample of every weight tensor
    source: str  # directory the weights were read from
    load_seconds: dict = field(default_factory=dict)


def _rope_settings(hf_config) -> dict:
    rope = dict(getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    out = {"rotary_base": float(theta)}
    if (rope.get("rope_type") or rope.get("type") or "").lower() == "llama3":  # Llama 3.1
        out.update(
            use_NTK_by_parts_rope=True,
            NTK_original_ctx_len=rope.get("original_max_position_embeddings", 8192),
            NTK_by_parts_low_freq_factor=rope.get("low_freq_factor", 1.0),
            NTK_by_parts_high_freq_factor=rope.get("high_freq_factor", 4.0),
            NTK_by_parts_factor=rope.get("factor", 8.0),
        )
    return out


def hooked_config(hf_config, *, n_ctx: int | None = None, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> HookedTransformerConfig:
    """Translate a Hugging Face Llama / Qwen2 config into a TransformerLens config, offline.

    ``HookedTransformer.from_pretrained`` only accepts names from TransformerLens' official
    list and fetches configs from the hub even when given a model, so we build it by hand.
    """
    arch = (hf_config.architectures or ["?"])[0]
    if arch not in CONVERTERS:
        raise PVLensError(f"architecture {arch} is not supported; pvlens supports {sorted(CONVERTERS)}")
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    n_kv = hf_config.num_key_value_heads
    max_pos = hf_config.max_position_embeddings
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=hf_config.num_attention_heads,
        n_key_value_heads=n_kv if n_kv != hf_config.num_attention_heads or arch == "Qwen2ForCausalLM" else None,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(max_pos, n_ctx or DEFAULT_N_CTX),
        eps=hf_config.rms_norm_eps,
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        use_attn_scale=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=d_head,
        final_rms=True,
        gated_mlp=True,
        original_architecture=arch,
        default_prepend_bos=False,  # chat-templated text already carries its start token
        init_weights=False,
        device=device,
        dtype=dtype,
        **_rope_settings(hf_config),
    )


def fingerprint(hf_model: torch.nn.Module, samples: int = 512) -> str:
    """A short hash of a strided sample of every weight: cheap, and changes with any finetune."""
    digest = hashlib.sha256()
    for name, tensor in sorted(hf_model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(flat[::step][:samples].to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


class ChatModel(HookedTransformer):
    """A ``HookedTransformer`` that shares its weights with a Hugging Face chat model.

    Extra attributes: ``hf_model`` (the twin), ``hf_tokenizer`` (the model's own tokenizer, with
    its chat template) and ``info`` (:class:`ModelInfo`). Hooks that pvlens installs work on both
    forward paths. Move it with :meth:`to`, which moves the twin and re-shares the weights.
    """

    def _attach(self, hf_model, hf_tokenizer, info: ModelInfo) -> None:
        # Stored in __dict__ so nn.Module does not register the twin as a submodule
        # (its parameters would otherwise be counted, saved and moved twice).
        self.__dict__["hf_model"] = hf_model
        self.__dict__["hf_tokenizer"] = hf_tokenizer
        self.__dict__["info"] = info

    def share_weights(self) -> None:
        """Point every TransformerLens parameter at the matching Hugging Face tensor (no copies)."""
        convert = CONVERTERS[self.cfg.original_architecture]
        with torch.no_grad():
            state = {k: v.detach() for k, v in convert(self.hf_model, self.cfg).items()}
        missing, unexpected = self.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if k.split(".")[-1] not in ("mask", "IGNORE", "rotary_sin", "rotary_cos")]
        if missing or unexpected:
            raise PVLensError(f"weight conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def to(self, *args, **kwargs):  # type: ignore[override]
        self.hf_model.to(*args, **kwargs)
        super().to(*args, **kwargs)
        self.share_weights()
        return self

    @property
    def name(self) -> str:
        return self.info.name


def _load_hf(source: str | Path, device: str, dtype: torch.dtype):
    tokenizer = AutoTokenizer.from_pretrained(source)
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar would clutter every chapter
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device)
    finally:
        if bar_was_on:  # leave the user's own setting as it was
            hf_logging.enable_progress_bar()
    hf_model.eval()
    return hf_model, tokenizer


def load_model(name: str | None = None, *, device: str | None = None, dtype: torch.dtype | None = None,
               n_ctx: int | None = None) -> ChatModel:
    """Load a chat model as a :class:`ChatModel` (TransformerLens, weights shared with HF).

    Args:
        name: a registry name (``smollm2-135m-instruct``, default; ``qwen2.5-coder-0.5b-instruct``),
            a Hugging Face id (``Qwen/Qwen2.5-7B-Instruct``, ``meta-llama/Llama-3.1-8B-Instruct``,
            read from the hub or its local cache) or a local directory. ``None`` reads
            ``PVLENS_MODEL``. Offline models are fetched and converted on first use.
        device: ``"cpu"``, ``"cuda"``...; default cuda when available.
        dtype: default float32 on CPU, bfloat16 on GPU.
        n_ctx: TransformerLens context length (capped at 4096 by default to bound mask memory).
    """
    name = name or default_model_name()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
    timings = {}
    start = time.perf_counter()
    spec = registry.resolve(name)
    if isinstance(spec, registry.OfflineModel):
        source, original, name = registry.ensure_converted(spec), spec.original, spec.name
    else:
        source = original = spec
    timings["fetch"] = time.perf_counter() - start

    start = time.perf_counter()
    hf_model, tokenizer = _load_hf(source, device, dtype)
    timings["hf"] = time.perf_counter() - start

    start = time.perf_counter()
    cfg = hooked_config(hf_model.config, n_ctx=n_ctx, device=device, dtype=dtype)
    model = ChatModel(cfg, tokenizer=tokenizer, move_to_device=False)
    info = ModelInfo(name=name, original=original, architecture=cfg.original_architecture,
                     fingerprint=fingerprint(hf_model), source=str(source))
    model._attach(hf_model, tokenizer, info)
    model.share_weights()
    model.eval()
    timings["hooked"] = time.perf_counter() - start
    info.load_seconds = timings
    return model


def describe_model(model: ChatModel) -> str:
    """One line naming the model, its shape and where its weights came from."""
    c = model.cfg
    return json.dumps({"name": model.info.name, "original": model.info.original, "layers": c.n_layers,
                       "d_model": c.d_model, "fingerprint": model.info.fingerprint})
