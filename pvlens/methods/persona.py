"""A trait's persona: its artifacts, its judge, its per-layer persona vectors and the layer chosen to use them.

Every method after extraction needs the same four things for a trait: the trait file (questions, rubric), a judge
that scores answers for it, the mean-difference vectors at every layer (paper §2) and one layer to steer, monitor
and screen at (the paper's B.4 choice: the layer where steering raises the trait most while the model stays
coherent). :class:`Persona` holds them, and :meth:`Persona.of` builds one from ``(model, trait)`` with the standard
recipe, from the disk caches when they hold it:

1. extract with :func:`extraction_settings` and the default judge (:func:`pvlens.default_judge`), keeping the
   ``response_avg`` vectors;
2. choose the layer by :func:`pvlens.choose_layer` over a steering sweep on :func:`layer_grid`;
3. score with :func:`pvlens.judge_for` (the LLM judge when configured, else the best offline instrument).

The book, the ``pvlens`` command and every chapter use this one recipe, so they share one cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from jaxtyping import Float
from torch import Tensor

from pvlens.core.config import fast
from pvlens.judges import Judge, default_judge, judge_for
from pvlens.lens.checks import check_layer, unit
from pvlens.lens.hooks import Steering
from pvlens.lens.projection import residual_norms
from pvlens.methods.evaluation import choose_layer, steering_sweep, trait_expression
from pvlens.methods.extraction import extract_persona
from pvlens.methods.screening.screen import Probe
from pvlens.models.loading import ChatModel
from pvlens.traits.artifacts import TraitArtifacts, load_trait


def extraction_settings() -> dict:
    """The standard extraction sizes (the book's and the ``pvlens`` command's), so every user shares one cache.

    Full: all 20 extraction questions x 5 instruction pairs x 2 rollouts x pos/neg (400 answers of up
    to 64 tokens; the paper: 10 rollouts of up to 1000), filtered at the paper's 50/50/50.

    ``PVLENS_FAST=1`` (CI size, a check of the code paths, not of the results): 3 questions, 1 rollout,
    32 tokens, and thresholds 0, so every pair is kept (the unfiltered mean difference). At that size a
    135M model often yields no pair that passes the paper's filter for some traits (hallucinating kept 6
    of 200 at full size), and a chapter must still run end to end; the summary prints the thresholds.
    """
    if fast():
        return {"questions": 3, "n_per_question": 1, "max_new_tokens": 32, "batch_size": 32,
                "trait_threshold": 0.0, "coherence_threshold": 0.0}
    return {"questions": 20, "n_per_question": 2, "max_new_tokens": 64, "batch_size": 32}


def layer_grid(model: ChatModel) -> dict:
    """The layer x coefficient grid swept to choose a persona's layer, in ``units="resid"``.

    Every fourth layer from 4 and alphas 0-0.3 of the residual norm on the first 10 evaluation
    questions; ``PVLENS_FAST=1``: two layers, two alphas, 2 questions.
    """
    if fast():
        return {"layers": [model.cfg.n_layers // 3, 2 * model.cfg.n_layers // 3], "alphas": [0.0, 0.2],
                "questions": 2, "units": "resid"}
    return {"layers": list(range(4, model.cfg.n_layers - 1, 4)), "alphas": [0.0, 0.1, 0.2, 0.3], "questions": 10,
            "units": "resid"}


def persona_layer(model: ChatModel, artifacts: TraitArtifacts, judge: Judge,
                  vectors: Float[Tensor, "n_layers d_model"]) -> int:
    """The layer a persona is used at: :func:`pvlens.choose_layer` over a sweep on :func:`layer_grid` (cached)."""
    return choose_layer(steering_sweep(model, artifacts, judge, vectors, progress=False, **layer_grid(model)))


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
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or not 0 <= self.layer < len(self.vectors):
            raise ValueError(f"Persona layer {self.layer!r} is not one of the vectors' layers "
                             f"0..{len(self.vectors) - 1}")

    @classmethod
    def of(cls, model: ChatModel, trait: str | Path | TraitArtifacts, *, layer: int | None = None,
           judge: Judge | None = None) -> Persona:
        """The persona of ``trait`` (a shipped name, a trait file or loaded artifacts) in ``model``.

        Extracted with :func:`extraction_settings` and the default judge, at the layer :func:`persona_layer`
        chooses (or ``layer``, which skips the steering sweep), scored by ``judge`` (default
        :func:`pvlens.judge_for`, which may fit a contrast judge for a trait with no offline instrument).
        Everything is cached on disk: only a cold cache samples, judges or sweeps.
        """
        artifacts = trait if isinstance(trait, TraitArtifacts) else load_trait(trait)
        extraction_judge = default_judge()
        vectors = extract_persona(model, artifacts, extraction_judge, progress=False,
                                  **extraction_settings()).vectors["response_avg"]
        if layer is None:
            layer = persona_layer(model, artifacts, extraction_judge, vectors)
        else:
            layer = check_layer(model, layer)
        return cls(artifacts, judge if judge is not None else judge_for(model, artifacts), vectors, layer)

    @property
    def trait(self) -> str:
        return self.artifacts.trait

    @property
    def direction(self) -> Float[Tensor, " d_model"]:
        """The unit persona vector at the chosen layer."""
        return unit(self.vectors[self.layer])

    def scaled(self, model: ChatModel) -> Float[Tensor, " d_model"]:
        """The unit vector times the base model's mean residual norm at the layer: ``alpha`` is then a
        fraction of the residual stream (the book's unit), and the same tensor steers base and finetunes."""
        return self.direction * residual_norms(model)[self.layer].item()

    def prompts(self, questions: int | None = None) -> list[str]:
        """The first ``questions`` evaluation questions (all when ``None``)."""
        return list(self.artifacts.questions("eval")[:questions])

    @property
    def probe(self) -> Probe:
        """The unit vector at the chosen layer as a screening :class:`~pvlens.methods.screening.screen.Probe`."""
        return Probe.from_vector(self.trait, self.vectors[self.layer], self.layer)

    def expression(self, model: ChatModel, *, steering: Steering | None = None, questions: int | None = None,
                   **sampling) -> pd.DataFrame:
        """Judged answers to the evaluation questions (cached; see :func:`pvlens.trait_expression`)."""
        return trait_expression(model, self.artifacts, self.judge, self.prompts(questions), steering=steering,
                                progress=False, **sampling)


__all__ = [
    "extraction_settings",
    "layer_grid",
    "Persona",
    "persona_layer",
]
