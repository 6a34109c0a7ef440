"""Finetuning drift along persona vectors, and what each mitigation leaves of it.

The paper's claims (§4.2, Fig. 5-7): finetuning on trait-laden or flawed data changes the model's
traits, and the change is visible *before* any answer is read, as a **finetuning shift**: the mean
last-prompt-token activation over the evaluation prompts, finetuned minus base, projected on the
unit persona vector at the chosen layer. Across many finetunes the shift tracks the trait score
(Pearson r = 0.76-0.97).

:class:`Persona` bundles what a trait needs for that measurement (its artifacts, judge, vector and
layer). :func:`drift_table` measures a set of finetunes (``None`` = the base model) against a set of
personas: one row per (finetune, trait) with the judged trait score, coherence and the shift.
:func:`shift_correlations` gives the per-trait Pearson r of shift against score. :func:`posthoc` and
:func:`capability_of` measure a finetune under inference-time steering (the post-hoc baseline) and
its general ability. Everything expensive is cached by :mod:`pvlens.evaluation` under the merged
model's fingerprint, so a rebuilt chapter only re-reads results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from pvlens.evaluation import Steering, steered_capability, trait_expression
from pvlens.finetuning import Adapter, finetuned
from pvlens.hooks import residual_norms, unit
from pvlens.judges import Judge
from pvlens.projection import activations
from pvlens.stats import pearson_by
from pvlens.traits import TraitArtifacts


@dataclass
class Persona:
    """One trait's measuring kit: artifacts, judge, per-layer persona vectors and the chosen layer."""

    artifacts: TraitArtifacts
    judge: Judge
    vectors: Float[Tensor, "n_layers d_model"]
    layer: int

    def __post_init__(self) -> None:
        self.vectors = getattr(self.vectors, "vectors", self.vectors).detach().float().cpu()
        if self.vectors.ndim != 2:
            raise ValueError(f"Persona needs per-layer vectors (n_layers, d_model), got {tuple(self.vectors.shape)}")

    @property
    def trait(self) -> str:
        return self.artifacts.trait

    @property
    def direction(self) -> Float[Tensor, "d_model"]:
        """The unit persona vector at the chosen layer."""
        return unit(self.vectors[self.layer])

    def scaled(self, model) -> Float[Tensor, "d_model"]:
        """The unit vector times the base model's mean residual norm at the layer: ``alpha`` is then a
        fraction of the residual stream (the book's unit), and the same tensor steers base and finetunes."""
        return self.direction * residual_norms(model)[self.layer].item()

    def prompts(self, questions: int | None = None) -> list[str]:
        return list(self.artifacts.questions("eval")[:questions])

    @property
    def probe(self):
        """The unit vector at the chosen layer as a :class:`pvlens.screening.Probe` (for ΔP screening)."""
        from pvlens.screening import Probe

        return Probe.from_vector(self.trait, self.vectors[self.layer], self.layer)


def last_prompt_means(model, personas: Sequence[Persona]) -> dict[str, Float[Tensor, "d_model"]]:
    """Mean last-prompt-token activation at each persona's layer over its evaluation prompts."""
    return {p.trait: activations(model, p.prompts(), [p.layer])[p.layer].mean(0) for p in personas}


def finetuning_shift(model, adapter: Adapter | None, personas: Sequence[Persona],
                     base: Mapping[str, Tensor] | None = None) -> dict[str, float]:
    """The paper's finetuning shift per trait: ``(mean_ft - mean_base) · v/|v|`` at the chosen layer."""
    base = base if base is not None else last_prompt_means(model, personas)
    with finetuned(model, adapter):
        return _projected_shift(last_prompt_means(model, personas), base, personas)


def _projected_shift(tuned: Mapping[str, Tensor], base: Mapping[str, Tensor], personas: Sequence[Persona]) -> dict[str, float]:
    return {p.trait: float((tuned[p.trait] - base[p.trait]) @ p.direction) for p in personas}


def base_projection(model, persona: Persona) -> float:
    """Mean last-prompt projection of the base model on the unit vector (what CAFT's ablation removes)."""
    acts = activations(model, persona.prompts(), [persona.layer])[persona.layer]
    return float((acts @ persona.direction).mean())


def expression(model, persona: Persona, *, steering: Steering | None = None, questions: int | None = None,
               **sampling) -> pd.DataFrame:
    """Judged answers to the persona's evaluation questions (cached; see :func:`pvlens.trait_expression`)."""
    return trait_expression(model, persona.artifacts, persona.judge, persona.prompts(questions), steering=steering,
                            progress=False, **sampling)


def trait_score_after(model, adapter: Adapter | None, persona: Persona, **kwargs) -> float:
    """Mean judged trait score of a finetune (``None``: the base model) on the persona's evaluation questions."""
    with finetuned(model, adapter):
        return float(expression(model, persona, **kwargs)["trait"].mean())


