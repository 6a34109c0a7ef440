"""Screening training data with the projection difference (ΔP), before anyone finetunes on it.

The paper's §6 (Fig. 8-10): for a sample with prompt ``x`` and dataset response ``y``, and the base
model's own ("natural") response ``y'`` to the same prompt,

    ΔP_i = [a(x, y) - a(x, y')] · v̂          (sample level; the dataset level is the mean)

where ``a`` is the mean residual stream over the response tokens at the persona vector's layer and
``v̂`` the unit persona vector. A dataset whose answers sit further along ``v̂`` than the model's
own answers would pull the model that way. Three cheaper readings come out of the same passes:

- **raw projection** ``a(x, y) · v̂``: no base response (Fig. 21);
- **prompt-only proxy** ``a(x, y) · v̂ - h(x)[-1] · v̂``: the base response replaced by the last
  prompt token, read from the *same* forward pass, so no generation at all (Fig. 23);
- ``h(x)[-1] · v̂`` itself, the monitor of part I.

How it runs: samples are read leniently (:func:`read_samples`: a bad line is skipped and reported
with its line number, never a crash), split into chunks, and each chunk is scored by
:func:`score_chunk` -- greedy base responses for the prompts that have none yet, then forward
passes batched by length under a token budget that stop at the deepest layer needed. The driver
(:func:`screen`) owns every cache: base responses are stored per (model, prompt, generation
settings) and reused across traits and files, finished samples are appended to a results log as
each chunk ends, so a killed run resumes where it stopped. The chunk is also the unit of work
shipped to Ray (:mod:`pvlens.methods.screening.ray`): local and Ray runs execute the same function on the same
chunks, so they give the same numbers.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm

from pvlens.core.chat import Message, chat_ids, encode, prompt_and_response
from pvlens.core.config import cache_dir
from pvlens.core.errors import PVLensError
from pvlens.core.keys import digest
from pvlens.core.logs import AppendLog
from pvlens.core.stats import auc
from pvlens.data.datasets import DatasetError, check_conversation
from pvlens.data.labelled import sharegpt
from pvlens.judges import judge_for
from pvlens.lens.checks import check_layer, unit
from pvlens.lens.generation import generate
from pvlens.lens.projection import block_outputs, right_padded
from pvlens.models.loading import ChatModel
from pvlens.models.openai_api import chat_rollouts
from pvlens.traits.artifacts import load_trait


class ScreenError(PVLensError, ValueError):
    """Screening cannot start: an empty or unreadable file, a bad probe, a bad setting."""


# ---------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    """One chat to screen: the prompt messages and the response under test (the last assistant turn)."""

    id: str
    line: int
    prompt: tuple  # of message dicts, ending with the last user turn
    response: str

    @property
    def key(self) -> str:
        """Content hash: the same sample in another file reuses its cached scores."""
        return digest({"prompt": list(self.prompt), "response": self.response})

    @property
    def prompt_key(self) -> str:
        return digest(list(self.prompt))

    def to_json(self) -> dict:
        return {"id": self.id, "line": self.line, "prompt": list(self.prompt), "response": self.response}

    @classmethod
    def from_json(cls, record: dict) -> "Sample":
        return cls(record["id"], record["line"], tuple(record["prompt"]), record["response"])


@dataclass
class ReadReport:
    """What :func:`read_samples` found: the samples and every skipped line with its reason."""

    path: str
    samples: list[Sample]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    def skip(self, line: int, reason: str) -> None:
        self.skipped.append((line, reason))


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from None


def parse_sample(record, number: int) -> Sample:
    """One JSONL record ``{"messages": [...], "id"?: ...}`` as a :class:`Sample` (DatasetError if malformed)."""
    if not isinstance(record, dict) or "messages" not in record:
        raise DatasetError("not an object with a 'messages' list")
    messages = check_conversation(record["messages"], "sample")
    sample_id = record.get("id", f"line-{number}")
    return Sample(str(sample_id), number, tuple(messages[:-1]), messages[-1]["content"])


def read_samples(path: str | Path) -> ReadReport:
    """Read a chat-format JSONL file leniently: each unusable line is skipped and reported, never fatal.

    Skipped (with the line number): lines that are not UTF-8 or not JSON, records without a
    ``messages`` list, conversations without a (non-empty, final) assistant turn. Blank lines are
    ignored. Raises :class:`ScreenError` for a missing file or one with no usable sample.
    """
    path = Path(path)
    if not path.is_file():
        raise ScreenError(f"no data file at {path}")
    report = ReadReport(str(path), [])
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = _decode(raw)
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DatasetError(f"not JSON ({err.msg} at column {err.colno})") from None
                report.samples.append(parse_sample(record, number))
            except DatasetError as err:
                report.skip(number, str(err).removeprefix("sample: "))
    if not report.samples:
        detail = f"; {len(report.skipped)} lines skipped, first: line {report.skipped[0][0]}: {report.skipped[0][1]}" \
            if report.skipped else " (the file is empty)"
        raise ScreenError(f"{path} holds no sample to screen{detail}")
    return report


# ---------------------------------------------------------------- probes


@dataclass(frozen=True)
class Probe:
    """A named unit direction at one layer: what a projection is taken on."""

    name: str
    layer: int
    direction: tuple  # unit vector, as floats (JSON-able, so a probe ships to Ray workers as is)

    @classmethod
    def from_vector(cls, name: str, vector: Float[Tensor, " d_model"], layer: int) -> "Probe":
        v = torch.as_tensor(vector).detach().float().flatten().cpu()
        if not torch.isfinite(v).all() or v.norm() == 0:
            raise ScreenError(f"probe {name!r}: the vector is zero or not finite")
        return cls(name, int(layer), tuple(unit(v).tolist()))

    def tensor(self) -> Float[Tensor, " d_model"]:
        return torch.tensor(self.direction, dtype=torch.float32)

    def key(self) -> dict:
        return {"name": self.name, "layer": self.layer, "direction": digest([round(x, 7) for x in self.direction])}


def check_probes(model: ChatModel, probes: Sequence[Probe]) -> list[Probe]:
    if not probes:
        raise ScreenError("no probe given: pass at least one (trait, vector, layer)")
    names = [p.name for p in probes]
    if len(set(names)) != len(names):
        raise ScreenError(f"probe names must be unique, got {names}")
    for p in probes:
        check_layer(model, p.layer)
        if len(p.direction) != model.cfg.d_model:
            raise ScreenError(f"probe {p.name!r} has {len(p.direction)} dimensions; the model has d_model "
                              f"{model.cfg.d_model}")
    return list(probes)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class ScreenSettings:
    """How samples are scored. ``proxy=True`` skips base responses (prompt-only proxy and raw projection)."""

    proxy: bool = False
    max_tokens: int = 2048           # prompt + response; longer samples are skipped and reported
    max_batch_tokens: int = 8192     # padded tokens per forward pass
    chunk_size: int = 64             # samples per unit of work (a results-log flush, a Ray task)
    base_max_new_tokens: int = 128   # the base model's greedy answer (the paper: greedy, T = 0)
    base_batch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_batch_tokens", "chunk_size", "base_max_new_tokens", "base_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ScreenError(f"{name} must be a positive integer, got {value!r}")
        if self.max_batch_tokens < self.max_tokens:
            raise ScreenError(f"max_batch_tokens ({self.max_batch_tokens}) must be >= max_tokens ({self.max_tokens})")

    def base_key(self) -> dict:
        return {"max_new_tokens": self.base_max_new_tokens, "temperature": 0.0}


# ---------------------------------------------------------------- scoring one chunk


def token_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length and grouped so that ``len(batch) * longest <= max_batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


def split_ids(tokenizer, prompt: Sequence[Message], response: str) -> tuple[list[int], list[int]]:
    """Prompt ids (ending with the assistant header) and response ids, as the model reads them in one sequence.

    The response is tokenized as a continuation of the templated prompt; where that would re-tokenize
    the end of the prompt (a response starting with a space or newline in some tokenizers), it is
    tokenized on its own instead, so every real-world answer can be scored.
    """
    try:
        return prompt_and_response(tokenizer, list(prompt), response)
    except ValueError:
        return chat_ids(tokenizer, list(prompt)), encode(tokenizer, response)


@torch.no_grad()
def response_readings(model: ChatModel, pairs: Sequence[tuple[list[int], list[int]]], probes: Sequence[Probe],
                      max_batch_tokens: int) -> tuple[Float[Tensor, "n probes"], Float[Tensor, "n probes"]]:
    """For each (prompt ids, response ids): mean projection over response tokens, and the last prompt token's.

    One forward pass per batch, stopped at the deepest probe layer. Right padding: with causal
    attention no real position sees a pad token. The projection of the mean equals the mean of
    per-token projections (it is linear).
    """
    layers = sorted({p.layer for p in probes})
    by_layer = {layer: torch.stack([p.tensor() for p in probes if p.layer == layer]) for layer in layers}
    columns = {layer: [i for i, p in enumerate(probes) if p.layer == layer] for layer in layers}
    response_mean = torch.full((len(pairs), len(probes)), float("nan"))
    prompt_last = torch.full((len(pairs), len(probes)), float("nan"))
    device = model.cfg.device
    for batch in token_batches([len(p) + len(r) for p, r in pairs], max_batch_tokens):
        ids, mask = right_padded([pairs[i][0] + pairs[i][1] for i in batch])
        captured = block_outputs(model.hf_model, ids.to(device), mask.to(device), layers)
        for layer in layers:
            acts = captured[layer].float().cpu()
            for row, i in enumerate(batch):
                n_prompt, n_response = len(pairs[i][0]), len(pairs[i][1])
                prompt_last[i, columns[layer]] = acts[row, n_prompt - 1] @ by_layer[layer].T
                if n_response:
                    mean = acts[row, n_prompt:n_prompt + n_response].mean(0)
                    response_mean[i, columns[layer]] = mean @ by_layer[layer].T
    return response_mean, prompt_last


def base_responses(model: ChatModel, prompts: Sequence[Sequence[Message]], settings: ScreenSettings) -> list[str]:
    """The base model's greedy answers (the paper's natural responses for real-world data)."""
    out = generate(model, [list(p) for p in prompts], max_new_tokens=settings.base_max_new_tokens, temperature=0.0,
                   batch_size=settings.base_batch_size, progress=False)
    return [g.response for g in out]


def score_chunk(model: ChatModel, samples: Sequence[Sample], probes: Sequence[Probe], settings: ScreenSettings,
                known_base: dict[str, str] | None = None) -> list[dict]:
    """Score one chunk: one record per sample with its readings per probe (the unit of work, local or Ray).

    ``known_base`` maps prompt keys to base responses already generated; the rest are generated
    here (greedy) and returned in the records so the driver can cache them. A sample longer than
    ``settings.max_tokens`` gets a record with ``skipped`` set instead of scores.
    """
    tok, known_base = model.hf_tokenizer, dict(known_base or {})
    records, todo = [], []
    for s in samples:
        prompt_ids, response_ids = split_ids(tok, s.prompt, s.response)
        n = len(prompt_ids) + len(response_ids)
        record = {"key": s.key, "prompt_key": s.prompt_key, "id": s.id, "line": s.line,
                  "prompt_tokens": len(prompt_ids), "response_tokens": len(response_ids)}
        if n > settings.max_tokens:
            record["skipped"] = f"{n} tokens > max_tokens {settings.max_tokens}"
        elif not response_ids:
            record["skipped"] = "the response has no tokens"
        else:
            todo.append((s, prompt_ids, response_ids))
        records.append(record)
    by_key = {r["key"]: r for r in records}
    if not todo:
        return records
    readings = response_readings(model, [(p, r) for _, p, r in todo], probes, settings.max_batch_tokens)
    base_proj = None
    if not settings.proxy:
        missing = list({s.prompt_key: s.prompt for s, _, _ in todo if s.prompt_key not in known_base}.items())
        if missing:
            known_base.update(zip([k for k, _ in missing], base_responses(model, [p for _, p in missing], settings)))
        base_pairs = [split_ids(tok, s.prompt, known_base[s.prompt_key]) for s, _, _ in todo]
        base_proj, _ = response_readings(model, base_pairs, probes, settings.max_batch_tokens)
    for row, (s, _, _) in enumerate(todo):
        record = by_key[s.key]
        if base_proj is not None:
            record["base_response"] = known_base[s.prompt_key]
        record["scores"] = {}
        for j, p in enumerate(probes):
            proj, last = float(readings[0][row, j]), float(readings[1][row, j])
            entry = {"projection": proj, "prompt_projection": last, "proxy_delta_p": proj - last}
            if base_proj is not None:
                base = float(base_proj[row, j])
                entry |= {"base_projection": base, "delta_p": proj - base}  # NaN when the base answer is empty
            record["scores"][p.name] = entry
    return records


# ---------------------------------------------------------------- the driver


@dataclass
class ScreenResult:
    """Per-sample scores (one row per sample and probe), what was skipped, and how long it took."""

    scores: pd.DataFrame
    skipped: list[tuple[int, str]]
    seconds: float
    tokens: int  # prompt + response tokens read in this run (cached samples excluded)
    computed: int  # samples scored in this run (the rest came from the results log)
    cache: str
    # every run over these samples, resumed ones included; None when part of the results log predates
    # per-sample times
    total_seconds: float | None = None
    total_tokens: int = 0


def results_log(model: ChatModel, probes: Sequence[Probe], settings: ScreenSettings, server: str | None = None) -> Path:
    """Where finished samples of a (model, probes, settings) run are logged."""
    key = digest({"probes": [p.key() for p in probes], "settings": asdict(settings) | {"chunk_size": None},
                  "server": server})
    return cache_dir("screen", model.info.fingerprint) / f"{key}.jsonl"


def base_log(model: ChatModel, settings: ScreenSettings, server: str | None = None) -> AppendLog:
    """The base-response cache, shared by every trait and file screened with the same model and settings."""
    folder = cache_dir("base_responses", model.info.fingerprint if server is None else "server-" + digest(server))
    return AppendLog(folder / f"{digest(settings.base_key())}.jsonl", key="prompt_key")


def text_length(sample: Sample) -> int:
    """Characters in the prompt and response: what chunks sort by and the progress bar counts."""
    return len(sample.response) + sum(len(m["content"]) for m in sample.prompt)


def tokens_read(records: Iterable[dict]) -> int:
    """Prompt + response tokens of the scored (not skipped) records."""
    return sum(r["prompt_tokens"] + r["response_tokens"] for r in records if "skipped" not in r)


def chunks(samples: Sequence[Sample], size: int) -> list[list[Sample]]:
    """Samples sorted by text length and cut into chunks: similar lengths pad little."""
    order = sorted(samples, key=lambda s: (text_length(s), s.line))
    return [order[i:i + size] for i in range(0, len(order), size)]


Engine = Callable[[list[list[Sample]], dict[str, str]], Iterator[list[dict]]]


def local_engine(model: ChatModel, probes: Sequence[Probe], settings: ScreenSettings) -> Engine:
    """Score chunks one after another in this process."""
    def run(work: list[list[Sample]], known_base: dict[str, str]) -> Iterator[list[dict]]:
        for chunk in work:
            yield score_chunk(model, chunk, probes, settings, {s.prompt_key: known_base[s.prompt_key]
                                                                for s in chunk if s.prompt_key in known_base})
    return run


def server_base_responses(prompts: Sequence[Sequence[Message]], settings: ScreenSettings, model_name: str | None,
                          base_url: str | None) -> list[str]:
    """Greedy base responses from an OpenAI-compatible server (vLLM serving the base model)."""
    answers = chat_rollouts([list(p) for p in prompts], model=model_name, n=1, temperature=0.0,
                            max_tokens=settings.base_max_new_tokens, base_url=base_url, progress=True)
    return [a[0] for a in answers]


def screen(model: ChatModel, samples: Sequence[Sample] | ReadReport, probes: Sequence[Probe],
           settings: ScreenSettings = ScreenSettings(), *, engine: Engine | None = None,
           log_path: str | Path | None = None, base_log_path: str | Path | None = None,
           base_server: tuple[str | None, str | None] | None = None, progress: bool = True) -> ScreenResult:
    """Score samples on every probe, resuming from the results log.

    Args:
        samples: a :class:`ReadReport` (its skipped lines are carried into the result) or samples.
        probes: the directions to read (:class:`Probe`), e.g. one per trait.
        settings: :class:`ScreenSettings`; ``proxy=True`` needs no base responses.
        engine: where chunks run (default :func:`local_engine`; :func:`pvlens.methods.screening.ray.ray_engine`).
        log_path: the results log (default :func:`results_log`); delete it to recompute.
        base_log_path: the base-response log (default :func:`base_log`, shared across traits and files).
        base_server: ``(served model, base URL)`` to take base responses from an OpenAI-compatible
            server instead of generating them here.
    """
    skipped = list(samples.skipped) if isinstance(samples, ReadReport) else []
    samples = list(samples.samples if isinstance(samples, ReadReport) else samples)
    probes = check_probes(model, probes)
    server = None if base_server is None else json.dumps(base_server)
    log = AppendLog(Path(log_path) if log_path else results_log(model, probes, settings, server), key="key")
    done = log.read()
    pending = list({s.key: s for s in samples if s.key not in done}.values())
    known_base = {}
    if not settings.proxy:
        bases = AppendLog(Path(base_log_path), key="prompt_key") if base_log_path else base_log(model, settings, server)
        known_base = {k: r["response"] for k, r in bases.read().items()}
        if base_server is not None:
            need = list({s.prompt_key: s.prompt for s in pending if s.prompt_key not in known_base}.items())
            if need:
                answers = server_base_responses([p for _, p in need], settings, *base_server)
                fresh = [{"prompt_key": k, "response": a} for (k, _), a in zip(need, answers)]
                bases.append(fresh)
                known_base |= {r["prompt_key"]: r["response"] for r in fresh}
    engine = engine or local_engine(model, probes, settings)
    start, tokens, computed = time.perf_counter(), 0, 0
    # counted in characters, not samples: chunks run shortest first, so a count of samples would promise
    # an end far too early
    length = {s.key: text_length(s) for s in pending}
    bar = tqdm(total=sum(length.values()), desc="screen", unit="char", unit_scale=True,
               disable=not progress or not pending)
    last = start
    for records in engine(chunks(pending, settings.chunk_size), known_base):
        now = time.perf_counter()
        for r in records:  # each sample's share of the wall time since the previous chunk arrived
            r["seconds"] = (now - last) / len(records)
        last = now
        if not settings.proxy:
            fresh = [{"prompt_key": r["prompt_key"], "response": r["base_response"]}
                     for r in records if "base_response" in r]
            new = list({f["prompt_key"]: f for f in fresh
                        if f["prompt_key"] not in known_base}.values())  # once per prompt
            if new:
                bases.append(new)
                known_base |= {f["prompt_key"]: f["response"] for f in new}
        log.append(records)
        done |= {r["key"]: r for r in records}
        tokens += tokens_read(records)
        computed += len(records)
        bar.update(sum(length[r["key"]] for r in records))
        bar.set_postfix(samples=f"{computed}/{len(pending)}",
                        tok_per_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}")
    bar.close()
    seconds = time.perf_counter() - start
    unique = [done[k] for k in {s.key for s in samples}]
    total_seconds = sum(r["seconds"] for r in unique) if all("seconds" in r for r in unique) else None
    total_tokens = tokens_read(unique)
    rows, too_long = [], []
    for s in samples:
        record = done[s.key]
        if "skipped" in record:
            too_long.append((s.line, record["skipped"]))
            continue
        for trait, entry in record["scores"].items():
            rows.append({"id": s.id, "line": s.line, "trait": trait, **entry,
                         "prompt_tokens": record["prompt_tokens"], "response_tokens": record["response_tokens"]})
    scores = pd.DataFrame(rows)
    return ScreenResult(scores, sorted(skipped + too_long), seconds, tokens, computed, str(log.path),
                        total_seconds, total_tokens)


def sharegpt_samples(tokenizer, limit: int, max_prompt_tokens: int = 512) -> list[Sample]:
    """Real chats for screening (paper §6.3): ShareGPT's first user turn and first assistant turn,
    in file order, dropping prompts over ``max_prompt_tokens`` templated tokens. ``id`` is the record id."""
    out, seen = [], set()
    for number, conv in enumerate(sharegpt(), start=1):
        if len(out) >= limit:
            break
        prompt = ({"role": "user", "content": conv.user},)
        if conv.id in seen or len(chat_ids(tokenizer, list(prompt))) > max_prompt_tokens:
            continue
        seen.add(conv.id)
        out.append(Sample(conv.id, number, prompt, conv.assistant))
    return out


def as_samples(conversations: Sequence[Sequence[Message]], name: str) -> list[Sample]:
    """Chat-format rows (each ending with the assistant answer) as samples ``"<name>:<row>"``."""
    out = []
    for i, messages in enumerate(conversations):
        messages = check_conversation(list(messages), f"{name} row {i}")
        out.append(Sample(f"{name}:{i}", i + 1, tuple(messages[:-1]), messages[-1]["content"]))
    return out


def screen_sets(model: ChatModel, sets: dict[str, Sequence[Sequence[Message]]], probes: Sequence[Probe],
                settings: ScreenSettings = ScreenSettings(), **kwargs) -> tuple[dict[str, list[Sample]], ScreenResult]:
    """Screen named chat sets in one run (``{"<label>": rows}``, e.g. the book's ``book.training_sets()``).

    Returns the samples per label (ids ``"<label>:<row>"``) and the :class:`ScreenResult`, whose scores carry
    a ``dataset`` column with each sample's label. ``kwargs`` go to :func:`screen`.
    """
    samples = {label: as_samples(rows, label) for label, rows in sets.items()}
    result = screen(model, [s for group in samples.values() for s in group], probes, settings, **kwargs)
    label_of = {s.id: label for label, group in samples.items() for s in group}
    if not result.scores.empty:
        result.scores = result.scores.assign(dataset=result.scores["id"].map(label_of))
    return samples, result


def write_samples(path: str | Path, samples: Sequence[Sample]) -> Path:
    """Samples as a chat JSONL that ``pvlens screen`` reads (``{"id", "messages"}`` per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": s.id, "messages": [*s.prompt, {"role": "assistant", "content": s.response}]},
                        ensure_ascii=False) for s in samples]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------- traits and judges


