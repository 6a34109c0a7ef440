"""Append-only JSONL logs: the on-disk format of every resumable cache in pvlens.

One JSON record per line, each carrying a key field; later records win. Appends are flushed and
fsync'd, so a record on disk is complete. A run killed mid-write can leave a torn last line:
reading cuts it off the file, so the next append starts on a clean line and the lost record is
simply recomputed. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path


class AppendLog:
    """An append-only JSONL file of records keyed by ``record[key]``."""

    def __init__(self, path: Path, key: str = "id"):
        self.path, self.key = Path(path), key

    def read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line torn by a killed run: drop it so it is recomputed
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        records = {}
        for number, line in enumerate(data[:end].split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records[record[self.key]] = record
            except (ValueError, KeyError, TypeError):
                warnings.warn(f"{self.path}: line {number} is not a record; it is ignored and recomputed")
        return records

    def append(self, records: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

