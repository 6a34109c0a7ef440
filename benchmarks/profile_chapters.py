"""Where the book's chapters spend their time: every chapter executed in order, each cell timed.

    PVLENS_FAST=1 PVLENS_CACHE=/tmp/cold .venv/bin/python benchmarks/profile_chapters.py --out /tmp/profile

runs the chapters listed in ``_toc.yml`` one after another (so a later chapter finds what an earlier one cached,
as in ``make test``), writes each executed notebook and ``profile.json`` (per chapter: total seconds; per cell:
seconds, the cell's first source line and the cache folders it created) under ``--out``, and prints the slowest
cells. Run it with an empty ``PVLENS_CACHE`` (converted models may be linked in: they belong to setup) to see a
fresh machine's cost. It is a measurement: it exits 0 even when a chapter fails, and says which.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def toc_chapters() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [chapter["file"] for part in toc["parts"] for chapter in part["chapters"]]
    return [ROOT / f"{name}.ipynb" for name in files if (ROOT / f"{name}.ipynb").exists()]


def cache_entries(root: Path) -> set[str]:
    """Cache folders two levels deep (``extraction/<model>``, ``adapters/<model>`` ...) and their files' count."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.glob("*/*")}


class TimedClient(NotebookClient):
    """A notebook client that records each code cell's wall time and the cache entries it created."""

    def __init__(self, *args, cache: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cells: list[dict] = []
        self.cache = cache

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        before, start = cache_entries(self.cache), time.perf_counter()
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            if cell.cell_type == "code":
                first = next((line for line in cell.source.splitlines() if line.strip()), "")
                self.cells.append({"index": cell_index, "seconds": round(time.perf_counter() - start, 2),
                                   "first_line": first[:100],
                                   "new_cache": sorted(cache_entries(self.cache) - before)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for executed notebooks and profile.json")
    parser.add_argument("--only", nargs="*", help="chapter stems to run (default: all, in _toc.yml order)")
    parser.add_argument("--timeout", type=int, default=1200, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("PVLENS_CACHE") or Path.home() / ".cache" / "pvlens")
    report = {"fast": os.environ.get("PVLENS_FAST", ""), "cache": str(cache), "chapters": []}
    for path in toc_chapters():
        if args.only and path.stem not in args.only:
            continue
        notebook = nbformat.read(path, as_version=4)
        client = TimedClient(notebook, timeout=args.timeout, kernel_name="pvlens", cache=cache,
                             resources={"metadata": {"path": str(path.parent)}})
        start, error = time.perf_counter(), None
        try:
            client.execute()
        except Exception as err:  # noqa: BLE001 -- a measurement: record the failure and go on
            error = f"{type(err).__name__}: {str(err)[-500:]}"
        seconds = round(time.perf_counter() - start, 1)
        nbformat.write(notebook, args.out / path.name)
        report["chapters"].append({"chapter": path.stem, "seconds": seconds, "error": error, "cells": client.cells})
        print(f"{path.stem:22s} {seconds:7.1f} s" + (f"  FAILED {error[:120]}" if error else ""), flush=True)
        (args.out / "profile.json").write_text(json.dumps(report, indent=1))
    total = sum(c["seconds"] for c in report["chapters"])
    print(f"{'all chapters':22s} {total:7.1f} s")
    cells = sorted(((cell["seconds"], c["chapter"], cell) for c in report["chapters"] for cell in c["cells"]),
                   key=lambda x: -x[0])
    print("slowest cells:")
    for seconds, chapter, cell in cells[:25]:
        print(f"  {seconds:7.1f} s  {chapter}[{cell['index']}]  {cell['first_line']}  {cell['new_cache'][:4]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
