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


# --- the refer band --------------------------------------------------------------------------


def _logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


@pytest.mark.parametrize("share", [0.05, 0.1, 0.25, 0.5])
def test_the_refer_band_holds_its_share_of_validation_symmetric_in_log_odds(share):
    from keras_app.decision.operating_point import fit_refer_band, in_refer_band

    y, probs = overconfident(400, seed=3)
    p = probs[:, 1].astype(np.float32)
    threshold = choose_threshold(y == 1, p, 0.95)
    band = fit_refer_band(y == 1, p, threshold, share)
    inside = in_refer_band(p, band["low"], band["high"])
    assert inside.sum() == round(share * len(p))  # the k nearest cases, no more
    assert band["validation"]["referred"]["k"] == inside.sum()
    assert band["low"] < threshold < band["high"]
    centre = _logit(threshold)
    assert _logit(band["high"]) - centre == pytest.approx(centre - _logit(band["low"]), rel=1e-5)
    # The referred are the nearest in log-odds: every case outside is further than every inside.
    distance = np.abs(_logit(p) - centre)
    assert distance[inside].max() < distance[~inside].min()
    decided = ~inside
    called = p >= np.float32(threshold)
    assert band["validation"]["sensitivity"]["n"] == (decided & (y == 1)).sum()
    assert band["validation"]["sensitivity"]["k"] == (decided & called & (y == 1)).sum()
    assert band["validation"]["specificity"]["k"] == (decided & ~called & (y == 0)).sum()


def test_the_refer_rule_is_half_open_and_alike_in_numpy_and_a_tensorflow_graph():
    import tensorflow as tf

    from keras_app.decision.operating_point import in_refer_band

    low, high = 0.2113, 0.4217  # not float32 values: both sides round them alike
    lo, hi = np.float32(low), np.float32(high)
    down, up = np.float32(0), np.float32(1)
    p = np.array(
        [np.nextafter(lo, down), lo, np.nextafter(lo, up), 0.3, np.nextafter(hi, down), hi],
        np.float32,
    )
    numpy = in_refer_band(p, low, high)
    graph = tf.function(lambda x: in_refer_band(x, low, high))(tf.constant(p)).numpy()
    assert numpy.tolist() == graph.tolist() == [False, True, True, True, True, False]


@pytest.mark.parametrize("share", [0, 0.7, -1, 0.5001])
def test_a_share_outside_0_to_half_is_refused_saying_what_was_received(share):
    from keras_app.decision.operating_point import check_refer_share

    with pytest.raises(ValueError, match=f"Received {share}"):
        check_refer_share(share)


def test_the_band_is_off_by_default_and_an_older_record_loads_without_it():
    y, probs = overconfident(300, seed=4)
    op = fit_operating_point(y, probs, NAMES, 0.95)
    assert op.refer_band == {} and op.refer_limits is None
    assert not op.referred(probs, NAMES).any()
    assert "refer" not in op.describe()
    old = {k: v for k, v in op.to_dict().items() if k != "refer_band"}
    assert OperatingPoint.from_dict(old) == op
    banded = fit_operating_point(y, probs, NAMES, 0.95, refer_share=0.1)
    # The band changes no decision: the same temperature and threshold, one more part.
    assert (banded.temperature, banded.threshold) == (op.temperature, op.threshold)
    assert OperatingPoint.from_dict(banded.to_dict()) == banded
    calibrated = scale(probs, banded.temperature)
    referred = banded.referred(calibrated, NAMES)
    assert referred.sum() == banded.refer_band["validation"]["referred"]["k"] == 30
    assert "refer band [" in banded.describe()
    # Only analysed images are referred: a guard score above the limit is not analysed.
    guarded = OperatingPoint(**{**banded.to_dict(), "guard": {"limit": 1.0}})
    ood = np.where(np.arange(len(y)) % 2 == 0, 0.5, 2.0)
    np.testing.assert_array_equal(guarded.referred(calibrated, NAMES, ood), referred & (ood < 1))
