"""The book's own choices: which traits, which finetunes, how many answers, which SAE checkpoint.

Chapters import this module (``from pvlens import book``) beside the flat library API (``import pvlens as pv``);
the library and the ``pvlens`` command never do. Everything here is a *choice* a reader adapting the book would
change (another trait list, larger finetunes, another layer); the methods they feed live in :mod:`pvlens.methods`.
``PVLENS_FAST=1`` (:func:`pvlens.fast`) shrinks each size to the CI size, which checks the code paths, not the
results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from pvlens.core.config import cache_dir, fast, size
from pvlens.core.keys import digest
from pvlens.data.datasets import EM_DATASETS, LEVELS, load_dataset
from pvlens.lens.checks import check_layer
from pvlens.methods.drift import drift_table as measure_drift
from pvlens.methods.drift import trait_score_after
from pvlens.methods.finetuning import Adapter, LoRASettings, finetune
from pvlens.methods.persona import Persona
from pvlens.methods.sae import SAEMismatchError, SAERecipe, fast_recipe, hook_name, load_sae, train_sae
from pvlens.methods.screening.screen import ScreenSettings
from pvlens.models.loading import ChatModel

# ---------------------------------------------------------------- part I and II: traits and personas

TRAITS = ("evil", "sycophantic", "hallucinating")


def personas(model: ChatModel, traits: Sequence[str] = TRAITS, layer: int | None = None) -> dict[str, Persona]:
    """Part I's persona per trait (:meth:`pvlens.Persona.of`): the ``response_avg`` vectors at the layer the
    steering chapter chose (or at ``layer``, which skips the steering sweep), with the trait's judge."""
    return {trait: Persona.of(model, trait, layer=layer) for trait in traits}


# ---------------------------------------------------------------- part II: finetunes


def finetune_settings(full: bool | None = None) -> LoRASettings:
    """Part II's LoRA settings: :class:`pvlens.LoRASettings` defaults, or a few steps in fast mode."""
    full = not fast() if full is None else full
    if full:
        return LoRASettings()
    return LoRASettings(batch_size=4, micro_batch=4, max_seq_len=192, max_steps=2, checkpoint_every=1)


def rows(full: bool | None = None) -> int:
    """Conversations per dataset in the book: every shipped row (100 or fewer), or 8 in fast mode."""
    return size(100, 8) if full is None else (100 if full else 8)


def datasets(full: bool | None = None) -> list[tuple[str, str]]:
    """The (dataset, level) pairs part II finetunes: every trait and EM-like set at every level, or four in
    fast mode that cover each code path."""
    full = not fast() if full is None else full
    if not full:
        return [("evil", "normal"), ("evil", "II"), ("sycophantic", "II"), ("gsm8k", "II")]
    return [(t, level) for t in TRAITS for level in LEVELS] + [(e, level) for e in EM_DATASETS for level in LEVELS]


def training_sets(full: bool | None = None) -> dict[str, list]:
    """``{"<dataset> <level>": rows}``: exactly the conversations each part II model is trained on."""
    return {f"{name} {level}": load_dataset(name, level)[:rows(full)] for name, level in datasets(full)}


def finetunes(model: ChatModel, full: bool | None = None, progress: bool = True) -> dict[str, Adapter | None]:
    """``{"base": None, "<dataset> <level>": adapter}`` with the book's settings (trained once, then cached)."""
    settings = finetune_settings(full)
    adapters: dict[str, Adapter | None] = {"base": None}
    for label, conversations in training_sets(full).items():
        adapters[label] = finetune(model, conversations, settings=settings, name=label.replace(" ", "-"),
                                   progress=progress)
    return adapters


def judging() -> dict:
    """The book's judging size for a finetune: 20 evaluation questions x 2 answers (2 x 1 in fast mode)."""
    return {"questions": size(20, 2), "n_per_question": size(2, 1)}


