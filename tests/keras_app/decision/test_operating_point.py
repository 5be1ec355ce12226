"""keras_app.operating_point: temperature fit, threshold choice, the stored record."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from keras_app.decision.metrics import expected_calibration_error
from keras_app.decision.operating_point import (
    OperatingPoint,
    choose_threshold,
    fit_operating_point,
    fit_temperature,
    scale,
)

NAMES = ("NORMAL", "PNEUMONIA")


def overconfident(n=2000, seed=0):
    """Labels drawn from a true probability, and a model that pushes it towards 0 or 1."""
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < true_p).astype(int)
    logit = np.log(true_p / (1 - true_p)) * 4.0  # four times too sure
    p = 1 / (1 + np.exp(-logit))
    return y, np.stack([1 - p, p], axis=1)


def test_temperature_scaling_lowers_ece_and_keeps_the_ranking():
    y, probs = overconfident()
    temperature = fit_temperature(y, probs)
    assert temperature == pytest.approx(4.0, rel=0.15)
    calibrated = scale(probs, temperature)
    assert expected_calibration_error(y, calibrated) < 0.5 * expected_calibration_error(y, probs)
    assert expected_calibration_error(y, calibrated) < 0.03
    assert roc_auc_score(y, calibrated[:, 1]) == pytest.approx(roc_auc_score(y, probs[:, 1]))
    np.testing.assert_array_equal(np.argsort(calibrated[:, 1]), np.argsort(probs[:, 1]))


def test_a_separable_split_cannot_push_the_temperature_below_its_floor():
    y = np.array([0] * 5 + [1] * 5)
    probs = np.stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1], axis=1)  # every image ranked right
    assert fit_temperature(y, probs) == pytest.approx(0.25, abs=1e-3)


def test_threshold_reaches_the_target_with_the_best_specificity():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.8, 0.3, 0.7, 0.55, 0.95])
    threshold = choose_threshold(y, scores, 1.0)
    called = scores >= threshold
    assert called[y == 1].all() and (~called[y == 0]).sum() == 2  # 0.4 and 0.6 flagged
    with pytest.raises(ValueError, match="Received target_sensitivity=1.5"):
        choose_threshold(y, scores, 1.5)
    with pytest.raises(ValueError, match="needs both classes"):
        choose_threshold(np.ones(3), scores[:3], 0.9)


def test_operating_point_is_fitted_on_the_split_it_is_given_and_round_trips():
    y, probs = overconfident(400, seed=1)
    op = fit_operating_point(y, probs, NAMES, 0.95)
    calibrated = scale(probs, op.temperature)
    assert op.positive_class == "PNEUMONIA" and op.chosen_on == "val"
    assert op.threshold == pytest.approx(choose_threshold(y == 1, calibrated[:, 1], 0.95))
    assert op.validation["sensitivity"]["value"] >= 0.95
    assert op.validation["ece_after"] < op.validation["ece_before"]
    assert OperatingPoint.from_dict(op.to_dict()) == op
    decided = op.decide(calibrated, NAMES)
    np.testing.assert_array_equal(decided, (calibrated[:, 1] >= op.threshold).astype(int))


def test_no_target_or_many_classes_decide_by_the_most_probable_class():
    y, probs = overconfident(100)
    assert fit_operating_point(y, probs, NAMES, None).threshold is None
    three = np.random.default_rng(0).dirichlet([1, 1, 1], 30)
    op = fit_operating_point(np.arange(30) % 3, three, ("a", "b", "c"), 0.95)
    assert op.threshold is None and op.positive_class is None
    np.testing.assert_array_equal(op.decide(three, ("a", "b", "c")), three.argmax(1))
    assert OperatingPoint.from_dict(None) == OperatingPoint()  # runs from before


def test_the_threshold_is_chosen_on_the_saved_models_own_outputs_when_given():
    y, probs = overconfident(300, seed=2)
    op = fit_operating_point(y, probs, NAMES, 0.95)
    served = scale(probs, op.temperature).astype(np.float32)  # what a float32 model returns
    again = fit_operating_point(y, probs, NAMES, 0.95, calibrated=served)
    assert again.temperature == op.temperature
    assert again.threshold == pytest.approx(choose_threshold(y == 1, served[:, 1], 0.95))
    called = served[:, 1] >= again.threshold
    assert again.validation["sensitivity"]["value"] == called[y == 1].mean()


def test_a_threshold_between_adjacent_float32_scores_keeps_the_choice():
    from keras_app.decision.operating_point import OperatingPoint, called_positive, choose_threshold

    below = np.float32(0.7)
    boundary = np.nextafter(below, np.float32(1))  # no float32 lies between the two
    scores = np.array([below, boundary], np.float32)
    threshold = choose_threshold([0, 1], scores, 1.0)
    assert below < np.float32(threshold) <= boundary
    assert called_positive(scores, threshold).tolist() == [False, True]
    op = OperatingPoint(positive_class="PNEUMONIA", threshold=threshold)
    probs = np.stack([1 - scores, scores], axis=1)
    assert op.decide(probs, NAMES).tolist() == [0, 1]


def test_the_rule_decides_alike_in_numpy_and_in_a_tensorflow_graph():
    """The exported graph calls the same function on a float32 tensor: the boundary case
    (a score exactly at the threshold, and its float32 neighbours) goes the same way."""
    import tensorflow as tf

    from keras_app.decision.operating_point import called_positive

    threshold = 0.4217  # not a float32 value: both sides round it the same way
    at = np.float32(threshold)
    p = np.array(
        [np.nextafter(at, np.float32(0)), at, np.nextafter(at, np.float32(1)), 0.0, 1.0],
        np.float32,
    )
    numpy = called_positive(p, threshold)
    graph = tf.function(lambda x: called_positive(x, threshold))(tf.constant(p)).numpy()
    assert numpy.tolist() == graph.tolist() == [False, True, True, False, True]