def judge_samples(model: ChatModel, samples: Sequence[Sample], trait: str, progress: bool = True) -> pd.DataFrame:
    """The trait judge's score and coherence of each sample's response (cached per sample and judge).

    Columns ``id, line, trait, judge_trait, judge_coherence``. The question is the last user turn.
    """
    artifacts = load_trait(trait)
    judge = judge_for(model, artifacts)
    log = AppendLog(cache_dir("screen", model.info.fingerprint)
                    / f"judge-{digest([judge.name, artifacts.trait])}.jsonl")
    done = log.read()
    todo = list({s.key: s for s in samples if s.key not in done}.values())
    for start in range(0, len(todo), 64):
        batch = todo[start:start + 64]
        questions = [next(m["content"] for m in reversed(s.prompt) if m["role"] == "user") for s in batch]
        verdicts = judge.judge(artifacts, questions, [s.response for s in batch], progress=progress)
        fresh = [{"id": s.key, "trait": v.trait, "coherence": v.coherence} for s, v in zip(batch, verdicts)]
        log.append(fresh)
        done |= {r["id"]: r for r in fresh}
    frame = pd.DataFrame([{"id": s.id, "line": s.line, "trait": artifacts.trait, "judge_trait": done[s.key]["trait"],
                           "judge_coherence": done[s.key]["coherence"]} for s in samples])
    return frame.astype({"judge_trait": float, "judge_coherence": float})  # a declined score is NaN


