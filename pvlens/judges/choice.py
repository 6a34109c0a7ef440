"""Which judge scores a trait: the LLM judge when one is configured, else the best offline instrument.

Kept apart from :mod:`pvlens.judges.base` so the interface never imports its implementations.
"""

from __future__ import annotations

import os

from pvlens.judges.base import Judge
from pvlens.judges.contrast import ContrastJudge
from pvlens.judges.llm import LLMJudge
from pvlens.judges.offline import OfflineJudge
from pvlens.models.loading import ChatModel
from pvlens.traits.artifacts import TraitArtifacts


def default_judge() -> Judge:
    """The LLM judge when ``PVLENS_JUDGE_MODEL`` is set (see :mod:`pvlens.models.openai_api`), else the
    offline judge."""
    if os.environ.get("PVLENS_JUDGE_MODEL"):
        return LLMJudge()
    return OfflineJudge()


def judge_for(model: ChatModel, artifacts: TraitArtifacts) -> Judge:
    """The best judge available for one trait: the LLM judge when configured, else the offline judge's
    validated instrument when it has one, else a :class:`~pvlens.judges.contrast.ContrastJudge` fitted on
    the trait's own prompted answers (and validated on held-out questions)."""
    judge = default_judge()
    supports = getattr(judge, "supports", None)
    if supports is None or supports(artifacts.trait):
        return judge
    return ContrastJudge.fit(model, artifacts)


__all__ = [
    "default_judge",
    "judge_for",
]
