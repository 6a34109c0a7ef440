# Two commands for a fresh machine (see README):  make book   and   make test
# Both create/update .venv, install pvlens, fetch the offline model(s), and are safe to re-run.

SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.pvlens-installed
PIP        := $(PY) -m pip --disable-pip-version-check --quiet
# pip on some machines warns about missing local index folders on every package; hide only that line
QUIET_PIP  := { grep -v "^WARNING: Location" || true; }
# Offline models are local files: fail fast instead of retrying an unreachable hub.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: book test lint setup models models-all bench clean-book browser screenshots

setup: $(STAMP) browser

# Debian's Chromium + ChromeDriver for the browser test of the built book; installed when missing and we may
# (root, or passwordless sudo). Otherwise the browser test reports itself skipped with the reason.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium + chromium-driver (apt)"; \
	  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) || \
	  echo "could not install chromium: the browser test will be skipped"; \
	elif sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then \
	  sudo -n apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  echo "could not install chromium: the browser test will be skipped"; \
	else echo "chromium is not installed and cannot be installed here: the browser test will be skipped"; fi

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build (override TORCH_SPEC on a GPU box).
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PIP) install "$(TORCH_SPEC)" 2>&1 | $(QUIET_PIP)
	$(PIP) install -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(PY) -c "import pvlens, torch, transformer_lens, sae_lens, peft, openai, nbmake, circuitsvis, seaborn"
	$(PY) -m ipykernel install --sys-prefix --name pvlens --display-name "pvlens (.venv)" > /dev/null
	@touch $(STAMP)

models: setup
	$(VENV)/bin/pvlens fetch

models-all: setup
	$(VENV)/bin/pvlens fetch smollm2-135m-instruct qwen2.5-coder-0.5b-instruct

# Execute every chapter at full size (--all: always, so no page keeps numbers from older code) and build _build/html.
book: models
	$(VENV)/bin/jupyter-book build . --all --keep-going
	@test -f _build/html/index.html && echo "book: _build/html/index.html"

# The whole test suite: unit/integration tests; every chapter executed at CI size (on a copy, so the
# committed notebooks keep no outputs); then the book built from those executed notebooks, in Chromium.
FAST_BOOK := fast-book
test: models-all lint
	$(PY) -m pytest -q tests --ignore=tests/browser
	rm -rf $(FAST_BOOK) && mkdir -p $(FAST_BOOK) && cp -r book $(FAST_BOOK)/
	PVLENS_FAST=1 $(PY) -m pytest -q --nbmake --overwrite --nbmake-timeout=1200 $(FAST_BOOK)/book
	PVLENS_EXECUTED_BOOK=$(FAST_BOOK) $(PY) -m pytest -q -rs tests/browser

# Lint and import order (configuration in pyproject.toml): a new violation fails `make test`.
lint: setup
	$(VENV)/bin/ruff check pvlens tests benchmarks

# Screenshots for the README from the full build (make book first).
screenshots:
	PVLENS_BUILT_BOOK=_build/html $(PY) -m pytest -q -rs tests/browser

bench: models
	$(PY) benchmarks/bench_speed.py

clean-book:
	rm -rf _build
