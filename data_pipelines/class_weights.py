"""Class counts and balanced class weights, for imbalanced data (chest X-rays: ~1 to 2.7)."""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from data_pipelines.errors import DataError


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Number of items per class index, int `[num_classes]`."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """`{class_index: weight}` with weight `n / (num_classes * count)`, for `fit(class_weight=)`.

    Raises:
        DataError: a class has no items (its weight would be infinite).
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = class_counts(labels, num_classes)
    if len(counts) > num_classes:
        raise DataError(f"labels go up to {labels.max()} but num_classes={num_classes}")
    missing = np.flatnonzero(counts == 0).tolist()
    if missing:
        raise DataError(
            f"classes {missing} have no items; cannot weight them. "
            f"Received counts {counts.tolist()}"
        )
    classes = np.arange(num_classes)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}
