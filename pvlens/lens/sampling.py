"""Answers on disk: sample a model's answers to a trait's questions once, then read them back.

Steering (paper §3.2), monitoring (§3.3) and every judged number after them start from the same thing: the
model's answers to a list of conversations, possibly under a :class:`~pvlens.lens.hooks.Steering` edit.
:func:`sample_answers` generates them with :func:`pvlens.generate` and keeps them under
``cache_dir("evaluation", "<model>-<fingerprint>", "<trait>-<artifacts hash>")`` in ``answers.jsonl``: one
record per answer, keyed by a hash of everything that shapes it (the messages, the steering edit, the vector's
bytes, sampling settings, the rollout index). Answers are generated in fixed chunks whose seed depends only on
their keys, so a killed run resumes where it stopped and samples what an uninterrupted run would have.
Judging them is :func:`pvlens.methods.evaluation.trait_expression`'s job.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm import tqdm

from pvlens.core.chat import Conversation, to_messages
from pvlens.core.config import cache_dir, size
from pvlens.core.keys import digest, model_folder
from pvlens.core.logs import AppendLog
from pvlens.lens.generation import complete_sentences, generate
from pvlens.lens.hooks import Steering
from pvlens.models.loading import ChatModel
from pvlens.traits.artifacts import TraitArtifacts, artifacts_hash


def answers_folder(model: ChatModel, artifacts: TraitArtifacts) -> Path:
    """The cache folder of one (model, trait file): its answers and every judge's scores of them."""
    return cache_dir("evaluation", model_folder(model.info), f"{artifacts.trait}-{artifacts_hash(artifacts)}")


def last_user(messages: list[dict]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise ValueError("a conversation to answer needs a user message")
    return users[-1]


def sample_answers(model: ChatModel, artifacts: TraitArtifacts, conversations: Sequence[Conversation], *,
                   steering: Steering | None = None, n_per_question: int = 1, max_new_tokens: int | None = None,
                   temperature: float = 1.0, seed: int = 0, batch_size: int = 32,
                   progress: bool = True) -> pd.DataFrame:
    """Answer every conversation ``n_per_question`` times (steered if asked), from the cache where possible.

    Returns one row per answer: ``key`` (the cache key), ``conversation`` (its index), ``k``,
    ``question`` (the last user message), ``answer``, ``n_tokens``, ``finished``. Answers cut off by
    ``max_new_tokens`` (default ``size(64, 32)``) are trimmed to their last complete sentence, as in
    extraction. Cached and resumable (see the module docstring).
    """
    max_new_tokens = size(64, 32) if max_new_tokens is None else max_new_tokens
    if isinstance(conversations, str) or len(conversations) == 0:
        raise ValueError("conversations must be a non-empty list of prompts or message lists")
    if isinstance(n_per_question, bool) or not isinstance(n_per_question, int) or n_per_question < 1:
        raise ValueError(f"n_per_question must be a positive integer, got {n_per_question!r}")
    if steering is not None:  # validate the edit before anything is sampled
        with steering.context(model):
            pass
    messages = [to_messages(c) for c in conversations]
    questions = [last_user(m) for m in messages]
    condition = {"steering": steering.key() if steering else None, "max_new_tokens": max_new_tokens,
                 "temperature": float(temperature), "seed": seed}
    plan = [(c, k) for c in range(len(messages)) for k in range(n_per_question)]
    keys = [digest({**condition, "messages": messages[c], "k": k}) for c, k in plan]

    log = AppendLog(answers_folder(model, artifacts) / "answers.jsonl", key="key")
    answers = log.read()
    chunks = [range(s, min(s + batch_size, len(plan))) for s in range(0, len(plan), batch_size)]
    todo = [chunk for chunk in chunks if any(keys[j] not in answers for j in chunk)]
    for chunk in tqdm(todo, desc=f"{artifacts.trait} answers", unit="chunk", disable=not progress or not todo):
        chunk_seed = int(digest([keys[j] for j in chunk]), 16) % 2**31
        with steering.context(model) if steering else nullcontext():
            outs = generate(model, [messages[plan[j][0]] for j in chunk], max_new_tokens=max_new_tokens,
                            temperature=temperature, seed=chunk_seed, batch_size=len(chunk), min_new_tokens=1,
                            progress=False)
        new = [{"key": keys[j], "answer": g.response if g.finished else complete_sentences(g.response),
                "n_tokens": len(g.response_ids), "finished": g.finished}
               for j, g in zip(chunk, outs) if keys[j] not in answers]
        log.append(new)
        answers.update((r["key"], r) for r in new)
    return pd.DataFrame([{"key": key, "conversation": c, "k": k, "question": questions[c],
                          "answer": answers[key]["answer"], "n_tokens": answers[key]["n_tokens"],
                          "finished": answers[key]["finished"]} for (c, k), key in zip(plan, keys)])


__all__ = [
    "answers_folder",
    "last_user",
    "sample_answers",
]
