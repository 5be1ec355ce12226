"""Bootstrap intervals for ROC AUC: one model's, and the gain of one scoring over another.

Cases are resampled with replacement (stratified by class, so every resample has both);
the interval is the percentile one. scikit-learn does the AUC.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

# Resamples: 2,000 put the 2.5th and 97.5th percentiles within about 0.002 of AUC of where
# more would; a site's few hundred images take about a second.
RESAMPLES = 2000


def _resamples(y: np.ndarray, resamples: int, seed: int):
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    for _ in range(resamples):
        yield np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])


def _check(y_true) -> np.ndarray:
    y = np.asarray(y_true, bool)
    if y.all() or not y.any():
        raise ValueError("an AUC needs both classes. Received one class only")
    return y


def auc_with_ci(
    y_true, scores, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """ROC AUC of `scores` for the boolean `y_true`, with its bootstrap interval.

    Returns:
        {"value", "low", "high", "resamples"}.
    """
    y, scores = _check(y_true), np.asarray(scores, float)
    values = [roc_auc_score(y[i], scores[i]) for i in _resamples(y, resamples, seed)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return {
        "value": float(roc_auc_score(y, scores)),
        "low": float(low),
        "high": float(high),
        "resamples": resamples,
    }


def auc_gain(
    y_true, before, after, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """AUC(after) - AUC(before) on the same cases, with a paired bootstrap interval.

    Returns:
        {"value", "low", "high", "resamples"}: "low" > 0 means `after` ranks better there
        beyond what resampling the cases explains.
    """
    y = _check(y_true)
    before, after = np.asarray(before, float), np.asarray(after, float)
    gains = [
        roc_auc_score(y[i], after[i]) - roc_auc_score(y[i], before[i])
        for i in _resamples(y, resamples, seed)
    ]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(gains, [tail, 100 - tail])
    value = roc_auc_score(y, after) - roc_auc_score(y, before)
    return {"value": float(value), "low": float(low), "high": float(high), "resamples": resamples}


def mean_with_ci(
    values, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """The mean of per-case `values` (e.g. paired differences), with its bootstrap interval.

    Returns:
        {"value", "low", "high", "resamples"}.
    """
    values = np.asarray(values, float)
    if len(values) == 0:
        raise ValueError("a mean needs at least one value. Received none")
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {
        "value": float(values.mean()),
        "low": float(low),
        "high": float(high),
        "resamples": resamples,
    }