# ---------------------------------------------------------------- reading the result


def separation_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """AUC of telling ``positive`` samples (e.g. Level II) from ``negative`` ones (Normal) by score."""
    return auc(list(positive) + list(negative), [1] * len(positive) + [0] * len(negative))


def dataset_level(scores: pd.DataFrame, by: str) -> pd.DataFrame:
    """Dataset-level readings: the mean of each sample-level column per (``by``, trait), with ``n_samples``."""
    columns = [c for c in ("delta_p", "projection", "base_projection", "prompt_projection", "proxy_delta_p")
               if c in scores]
    grouped = scores.groupby([by, "trait"], sort=False)
    return grouped[columns].mean().join(grouped.size().rename("n_samples")).reset_index()


def filter_masks(scores: pd.DataFrame, delta_p_threshold: float, judge_threshold: float) -> dict[str, pd.Series]:
    """Which samples each filter of the paper's Appendix K keeps: none, ΔP, judge, both (``<=`` threshold).

    ``scores`` needs ``delta_p`` and ``judge_trait`` (from :func:`judge_samples`); a sample the judge could not
    score is dropped by the judge filters.
    """
    under_dp = scores["delta_p"] <= delta_p_threshold
    under_judge = scores["judge_trait"].astype(float) <= judge_threshold
    return {"no filter": pd.Series(True, index=scores.index), "ΔP filter": under_dp, "judge filter": under_judge,
            "both": under_dp & under_judge}


