"""Clinical metrics against scikit-learn and hand counts on fixed arrays."""

import warnings

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn import metrics as skm

from keras_app.decision.metrics import (
    classification_metrics,
    decision_metrics,
    evaluate_probs,
    expected_calibration_error,
    positive_index,
)
from keras_app.decision.operating_point import OperatingPoint, choose_threshold

NAMES = ["NORMAL", "PNEUMONIA"]


def at(threshold: float) -> OperatingPoint:
    """The operating point deciding PNEUMONIA at P >= threshold."""
    return OperatingPoint(positive_class="PNEUMONIA", threshold=threshold)


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
    low = classification_metrics(Y, PROBS, NAMES, operating_point=at(0.25))
    assert low["sensitivity"] == 1.0 and low["specificity"] == pytest.approx(2 / 4)
    # The 0.3 pneumonia must be caught; the next lower score is a 0.2 normal: halfway.
    assert choose_threshold(Y == 1, P_POS, 0.95) == pytest.approx(0.25)
    assert choose_threshold(Y == 1, P_POS, 0.8) == pytest.approx((0.55 + 0.4) / 2)


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


def test_a_diverged_models_nan_rows_fall_in_no_bin_and_its_ece_is_nan():
    from keras_app.decision.metrics import calibration_bins

    probs = np.tile([[0.25, 0.75]], (10, 1))
    probs[3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warned casting NaN to an int bin index
        bins = calibration_bins(np.ones(10, int), probs)
        assert np.isnan(expected_calibration_error(np.ones(10, int), probs))
    assert sum(b["count"] for b in bins) == 9


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


def test_per_class_and_macro_match_sklearn_for_three_classes():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    probs = rng.dirichlet([1, 1, 1], 60)
    pred = probs.argmax(1)
    out = evaluate_probs(y, probs, ["a", "b", "c"], None)
    m = out["metrics"]
    cm = skm.confusion_matrix(y, pred)
    for c, name in enumerate("abc"):
        tn = cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]
        assert m["per_class"][name]["specificity"] == pytest.approx(
            tn / (tn + cm[:, c].sum() - cm[c, c])
        )
        assert m["per_class"][name]["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y == c, probs[:, c])
        )
        assert m["per_class"][name]["pr_auc"] == pytest.approx(
            skm.average_precision_score(y == c, probs[:, c])
        )
    for key, score in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ):
        assert m["macro"][key] == pytest.approx(score(y, pred, average="macro"))
    assert m["macro"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert out["classification_report"]["dict"] == skm.classification_report(
        y, pred, target_names=["a", "b", "c"], output_dict=True
    )


def test_binary_macro_specificity_is_the_mean_of_sensitivity_and_specificity():
    m = evaluate_probs(Y, PROBS, NAMES, None, "PNEUMONIA")["metrics"]
    assert m["per_class"]["PNEUMONIA"]["specificity"] == pytest.approx(m["specificity"])
    assert m["per_class"]["NORMAL"]["specificity"] == pytest.approx(m["sensitivity"])
    assert m["macro"]["specificity"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert m["macro"]["recall"] == pytest.approx(skm.balanced_accuracy_score(Y, PROBS.argmax(1)))


def test_decision_metrics_give_wilson_intervals_at_a_threshold():
    got = decision_metrics(Y, PROBS, NAMES, at(0.3))
    # Catching the 0.3 pneumonia also flags the 0.4 normal: specificity 3/4 -> 2/4.
    assert got["confusion_matrix"] == [[2, 2], [0, 6]]
    assert got["sensitivity"]["value"] == 1.0 and got["specificity"]["value"] == 0.5
    ci = binomtest(2, 4).proportion_ci(method="wilson")
    assert (got["specificity"]["low"], got["specificity"]["high"]) == pytest.approx(
        (ci.low, ci.high)
    )
    assert got["sensitivity"]["low"] < 1.0 == got["sensitivity"]["high"]  # 6/6: not certainty
    assert got["precision"] == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="needs an operating point with a threshold"):
        decision_metrics(Y, PROBS, NAMES, OperatingPoint())


def test_evaluate_probs_decides_at_the_threshold_it_is_given():
    m = evaluate_probs(Y, PROBS, NAMES, at(0.3))["metrics"]
    assert m["threshold"] == 0.3 and m["sensitivity"] == 1.0
    assert m["per_class"]["PNEUMONIA"]["specificity"] == pytest.approx(0.5)


def test_pick_cases_takes_classes_in_turn_most_confident_first():
    from keras_app.evaluation.report import pick_cases

    # index: 0 1 2 3 4 5 6 7 8 9; wrong: 2 (normal, p 0.6), 6 (pneumonia, p 0.3)
    pred = PROBS.argmax(1)
    correct, wrong = pick_cases(Y, pred, PROBS.max(1), 3)
    assert correct == [0, 9, 3]  # normal 0.9, pneumonia 0.95, normal 0.8
    assert wrong == [2, 6]  # normal flagged at 0.6 confidence, pneumonia missed at 0.7


def test_chosen_threshold_holds_for_float32_probabilities_at_the_boundary():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.3, 0.7, 200).astype(np.float32)
    probs = np.stack([1 - p, p], axis=1)  # rows summing to 1 +- float32 rounding
    y = (rng.uniform(size=200) < p).astype(int)
    for wanted in (0.8, 0.9, 0.95, 0.99):
        threshold = choose_threshold(y == 1, probs[:, 1], wanted)
        got = decision_metrics(y, probs, NAMES, at(threshold))
        assert got["sensitivity"]["value"] >= wanted


