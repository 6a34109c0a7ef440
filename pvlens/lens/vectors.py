"""Persona-vector files: safetensors with metadata, checked against the model they are used with.

A file holds one tensor ``vectors`` of shape ``(n_layers, d_model)`` — row ``L`` lives at
TransformerLens ``blocks[L].hook_resid_post``, the paper's layer ``L + 1`` — and string metadata:
trait, variant (``response_avg``, ``prompt_avg``, ``prompt_last``), the model's name and weight
fingerprint, how many positive / negative rollouts went in, and the pvlens version.

Loading never unpickles anything (safetensors only), and :meth:`PersonaVector.check` refuses a
model with a different width, depth or fingerprint unless ``allow_transfer=True`` says the transfer
is deliberate (for example base-model vectors on a finetuned model, as in the paper's part II).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from pvlens.core.errors import VectorMismatchError
from pvlens.lens.checks import check_layer, unit
from pvlens.models.loading import ChatModel

HOOK_CONVENTION = "blocks.{layer}.hook_resid_post"
REQUIRED = ("trait", "variant", "model", "fingerprint", "hook")


def _version() -> str:
    try:
        return version("pvlens")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class PersonaVector:
    """Mean-difference vectors for one trait, one per layer."""

    vectors: Float[Tensor, "n_layers d_model"]
    trait: str
    variant: str
    model: str
    fingerprint: str
    n_pos: int = 0
    n_neg: int = 0
    hook: str = HOOK_CONVENTION
    extra: dict = field(default_factory=dict)
    allow_transfer: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, Tensor) or self.vectors.ndim != 2:
            raise ValueError("vectors must be a (n_layers, d_model) tensor")
        if not torch.isfinite(self.vectors).all():
            bad = sorted({int(i) for i in (~torch.isfinite(self.vectors)).nonzero()[:, 0]})
            raise ValueError(f"persona vector for {self.trait!r} has NaN/inf values at layers {bad[:10]}")

    @property
    def n_layers(self) -> int:
        return self.vectors.shape[0]

    @property
    def d_model(self) -> int:
        return self.vectors.shape[1]

    def __getitem__(self, layer: int) -> Float[Tensor, " d_model"]:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} is out of range 0..{self.n_layers - 1}")
        return self.vectors[layer]

    def unit(self, layer: int) -> Float[Tensor, " d_model"]:
        return unit(self[layer])

    def norms(self) -> Float[Tensor, " n_layers"]:
        return self.vectors.norm(dim=-1)

    def check(self, model: ChatModel, allow_transfer: bool | None = None) -> "PersonaVector":
        """Raise :class:`VectorMismatchError` if this vector was not made on ``model``'s weights."""
        allow = self.allow_transfer if allow_transfer is None else allow_transfer
        cfg = model.cfg
        if (self.n_layers, self.d_model) != (cfg.n_layers, cfg.d_model):
            raise VectorMismatchError(
                f"{self.trait} vector is ({self.n_layers} layers, d_model {self.d_model}) from {self.model}; "
                f"{model.info.name} has ({cfg.n_layers} layers, d_model {cfg.d_model}). It cannot be used here.")
        if self.fingerprint != model.info.fingerprint and not allow:
            raise VectorMismatchError(
                f"{self.trait} vector was extracted from {self.model} (weights {self.fingerprint}) but this model "
                f"is {model.info.name} (weights {model.info.fingerprint}). Pass allow_transfer=True if the transfer "
                "is deliberate (e.g. base-model vectors on a finetuned model).")
        if self.hook != HOOK_CONVENTION:
            raise VectorMismatchError(f"vector uses hook convention {self.hook!r}; pvlens uses {HOOK_CONVENTION!r}")
        return self

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"trait": self.trait, "variant": self.variant, "model": self.model, "fingerprint": self.fingerprint,
                "n_pos": str(self.n_pos), "n_neg": str(self.n_neg), "hook": self.hook,
                "n_layers": str(self.n_layers), "d_model": str(self.d_model), "pvlens_version": _version(),
                "extra": json.dumps(self.extra)}
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file({"vectors": self.vectors.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, model: ChatModel=None, allow_transfer: bool = False) -> "PersonaVector":
        """Read a file written by :meth:`save`; with ``model`` given, also :meth:`check` it."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no persona-vector file at {path}")
        try:
            tensors = load_file(str(path))

            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise VectorMismatchError(f"{path} is not a readable safetensors persona-vector file: {err}") from err
        missing = [k for k in REQUIRED if k not in meta]
        if "vectors" not in tensors or missing:
            raise VectorMismatchError(f"{path} is missing {'the vectors tensor' if 'vectors' not in tensors else ''}"
                                      f"{' metadata ' + ', '.join(missing) if missing else ''}")
        vector = cls(vectors=tensors["vectors"], trait=meta["trait"], variant=meta["variant"], model=meta["model"],
                     fingerprint=meta["fingerprint"], n_pos=int(meta.get("n_pos", 0)), n_neg=int(meta.get("n_neg", 0)),
                     hook=meta["hook"], extra=json.loads(meta.get("extra", "{}")), allow_transfer=allow_transfer)
        if model is not None:
            vector.check(model)
        return vector

    def for_model(self, model: ChatModel, allow_transfer: bool = True) -> "PersonaVector":
        """A copy marked for deliberate use on ``model`` (checked for shape, not fingerprint)."""
        return replace(self, allow_transfer=allow_transfer).check(model)


def from_tensor(model: ChatModel, vectors: Float[Tensor, "n_layers d_model"], trait: str, variant: str,
                n_pos: int = 0, n_neg: int = 0, **extra) -> PersonaVector:
    """Wrap freshly computed per-layer vectors with ``model``'s identity."""
    if vectors.shape != (model.cfg.n_layers, model.cfg.d_model):
        raise ValueError(f"vectors have shape {tuple(vectors.shape)}; {model.info.name} needs "
                         f"({model.cfg.n_layers}, {model.cfg.d_model})")
    return PersonaVector(vectors=vectors.detach().float().cpu(), trait=trait, variant=variant, model=model.info.name,
                         fingerprint=model.info.fingerprint, n_pos=n_pos, n_neg=n_neg, extra=extra)


def cosine_matrix(vectors: dict[str, "PersonaVector"], layer: int):
    """Cosine similarity between named persona vectors at one layer (the paper's Fig. 20, right).

    Returns a square pandas DataFrame indexed by the names.
    """
    names = list(vectors)
    units = torch.stack([unit(vectors[n][layer].float()) for n in names])
    return pd.DataFrame((units @ units.T).numpy(), index=names, columns=names)


def layerwise_cosine(a: "PersonaVector", b: "PersonaVector") -> Float[Tensor, " n_layers"]:
    """Cosine similarity of two persona vectors at every layer (e.g. two variants of one trait)."""
    if a.vectors.shape != b.vectors.shape:
        raise ValueError(f"shapes differ: {tuple(a.vectors.shape)} vs {tuple(b.vectors.shape)}")
    return torch.nn.functional.cosine_similarity(a.vectors.float(), b.vectors.float(), dim=-1)


__all__ = [
    "check_layer",
    "cosine_matrix",
    "from_tensor",
    "layerwise_cosine",
    "PersonaVector",
]
