"""Finetuning drift along persona vectors, and what each mitigation leaves of it.

The paper's claims (§4.2, Fig. 5-7): finetuning on trait-laden or flawed data changes the model's
traits, and the change is visible *before* any answer is read, as a **finetuning shift**: the mean
last-prompt-token activation over the evaluation prompts, finetuned minus base, projected on the
unit persona vector at the chosen layer. Across many finetunes the shift tracks the trait score
(Pearson r = 0.76-0.97).

A :class:`~pvlens.methods.persona.Persona` holds what a trait needs for that measurement (its artifacts,
judge, vectors and layer). :func:`drift_table` measures a set of finetunes (``None`` = the base model) against a set of
personas: one row per (finetune, trait) with the judged trait score, coherence and the shift.
:func:`shift_correlations` gives the per-trait Pearson r of shift against score. :func:`posthoc` and
:func:`capability_of` measure a finetune under inference-time steering (the post-hoc baseline) and
its general ability. Everything expensive is cached by :mod:`pvlens.methods.evaluation` under the merged
model's fingerprint, so a rebuilt chapter only re-reads results.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from pvlens.core.stats import pearson_by
from pvlens.lens.hooks import Steering
from pvlens.lens.projection import activations
from pvlens.methods.evaluation import steered_capability
from pvlens.methods.finetuning import Adapter, finetuned
from pvlens.methods.persona import Persona
from pvlens.models.loading import ChatModel


def last_prompt_means(model: ChatModel, personas: Sequence[Persona]) -> dict[str, Float[Tensor, " d_model"]]:
    """Mean last-prompt-token activation at each persona's layer over its evaluation prompts."""
    return {p.trait: activations(model, p.prompts(), [p.layer])[p.layer].mean(0) for p in personas}


def finetuning_shift(model: ChatModel, adapter: Adapter | None, personas: Sequence[Persona],
                     base: Mapping[str, Tensor] | None = None) -> dict[str, float]:
    """The paper's finetuning shift per trait: ``(mean_ft - mean_base) · v/|v|`` at the chosen layer."""
    base = base if base is not None else last_prompt_means(model, personas)
    with finetuned(model, adapter):
        return _projected_shift(last_prompt_means(model, personas), base, personas)


def _projected_shift(tuned: Mapping[str, Tensor], base: Mapping[str, Tensor],
                     personas: Sequence[Persona]) -> dict[str, float]:
    return {p.trait: float((tuned[p.trait] - base[p.trait]) @ p.direction) for p in personas}


def base_projection(model: ChatModel, persona: Persona) -> float:
    """Mean last-prompt projection of the base model on the unit vector (what CAFT's ablation removes)."""
    acts = activations(model, persona.prompts(), [persona.layer])[persona.layer]
    return float((acts @ persona.direction).mean())


def trait_score_after(model: ChatModel, adapter: Adapter | None, persona: Persona, **kwargs) -> float:
    """Mean judged trait score of a finetune (``None``: the base model) on the persona's evaluation questions."""
    with finetuned(model, adapter):
        return float(persona.expression(model, **kwargs)["trait"].mean())


def drift_table(model: ChatModel, adapters: Mapping[str, Adapter | None], personas: Sequence[Persona], *,
                questions: int | None = None, **sampling) -> pd.DataFrame:
    """One row per (finetune, trait): ``trait_score``, ``coherence``, ``shift``, ``n`` (answers judged).

    ``adapters`` maps a label to an adapter (``None``: the base model, shift 0). ``sampling`` goes to
    :func:`pvlens.trait_expression` (``n_per_question``, ``max_new_tokens``...).
    """
    base = last_prompt_means(model, personas)
    rows = []
    for label, adapter in adapters.items():
        with finetuned(model, adapter):
            shift = _projected_shift(last_prompt_means(model, personas), base, personas)
            for p in personas:
                f = p.expression(model, questions=questions, **sampling)
                rows.append({"finetune": label, "trait": p.trait, "trait_score": f["trait"].mean(),
                             "coherence": f["coherence"].mean(), "shift": shift[p.trait], "n": len(f)})
    return pd.DataFrame(rows)


def shift_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson r (and two-sided p) of shift against trait score, per trait, over the finetunes in ``table``."""
    return pearson_by(table, "shift", "trait_score", by="trait").rename(columns={"n": "n_finetunes"})


def cross_trait(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson r of the shift along trait A's vector against trait B's score (paper Fig. 20, left).

    Reads :func:`drift_table`'s rows: each (finetune, trait) row already holds the shift along that
    trait's vector and that trait's score.
    """
    shifts = table.pivot(index="finetune", columns="trait", values="shift")
    scores = table.pivot(index="finetune", columns="trait", values="trait_score")
    names = list(dict.fromkeys(table["trait"]))
    matrix = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            x, y = shifts[a].to_numpy(), scores[b].to_numpy()
            if x.std() > 0 and y.std() > 0:
                matrix[i, j] = float(np.corrcoef(x, y)[0, 1])
    return pd.DataFrame(matrix, index=[f"shift along {a}" for a in names], columns=[f"{b} score" for b in names])


def posthoc(model: ChatModel, adapter: Adapter | None, persona: Persona, alpha: float, *, questions: int | None = None,
            **sampling) -> pd.DataFrame:
    """The post-hoc baseline: the finetune answers while steered *against* the trait (``-alpha``).

    ``alpha`` is a fraction of the base model's residual norm at the persona's layer, applied at the
    response positions (as in part I).
    """
    edit = Steering(persona.scaled(model), persona.layer, -float(alpha), positions="response", units="raw") \
        if alpha else None
    with finetuned(model, adapter):
        return persona.expression(model, steering=edit, questions=questions, **sampling)


def capability_of(model: ChatModel, adapter: Adapter | None, tasks: Sequence[str], n_per_task: int,
                  steering: Steering | None = None) -> pd.DataFrame:
    """Capability-suite rows for a finetune (optionally steered on every token), cached."""
    with finetuned(model, adapter):
        return steered_capability(model, steering, tasks, n_per_task)


def against(persona: Persona, model: ChatModel, alpha: float) -> Steering:
    """The post-hoc edit for the capability suite: ``-alpha`` at every position."""
    return Steering(persona.scaled(model), persona.layer, -float(alpha), positions="all", units="raw")


__all__ = [
    "against",
    "base_projection",
    "capability_of",
    "cross_trait",
    "drift_table",
    "finetuning_shift",
    "last_prompt_means",
    "posthoc",
    "shift_correlations",
    "trait_score_after",
]