def test_roc_auc_with_a_stratified_bootstrap_interval():
    from keras_app.decision.metrics import roc_auc_with_ci

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60, bool), np.zeros(40, bool)]
    scores = y * 1.0 + rng.normal(0, 0.8, 100)
    found = roc_auc_with_ci(y, scores, n_boot=300, seed=1)
    assert found["n_pos"] == 60 and found["n_neg"] == 40 and found["n_boot"] == 300
    assert found["low"] < found["value"] < found["high"]
    assert 0.6 < found["value"] < 0.95 and found["high"] - found["low"] < 0.25
    assert roc_auc_with_ci(y, scores, n_boot=300, seed=1) == found  # seeded
    assert roc_auc_with_ci(y, y * 1.0, n_boot=50)["low"] == 1.0  # perfect stays perfect
    assert roc_auc_with_ci(y[:60], scores[:60])["value"] is None  # one class: none
    assert roc_auc_with_ci(y, scores, n_boot=0)["low"] is None


def test_refer_summary_counts_the_referred_and_judges_the_decided_apart():
    from keras_app.decision.metrics import guard_summary, refer_summary

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.35, 0.45, 0.2, 0.9, 0.5, 0.3, 0.8], np.float32)
    probs = np.stack([1 - p, p], axis=1)
    band = {"low": 0.3, "high": 0.55, "share": 0.5}
    op = OperatingPoint(positive_class="PNEUMONIA", threshold=0.4, refer_band=band)
    names = ("NORMAL", "PNEUMONIA")
    found = refer_summary(y, probs, names, op)
    # Referred: 0.35, 0.45, 0.5, 0.3 (0.3 is the band's low edge: inside).
    assert found["referred"] == {**found["referred"], "k": 4, "n": 8}
    decided = found["decided"]
    assert decided["sensitivity"]["k"] == 2 and decided["sensitivity"]["n"] == 2
    assert decided["specificity"]["k"] == 2 and decided["specificity"]["n"] == 2
    # Read by a person, every referred positive is caught and every referred negative a
    # false alarm: sensitivity 4/4, specificity 2/4.
    refs = found["with_referrals"]
    assert (refs["sensitivity"]["k"], refs["specificity"]["k"]) == (4, 2)
    assert refer_summary(y, probs, names, OperatingPoint(positive_class="PNEUMONIA")) == {}
    # The guard's summary counts its refusals the same way, through the same function.
    guard = guard_summary(y, probs, np.array([True] * 7 + [False]), names, op)
    assert guard["with_referrals"]["sensitivity"]["k"] == 3  # 0.3 missed; 0.8 kept out: read
