"""Settings read from the environment, in one place.

- ``PVLENS_CACHE``: where downloads, converted weights and small caches live
  (default: the user's cache directory, e.g. ``~/.cache/pvlens``).
- ``PVLENS_MODEL``: the model :func:`pvlens.load_model` loads when no name is given.
- ``PVLENS_FAST=1``: the CI-size switch. Chapters and benchmarks ask :func:`size` for
  every count that makes them slow, so one variable shrinks them all.
"""

from __future__ import annotations

import os
from pathlib import Path

from pvlens.core.errors import CacheError

DEFAULT_MODEL = "smollm2-135m-instruct"


def fast() -> bool:
    """True when ``PVLENS_FAST`` is set to a true value (``1``, ``true``, ``yes``)."""
    return os.environ.get("PVLENS_FAST", "").strip().lower() in {"1", "true", "yes"}


def size(full: int, fast_size: int) -> int:
    """Pick a count: ``full`` normally, ``fast_size`` under ``PVLENS_FAST=1``."""
    return fast_size if fast() else full


def default_model_name() -> str:
    return os.environ.get("PVLENS_MODEL") or DEFAULT_MODEL


def cache_dir(*parts: str) -> Path:
    """Return (and create) a directory under the pvlens cache, checking it is writable."""
    root = os.environ.get("PVLENS_CACHE")
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(xdg) / "pvlens"
    path = base.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(
            f"cannot create the cache directory {path}: {err.strerror}. "
            "Set PVLENS_CACHE to a writable directory."
        ) from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise CacheError(
            f"the cache directory {path} is not writable. Set PVLENS_CACHE to a writable directory."
        )
    return path