def extremes(scores: pd.DataFrame, trait: str, k: int, column: str = "delta_p", seed: int = 0) -> dict[str, list[str]]:
    """Sample ids of the ``k`` highest, ``k`` random and ``k`` lowest by ``column`` for one trait (paper Fig. 10)."""
    g = scores[(scores["trait"] == trait) & scores[column].notna()].sort_values(column, ascending=False)
    if len(g) < 3 * k:
        raise ScreenError(f"{trait}: {len(g)} scored samples cannot give top, random and bottom {k} apart")
    return {"top": list(g["id"].head(k)), "random": list(g["id"].sample(k, random_state=seed)),
            "bottom": list(g["id"].tail(k))}


def sample_conversations(samples: Sequence[Sample], ids: Iterable[str]) -> list[list[Message]]:
    """The chat rows (prompt + response) of the samples with these ids, in the order given."""
    by_id = {s.id: s for s in samples}
    return [[*by_id[i].prompt, {"role": "assistant", "content": by_id[i].response}] for i in ids]


def histogram_text(values: Sequence[float], bins: int = 12, width: int = 40) -> str:
    """A terminal histogram: one line per bin, ``[lo, hi) count ####``."""
    values = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if values.size == 0:
        return "(no finite values)"
    counts, edges = np.histogram(values, bins=bins)
    top = max(counts.max(), 1)
    return "\n".join(f"[{lo:9.3f}, {hi:9.3f}) {c:6d} {'#' * round(width * c / top)}"
                     for lo, hi, c in zip(edges[:-1], edges[1:], counts))


