"""Judges: one interface for every instrument that scores answers for a trait.

A judge reads (question, answer) pairs for one trait and returns, per answer, a
:class:`Judgement`: a 0-100 **trait score** (or ``None``, "no score", when the judge
declines: a refusal, or too little probability on numbers) and a 0-100 **coherence** score,
plus instrument-specific ``details`` (e.g. the numeric probability mass, or a behavioural
measure such as "the answer admits it does not know").

Two families implement it:

- :class:`pvlens.llm_judge.LLMJudge`: the paper's protocol against any OpenAI-compatible
  chat API (GPT-4.1-mini in the paper; a vLLM server works too);
- :class:`pvlens.offline_judge.OfflineJudge`: runs on a CPU with no key; validated against
  external labelled data, and explicit about the traits it cannot measure.

:func:`default_judge` picks the LLM judge when ``PVLENS_JUDGE_MODEL`` is set, else the
offline one. A judge's :attr:`~Judge.name` identifies it in caches: scores from two judges
are never mixed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pvlens.traits import TraitArtifacts


@dataclass
class Judgement:
    """One answer's scores. ``None`` means "no score" (the judge declined or could not tell)."""

    trait: float | None
    coherence: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("trait", "coherence"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 100.0:
                    raise ValueError(f"Judgement.{name} must be None or within [0, 100], got {value!r}")
                setattr(self, name, float(value))


@runtime_checkable
class Judge(Protocol):
    """What every judge provides."""

    name: str  # stable identifier, part of every cache key (e.g. "openai:gpt-4.1-mini-2025-04-14")

    def judge(self, artifacts: TraitArtifacts, questions: Sequence[str], answers: Sequence[str],
              progress: bool = True) -> list[Judgement]:
        """Score ``answers[i]`` (given ``questions[i]``) for ``artifacts.trait`` and coherence."""
        ...


def check_pairs(questions: Sequence[str], answers: Sequence[str]) -> None:
    """Raise a clear error when questions and answers do not line up."""
    if isinstance(questions, str) or isinstance(answers, str):
        raise TypeError("questions and answers must be sequences of strings, not a single string")
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers; they must pair up")
    for i, (q, a) in enumerate(zip(questions, answers)):
        if not isinstance(q, str) or not isinstance(a, str):
            raise TypeError(f"item {i}: question and answer must be strings, got {type(q).__name__}, "
                            f"{type(a).__name__}")


def default_judge() -> Judge:
    """The LLM judge when ``PVLENS_JUDGE_MODEL`` is set (see :mod:`pvlens.openai_api`), else the offline judge."""
    if os.environ.get("PVLENS_JUDGE_MODEL"):
        from pvlens.llm_judge import LLMJudge

        return LLMJudge()
    from pvlens.offline_judge import OfflineJudge

    return OfflineJudge()


def judge_for(model, artifacts: TraitArtifacts) -> Judge:
    """The best judge available for one trait: the LLM judge when configured, else the offline judge's
    validated instrument when it has one, else a :class:`~pvlens.contrast_judge.ContrastJudge` fitted on
    the trait's own prompted answers (and validated on held-out questions)."""
    judge = default_judge()
    supports = getattr(judge, "supports", None)
    if supports is None or supports(artifacts.trait):
        return judge
    from pvlens.contrast_judge import ContrastJudge

    return ContrastJudge.fit(model, artifacts)
