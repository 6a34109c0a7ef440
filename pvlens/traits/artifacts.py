"""Trait artifacts: what turns a one-paragraph trait description into an experiment.

A trait (paper §2) is studied through three artifacts, written once per trait:

- five **instruction pairs**: a ``pos`` system-prompt body that orders the assistant to show
  the trait and a ``neg`` body that orders it to avoid the trait, each pair covering a
  different aspect of it;
- forty **questions** that could draw the trait out without asking for it, split into
  20 for extraction and 20 for evaluation (disjoint);
- a **judge rubric** (``eval_prompt``) with ``{question}`` and ``{answer}`` placeholders,
  asking for ``REFUSAL`` or a number from 0 (trait absent) to 100 (trait strong).

File format (``pvlens-trait/1``), one JSON file per trait::

    {
      "format": "pvlens-trait/1",
      "trait": "evil",                     # lower-case identifier, the file's stem
      "description": "one paragraph ...",  # what the trait is, in plain words
      "assistant_names": {"pos": "evil", "neg": "helpful"},
      "instructions": [{"pos": "...", "neg": "..."}, ...],   # exactly 5
      "questions": {"extract": [...20...], "eval": [...20...]},
      "eval_prompt": "... {question} ... {answer} ...",
      "source": "who or what wrote it"
    }

The system prompt of a rollout is the paper's ``"You are a/an {name} assistant. {instruction}"``
(:meth:`TraitArtifacts.system_prompt`). The seven traits of the paper ship in
``pvlens/traits_data/``; :func:`load_trait` also takes a path to your own file.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pvlens.core.errors import TraitFormatError
from pvlens.core.keys import digest

FORMAT = "pvlens-trait/1"
N_PAIRS = 5
N_QUESTIONS = 20
DATA_DIR = Path(__file__).with_name("traits_data")
TRAIT_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,40}$")
Polarity = Literal["pos", "neg"]


@dataclass(frozen=True)
class InstructionPair:
    pos: str
    neg: str


@dataclass(frozen=True)
class TraitArtifacts:
    """The validated contents of one trait file."""

    trait: str
    description: str
    assistant_names: dict[str, str]
    instructions: tuple[InstructionPair, ...]
    extract_questions: tuple[str, ...]
    eval_questions: tuple[str, ...]
    eval_prompt: str
    source: str = ""

    def system_prompt(self, pair: int, polarity: Polarity) -> str:
        """The paper's system prompt for instruction pair ``pair`` (0-4) and a polarity."""
        if polarity not in ("pos", "neg"):
            raise ValueError(f"polarity must be 'pos' or 'neg', got {polarity!r}")
        name = self.assistant_names[polarity]
        return f"You are {article(name)} {name} assistant. {getattr(self.instructions[pair], polarity)}"

    def rubric(self, question: str, answer: str) -> str:
        """The judge prompt for one (question, answer).

        ``str.format`` (not ``str.replace``) so that ``{{``/``}}`` in the template become literal braces, as
        :func:`validate` promises, and braces inside the question or answer are left alone.
        """
        return self.eval_prompt.format(question=question, answer=answer)

    def questions(self, split: Literal["extract", "eval"]) -> tuple[str, ...]:
        if split not in ("extract", "eval"):
            raise ValueError(f"split must be 'extract' or 'eval', got {split!r}")
        return self.extract_questions if split == "extract" else self.eval_questions

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "trait": self.trait,
            "description": self.description,
            "assistant_names": dict(self.assistant_names),
            "instructions": [asdict(p) for p in self.instructions],
            "questions": {"extract": list(self.extract_questions), "eval": list(self.eval_questions)},
            "eval_prompt": self.eval_prompt,
            "source": self.source,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        return path


def artifacts_hash(artifacts: TraitArtifacts) -> str:
    """A short hash of everything in the trait file that can change a rollout or a score (not its ``source``)."""
    return digest({k: v for k, v in artifacts.to_json().items() if k != "source"}, 12)  # 12: every cache's length


def article(word: str) -> str:
    """'a' or 'an' by sound, not spelling: an honest, a useful, an evil, a humorous."""
    w = word.lower()
    if w.startswith(("hon", "hour", "heir")):
        return "an"
    if w.startswith(("uni", "use", "usu", "eu", "one")):
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


