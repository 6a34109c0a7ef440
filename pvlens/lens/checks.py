"""Argument checks shared by every hook and reader: a bad layer, vector or coefficient fails with a clear error.

Layers are TransformerLens block indices (the paper's layer ℓ is ``layer = ℓ - 1``).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.models.loading import ChatModel


def check_layer(model: ChatModel, layer: int) -> int:
    """``layer`` if it is a block index of ``model``, else a ``ValueError`` naming the valid range."""
    n = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer {layer!r} is out of range: this model has TransformerLens layers 0..{n - 1} "
                         f"(paper layer ℓ is layer ℓ-1)")
    return layer


def check_vector(model: ChatModel, vector: Tensor, what: str = "vector") -> Tensor:
    """``vector`` if it is a finite ``(d_model,)`` tensor for ``model``, else a clear error."""
    if not isinstance(vector, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.shape[0] != model.cfg.d_model:
        raise ValueError(f"{what} has shape {tuple(vector.shape)}; this model needs ({model.cfg.d_model},)")
    if not torch.isfinite(vector).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return vector


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float if it is a finite number (a one-element tensor counts)."""
    if isinstance(alpha, Tensor) and alpha.numel() == 1:
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return float(alpha)


def unit(vector: Float[Tensor, " d_model"]) -> Float[Tensor, " d_model"]:
    """``vector / |vector|``; a zero vector is an error."""
    norm = vector.norm()
    if norm == 0:
        raise ValueError("cannot normalise a zero vector")
    return vector / norm


__all__ = [
    "check_alpha",
    "check_layer",
    "check_vector",
    "unit",
]
