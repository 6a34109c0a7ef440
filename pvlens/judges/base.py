"""Judges: one interface for every instrument that scores answers for a trait.

A judge reads (question, answer) pairs for one trait and returns, per answer, a
:class:`Judgement`: a 0-100 **trait score** (or ``None``, "no score", when the judge
declines: a refusal, or too little probability on numbers) and a 0-100 **coherence** score,
plus instrument-specific ``details`` (e.g. the numeric probability mass, or a behavioural
measure such as "the answer admits it does not know").

Two families implement it:

- :class:`pvlens.judges.llm.LLMJudge`: the paper's protocol against any OpenAI-compatible
  chat API (GPT-4.1-mini in the paper; a vLLM server works too);
- :class:`pvlens.judges.offline.OfflineJudge`: runs on a CPU with no key; validated against
  external labelled data, and explicit about the traits it cannot measure.

:func:`pvlens.judges.choice.default_judge` picks the LLM judge when ``PVLENS_JUDGE_MODEL`` is set, else
the offline one. A judge's :attr:`~Judge.name` identifies it in caches: scores from two judges
are never mixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pvlens.traits.artifacts import TraitArtifacts


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


__all__ = [
    "check_pairs",
    "Judge",
    "Judgement",
]
