"""Cache keys: short, stable hashes and file-safe names.

Every cache in pvlens lives in a folder named from the model (:func:`model_folder`) and holds records keyed
by :func:`digest` of everything that shapes them, so a changed setting is a new key, never a stale hit.
These functions are the keys' definition: changing one orphans every existing cache (``tests/test_keys.py``
pins a few).
"""

from __future__ import annotations

import hashlib
import json
import re

import torch
from torch import Tensor


def digest(obj, length: int = 16) -> str:
    """A short, stable hash of a JSON-able object: the cache key of every log record and folder."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:length]


def slug(text: str) -> str:
    """``text`` as a file-name-safe string of at most 60 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "x"


def tensor_digest(tensor: Tensor) -> str:
    """A short hash of a tensor's values (float32, contiguous), for cache keys."""
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(t.numpy().tobytes() + str(tuple(t.shape)).encode()).hexdigest()[:16]


def model_folder(info) -> str:
    """The cache folder name of one model's weights: ``<slug of its name>-<fingerprint>``.

    ``info`` is a :class:`pvlens.models.loading.ModelInfo` (``model.info``).
    """
    return f"{slug(info.name)}-{info.fingerprint}"
