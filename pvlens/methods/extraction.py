"""Extracting a persona vector: contrastive rollouts, a judge filter, and a mean difference.

The paper's pipeline (§2, Appendix A), for one trait on one model:

1. **Rollouts.** Every extraction question is asked under each of the five instruction pairs'
   *positive* system prompt (the assistant is told to show the trait) and *negative* one (told to
   avoid it), ``n_per_question`` times each, sampling at temperature 1. Row ``{trait}_{i}_{q}_{k}_pos``
   and row ``{trait}_{i}_{q}_{k}_neg`` form a *pair*: same instruction pair ``i``, question ``q`` and
   rollout index ``k``. Rollouts come from the model itself (:func:`pvlens.generate`), or from an
   OpenAI-compatible server serving the same model (``rollouts="remote"``; vLLM on a GPU).
2. **Judging.** A :class:`~pvlens.judges.Judge` scores every answer for the trait and for coherence
   (0-100, or ``None`` for "no score").
3. **Filtering.** A pair is kept only if the positive answer shows the trait (score >= 50), the
   negative one does not (< 50) and both are coherent (>= 50); this is the reference code's
   ``get_persona_effective``. Every dropped pair gets one reason (see :data:`REASONS`).
4. **Mean difference.** The kept (system prompt + question + answer) texts are run through the
   model and, per layer, the mean residual stream over positive rows minus the mean over negative
   rows is the persona vector. Three variants differ in which tokens are averaged within a row:
   ``response_avg`` (the answer's tokens; the paper's default), ``prompt_avg`` (every prompt token,
   the assistant header included) and ``prompt_last`` (the last prompt token only).

Rollouts take most of the time (2,000 per trait at the paper's size), so every step is cached and
resumable. Under ``cache_dir("extraction", "<model>-<fingerprint>", "<trait>-<artifacts hash>")``:

- ``rollouts-<key>.jsonl``: one JSON record per rollout, appended (and fsync'd) chunk by chunk;
  ``<key>`` hashes everything that shapes a sample (rollout engine, ``n_per_question``,
  ``max_new_tokens``, temperature, top-p, seed), and the folder names the model's weights and the
  artifacts, so a changed setting never meets a stale record;
- ``judge-<key>-<judge>.jsonl``: the judge's scores for those rollouts, keyed by ``judge.name``;
- ``vectors-<hash>/``: the three vector files of a finished run, keyed by the rollout key, the judge,
  the thresholds and the kept answers themselves, so a re-run loads them without a forward pass.

Generation walks a fixed plan (question, then instruction pair, then rollout, then pos/neg) in
chunks of ``batch_size`` prompts, each sampled with its own fixed seed. A run that is killed and
started again skips the chunks on disk and samples the rest exactly as an uninterrupted run would
(the same records, byte for byte, on the same machine). A line torn by the kill is dropped and its
chunk re-sampled. Asking for the first few questions samples a prefix of the full plan, so a later
full run reuses it. One process per cache folder at a time.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from pvlens.core.chat import chat_ids, encode, prompt_and_response
from pvlens.core.config import cache_dir, size
from pvlens.core.errors import EmptySelectionError, JudgeError, PVLensError
from pvlens.core.keys import digest, model_folder, slug
from pvlens.core.logs import AppendLog
from pvlens.core.stats import auc
from pvlens.judges import Judge, Judgement
from pvlens.lens.generation import complete_sentences, generate
from pvlens.lens.projection import activations, project, resid_post
from pvlens.lens.vectors import PersonaVector, from_tensor
from pvlens.models.loading import ChatModel
from pvlens.models.openai_api import chat_rollouts
from pvlens.traits.artifacts import N_PAIRS, TraitArtifacts, artifacts_hash

VARIANTS = ("response_avg", "prompt_avg", "prompt_last")
POLARITIES = ("pos", "neg")
#: Why a pair is dropped. A pair gets the first reason that applies, in this order.
REASONS = ("unpaired", "empty answer", "no score", "incoherent", "pos trait too low", "neg trait too high")
CACHE_FORMAT = 2  # 2: answers cut by the token budget are trimmed to complete sentences
JUDGE_CHUNK = 64  # answers per judge call (and per append to the judge log)
TOP_P = 1.0


# ---------------------------------------------------------------- cache helpers

def _jsonable(details: dict) -> dict:
    out = {}
    for key, value in details.items():
        try:
            json.dumps(value)
            out[str(key)] = value
        except (TypeError, ValueError):
            out[str(key)] = repr(value)
    return out


# ---------------------------------------------------------------- the plan

@dataclass(frozen=True)
class _Item:
    question: int
    pair: int
    k: int
    polarity: str

    def id(self, trait: str) -> str:
        return f"{trait}_{self.pair}_{self.question}_{self.k}_{self.polarity}"


def _plan(n_questions: int, n_per_question: int) -> list[_Item]:
    return [_Item(q, i, k, pol) for q in range(n_questions) for i in range(N_PAIRS)
            for k in range(n_per_question) for pol in POLARITIES]


def _messages(artifacts: TraitArtifacts, item: _Item) -> list[dict]:
    return [{"role": "system", "content": artifacts.system_prompt(item.pair, item.polarity)},
            {"role": "user", "content": artifacts.questions("extract")[item.question]}]


def _rollout_engine(rollouts: str | None) -> dict:
    if rollouts is None:
        rollouts = "remote" if os.environ.get("PVLENS_ROLLOUT_MODEL") else "local"
    if rollouts == "local":
        return {"engine": "local"}
    if rollouts == "remote":
        name = os.environ.get("PVLENS_ROLLOUT_MODEL")
        if not name:
            raise PVLensError("rollouts='remote' needs PVLENS_ROLLOUT_MODEL (the served model's name) and, for a "
                              "server other than OpenAI's, PVLENS_ROLLOUT_BASE_URL (e.g. http://localhost:8000/v1)")
        return {"engine": "remote", "model": name, "base_url": os.environ.get("PVLENS_ROLLOUT_BASE_URL", "")}
    raise ValueError(f"rollouts must be 'local', 'remote' or None (remote when PVLENS_ROLLOUT_MODEL is set), "
                     f"got {rollouts!r}")


def _sample(model: ChatModel, engine: dict, conversations: list, *, max_new_tokens: int, temperature: float,
            seed: int) -> list[dict]:
    """One chunk of answers, as record fields."""
    if engine["engine"] == "remote":
        answers = chat_rollouts(conversations, model=engine["model"], n=1, temperature=temperature, top_p=TOP_P,
                                max_tokens=max_new_tokens, seed=seed)
        if len(answers) != len(conversations):
            raise PVLensError(f"the rollout server answered {len(answers)} of {len(conversations)} prompts")
        return [{"answer": a[0] if a and isinstance(a[0], str) else ""} for a in answers]  # "": dropped as empty
    outs = generate(model, conversations, max_new_tokens=max_new_tokens, temperature=temperature, top_p=TOP_P,
                    seed=seed, batch_size=len(conversations), min_new_tokens=1, progress=False)
    return [{"answer": g.response if g.finished else complete_sentences(g.response), "n_tokens": len(g.response_ids),
             "finished": g.finished} for g in outs]


# ---------------------------------------------------------------- filtering

def drop_reason(pos: dict, neg: dict | None, trait_threshold: float = 50.0,
                coherence_threshold: float = 50.0) -> str | None:
    """Why the pair (``pos``, ``neg``) is dropped, or ``None`` if it is kept.

    Each side is a mapping with ``answer``, ``trait`` and ``coherence``. Kept: pos trait >=
    ``trait_threshold``, neg trait < ``100 - trait_threshold`` and both coherences >=
    ``coherence_threshold`` (the reference code's rule; 50/50/50 in the paper).
    """
    if pos is None or neg is None:
        return "unpaired"
    if not str(pos["answer"]).strip() or not str(neg["answer"]).strip():
        return "empty answer"
    scores = [pos["trait"], pos["coherence"], neg["trait"], neg["coherence"]]
    if any(s is None or pd.isna(s) for s in scores):
        return "no score"
    if pos["coherence"] < coherence_threshold or neg["coherence"] < coherence_threshold:
        return "incoherent"
    if pos["trait"] < trait_threshold:
        return "pos trait too low"
    if neg["trait"] >= 100 - trait_threshold:
        return "neg trait too high"
    return None


def filter_pairs(rollouts: pd.DataFrame, trait_threshold: float = 50.0,
                 coherence_threshold: float = 50.0) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply :func:`drop_reason` to row-aligned pairs.

    ``rollouts`` needs the columns ``pair``, ``question``, ``k``, ``polarity``, ``answer``,
    ``trait`` and ``coherence``. Returns a copy with ``kept`` (bool) and ``reason`` (``None`` when
    kept) on both rows of every pair, and the count of dropped pairs per reason (in :data:`REASONS` order).
    """
    frame = rollouts.copy()
    sides: dict[tuple, dict[str, int]] = {}
    for row, (i, q, k, pol) in enumerate(zip(frame["pair"], frame["question"], frame["k"], frame["polarity"])):
        if pol not in POLARITIES:
            raise ValueError(f"row {row}: polarity must be 'pos' or 'neg', got {pol!r}")
        sides.setdefault((i, q, k), {})[pol] = row
    reasons: list[str | None] = [None] * len(frame)
    columns = ["answer", "trait", "coherence"]
    records = frame[columns].to_dict("records")
    for side in sides.values():
        pos, neg = (records[side[p]] if p in side else None for p in POLARITIES)
        reason = drop_reason(pos, neg, trait_threshold, coherence_threshold)
        for row in side.values():
            reasons[row] = reason
    frame["reason"] = pd.Series(reasons, index=frame.index, dtype=object)  # None, not NaN, when kept
    frame["kept"] = [r is None for r in reasons]
    counts = Counter(reasons[next(iter(side.values()))] for side in sides.values())
    return frame, {r: counts[r] for r in REASONS if counts[r]}


def _describe_filter(trait_threshold: float, coherence_threshold: float) -> str:
    return (f"pos trait >= {trait_threshold:g}, neg trait < {100 - trait_threshold:g}, "
            f"coherence >= {coherence_threshold:g} on both")


# ---------------------------------------------------------------- mean difference

def _row_ids(tokenizer, system: str, question: str, answer: str) -> tuple[list[int], list[int]]:
    conversation = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    try:
        return prompt_and_response(tokenizer, conversation, answer)
    except ValueError:  # the answer would merge with the assistant header: tokenize it on its own
        return chat_ids(tokenizer, conversation), encode(tokenizer, answer)


def _variant_means(model: ChatModel, rows: list[tuple[list[int], list[int]]], batch_size: int,
                   bar: tqdm) -> dict[str, Float[Tensor, "n_layers d_model"]]:
    """Per variant, the mean over rows of each row's token average, at every layer."""
    layers = list(range(model.cfg.n_layers))
    sums = {v: torch.zeros(len(layers), model.cfg.d_model, dtype=torch.float64) for v in VARIANTS}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        acts = resid_post(model, [p + r for p, r in chunk], layers, batch_size)
        for j, (prompt, _) in enumerate(chunk):
            a = torch.stack([acts[layer][j] for layer in layers]).double()  # (n_layers, seq, d_model)
            sums["response_avg"] += a[:, len(prompt):].mean(1)
            sums["prompt_avg"] += a[:, :len(prompt)].mean(1)
            sums["prompt_last"] += a[:, len(prompt) - 1]
        bar.update(len(chunk))
    return {v: (s / len(rows)).float() for v, s in sums.items()}


# ---------------------------------------------------------------- the result

@dataclass
class ExtractionResult:
    """What :func:`extract_persona` made, and how."""

    trait: str
    model: str
    vectors: dict[str, PersonaVector]  # variant -> vectors (n_layers, d_model)
    rollouts: pd.DataFrame  # id, pair, question, k, polarity, system, answer, trait, coherence, kept, reason
    dropped: dict[str, int]  # reason -> dropped pairs
    counts: dict[str, int]  # generated / cached / judged / judge_cached
    settings: dict = field(default_factory=dict)
    folder: Path | None = None  # the cache folder

    @property
    def kept(self) -> int:
        """Number of pairs that passed the filter."""
        return int(self.rollouts["kept"].sum()) // 2

    @property
    def pairs(self) -> int:
        return len(self.rollouts) // 2

    def summary(self) -> str:
        s, c = self.settings, self.counts
        lines = [
            f"persona vector extraction: {self.trait!r} on {self.model}",
            f"  rollouts {len(self.rollouts)} = {s['questions']} questions x {N_PAIRS} instruction pairs x "
            f"{s['n_per_question']} x pos/neg, <= {s['max_new_tokens']} new tokens ({s['rollouts']['engine']}): "
            f"{c['generated']} generated now, {c['cached']} from cache",
            f"  judge    {s['judge']}: {c['judged']} scored now, {c['judge_cached']} from cache",
            f"  filter   {_describe_filter(s['trait_threshold'], s['coherence_threshold'])}: "
            f"kept {self.kept} of {self.pairs} pairs",
        ]
        if self.dropped:
            lines.append("  dropped  " + ", ".join(f"{r}: {n}" for r, n in self.dropped.items()))
        if self.vectors:
            main = self.vectors.get("response_avg") or next(iter(self.vectors.values()))
            norms = main.norms()
            top = int(norms.argmax())
            lines.append(f"  vectors  {', '.join(self.vectors)}: ({main.n_layers}, {main.d_model}) each; "
                         f"{main.variant} norm peaks at layer {top} ({norms[top]:.2f})")
        if self.folder is not None:
            lines.append(f"  cache    {self.folder}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------- the pipeline

def extract_persona(model: ChatModel, artifacts: TraitArtifacts, judge: Judge, *, n_per_question: int | None = None,
                    max_new_tokens: int | None = None, questions: int | None = None, batch_size: int = 16,
                    trait_threshold: float = 50.0, coherence_threshold: float = 50.0, temperature: float = 1.0,
                    seed: int = 0, rollouts: Literal["local", "remote"] | None = None,
                    progress: bool = True) -> ExtractionResult:
    """Extract ``artifacts.trait``'s persona vectors (all three variants) from ``model``.

    Args:
        model: a :class:`~pvlens.models.loading.ChatModel`; its activations make the vectors.
        artifacts: the trait's instruction pairs, questions and rubric.
        judge: scores each answer for the trait and coherence; ``judge.name`` keys its cache.
        n_per_question: rollouts per (instruction pair, question, polarity); default ``size(10, 1)``.
        max_new_tokens: answer length cap; default ``size(128, 48)`` (the paper: 1000).
        questions: use the first this many of the 20 extraction questions (default: all).
        batch_size: prompts per generation chunk, and rows per forward pass.
        trait_threshold, coherence_threshold: the filter (see :func:`drop_reason`).
        temperature: sampling temperature (the paper: 1.0).
        seed: fixes every chunk's sampling seed.
        rollouts: ``"local"`` (the model itself) or ``"remote"`` (an OpenAI-compatible server named by
            ``PVLENS_ROLLOUT_MODEL`` / ``PVLENS_ROLLOUT_BASE_URL``); default remote when that is set.
        progress: show progress bars.

    Raises:
        EmptySelectionError: no pair passed the filter; ``err.result`` holds the judged rollouts.
    """
    n_per_question = size(10, 1) if n_per_question is None else n_per_question
    max_new_tokens = size(128, 48) if max_new_tokens is None else max_new_tokens
    all_questions = artifacts.questions("extract")
    n_questions = len(all_questions) if questions is None else questions
    limits = (("n_per_question", n_per_question, 1, None), ("max_new_tokens", max_new_tokens, 1, None),
              ("questions", n_questions, 1, len(all_questions)), ("batch_size", batch_size, 1, None))
    for name, value, low, high in limits:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            raise ValueError(f"{name} must be an integer in [{low}, {high or 'inf'}], got {value!r}")
    if not 0 <= trait_threshold <= 100 or not 0 <= coherence_threshold <= 100:
        raise ValueError("thresholds are scores in [0, 100]")
    if not isinstance(getattr(judge, "name", None), str) or not callable(getattr(judge, "judge", None)):
        raise TypeError("judge must implement pvlens.judges.Judge (a `name` string and a `judge` method)")
    engine = _rollout_engine(rollouts)
    trait, tok = artifacts.trait, model.hf_tokenizer
    folder = cache_dir("extraction", model_folder(model.info),
                       f"{trait}-{artifacts_hash(artifacts)}")
    sampling = {"format": CACHE_FORMAT, "rollouts": engine, "n_per_question": n_per_question,
                "max_new_tokens": max_new_tokens, "temperature": float(temperature), "top_p": TOP_P, "seed": seed}
    key = digest(sampling, 12)
    plan = _plan(n_questions, n_per_question)
    ids = [item.id(trait) for item in plan]
    settings = {**sampling, "questions": n_questions, "judge": judge.name, "artifacts": artifacts_hash(artifacts),
                "trait_threshold": float(trait_threshold), "coherence_threshold": float(coherence_threshold)}

    # 1. rollouts, chunk by chunk
    log = AppendLog(folder / f"rollouts-{key}.jsonl")
    answers = log.read()
    cached = sum(i in answers for i in ids)
    chunks = [range(s, min(s + batch_size, len(plan))) for s in range(0, len(plan), batch_size)]
    todo = [(c, chunk) for c, chunk in enumerate(chunks) if any(ids[j] not in answers for j in chunk)]
    generated = 0
    for c, chunk in tqdm(todo, desc=f"{trait} rollouts", unit="chunk", disable=not progress or not todo):
        fields = _sample(model, engine, [_messages(artifacts, plan[j]) for j in chunk], max_new_tokens=max_new_tokens,
                         temperature=temperature, seed=int(digest(["chunk", seed, batch_size, c], 12), 16) % 2**31)
        new = [{"id": ids[j], "pair": plan[j].pair, "question": plan[j].question, "k": plan[j].k,
                "polarity": plan[j].polarity, **f} for j, f in zip(chunk, fields) if ids[j] not in answers]
        log.append(new)
        answers.update((r["id"], r) for r in new)
        generated += len(new)

    # 2. judge scores, keyed by judge.name
    scores_log = AppendLog(folder / f"judge-{key}-{slug(judge.name)}-{digest(judge.name, 12)[:6]}.jsonl")
    scores = scores_log.read()
    fingerprints = {i: digest(answers[i]["answer"], 12) for i in ids}
    todo_ids = [i for i in ids if scores.get(i, {}).get("answer_hash") != fingerprints[i]]
    bar = tqdm(total=len(todo_ids), desc=f"{trait} judge", unit="answer", disable=not progress or not todo_ids)
    for start in range(0, len(todo_ids), JUDGE_CHUNK):
        chunk = todo_ids[start:start + JUDGE_CHUNK]
        qs = [all_questions[answers[i]["question"]] for i in chunk]
        judged = judge.judge(artifacts, qs, [answers[i]["answer"] for i in chunk], progress=False)
        if len(judged) != len(chunk) or not all(isinstance(j, Judgement) for j in judged):
            raise JudgeError(f"judge {judge.name!r} returned {len(judged)} results for {len(chunk)} answers; "
                             "it must return one Judgement per answer")
        new = [{"id": i, "answer_hash": fingerprints[i], "trait": j.trait, "coherence": j.coherence,
                "details": _jsonable(j.details)} for i, j in zip(chunk, judged)]
        scores_log.append(new)
        scores.update((r["id"], r) for r in new)
        bar.update(len(chunk))
    bar.close()
    counts = {"generated": generated, "cached": cached,
              "judged": len(todo_ids), "judge_cached": len(ids) - len(todo_ids)}

    # 3. the filter
    frame = pd.DataFrame([{
        "id": i, "pair": item.pair, "question": all_questions[item.question], "k": item.k, "polarity": item.polarity,
        "system": artifacts.system_prompt(item.pair, item.polarity), "answer": answers[i]["answer"],
        "trait": scores[i]["trait"], "coherence": scores[i]["coherence"],
    } for i, item in zip(ids, plan)])
    frame[["trait", "coherence"]] = frame[["trait", "coherence"]].astype(float)
    frame, dropped = filter_pairs(frame, trait_threshold, coherence_threshold)
    result = ExtractionResult(trait, model.info.name, {}, frame, dropped, counts, settings, folder)
    if result.kept == 0:
        breakdown = ", ".join(f"{r}: {n}" for r, n in dropped.items())
        err = EmptySelectionError(
            f"no rollout pair passed the filter ({_describe_filter(trait_threshold, coherence_threshold)}): "
            f"{result.pairs} pairs dropped ({breakdown}). Try more rollouts (n_per_question), longer answers "
            "(max_new_tokens), a stronger model (the paper uses 7-8B chat models; rollouts='remote' with "
            "PVLENS_ROLLOUT_MODEL serves one), or a stronger judge (PVLENS_JUDGE_MODEL). Rollouts and scores "
            f"are cached in {folder}, so a re-run only redoes what changed.")
        err.result = result  # type: ignore[attr-defined]
        raise err

    # 4. vectors, cached by what went into them
    kept = frame[frame["kept"]]
    vkey = digest({**settings, "kept": [[i, fingerprints[i]] for i in kept["id"]]}, 12)
    vfolder = folder / f"vectors-{vkey}"
    paths = {v: vfolder / f"{trait}_{v}.safetensors" for v in VARIANTS}
    if (vfolder / "manifest.json").exists() and all(p.exists() for p in paths.values()):
        result.vectors = {v: PersonaVector.load(p, model) for v, p in paths.items()}
        return result
    rows = {pol: [_row_ids(tok, r.system, r.question, r.answer) for r in kept.itertuples() if r.polarity == pol]
            for pol in POLARITIES}
    with tqdm(total=len(kept), desc=f"{trait} activations", unit="row", disable=not progress) as bar:
        means = {pol: _variant_means(model, rows[pol], batch_size, bar) for pol in POLARITIES}
    n_pos, n_neg = len(rows["pos"]), len(rows["neg"])
    for v in VARIANTS:
        vector = from_tensor(model, means["pos"][v] - means["neg"][v], trait, v, n_pos=n_pos, n_neg=n_neg,
                             **settings, dropped=dropped)
        vector.save(paths[v])
        result.vectors[v] = vector
    manifest = vfolder / "manifest.json"  # written last: its presence marks a complete set
    manifest.with_suffix(".tmp").write_text(json.dumps({**settings, "kept": result.kept, "dropped": dropped}, indent=1))
    manifest.with_suffix(".tmp").replace(manifest)
    return result


# ---------------------------------------------------------------- held-out check

def prompt_separation(model: ChatModel, artifacts: TraitArtifacts, vector: PersonaVector | dict[str, PersonaVector],
                      split: Literal["extract", "eval"] = "eval", layers: Sequence[int] | None = None,
                      questions: int | None = None, batch_size: int = 16) -> dict:
    """How well the vector tells the positive system prompts from the negative ones, before any answer.

    Every ``split`` question (or the first ``questions`` of them) is asked under each instruction
    pair's positive and negative system prompt; the last prompt token's projection on ``vector``'s
    unit direction at each layer is scored, and the result is the AUC of positive vs negative per
    layer (1.0: every positive prompt projects higher; 0.5: chance). The forward pass stops at the
    deepest layer asked for.

    ``vector`` may also be a dict of named vectors (e.g. the three variants): the prompts are run
    once and the result is ``{name: {layer: auc}}``.
    """
    named = vector if isinstance(vector, dict) else {None: vector}
    for v in named.values():
        v.check(model)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    asked = artifacts.questions(split)[:questions]
    conversations, labels = [], []
    for i in range(N_PAIRS):
        for pol in POLARITIES:
            for question in asked:
                conversations.append([{"role": "system", "content": artifacts.system_prompt(i, pol)},
                                      {"role": "user", "content": question}])
                labels.append(int(pol == "pos"))
    acts = activations(model, conversations, layers, positions="last", batch_size=batch_size)
    out = {name: {layer: auc(project(acts[layer], v[layer]).tolist(), labels) for layer in layers}
           for name, v in named.items()}
    return out if isinstance(vector, dict) else out[None]


__all__ = [
    "artifacts_hash",
    "drop_reason",
    "extract_persona",
    "ExtractionResult",
    "filter_pairs",
    "prompt_separation",
    "REASONS",
    "VARIANTS",
]
