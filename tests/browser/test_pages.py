"""The built book in a real browser: every page loads without console errors, shows its figures, no cell raised.

``make test`` executes every chapter in fast mode (nbmake ``--overwrite`` on a copy of the book under
``fast-book/``), then runs this file with ``PVLENS_EXECUTED_BOOK`` pointing at that copy: the test builds
HTML from the executed notebooks (Jupyter Book with execution off) and opens each page in headless Chromium
through Debian's ``chromium`` and ``chromium-driver`` (the Makefile installs them when missing and it may).
``PVLENS_BUILT_BOOK=_build/html`` checks an already-built book instead (for example after ``make book``).
Screenshots of the steering and monitoring chapters are written to ``docs/screenshots/``.

Where Chromium cannot be found the tests are reported as *skipped*, with the reason, never as passed.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = {"book/steering": "steering.png", "book/monitoring": "monitoring.png"}
IGNORED_CONSOLE = ("favicon.ico",)  # the book ships no favicon; a 404 for it is not a page error


def toc_pages(root: Path) -> list[str]:
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]


@pytest.fixture(scope="module")
def site() -> Path:
    """The HTML folder: built here from the executed notebooks, or given by PVLENS_BUILT_BOOK."""
    if os.environ.get("PVLENS_BUILT_BOOK"):
        html = Path(os.environ["PVLENS_BUILT_BOOK"]).resolve()
        if not (html / "index.html").exists():
            pytest.fail(f"PVLENS_BUILT_BOOK={html} has no index.html")
        return html
    executed = os.environ.get("PVLENS_EXECUTED_BOOK")
    if not executed:
        pytest.skip("no executed book: `make test` executes the chapters and then runs this file "
                    "(or set PVLENS_EXECUTED_BOOK / PVLENS_BUILT_BOOK)")
    book = Path(executed).resolve()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"  # the outputs are the executed notebooks' own
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    shutil.copy(ROOT / "_toc.yml", book / "_toc.yml")
    jb = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jb), "build", str(book), "--all", "--warningiserror", "--keep-going"],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"the book did not build:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return book / "_build" / "html"


@pytest.fixture(scope="module")
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Chromium or ChromeDriver is not installed (Debian: apt-get install chromium chromium-driver; "
                    "`make setup` does this when it runs as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1600", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def expected_figures(site: Path, page: str) -> tuple[int, bool]:
    """Image outputs in the executed notebook behind a page, and whether its code draws plots at all."""
    source = site.parent / "jupyter_execute" / f"{page}.ipynb"
    if not source.exists():
        return 0, False
    nb = json.loads(source.read_text())
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    images = sum("image/png" in out.get("data", {}) for cell in nb["cells"] for out in cell.get("outputs", []))
    return images, ("plt." in code or "sns." in code)


PAGES = toc_pages(ROOT)


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_with_its_figures_and_no_errors(page, site, server, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/{page}.html")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
    title = browser.title
    assert "404" not in title and browser.find_elements("css selector", "article, main"), f"{page}: no content"
    errors = [e for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and not any(s in e["message"] for s in IGNORED_CONSOLE)]
    assert not errors, f"{page}: console errors: {errors}"
    tracebacks = browser.find_elements("css selector", ".output.traceback, .output_error, div.cell_output .traceback")
    text = browser.find_element("css selector", "article, main").text
    assert not tracebacks and "Traceback (most recent call last)" not in text, f"{page}: a cell raised"
    images = browser.find_elements("css selector", "div.cell_output img")
    broken = [img.get_attribute("src") for img in images
              if not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)]
    assert not broken, f"{page}: images that did not load: {broken}"
    want, plots = expected_figures(site, page)
    assert len(images) >= want, f"{page}: {len(images)} figures shown, the executed notebook has {want}"
    assert want > 0 or not plots, f"{page}: the chapter draws plots but its executed notebook holds no figure"
    if page in SCREENSHOTS:
        browser.set_window_size(1280, 2400)  # the top of the page: title, opening, first figures, readable
        out = ROOT / "docs" / "screenshots" / SCREENSHOTS[page]
        out.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(out))
        browser.set_window_size(1280, 1600)
        assert out.stat().st_size > 10_000, f"{out} looks empty"
