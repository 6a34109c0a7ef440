"""Small, dependency-light statistics used to validate judges and vectors.

AUC is the Mann-Whitney probability that a random positive outranks a random negative
(ties count half); rank correlation is Spearman's rho; both come with a seeded bootstrap
interval so a chapter can say how sure a number is on a few dozen items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _scipy


def _clean(*arrays: Sequence[float]) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=float) for a in arrays]
    if len({len(a) for a in out}) != 1:
        raise ValueError(f"arrays differ in length: {[len(a) for a in out]}")
    keep = np.all([np.isfinite(a) for a in out], axis=0)
    return [a[keep] for a in out]


def auc(scores: Sequence[float], labels: Sequence[int | bool]) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (1 = positive); NaN scores are dropped."""
    s, y = _clean(scores, labels)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"AUC needs both classes; got {len(pos)} positives and {len(neg)} negatives")
    ranks = _scipy.rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = _clean(x, y)
    return float(_scipy.spearmanr(a, b).statistic)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = _clean(x, y)
    return float(_scipy.pearsonr(a, b).statistic)


def bootstrap_ci(metric: Callable[..., float], *arrays: Sequence[float], n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(*arrays)`` resampling items jointly."""
    data = _clean(*arrays)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(data[0]), len(data[0]))
        try:
            values.append(metric(*(a[idx] for a in data)))
        except ValueError:  # a resample with one class only
            continue
    lo, hi = np.nanpercentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def pearson_by(frame, x: str, y: str, by: str | None = None):
    """Pearson r, two-sided p and n of columns ``x`` against ``y``, per group of ``by`` (or overall).

    Rows with a missing value are dropped; a group with fewer than 3 rows or no spread gets NaN.
    Returns a pandas DataFrame indexed by group (``"all"`` without ``by``).
    """
    groups = frame.groupby(by, sort=False) if by else [("all", frame)]
    out = []
    for name, g in groups:
        a, b = _clean(g[x].to_numpy(dtype=float), g[y].to_numpy(dtype=float))
        if len(a) >= 3 and a.std() > 0 and b.std() > 0:
            result = _scipy.pearsonr(a, b)
            r, p = float(result.statistic), float(result.pvalue)
        else:
            r, p = float("nan"), float("nan")
        out.append({by or "group": name, "pearson_r": r, "p": p, "n": len(a)})
    return pd.DataFrame(out).set_index(by or "group")