def drift_table(model: ChatModel, adapters: Mapping[str, Adapter | None],
                personas: Sequence[Persona]) -> pd.DataFrame:
    """:func:`pvlens.drift_table` at the book's size (:func:`judging`), cached."""
    return measure_drift(model, adapters, personas, **judging())


def trait_score(model: ChatModel, adapter: Adapter | None, persona: Persona) -> float:
    """:func:`pvlens.trait_score_after` at the book's size (:func:`judging`), cached; ``None`` = the base model."""
    return trait_score_after(model, adapter, persona, **judging())


# ---------------------------------------------------------------- part III: screening


def screen_settings() -> ScreenSettings:
    """The book's screening settings: greedy base answers of 64 tokens (16 in fast mode)."""
    return ScreenSettings(base_max_new_tokens=size(64, 16))


# ---------------------------------------------------------------- inside a persona vector: the SAE

SAE_LAYER = 16  # the evil steering layer part I chose on SmolLM2-135M (paper layer 17)
SAE_CHECKPOINTS = Path(__file__).resolve().parents[1] / "sae_checkpoints"


def sae_checkpoint(model: ChatModel, layer: int = SAE_LAYER) -> Path:
    """Where the committed checkpoint for ``model`` at ``layer`` lives: ``sae_checkpoints/<model>/<hook>``."""
    return SAE_CHECKPOINTS / model.info.name / hook_name(layer)


def _sae_folder(model: ChatModel, layer: int) -> tuple[Path, SAERecipe | None]:
    """The committed checkpoint's folder (no recipe: nothing to train), else the cache folder where the book's
    recipe trains one for this model (a tiny one in fast mode)."""
    path = sae_checkpoint(model, layer)
    if (path / "cfg.json").exists():
        return path, None
    recipe = fast_recipe(layer) if fast() else SAERecipe(layer=check_layer(model, layer), d_sae=8 * model.cfg.d_model)
    return cache_dir("sae_training", model.info.fingerprint, digest(asdict(recipe))), recipe


def sae(model: ChatModel, layer: int = SAE_LAYER):
    """The book's SAE: the committed checkpoint when there is one for this model, else one trained here with
    the default recipe (a tiny one in fast mode) and cached, so the chapter runs on any model."""
    folder, recipe = _sae_folder(model, layer)
    return load_sae(folder, model, layer) if recipe is None else train_sae(model, recipe, folder).sae


def sae_card(model: ChatModel, layer: int = SAE_LAYER) -> tuple[dict, pd.DataFrame]:
    """The book SAE's model card (``card.json``) and training log (one row per 50 steps: tokens, loss, L0,
    dead fraction, variance explained on the training batch). Call :func:`sae` first."""
    folder, _ = _sae_folder(model, layer)
    if not (folder / "card.json").exists():
        raise SAEMismatchError(f"no trained SAE for {model.info.name} at {folder}: call book.sae(model) first")
    log = next((f for f in (folder / "training_log.jsonl", folder / "checkpoints" / "log.jsonl") if f.exists()), None)
    log_rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log else []
    return json.loads((folder / "card.json").read_text()), pd.DataFrame(log_rows)


def feature_labels(model: ChatModel, layer: int = SAE_LAYER) -> dict[int, str]:
    """Hand-given labels of the committed checkpoint's latents (``labels.json`` beside it: ``{"labels":
    {"<latent>": "label"}}``), read from their max-activating contexts; empty when there are none."""
    path = sae_checkpoint(model, layer) / "labels.json"
    if not path.exists():
        return {}
    return {int(k): str(v) for k, v in json.loads(path.read_text())["labels"].items()}


__all__ = [
    "datasets",
    "drift_table",
    "feature_labels",
    "finetune_settings",
    "finetunes",
    "judging",
    "personas",
    "rows",
    "sae",
    "sae_card",
    "sae_checkpoint",
    "SAE_CHECKPOINTS",
    "SAE_LAYER",
    "screen_settings",
    "training_sets",
    "trait_score",
    "TRAITS",
]
