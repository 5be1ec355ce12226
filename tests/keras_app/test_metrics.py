"""Clinical metrics against scikit-learn and hand counts on fixed arrays."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from keras_app.metrics import (
    classification_metrics,
    expected_calibration_error,
    positive_index,
    threshold_for_sensitivity,
)

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P_POS = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.8, 0.3, 0.7, 0.55, 0.95])
PROBS = np.stack([1 - P_POS, P_POS], axis=1)


def test_binary_metrics_match_hand_counts_and_sklearn():
    m = classification_metrics(Y, PROBS, ["NORMAL", "PNEUMONIA"])
    # predicted positive: 0.6 (a false positive), and all positives but 0.3.
    assert m["confusion_matrix"] == [[3, 1], [1, 5]]
    assert m["sensitivity"] == pytest.approx(5 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(5 / 6)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(Y, P_POS))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(Y, P_POS))
    assert m["log_loss"] == pytest.approx(skm.log_loss(Y, PROBS))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(Y, P_POS))
    assert m["accuracy"] == pytest.approx(0.8)


def test_positive_class_found_by_name_whatever_its_position():
    assert positive_index(["PNEUMONIA", "NORMAL"]) == 0
    assert positive_index(["cat", "dog"]) == 1
    assert positive_index(["a", "b", "c"]) is None
    m = classification_metrics(1 - Y, PROBS[:, ::-1], ["PNEUMONIA", "NORMAL"])
    assert m["sensitivity"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="Received positive_class='X'"):
        positive_index(["a", "b"], "X")


def test_threshold_moves_the_tradeoff():
    low = classification_metrics(Y, PROBS, ["NORMAL", "PNEUMONIA"], threshold=0.25)
    assert low["sensitivity"] == 1.0 and low["specificity"] == pytest.approx(2 / 4)
    thr, sens, spec = threshold_for_sensitivity(Y, P_POS, 0.95)
    assert sens >= 0.95 and thr == pytest.approx(0.3) and spec == pytest.approx(0.5)


def test_multiclass_uses_macro_one_vs_rest():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    probs = rng.dirichlet([1, 1, 1], 60)
    m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    assert "sensitivity" not in m


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_not():
    y = np.array([1, 1, 1, 0] * 25)
    calibrated = np.tile([[0.25, 0.75]], (100, 1))
    assert expected_calibration_error(y, calibrated) == pytest.approx(0.0)
    overconfident = np.tile([[0.01, 0.99]], (100, 1))
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.24)


def test_float32_softmax_with_zero_probabilities_gives_no_sklearn_warning():
    # Ten classes of saturated float32 softmax: rows sum to 1 only to ~1e-7, many entries are 0.
    # A clip before sklearn pushed the sums past its tolerance and it warned on every evaluation.
    logits = np.random.default_rng(0).normal(0, 40, size=(50, 10)).astype(np.float32)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    assert (probs == 0).any()
    y = np.arange(50) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y, probs, [str(i) for i in range(10)])
    assert np.isfinite(m["log_loss"])
