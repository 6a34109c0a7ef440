"""Steering and monitoring hooks on the residual stream, in TransformerLens coordinates.

Steering adds ``alpha * v`` to ``blocks[layer].hook_resid_post`` (the paper's layer ``layer + 1``).
One :func:`steer` context installs the same edit on both forward paths of a
:class:`~pvlens.models.loading.ChatModel` — the TransformerLens hook point and the output of the
Hugging Face decoder layer that shares its weights — so it acts on ``run_with_cache``,
``run_with_hooks``, :func:`pvlens.generate` and training alike, composes with any other hook, and
is removed on exit even when the body raises.

Positions (the reference implementation's semantics, paper §6):

- ``"all"``: every position of every forward pass;
- ``"prompt"``: every position of forward passes longer than one token (prefill); nothing during
  one-token decode steps;
- ``"response"`` (the paper's default): the last position of each forward pass — the final prompt
  token during prefill, then each newly generated token.

Coefficients: ``units="raw"`` adds ``alpha * v`` with the raw mean-difference vector (the paper's
convention, model-specific scale). ``units="resid"`` adds ``alpha * |resid_L| * v/|v|`` where
``|resid_L|`` is the layer's mean residual norm on neutral chat prompts, so ``alpha`` is a fraction
of the residual stream and comparable across layers and models (on SmolLM2 effects appear near 0.5).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.core.keys import tensor_digest
from pvlens.lens.checks import check_alpha, check_layer, check_vector, unit
from pvlens.lens.projection import residual_norms
from pvlens.models.loading import ChatModel

Positions = Literal["all", "prompt", "response"]
POSITIONS = ("all", "prompt", "response")

def _edit(positions: Positions, delta: Tensor) -> Callable[[Tensor], Tensor]:
    def add(hidden: Tensor) -> Tensor:
        d = delta.to(hidden.dtype)
        if positions == "all" or (positions == "prompt" and hidden.shape[1] > 1):
            return hidden + d
        if positions == "response":
            return torch.cat([hidden[:, :-1], hidden[:, -1:] + d], dim=1)
        return hidden

    return add


def _hf_layer(model: ChatModel, layer: int):
    return model.hf_model.model.layers[layer]


@contextmanager
def on_resid_post(model: ChatModel, layer: int, fn: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Run ``fn(resid_post)`` at ``layer`` on both forward paths; a tensor it returns replaces the output."""

    def tl_hook(module, inputs, output):
        return fn(output)

    def hf_hook(module, inputs, output):
        if isinstance(output, tuple):
            new = fn(output[0])
            return None if new is None else (new, *output[1:])
        return fn(output)

    handles = [model.blocks[layer].hook_resid_post.register_forward_hook(tl_hook),
               _hf_layer(model, layer).register_forward_hook(hf_hook)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _as_layer_vectors(model: ChatModel, vectors, layers) -> dict[int, Tensor]:
    if hasattr(vectors, "vectors") and hasattr(vectors, "check"):  # a PersonaVector
        vectors.check(model)
        vectors = vectors.vectors
    if layers == "all":
        layers = list(range(model.cfg.n_layers))
    elif isinstance(layers, int):
        layers = [layers]
    layers = [check_layer(model, layer) for layer in layers]
    if not layers:
        raise ValueError("no layers given to steer")
    if isinstance(vectors, Tensor) and vectors.ndim == 2:
        if vectors.shape != (model.cfg.n_layers, model.cfg.d_model):
            raise ValueError(f"per-layer vectors have shape {tuple(vectors.shape)}; this model needs "
                             f"({model.cfg.n_layers}, {model.cfg.d_model})")
        return {layer: check_vector(model, vectors[layer], f"vector at layer {layer}") for layer in layers}
    if isinstance(vectors, Tensor) and vectors.ndim == 1:
        return {layer: check_vector(model, vectors) for layer in layers}
    shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
    raise ValueError(f"vector must be (d_model,) or (n_layers, d_model), got {shape}")


@contextmanager
def steer(model: ChatModel, vectors, layers: int | Sequence[int] | Literal["all"], alpha: float = 1.0,
          positions: Positions = "response", units: Literal["raw", "resid"] = "raw") -> Iterator[None]:
    """Add ``alpha * v`` to the residual stream after block ``layer`` while the context is open.

    Args:
        model: a :class:`~pvlens.models.loading.ChatModel`.
        vectors: one vector ``(d_model,)`` used at every layer given, per-layer vectors
            ``(n_layers, d_model)`` indexed by layer, or a :class:`~pvlens.lens.vectors.PersonaVector`.
        layers: a TransformerLens layer, a list of them, or ``"all"``.
        alpha: the coefficient; negative steers against the trait.
        positions: ``"all"``, ``"prompt"`` or ``"response"`` (see the module docstring).
        units: ``"raw"`` (alpha times the raw vector) or ``"resid"`` (alpha times the layer's mean
            residual norm, along the unit vector).

    Everything is validated before any hook is installed, so bad input changes nothing.
    """
    alpha = check_alpha(alpha)
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if units not in ("raw", "resid"):
        raise ValueError(f"units must be 'raw' or 'resid', got {units!r}")
    per_layer = _as_layer_vectors(model, vectors, layers)
    device, dtype = model.cfg.device, model.cfg.dtype
    deltas = {}
    for layer, v in per_layer.items():
        v = v.to(device=device, dtype=torch.float32)
        if units == "resid":
            v = unit(v) * residual_norms(model)[layer].item()
        deltas[layer] = (alpha * v).to(dtype)
    with _stack([on_resid_post(model, layer, _edit(positions, d)) for layer, d in deltas.items()]):
        yield


@contextmanager
def ablate(model: ChatModel, vectors, layers: int | Sequence[int] | Literal["all"] = "all") -> Iterator[None]:
    """Remove the component along ``v/|v|`` from the residual stream after each block in ``layers``.

    ``h <- h - (h . q) q`` with ``q`` the unit vector, at every position: the directional ablation of
    CAFT (concept-ablation finetuning, Casademunt et al. 2025; paper J.4), which the paper applies at
    all layers during training. ``vectors`` as in :func:`steer` (per-layer vectors ablate each layer's
    own direction). No coefficient: the projection is set to zero.
    """
    per_layer = _as_layer_vectors(model, vectors, layers)
    device = model.cfg.device
    directions = {layer: unit(v.to(device=device, dtype=torch.float32)) for layer, v in per_layer.items()}

    def remove(q: Tensor) -> Callable[[Tensor], Tensor]:
        def fn(hidden: Tensor) -> Tensor:
            qd = q.to(hidden.dtype)
            return hidden - (hidden @ qd).unsqueeze(-1) * qd

        return fn

    with _stack([on_resid_post(model, layer, remove(q)) for layer, q in directions.items()]):
        yield


def incremental(vectors: Float[Tensor, "n_layers d_model"]) -> Float[Tensor, "n_layers d_model"]:
    """The paper's all-layer vectors ``v_l - v_{l-1}`` (J.3): added at every layer, they sum to ``v_l``.

    Layer 0 keeps ``v_0`` (the paper subtracts the embedding-level difference there, which pvlens
    does not steer), so the running sum after block ``l`` is exactly ``v_l``.
    """
    if vectors.ndim != 2:
        raise ValueError(f"incremental() needs per-layer vectors (n_layers, d_model), got {tuple(vectors.shape)}")
    return torch.cat([vectors[:1], vectors[1:] - vectors[:-1]])


@contextmanager
def _stack(contexts) -> Iterator[None]:
    with ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        yield


@contextmanager
def record_last_position(model: ChatModel, layer: int, direction: Float[Tensor, " d_model"]) -> Iterator[list[Tensor]]:
    """Record ``resid_post[:, -1] · direction`` on every forward pass (one entry per pass)."""
    direction = direction.to(model.cfg.device, torch.float32)
    record: list[Tensor] = []

    def read(hidden: Tensor) -> None:
        record.append(hidden[:, -1].float() @ direction)

    with on_resid_post(model, layer, read):
        yield record


@dataclass(frozen=True)
class Steering:
    """An inference-time edit: ``alpha * v`` added after block ``layers`` while the model answers.

    The fields are :func:`pvlens.steer`'s arguments; ``vectors`` is one ``(d_model,)`` vector or
    per-layer ``(n_layers, d_model)`` vectors (for example ``pv.incremental(v)`` with ``layers="all"``).
    """

    vectors: Tensor
    layers: int | tuple[int, ...] | str
    alpha: float
    positions: Literal["all", "prompt", "response"] = "response"
    units: Literal["raw", "resid"] = "raw"

    def key(self) -> dict:
        layers = self.layers if isinstance(self.layers, (int, str)) else list(self.layers)
        return {"vectors": tensor_digest(getattr(self.vectors, "vectors", self.vectors)), "layers": layers,
                "alpha": float(self.alpha), "positions": self.positions, "units": self.units}

    def context(self, model: ChatModel):
        return steer(model, self.vectors, self.layers, self.alpha, self.positions, self.units)
