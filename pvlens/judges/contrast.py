"""A judge for a trait of your own, offline: does an answer read like the trait's positive prompts made it?

The paper judges every trait with GPT-4.1-mini, and :class:`~pvlens.judges.llm.LLMJudge` does that for any
trait file when ``PVLENS_JUDGE_MODEL`` points at an OpenAI-compatible server. The offline judge
(:mod:`pvlens.judges.offline`) has validated instruments for a few shipped traits only. For a new trait
offline, pvlens learns a measure from the trait file itself:

1. the model under study answers the 20 **extraction** questions under each of the five positive and the
   five negative system prompts (cached, like every answer in pvlens);
2. a logistic probe on the offline judge's encoder features (mean-pooled layer-12 states of
   Qwen2.5-Coder-0.5B, a different model, so the judge does not read the activations the vectors come
   from) learns to tell the positive-prompt answers from the negative-prompt ones;
3. the probe is validated on answers to the 20 **evaluation** questions, which it never saw, beside a
   length-only scorer. :meth:`ContrastJudge.fit` refuses (``JudgeError``) when the held-out AUC is below
   ``min_auc``: the prompts then did not change the answers in a way the probe can learn.

The trait score is ``100 x P(written under a positive prompt)``. It measures *what the trait's prompts
change in this model's answers*: for a well-written trait file that is the trait; for a sloppy one it may
be length, tone or a stock phrase, which the length baseline and a look at the examples help to rule out.
It is a weaker, self-referential instrument than an external-data probe or an LLM judge, and chapters say
so. Coherence comes from the offline judge's coherence model. The fitted probe is cached on disk, keyed by
the model's weights, the trait file and the sampling settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pvlens.core.chat import to_messages
from pvlens.core.config import cache_dir, fast, size
from pvlens.core.errors import JudgeError
from pvlens.core.keys import digest, slug
from pvlens.core.stats import auc
from pvlens.judges.base import Judgement, check_pairs
from pvlens.judges.offline import LogisticProbe, OfflineJudge, encoder, train_probe
from pvlens.lens.sampling import sample_answers
from pvlens.models.loading import ChatModel
from pvlens.traits.artifacts import N_PAIRS, TraitArtifacts, artifacts_hash


def prompted_answers(model: ChatModel, artifacts: TraitArtifacts, split: str, n_per_question: int,
                     max_new_tokens: int, questions: int | None = None) -> tuple[list[str], list[int]]:
    """Answers to one split's (first ``questions``) questions under every positive (label 1) and negative
    (label 0) prompt."""
    texts, labels = [], []
    for pair in range(N_PAIRS):
        for polarity in ("pos", "neg"):
            system = artifacts.system_prompt(pair, polarity)
            asked = artifacts.questions(split)[:questions]
            frame = sample_answers(model, artifacts, [to_messages(q, system) for q in asked],
                                   n_per_question=n_per_question, max_new_tokens=max_new_tokens, progress=False)
            texts += [a.strip() for a in frame["answer"]]
            labels += [int(polarity == "pos")] * len(frame)
    keep = [i for i, t in enumerate(texts) if t]
    return [texts[i] for i in keep], [labels[i] for i in keep]


class ContrastJudge:
    """Trait score = 100 x P(the answer was written under one of the trait's positive prompts).

    Build it with :meth:`fit`; ``validation`` holds the held-out AUC, the length-only AUC and the
    sample sizes.
    """

    def __init__(self, trait: str, probe: LogisticProbe, validation: dict) -> None:
        self.trait, self.probe, self.validation = trait, probe, validation
        self.name = f"contrast:{trait}:{validation['key']}"

    @classmethod
    def fit(cls, model: ChatModel, artifacts: TraitArtifacts, *, n_per_question: int | None = None,
            max_new_tokens: int | None = None, questions: int | None = None,
            min_auc: float | None = None) -> ContrastJudge:
        """Sample the prompted answers, train the probe on the extraction split, validate on the eval split.

        Defaults: 1 answer per (question, prompt) of up to 64 tokens on all 20 + 20 questions, refusing below a
        held-out AUC of 0.7. ``PVLENS_FAST=1`` (a check of the code path, not of the result): 3 + 3
        questions, 16 tokens, and no refusal (``min_auc`` 0), since 30 held-out answers cannot settle it.
        """
        n_per_question = size(1, 1) if n_per_question is None else n_per_question
        max_new_tokens = size(64, 16) if max_new_tokens is None else max_new_tokens
        questions = size(20, 3) if questions is None else questions
        min_auc = (0.0 if fast() else 0.7) if min_auc is None else min_auc
        settings = {"n": n_per_question, "max_new_tokens": max_new_tokens, "questions": questions,
                    "encoder": encoder().name}
        key = digest({**settings, "artifacts": artifacts_hash(artifacts), "model": model.info.fingerprint})[:10]
        path = cache_dir("contrast-judge", slug(model.info.name)) / f"{artifacts.trait}-{key}.safetensors"
        if path.exists():
            probe = LogisticProbe.load(path)
        else:
            train_texts, train_labels = prompted_answers(model, artifacts, "extract", n_per_question, max_new_tokens,
                                                         questions)
            held_texts, held_labels = prompted_answers(model, artifacts, "eval", n_per_question, max_new_tokens,
                                                       questions)
            positives = [t for t, y in zip(train_texts, train_labels) if y]
            negatives = [t for t, y in zip(train_texts, train_labels) if not y]
            if not positives or not negatives:
                raise JudgeError(f"no non-empty answers under the {'positive' if not positives else 'negative'} "
                                 f"prompts of {artifacts.trait!r}; cannot train a contrast judge")
            probe = train_probe(f"contrast-{artifacts.trait}", positives, negatives, l2=1e-1, progress=False)
            held = probe.proba(encoder().encode(held_texts)).tolist()
            probe.meta.update({"key": key, **settings, "n_train": len(train_texts), "n_heldout": len(held_texts),
                               "heldout_auc": auc(held, held_labels),
                               "length_auc": auc([len(t) for t in held_texts], held_labels)})
            probe.save(path)
        validation = {k: probe.meta[k] for k in ("key", "n_train", "n_heldout", "heldout_auc", "length_auc")}
        judge = cls(artifacts.trait, probe, validation)
        if validation["heldout_auc"] < min_auc:
            raise JudgeError(f"the contrast judge for {artifacts.trait!r} separates held-out positive from negative "
                             f"answers only at AUC {validation['heldout_auc']:.2f} (< {min_auc}); the prompts barely "
                             "change this model's answers. Sharpen the instructions, or use an LLM judge "
                             "(PVLENS_JUDGE_MODEL)")
        return judge

    def judge(self, artifacts: TraitArtifacts, questions: Sequence[str], answers: Sequence[str],
              progress: bool = True) -> list[Judgement]:
        check_pairs(questions, answers)
        if artifacts.trait != self.trait:
            raise JudgeError(f"this contrast judge was fitted for {self.trait!r}, not {artifacts.trait!r}")
        if not answers:
            return []
        texts = [a.strip() for a in answers]
        with torch.no_grad():
            p = self.probe.proba(encoder().encode([t or " " for t in texts], progress=progress)).tolist()
        coherence = OfflineJudge().coherence(texts)
        return [Judgement(100.0 * q if t else None, c, {"instrument": "contrast"})
                for t, q, c in zip(texts, p, coherence)]


__all__ = [
    "ContrastJudge",
    "prompted_answers",
]