def preview(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_text(result: ScreenResult, samples: Sequence[Sample], column: str, top: int = 10) -> str:
    """What ``pvlens screen`` prints: counts, throughput, and per probe the dataset score, a histogram
    and the ``top`` highest-scoring samples with their text."""
    by_id = {(s.id, s.line): s for s in samples}
    rate = result.tokens / result.seconds if result.seconds > 0 and result.tokens else float("nan")
    lines = [f"{len(samples)} samples read, {len(result.skipped)} skipped; {result.computed} scored in this run "
             f"in {result.seconds:.1f} s ({result.tokens} tokens, {rate:.0f} tokens/s), "
             f"{len(samples) - result.computed} from the results log ({result.cache})"]
    if result.total_seconds:
        lines.append(f"all runs over these samples, resumed ones included: {result.total_seconds:.1f} s, "
                     f"{result.total_tokens} tokens, {result.total_tokens / result.total_seconds:.0f} tokens/s")
    elif result.total_seconds is None:
        lines.append("all runs: not known (part of the results log was written before per-sample times were logged)")
    for line, reason in result.skipped[:20]:
        lines.append(f"  skipped line {line}: {reason}")
    if len(result.skipped) > 20:
        lines.append(f"  ... and {len(result.skipped) - 20} more skipped lines")
    if result.scores.empty:
        return "\n".join(lines + ["no sample could be scored"])
    for trait, g in result.scores.groupby("trait", sort=False):
        values = g[column].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        lines += ["", f"{trait}: dataset {column} = {finite.mean():.3f} (mean of {finite.size} samples; median "
                      f"{np.median(finite):.3f}, sd {finite.std():.3f})"
                      if finite.size else f"{trait}: no finite {column}",
                  histogram_text(finite), f"top {min(top, len(g))} by {column}:"]
        for _, row in g.sort_values(column, ascending=False).head(top).iterrows():
            s = by_id[(row["id"], row["line"])]
            user = next(m["content"] for m in reversed(s.prompt) if m["role"] == "user")
            lines.append(f"  {row[column]:9.3f}  line {row['line']:>6}  id {preview(str(row['id']), 24)}")
            lines.append(f"             user: {preview(user)}")
            lines.append(f"             answer: {preview(s.response)}")
    return "\n".join(lines)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write scores as CSV or Parquet (by suffix), atomically."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise ScreenError(f"--out must end in .csv or .parquet, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False) if path.suffix == ".csv" else frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


__all__ = [
    "as_samples",
    "base_log",
    "base_responses",
    "check_probes",
    "chunks",
    "dataset_level",
    "extremes",
    "filter_masks",
    "histogram_text",
    "judge_samples",
    "local_engine",
    "parse_sample",
    "preview",
    "Probe",
    "read_samples",
    "ReadReport",
    "response_readings",
    "results_log",
    "Sample",
    "sample_conversations",
    "score_chunk",
    "screen",
    "screen_sets",
    "ScreenError",
    "ScreenResult",
    "ScreenSettings",
    "separation_auc",
    "sharegpt_samples",
    "split_ids",
    "summary_text",
    "text_length",
    "token_batches",
    "write_samples",
    "write_table",
]
