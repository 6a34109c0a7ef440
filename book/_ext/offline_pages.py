"""A Sphinx extension for a book that is read offline: no duplicated scripts, no MathJax where there is no math.

Two things the default Jupyter Book 1.x stack does make every page log console errors in a browser with no
network, which the book's browser test (tests/browser) treats as failures:

- sphinx-thebe adds its configuration script twice (``const THEBE_JS_URL`` declared twice: a SyntaxError);
  identical scripts are kept once;
- MathJax is loaded from a CDN on every page (myst-nb asks for every asset on every page); it is dropped from
  pages that contain no math, so a page that does use math still loads it.
"""

from docutils import nodes


def _has_math(doctree) -> bool:
    return doctree is not None and any(True for _ in doctree.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block))))


def _clean_scripts(app, pagename, templatename, context, doctree):
    scripts, seen = [], set()
    for script in context.get("script_files", []):
        filename = str(getattr(script, "filename", script) or "")
        body = getattr(script, "attributes", {}).get("body", "")
        key = (filename, body)  # not the priority: the same script registered twice at two priorities is one
        if key in seen:
            continue
        if "mathjax" in filename.lower() and not _has_math(doctree):
            continue
        seen.add(key)
        scripts.append(script)
    context["script_files"][:] = scripts


def setup(app):
    app.connect("html-page-context", _clean_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
