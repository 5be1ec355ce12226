"""Class counts and balanced class weights."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import DataError, balanced_class_weights, class_counts


def test_balanced_weights_match_the_formula():
    labels = np.array([0] * 10 + [1] * 30)
    weights = balanced_class_weights(labels, 2)
    assert weights == pytest.approx({0: 40 / (2 * 10), 1: 40 / (2 * 30)})
    assert all(isinstance(k, int) and isinstance(v, float) for k, v in weights.items())


def test_balanced_weights_equalise_total_weight():
    labels = np.array([0] * 7 + [1] * 50 + [2] * 13)
    weights = balanced_class_weights(labels, 3)
    counts = class_counts(labels, 3)
    totals = [weights[c] * counts[c] for c in range(3)]
    assert totals == pytest.approx([totals[0]] * 3)


def test_missing_class_is_an_error():
    with pytest.raises(DataError, match=r"classes \[2\] have no items"):
        balanced_class_weights(np.array([0, 1, 1]), 3)


def test_label_beyond_num_classes_is_an_error():
    with pytest.raises(DataError, match="num_classes=2"):
        balanced_class_weights(np.array([0, 1, 2]), 2)


def test_class_counts():
    assert class_counts(np.array([2, 2, 0]), 4).tolist() == [1, 0, 2, 0]
