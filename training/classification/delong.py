"""DeLong's method for ROC AUCs: variance, 95 % CI, and the paired test of two models.

The fast algorithm of Sun & Xu (IEEE SPL 2014) with mid-ranks for ties. No
maintained Python package offers DeLong's paired test with pROC's definitions,
so this short module is checked against R's pROC on committed golden values
(training/classification/delong_golden.R -> Testing/Data/delong_golden.json).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _midrank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and xs[j] == xs[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(len(x))
    out[order] = ranks
    return out


def _structural(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and covariance (k, k) of k score rows for binary labels y (1 = positive)."""
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, float))
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("DeLong needs both positive and negative cases")
    tx = np.array([_midrank(r) for r in pos])
    ty = np.array([_midrank(r) for r in neg])
    tz = np.array([_midrank(r) for r in np.concatenate([pos, neg], axis=1)])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def auc_ci(y, score, level: float = 0.95) -> dict:
    """AUC with its DeLong variance and confidence interval (clipped to [0, 1], as pROC)."""
    aucs, cov = _structural(y, score)
    auc, var = float(aucs[0]), float(cov[0, 0])
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(var)
    return {"auc": auc, "var": var, "ci_low": max(0.0, auc - half), "ci_high": min(1.0, auc + half)}


def paired_test(y, score_a, score_b) -> dict:
    """DeLong's test of two correlated AUCs on the same cases: z and two-sided p."""
    aucs, cov = _structural(y, np.vstack([score_a, score_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = float((aucs[0] - aucs[1]) / np.sqrt(var)) if var > 0 else 0.0
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "z": z, "p": float(2 * stats.norm.sf(abs(z)))}
