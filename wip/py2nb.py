"""Convert a '# %%' percent-format .py file to an output-free notebook with the pvlens kernel."""
import json, sys, re
src, dst = sys.argv[1], sys.argv[2]
cells, kind, buf = [], None, []
def flush():
    if kind is None: return
    lines = buf[:]
    while lines and not lines[-1].strip(): lines.pop()
    while lines and not lines[0].strip(): lines.pop(0)
    if kind == "markdown":
        lines = [l[2:] if l.startswith("# ") else ("" if l.strip() == "#" else l) for l in lines]
    text = "\n".join(lines)
    src_lines = [l + "\n" for l in text.split("\n")]
    src_lines[-1] = src_lines[-1].rstrip("\n")
    cell = {"cell_type": kind, "id": f"c{len(cells):02d}", "metadata": {}, "source": src_lines}
    if kind == "code": cell.update(execution_count=None, outputs=[])
    cells.append(cell)
for line in open(src).read().split("\n"):
    if line.startswith("# %%"):
        flush(); buf = []
        kind = "markdown" if "[markdown]" in line else "code"
    else:
        buf.append(line)
flush()
nb = {"cells": cells, "metadata": {"kernelspec": {"display_name": "pvlens (.venv)", "language": "python", "name": "pvlens"},
      "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
json.dump(nb, open(dst, "w"), indent=1, ensure_ascii=False); open(dst, "a").write("\n")
