"""Member weights: from the members' validation metrics, or fitted on validation predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from keras_app.core.errors import UsageError

EPSILON = 1e-7  # as EnsembleCombine's default and metrics.classification_metrics' clip


def validation_metric_name(num_classes: int) -> str:
    """AUC for two classes; accuracy otherwise (a one-vs-rest AUC hides the rare classes)."""
    return "roc_auc" if num_classes == 2 else "accuracy"


def val_metric_weights(
    val_metrics: Sequence[dict], num_classes: int, names: Sequence[str]
) -> list[float]:
    """One weight per member: its validation AUC (two classes) or accuracy.

    Args:
        val_metrics: each member's `metrics.json["val"]`.
        num_classes: number of classes.
        names: the members' names, for the error message.

    Raises:
        UsageError: a member without a finite metric of that name.
    """
    key = validation_metric_name(num_classes)
    weights = []
    for name, metrics in zip(names, val_metrics, strict=True):
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UsageError(
                f"{name} has no usable validation {key} in its metrics.json (found {value!r}); "
                "use --weights mean or --weights optimized"
            )
        weights.append(float(value))
    if sum(weights) <= 0:
        raise UsageError(f"every member's validation {key} is 0: no weighting to take from them")
    return weights


def combine_probs(
    member_probs: Sequence[np.ndarray],
    weights,
    *,
    logit_average: bool = False,
    epsilon: float = EPSILON,
) -> np.ndarray:
    """NumPy twin of `EnsembleCombine`: the weighted average of probabilities, or of
    log-probabilities followed by a softmax."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in member_probs])  # [m, n, c]
    if not logit_average:
        return np.tensordot(w, stacked, axes=1)
    z = np.tensordot(w, np.log(np.clip(stacked, epsilon, 1.0)), axes=1)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def optimize_weights(
    member_probs: Sequence[np.ndarray],
    y_true,
    *,
    logit_average: bool = False,
    epsilon: float = EPSILON,
) -> np.ndarray:
    """The weights on the simplex that minimise the ensemble's log-loss on these predictions.

    Pass validation predictions: weights fitted on the test split would make
    the ensemble's test metrics a claim about data it has seen.

    Both losses are convex in the weights (the log of a linear mixture; a
    log-sum-exp of linear logits), so SLSQP from the uniform start finds the
    global minimum.

    Args:
        member_probs: each member's probabilities [n, classes].
        y_true: integer labels [n].
        logit_average: fit for `EnsembleCombine(logit_average=True)`.

    Returns:
        Non-negative weights summing to 1, one per member.
    """
    from scipy import optimize  # here, not on top: `ensemble --help` need not load SciPy

    y = np.asarray(y_true).astype(int)
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in member_probs])  # [m, n, c]
    m, n, _ = stacked.shape
    if len(y) != n:
        raise ValueError(
            f"optimize_weights needs one label per row: {n} rows. Received {len(y)} labels"
        )
    logs = np.log(np.clip(stacked, epsilon, 1.0))
    rows = np.arange(n)

    def loss_and_grad(w):
        if logit_average:
            z = np.tensordot(w, logs, axes=1)  # [n, c]
            z -= z.max(axis=1, keepdims=True)
            soft = np.exp(z)
            soft /= soft.sum(axis=1, keepdims=True)
            loss = -np.mean(np.log(np.clip(soft[rows, y], 1e-300, None)))
            # d/dw_m of -log softmax(z)_y = -(log p_m[y] - sum_c softmax_c log p_m[c])
            grad = -np.mean(logs[:, rows, y] - np.einsum("nc,mnc->mn", soft, logs), axis=1)
            return loss, grad
        picked = stacked[:, rows, y]  # [m, n]: each member's probability of the true class
        mix = np.clip(w @ picked, epsilon, None)
        return -np.mean(np.log(mix)), -np.mean(picked / mix, axis=1)

    result = optimize.minimize(
        loss_and_grad,
        np.full(m, 1.0 / m),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
    )
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()
