"""Trait expression under a condition: ask, answer, judge, and keep it on disk.

Causal steering (paper §3.2, Fig. 3) and monitoring (§3.3, Table 2) measure the same two numbers
under different conditions: how strongly the model expresses a trait (the judge's trait score) and
how coherent it stays (the judge's coherence score), on the trait's *evaluation* questions, which
extraction never saw. A condition is

- a list of conversations: a question under a system prompt, or after a many-shot prefix, or bare;
- and optionally a :class:`Steering` edit, ``alpha * v`` added to the residual stream while the
  model answers (:func:`pvlens.steer`).

:func:`trait_expression` samples ``n_per_question`` answers per conversation, judges them and
returns one row per answer; :func:`steering_sweep` runs it over a grid of layers x coefficients;
:func:`choose_layer` picks the paper's steering layer from such a grid; :func:`steered_capability`
runs the capability suite under a steering edit.

Everything is cached, because a rebuilt book should sample and judge nothing twice. Under
``cache_dir("evaluation", "<model>-<fingerprint>", "<trait>-<artifacts hash>")``:

- ``answers.jsonl``: one record per answer, keyed by a hash of everything that shapes it (the
  messages, the steering edit, the vector's bytes, sampling settings, the rollout index); answers
  are generated in fixed chunks whose seed depends only on their keys, so a killed run resumes
  where it stopped and samples what an uninterrupted run would have;
- ``judge-<judge>.jsonl``: that judge's scores, keyed by answer key and the answer's hash.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal, Sequence

import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

from pvlens.chat import Conversation, to_messages
from pvlens.config import cache_dir, fast, size
from pvlens.errors import JudgeError
from pvlens.generation import complete_sentences, generate
from pvlens.hooks import steer
from pvlens.jsonl import AppendLog, digest
from pvlens.judges import Judge, Judgement
from pvlens.traits import TraitArtifacts

JUDGE_CHUNK = 64


def tensor_digest(tensor: Tensor) -> str:
    """A short hash of a tensor's values (float32, contiguous), for cache keys."""
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(t.numpy().tobytes() + str(tuple(t.shape)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Steering:
    """An inference-time edit: ``alpha * v`` added after block ``layers`` while the model answers.

    The fields are :func:`pvlens.steer`'s arguments; ``vectors`` is one ``(d_model,)`` vector or
    per-layer ``(n_layers, d_model)`` vectors (for example ``pv.incremental(v)`` with ``layers="all"``).
    """

    vectors: Tensor
    layers: int | tuple[int, ...] | str
    alpha: float
    positions: Literal["all", "prompt", "response"] = "response"
    units: Literal["raw", "resid"] = "raw"

    def key(self) -> dict:
        layers = self.layers if isinstance(self.layers, (int, str)) else list(self.layers)
        return {"vectors": tensor_digest(getattr(self.vectors, "vectors", self.vectors)), "layers": layers,
                "alpha": float(self.alpha), "positions": self.positions, "units": self.units}

    def context(self, model):
        return steer(model, self.vectors, self.layers, self.alpha, self.positions, self.units)


def _folder(model, artifacts: TraitArtifacts):
    from pvlens.extraction import _slug, artifacts_hash

    return cache_dir("evaluation", f"{_slug(model.info.name)}-{model.info.fingerprint}",
                     f"{artifacts.trait}-{artifacts_hash(artifacts)}")


def _last_user(messages: list[dict]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise ValueError("a conversation to answer needs a user message")
    return users[-1]


def sample_answers(model, artifacts: TraitArtifacts, conversations: Sequence[Conversation], *,
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
    questions = [_last_user(m) for m in messages]
    condition = {"steering": steering.key() if steering else None, "max_new_tokens": max_new_tokens,
                 "temperature": float(temperature), "seed": seed}
    plan = [(c, k) for c in range(len(messages)) for k in range(n_per_question)]
    keys = [digest({**condition, "messages": messages[c], "k": k}) for c, k in plan]

    log = AppendLog(_folder(model, artifacts) / "answers.jsonl", key="key")
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


def trait_expression(model, artifacts: TraitArtifacts, judge: Judge, conversations: Sequence[Conversation], *,
                     steering: Steering | None = None, progress: bool = True, **sampling) -> pd.DataFrame:
    """:func:`sample_answers`, judged: the same rows plus ``trait`` and ``coherence`` (0-100 or NaN).

    ``sampling`` takes :func:`sample_answers`' keywords (``n_per_question``, ``max_new_tokens``,
    ``temperature``, ``seed``, ``batch_size``). Scores are cached per judge.
    """
    if not isinstance(getattr(judge, "name", None), str) or not callable(getattr(judge, "judge", None)):
        raise TypeError("judge must implement pvlens.judges.Judge (a `name` string and a `judge` method)")
    frame = sample_answers(model, artifacts, conversations, steering=steering, progress=progress, **sampling)
    scores = _judged(_folder(model, artifacts), artifacts, judge,
                     list(zip(frame["key"], frame["question"], frame["answer"])), progress)
    frame["trait"] = [scores[key]["trait"] for key in frame["key"]]
    frame["coherence"] = [scores[key]["coherence"] for key in frame["key"]]
    frame[["trait", "coherence"]] = frame[["trait", "coherence"]].astype(float)
    return frame


def _judged(folder, artifacts, judge, items: list[tuple[str, str, str]], progress: bool) -> dict[str, dict]:
    """Scores for (key, question, answer) items, from the judge's log or the judge (then logged)."""
    from pvlens.extraction import _slug

    log = AppendLog(folder / f"judge-{_slug(judge.name)}-{digest(judge.name)[:6]}.jsonl", key="key")
    scores = log.read()
    todo = [(key, q, a) for key, q, a in items if scores.get(key, {}).get("answer_hash") != digest(a)]
    bar = tqdm(total=len(todo), desc=f"{artifacts.trait} judge", unit="answer", disable=not progress or not todo)
    for start in range(0, len(todo), JUDGE_CHUNK):
        chunk = todo[start:start + JUDGE_CHUNK]
        judged = judge.judge(artifacts, [q for _, q, _ in chunk], [a for _, _, a in chunk], progress=False)
        if len(judged) != len(chunk) or not all(isinstance(j, Judgement) for j in judged):
            raise JudgeError(f"judge {judge.name!r} returned {len(judged)} results for {len(chunk)} answers")
        new = [{"key": key, "answer_hash": digest(a), "trait": j.trait, "coherence": j.coherence}
               for (key, _, a), j in zip(chunk, judged)]
        log.append(new)
        scores.update((r["key"], r) for r in new)
        bar.update(len(chunk))
    bar.close()
    return scores


def steering_sweep(model, artifacts: TraitArtifacts, judge: Judge, vectors, layers: Sequence[int],
                   alphas: Sequence[float], *, questions: int | None = None, system: str | None = None,
                   positions: Literal["all", "prompt", "response"] = "response",
                   units: Literal["raw", "resid"] = "raw", progress: bool = True, **kwargs) -> pd.DataFrame:
    """:func:`trait_expression` on the evaluation questions at every (layer, alpha); rows gain both columns.

    ``vectors`` is a :class:`~pvlens.vectors.PersonaVector` or ``(n_layers, d_model)`` tensor; layer
    ``l`` is steered with ``vectors[l]``. ``alpha = 0`` is the unsteered model (sampled once and
    shared by every layer). ``system`` is an optional system prompt for every question (``None``:
    the template's default, the paper's setting).
    """
    per_layer = getattr(vectors, "vectors", vectors)
    asked = list(artifacts.questions("eval")[:questions])
    conversations = [to_messages(q, system) for q in asked]
    frames = []
    grid = [(layer, alpha) for layer in layers for alpha in alphas]
    baseline = None
    for layer, alpha in tqdm(grid, desc=f"{artifacts.trait} sweep", unit="cell", disable=not progress):
        if alpha == 0:
            if baseline is None:
                baseline = trait_expression(model, artifacts, judge, conversations, progress=False, **kwargs)
            frame = baseline.copy()
        else:
            edit = Steering(per_layer[layer], layer, float(alpha), positions, units)
            frame = trait_expression(model, artifacts, judge, conversations, steering=edit, progress=False, **kwargs)
        frames.append(frame.assign(layer=layer, alpha=float(alpha)))
    return pd.concat(frames, ignore_index=True)


def summarise(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean trait score and coherence (with their standard errors and counts) per group."""
    grouped = frame.groupby(list(by))
    out = grouped[["trait", "coherence"]].mean()
    out["trait_sem"] = grouped["trait"].sem()
    out["coherence_sem"] = grouped["coherence"].sem()
    out["n"] = grouped["trait"].count()
    return out.reset_index()


def choose_layer(sweep: pd.DataFrame, alpha: float | None = None, coherence_threshold: float = 50.0) -> int:
    """The paper's layer choice (B.4): at one coefficient, the layer with the highest mean trait score.

    ``alpha`` defaults to the largest coefficient at which some layer keeps mean coherence >=
    ``coherence_threshold``; among layers at that coefficient only those above the threshold compete,
    so a layer that "wins" by breaking the model is not chosen.
    """
    table = summarise(sweep[sweep["alpha"] > 0], ["layer", "alpha"])
    coherent = table[table["coherence"] >= coherence_threshold]
    if alpha is None:
        if coherent.empty:
            raise ValueError(f"no (layer, alpha) cell keeps mean coherence >= {coherence_threshold}")
        alpha = float(coherent["alpha"].max())
    candidates = coherent[coherent["alpha"] == alpha]
    if candidates.empty:
        raise ValueError(f"no layer keeps mean coherence >= {coherence_threshold} at alpha={alpha}")
    return int(candidates.sort_values("trait", ascending=False)["layer"].iloc[0])


def book_grid(model) -> dict:
    """The layer x coefficient grid the book sweeps (chapter "Causal steering"), in ``units="resid"``.

    Every fourth layer from 4 and alphas 0-0.3 of the residual norm on the first 10 evaluation
    questions; ``PVLENS_FAST=1``: two layers, two alphas, 3 questions.
    """
    if fast():
        return {"layers": [model.cfg.n_layers // 3, 2 * model.cfg.n_layers // 3], "alphas": [0.0, 0.2],
                "questions": 3, "units": "resid"}
    return {"layers": list(range(4, model.cfg.n_layers - 1, 4)), "alphas": [0.0, 0.1, 0.2, 0.3], "questions": 10,
            "units": "resid"}


def book_layer(model, artifacts: TraitArtifacts, judge: Judge, vectors) -> int:
    """The steering layer the book uses for a trait: :func:`choose_layer` over :func:`book_grid` (cached)."""
    return choose_layer(steering_sweep(model, artifacts, judge, vectors, progress=False, **book_grid(model)))


def steered_capability(model, steering: Steering | None, tasks: Sequence[str], n_per_task: int,
                       seed: int = 0) -> pd.DataFrame:
    """Capability-suite rows (task, acc, acc_norm, ...) under a steering edit, cached on disk.

    Steer every position (``positions="all"``; the capability module explains why): a ``steering``
    with other positions is rejected.
    """
    from pvlens.capability import capability_suite

    if steering is not None and steering.positions != "all":
        raise ValueError("score capability under steering with positions='all' (every token the model reads)")
    key = digest({"steering": steering.key() if steering else None, "tasks": list(tasks), "n": n_per_task,
                  "seed": seed})
    path = cache_dir("capability", f"{model.info.fingerprint}") / f"{key}.json"
    if path.exists():
        return pd.DataFrame(json.loads(path.read_text()))
    with steering.context(model) if steering else nullcontext():
        report = capability_suite(model, tasks, n_per_task, seed, progress=False)
    rows = report.rows()
    path.with_suffix(".tmp").write_text(json.dumps(rows, default=float))
    path.with_suffix(".tmp").replace(path)
    return pd.DataFrame(rows)


__all__ = ["Steering", "book_grid", "book_layer", "choose_layer", "digest", "sample_answers", "steered_capability", "steering_sweep", "summarise",
           "tensor_digest", "trait_expression"]
