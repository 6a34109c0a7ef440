"""The package's shape, checked: layers that import only downward, no cycles, no private names across modules,
deferred imports only where they are meant, one flat public API, and chapters that call only ``pv`` and ``book``.

Layers, bottom to top (a module may import its own layer or lower ones):

    core < models < data < traits < lens < judges < methods < {cli, recipes, book}

``book`` (the book's choices) is imported by chapters only: not by the library, the command line or the recipes.
"""

import ast
import json
from collections import defaultdict
from pathlib import Path

import pvlens as pv

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pvlens"
LAYERS = ["core", "models", "data", "traits", "lens", "judges", "methods", "face"]
FACE = {"cli", "recipes", "book", "__main__"}

# Function-local imports of pvlens modules that stay, and why (module -> reason). Anything else is a defect:
# import at the top of the module.
DEFERRED = {
    "pvlens.cli": "each command imports its own stack, so `pvlens fetch` and a bad input fail fast",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return len(LAYERS)  # the package's __init__: the flat API re-exports every layer
    return LAYERS.index("face") if parts[1] in FACE else LAYERS.index(parts[1])


def pvlens_imports():
    """(importer, imported module, imported name or None, line, at top level?) for every import of pvlens."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name, path in sorted(modules.items()):
        tree = ast.parse(path.read_text())
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pvlens":
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    yield name, target if target in modules else node.module, alias.name, node.lineno, id(node) in top
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "pvlens":
                        yield name, alias.name, None, node.lineno, id(node) in top


def graph() -> dict[str, set[str]]:
    edges = defaultdict(set)
    for importer, imported, *_ in pvlens_imports():
        if imported != importer:
            edges[importer].add(imported)
    return edges


def test_no_import_cycles():
    edges, state, cycles = graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_imports_only_go_down():
    upward = [f"{a} -> {b}" for a, b, *_ in pvlens_imports()
              if a != "pvlens" and b != "pvlens" and layer(b) > layer(a)]
    assert not upward, f"modules importing a layer above their own: {upward}"
    book = [f"{a}:{line}" for a, b, _, line, _ in pvlens_imports() if b == "pvlens.book"]
    assert not book, f"pvlens.book is for chapters only, imported by: {book}"


def test_no_private_names_across_modules():
    private = [f"{a}:{line} imports {b}.{n}" for a, b, n, line, _ in pvlens_imports()
               if n and n.startswith("_") and not n.startswith("__") and a != b]
    assert not private, private


def test_deferred_imports_are_the_listed_ones():
    local = sorted({a for a, _, _, _, at_top in pvlens_imports() if not at_top})
    assert set(local) <= set(DEFERRED), f"function-local pvlens imports outside {sorted(DEFERRED)}: {local}"


def test_public_api_is_flat_sorted_and_defined_once():
    assert pv.__all__ == sorted(pv.__all__, key=str.lower)
    assert len(set(pv.__all__)) == len(pv.__all__)
    for name in pv.__all__:
        obj = getattr(pv, name)
        defined_in = getattr(obj, "__module__", None)
        if defined_in and defined_in.startswith("pvlens") and callable(obj):
            assert hasattr(__import__(defined_in, fromlist=["_"]), name), f"pv.{name} is not {defined_in}.{name}"


def test_every_module_opens_with_a_docstring_and_lists_a_sorted_all():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        if path.name != "__main__.py":
            assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets) \
                    and all(isinstance(e, ast.Constant) for e in getattr(node.value, "elts", [None])):
                names = [e.value for e in node.value.elts]
                assert names == sorted(names, key=str.lower), f"{path.relative_to(ROOT)}: __all__ is not sorted"
                lines = path.read_text().splitlines()[node.lineno:node.end_lineno - 1]
                assert len(lines) == len(names), f"{path.relative_to(ROOT)}: __all__ is not one name per line"


def test_chapters_call_only_pv_and_book():
    """A reader's route: a chapter's call is ``pv.<name>`` or ``book.<name>``, one hop to the file that works."""
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pvlens"):
                assert node.module == "pvlens" and [a.name for a in node.names] == ["book"], \
                    f"{path.name}:{node.lineno}: chapters import `pvlens as pv` and `from pvlens import book` only"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name != "pvlens" or alias.asname == "pv", f"{path.name}: import pvlens as pv"
                    assert not alias.name.startswith("pvlens."), f"{path.name}: imports {alias.name}"