def _text(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TraitFormatError(f"{where}: `{field}` must be a non-empty string, got {value!r:.80}")
    return value.strip()


def _texts(value: Any, n: int, field: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TraitFormatError(f"{where}: `{field}` must be a list of {n} strings, got {type(value).__name__}")
    if len(value) != n:
        raise TraitFormatError(f"{where}: `{field}` must hold exactly {n} strings, it holds {len(value)}")
    items = tuple(_text(v, f"{field}[{i}]", where) for i, v in enumerate(value))
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.lower() in seen:
            raise TraitFormatError(f"{where}: `{field}[{i}]` repeats `{field}[{seen[item.lower()]}]`: {item!r:.80}")
        seen[item.lower()] = i
    return items


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def validate(data: Any, where: str = "trait file") -> TraitArtifacts:
    """Check a parsed trait file against the format; raise :class:`TraitFormatError` naming the field."""
    if not isinstance(data, dict):
        raise TraitFormatError(f"{where}: the top level must be a JSON object, got {type(data).__name__}")
    if data.get("format", FORMAT) != FORMAT:
        raise TraitFormatError(f"{where}: `format` is {data.get('format')!r}; this pvlens reads {FORMAT!r}")
    required = ["trait", "description", "assistant_names", "instructions", "questions", "eval_prompt"]
    missing = [k for k in required if k not in data]
    if missing:
        raise TraitFormatError(f"{where}: missing field(s) {', '.join(f'`{k}`' for k in missing)}")
    unknown = set(data) - set(required) - {"format", "source"}
    if unknown:
        raise TraitFormatError(f"{where}: unknown field(s) {', '.join(sorted(f'`{k}`' for k in unknown))}")
    trait = _text(data["trait"], "trait", where)
    if not TRAIT_NAME.match(trait):
        raise TraitFormatError(f"{where}: `trait` must be a lower-case identifier like 'evil', got {trait!r}")
    names = data["assistant_names"]
    if not isinstance(names, dict) or set(names) != {"pos", "neg"}:
        raise TraitFormatError(f"{where}: `assistant_names` must be an object with keys 'pos' and 'neg'")
    names = {k: _text(names[k], f"assistant_names.{k}", where) for k in ("pos", "neg")}
    pairs = data["instructions"]
    if not isinstance(pairs, list) or len(pairs) != N_PAIRS:
        got = len(pairs) if isinstance(pairs, list) else type(pairs).__name__
        raise TraitFormatError(f"{where}: `instructions` must be a list of {N_PAIRS} pos/neg pairs, got {got}")
    instructions = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or set(pair) != {"pos", "neg"}:
            raise TraitFormatError(f"{where}: `instructions[{i}]` must be an object with keys 'pos' and 'neg'")
        instructions.append(InstructionPair(_text(pair["pos"], f"instructions[{i}].pos", where),
                                            _text(pair["neg"], f"instructions[{i}].neg", where)))
    questions = data["questions"]
    if not isinstance(questions, dict) or set(questions) != {"extract", "eval"}:
        raise TraitFormatError(f"{where}: `questions` must be an object with keys 'extract' and 'eval'")
    extract = _texts(questions["extract"], N_QUESTIONS, "questions.extract", where)
    evaluate = _texts(questions["eval"], N_QUESTIONS, "questions.eval", where)
    overlap = {q.lower() for q in extract} & {q.lower() for q in evaluate}
    if overlap:
        raise TraitFormatError(f"{where}: `questions.extract` and `questions.eval` share {sorted(overlap)[0]!r:.80}")
    eval_prompt = _text(data["eval_prompt"], "eval_prompt", where)
    try:
        fields = _placeholders(eval_prompt)
    except ValueError as err:
        raise TraitFormatError(f"{where}: `eval_prompt` has unbalanced braces: {err}") from None
    if fields != {"question", "answer"}:
        raise TraitFormatError(
            f"{where}: `eval_prompt` must contain exactly the placeholders {{question}} and {{answer}}, "
            f"found {sorted(fields) or 'none'} (write literal braces as {{{{ and }}}})")
    return TraitArtifacts(trait, _text(data["description"], "description", where), names, tuple(instructions),
                          extract, evaluate, eval_prompt, str(data.get("source", "")))


def shipped_traits() -> list[str]:
    """Names of the trait files that ship with pvlens."""
    return sorted(p.stem for p in DATA_DIR.glob("*.json"))


def load_trait(name_or_path: str | Path) -> TraitArtifacts:
    """Load and validate a shipped trait by name (``"evil"``) or any trait file by path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = DATA_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise TraitFormatError(
                f"no shipped trait {str(name_or_path)!r}; shipped: {', '.join(shipped_traits())} "
                "(or pass the path to your own .json file)")
    if not path.exists():
        raise TraitFormatError(f"trait file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TraitFormatError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    artifacts = validate(data, where=str(path))
    if path.parent == DATA_DIR and artifacts.trait != path.stem:
        raise TraitFormatError(f"{path}: `trait` is {artifacts.trait!r} but the file is named {path.stem!r}")
    return artifacts
