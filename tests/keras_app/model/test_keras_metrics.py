"""keras_app.keras_metrics: ClassAUC against scikit-learn's roc_auc_score, eager and in graph.

Keras' AUC does not sort the scores: it counts them into `num_thresholds` (200)
evenly spaced thresholds and integrates the ROC curve through those points
(trapezoids). A positive and a negative scoring between the same two
thresholds are then a tie, worth half a pair, where scikit-learn, ranking
exactly, counts 0 or 1. So the two agree to within

    0.5 * (positive-negative pairs sharing a bucket) / (positives * negatives),

which these tests compute from the data rather than guess; scores that never
share a bucket with the other class agree to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from keras_app.model.keras_metrics import ClassAUC

NUM_THRESHOLDS = 200  # Keras' default, what training_metrics uses


def shared_bucket_bound(labels: np.ndarray, scores: np.ndarray) -> float:
    """The most Keras' thresholded AUC can differ from the exact one on these scores."""
    # Keras' thresholds: 0 - eps, i / (n - 1) for i in 1..n-2, 1 + eps.
    edges = np.linspace(0.0, 1.0, NUM_THRESHOLDS)
    bucket = np.searchsorted(edges, scores, side="left")
    pos, neg = bucket[labels == 1], bucket[labels == 0]
    per_bucket = np.bincount(pos, minlength=NUM_THRESHOLDS + 1) * np.bincount(
        neg, minlength=NUM_THRESHOLDS + 1
    )
    shared = int(per_bucket.sum())
    return 0.5 * shared / (len(pos) * len(neg))


def two_column(positive: np.ndarray, positive_index: int) -> np.ndarray:
    """Softmax-like rows whose `positive_index` column holds `positive`."""
    probs = np.stack([1 - positive, positive], axis=1)
    return probs if positive_index == 1 else probs[:, ::-1]


def keras_auc(labels, probs, class_index, graph: bool) -> float:
    metric = ClassAUC(class_index)
    one_hot = tf.one_hot(labels, 2)
    probs = tf.constant(probs, tf.float32)
    if graph:
        tf.function(metric.update_state)(one_hot, probs)
    else:
        metric.update_state(one_hot, probs)
    return float(metric.result())


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
@pytest.mark.parametrize("positive_index", [0, 1])
def test_class_auc_matches_scikit_learn_within_its_threshold_discretisation(graph, positive_index):
    rng = np.random.default_rng(positive_index)
    labels = rng.integers(0, 2, 500)
    # Overlapping classes (AUC about 0.8), continuous scores: many share a bucket.
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, 500) + 1.2 * labels)))
    # The positive class is column `positive_index`: its labels are 1 there.
    column_labels = labels if positive_index == 1 else 1 - labels
    got = keras_auc(column_labels, two_column(scores, positive_index), positive_index, graph)
    want = roc_auc_score(labels, scores)
    bound = shared_bucket_bound(labels, scores)
    assert 0 < bound < 0.01  # the test data does exercise the discretisation
    assert abs(got - want) <= bound + 1e-6, (got, want, bound)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_class_auc_equals_scikit_learn_when_no_bucket_is_shared(graph):
    rng = np.random.default_rng(7)
    # Every score in its own bucket, at its centre: no tie for Keras to invent.
    buckets = rng.permutation(np.arange(1, NUM_THRESHOLDS - 1))[:150]
    scores = (buckets - 0.5) / (NUM_THRESHOLDS - 1)
    labels = (rng.random(150) < 0.3 + 0.4 * scores).astype(int)
    assert shared_bucket_bound(labels, scores) == 0
    got = keras_auc(labels, two_column(scores, 1), 1, graph)
    assert got == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)


def test_class_auc_scores_its_own_column_not_all_of_them():
    # keras.metrics.AUC on one-hot labels flattens both columns; ClassAUC must not.
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    assert keras_auc(labels, probs, 1, graph=False) == pytest.approx(
        roc_auc_score(labels, probs[:, 1]), abs=1e-6
    )


def test_class_auc_refuses_a_negative_index_and_round_trips_its_config():
    with pytest.raises(ValueError, match="Received class_index=-1"):
        ClassAUC(-1)
    again = ClassAUC.from_config(ClassAUC(0, name="auc_normal").get_config())
    assert again.class_index == 0 and again.name == "auc_normal"
