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

Everything is cached, because a rebuilt book should sample and judge nothing twice. The answers live in
:func:`pvlens.lens.sampling.answers_folder` (see :mod:`pvlens.lens.sampling`); beside them,
``judge-<judge>.jsonl`` holds that judge's scores, keyed by answer key and the answer's hash.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import Literal, Sequence

import pandas as pd
from tqdm import tqdm

from pvlens.core.chat import Conversation, to_messages
from pvlens.core.config import cache_dir
from pvlens.core.errors import JudgeError
from pvlens.core.keys import digest, slug
from pvlens.core.logs import AppendLog
from pvlens.judges import Judge, Judgement
from pvlens.lens.hooks import Steering
from pvlens.lens.sampling import answers_folder, sample_answers
from pvlens.methods.capability import capability_suite
from pvlens.models.loading import ChatModel
from pvlens.traits.artifacts import TraitArtifacts

JUDGE_CHUNK = 64


def trait_expression(model: ChatModel, artifacts: TraitArtifacts, judge: Judge,
                     conversations: Sequence[Conversation], *, steering: Steering | None = None,
                     progress: bool = True, **sampling) -> pd.DataFrame:
    """:func:`sample_answers`, judged: the same rows plus ``trait`` and ``coherence`` (0-100 or NaN).

    ``sampling`` takes :func:`sample_answers`' keywords (``n_per_question``, ``max_new_tokens``,
    ``temperature``, ``seed``, ``batch_size``). Scores are cached per judge.
    """
    if not isinstance(getattr(judge, "name", None), str) or not callable(getattr(judge, "judge", None)):
        raise TypeError("judge must implement pvlens.judges.Judge (a `name` string and a `judge` method)")
    frame = sample_answers(model, artifacts, conversations, steering=steering, progress=progress, **sampling)
    scores = _judged(answers_folder(model, artifacts), artifacts, judge,
                     list(zip(frame["key"], frame["question"], frame["answer"])), progress)
    frame["trait"] = [scores[key]["trait"] for key in frame["key"]]
    frame["coherence"] = [scores[key]["coherence"] for key in frame["key"]]
    frame[["trait", "coherence"]] = frame[["trait", "coherence"]].astype(float)
    return frame


def _judged(folder, artifacts, judge, items: list[tuple[str, str, str]], progress: bool) -> dict[str, dict]:
    """Scores for (key, question, answer) items, from the judge's log or the judge (then logged)."""
    log = AppendLog(folder / f"judge-{slug(judge.name)}-{digest(judge.name)[:6]}.jsonl", key="key")
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


def steering_sweep(model: ChatModel, artifacts: TraitArtifacts, judge: Judge, vectors, layers: Sequence[int],
                   alphas: Sequence[float], *, questions: int | None = None, system: str | None = None,
                   positions: Literal["all", "prompt", "response"] = "response",
                   units: Literal["raw", "resid"] = "raw", progress: bool = True, **kwargs) -> pd.DataFrame:
    """:func:`trait_expression` on the evaluation questions at every (layer, alpha); rows gain both columns.

    ``vectors`` is a :class:`~pvlens.lens.vectors.PersonaVector` or ``(n_layers, d_model)`` tensor; layer
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


def steered_capability(model: ChatModel, steering: Steering | None, tasks: Sequence[str], n_per_task: int,
                       seed: int = 0) -> pd.DataFrame:
    """Capability-suite rows (task, acc, acc_norm, ...) under a steering edit, cached on disk.

    Steer every position (``positions="all"``; the capability module explains why): a ``steering``
    with other positions is rejected.
    """
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


__all__ = [
    "choose_layer",
    "JUDGE_CHUNK",
    "steered_capability",
    "steering_sweep",
    "summarise",
    "trait_expression",
]
