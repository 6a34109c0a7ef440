"""The book's sources: chapters listed in the table of contents, stored without outputs."""

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def test_every_toc_entry_exists_and_every_chapter_is_listed():
    listed = toc_files()
    for name in listed:
        assert any((ROOT / f"{name}{ext}").exists() for ext in (".md", ".ipynb")), name
    chapters = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").glob("*.ipynb")}
    assert chapters <= set(listed), f"chapters missing from _toc.yml: {sorted(chapters - set(listed))}"


def test_notebooks_are_stored_without_outputs_and_use_the_project_kernel():
    """Diffs stay readable: outputs come from executing the book, never from the repository."""
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "pvlens", path.name
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, \
                    f"{path.name} cell {i} has stored outputs; clear them before committing"
