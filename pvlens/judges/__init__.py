"""Judges: the instruments that score answers for a trait (0-100) and for coherence.

- :mod:`~pvlens.judges.base`: the :class:`Judge` interface and the :class:`Judgement` it returns;
- :mod:`~pvlens.judges.llm`: the paper's protocol against an OpenAI-compatible server;
- :mod:`~pvlens.judges.offline`: probes on a second model's states, validated on external labelled data;
- :mod:`~pvlens.judges.contrast`: a probe fitted on a trait file's own prompted answers, for new traits offline;
- :mod:`~pvlens.judges.choice`: which of them a trait gets;
- :mod:`~pvlens.judges.training`: how the offline probes were trained and validated (``pvlens judge-validate``).
"""

from pvlens.judges.base import Judge, Judgement, check_pairs
from pvlens.judges.choice import default_judge, judge_for
from pvlens.judges.contrast import ContrastJudge
from pvlens.judges.llm import LLMJudge
from pvlens.judges.offline import OfflineJudge

__all__ = [
    "check_pairs",
    "ContrastJudge",
    "default_judge",
    "Judge",
    "judge_for",
    "Judgement",
    "LLMJudge",
    "OfflineJudge",
]