def drift_table(model, adapters: Mapping[str, Adapter | None], personas: Sequence[Persona], *,
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
                f = expression(model, p, questions=questions, **sampling)
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


def posthoc(model, adapter: Adapter | None, persona: Persona, alpha: float, *, questions: int | None = None,
            **sampling) -> pd.DataFrame:
    """The post-hoc baseline: the finetune answers while steered *against* the trait (``-alpha``).

    ``alpha`` is a fraction of the base model's residual norm at the persona's layer, applied at the
    response positions (as in part I).
    """
    edit = Steering(persona.scaled(model), persona.layer, -float(alpha), positions="response", units="raw") \
        if alpha else None
    with finetuned(model, adapter):
        return expression(model, persona, steering=edit, questions=questions, **sampling)


def capability_of(model, adapter: Adapter | None, tasks: Sequence[str], n_per_task: int,
                  steering: Steering | None = None) -> pd.DataFrame:
    """Capability-suite rows for a finetune (optionally steered on every token), cached."""
    with finetuned(model, adapter):
        return steered_capability(model, steering, tasks, n_per_task)


def against(persona: Persona, model, alpha: float) -> Steering:
    """The post-hoc edit for the capability suite: ``-alpha`` at every position."""
    return Steering(persona.scaled(model), persona.layer, -float(alpha), positions="all", units="raw")


# ---------------------------------------------------------------- the book's part II set-up, in one place

BOOK_TRAITS = ("evil", "sycophantic", "hallucinating")


def book_personas(model, traits: Sequence[str] = BOOK_TRAITS, layer: int | None = None) -> dict[str, Persona]:
    """Part I's persona per trait: the ``response_avg`` vectors of the book's extraction, at the layer the
    steering chapter chose (or at ``layer``, which skips the steering sweep), with the trait's judge (all
    cached: only a cold cache computes them)."""
    from pvlens.evaluation import book_layer
    from pvlens.extraction import book_settings, extract_persona
    from pvlens.judges import default_judge, judge_for
    from pvlens.traits import load_trait

    judge, out = default_judge(), {}
    for trait in traits:
        artifacts = load_trait(trait)
        vectors = extract_persona(model, artifacts, judge, progress=False, **book_settings()).vectors["response_avg"]
        chosen = book_layer(model, artifacts, judge, vectors) if layer is None else layer
        out[trait] = Persona(artifacts, judge_for(model, artifacts), vectors, chosen)
    return out


def book_datasets(full: bool | None = None) -> list[tuple[str, str]]:
    """The (dataset, level) pairs part II finetunes: every trait and EM-like set at every level, or four in
    fast mode that cover each code path."""
    from pvlens.config import fast
    from pvlens.datasets import EM_DATASETS, LEVELS

    full = not fast() if full is None else full
    if not full:
        return [("evil", "normal"), ("evil", "II"), ("sycophantic", "II"), ("gsm8k", "II")]
    return [(t, level) for t in BOOK_TRAITS for level in LEVELS] + [(e, level) for e in EM_DATASETS for level in LEVELS]


def book_training_sets(full: bool | None = None) -> dict[str, list]:
    """``{"<dataset> <level>": rows}``: exactly the conversations each part II model is trained on."""
    from pvlens.datasets import load_dataset
    from pvlens.finetuning import book_rows

    return {f"{name} {level}": load_dataset(name, level)[:book_rows(full)] for name, level in book_datasets(full)}


def book_finetunes(model, full: bool | None = None, progress: bool = True) -> dict[str, Adapter | None]:
    """``{"base": None, "<dataset> <level>": adapter}`` with the book's settings (trained once, then cached)."""
    from pvlens.finetuning import book_finetune_settings, finetune

    settings = book_finetune_settings(full)
    adapters: dict[str, Adapter | None] = {"base": None}
    for label, rows in book_training_sets(full).items():
        adapters[label] = finetune(model, rows, settings=settings, name=label.replace(" ", "-"), progress=progress)
    return adapters


def book_judging() -> dict:
    """The book's judging size for a finetune: 20 evaluation questions x 2 answers (3 x 1 in fast mode)."""
    from pvlens.config import size

    return {"questions": size(20, 3), "n_per_question": size(2, 1)}


def book_drift_table(model, adapters: Mapping[str, Adapter | None], personas: Sequence[Persona]) -> pd.DataFrame:
    """:func:`drift_table` at the book's size (:func:`book_judging`), cached."""
    return drift_table(model, adapters, personas, **book_judging())


def book_trait_score(model, adapter: Adapter | None, persona: Persona) -> float:
    """:func:`trait_score_after` at the book's size (:func:`book_judging`), cached; ``None`` = the base model."""
    return trait_score_after(model, adapter, persona, **book_judging())


__all__ = [
    "against", "base_projection", "book_datasets", "book_drift_table", "book_finetunes", "book_judging",
    "book_personas", "book_training_sets", "book_trait_score", "BOOK_TRAITS", "capability_of", "cross_trait",
    "drift_table", "expression", "finetuning_shift", "last_prompt_means", "Persona", "posthoc",
    "shift_correlations", "trait_score_after"]
