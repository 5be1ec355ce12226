"""keras_app.decision.drift: PSI, KS and each alert limit, on synthetic drift."""

from __future__ import annotations

import numpy as np
import pytest

from keras_app.decision import drift
from keras_app.decision.resampling import auc_gain, auc_with_ci, mean_with_ci

RNG = np.random.default_rng(0)
REFERENCE = RNG.beta(0.5, 0.5, 400)  # calibrated scores pile up near 0 and 1


def judge(scores, *, positive_rate=None, not_analysed=0, latency=100.0):
    called = scores >= 0.5
    rate = np.mean(REFERENCE >= 0.5) if positive_rate is None else positive_rate
    checks = drift.checks(REFERENCE, rate, scores, called, not_analysed, [latency] * len(scores))
    return {c.key: c for c in checks}


def test_same_distribution_is_quiet():
    found = judge(RNG.beta(0.5, 0.5, 600))
    assert not any(c.alert for c in found.values())
    assert found["psi"].value < 0.1


def test_shifted_scores_alert_psi_ks_and_positive_rate():
    shifted = np.clip(RNG.beta(0.5, 0.5, 600) * 0.3 + 0.7, 0, 1)  # every film reads more positive
    found = judge(shifted)
    assert found["psi"].alert and found["psi"].value > drift.LIMITS["psi"].value
    assert found["ks"].alert and found["positive_rate"].alert


def test_a_large_sample_with_a_trivial_difference_needs_the_effect_size_too():
    reference = RNG.normal(0.5, 0.1, 50_000)
    nudged = RNG.normal(0.505, 0.1, 50_000)  # p << 0.01, D about 0.02
    _, p = drift.ks(reference, nudged)
    checks = drift.checks(reference, 0.5, nudged, nudged >= 0.5, 0, [1.0])
    assert p < 0.01 and not next(c for c in checks if c.key == "ks").alert


def test_operations_limits():
    same = RNG.beta(0.5, 0.5, 200)
    assert judge(same, not_analysed=20)["not_analysed"].alert  # 20 of 220 > 5%
    assert not judge(same, not_analysed=5)["not_analysed"].alert
    assert judge(same, latency=6000)["latency_p95"].alert
    assert judge(same, positive_rate=0.1)["positive_rate"].alert


def test_too_few_images_are_not_judged():
    found = judge(RNG.beta(0.5, 0.5, drift.MIN_IMAGES - 1) * 0.1)
    for key in ("psi", "ks", "positive_rate"):
        assert found[key].value is None and not found[key].alert
        assert "too few" in found[key].note


def test_psi_is_zero_on_itself_and_every_limit_says_why():
    assert drift.psi(REFERENCE, REFERENCE) == pytest.approx(0, abs=1e-9)
    assert all(len(limit.why) > 40 for limit in drift.LIMITS.values())


def test_bootstrap_intervals():
    y = np.r_[np.zeros(60, bool), np.ones(60, bool)]
    scores = np.r_[RNG.normal(0, 1, 60), RNG.normal(1.5, 1, 60)]
    auc = auc_with_ci(y, scores, resamples=300)
    assert auc["low"] < auc["value"] < auc["high"]
    gain = auc_gain(y, scores, scores, resamples=100)
    assert gain["value"] == gain["low"] == gain["high"] == 0
    mean = mean_with_ci(np.r_[-1.0, -2.0, -1.5, -0.5], resamples=200)
    assert mean["high"] < 0


def test_the_bootstrap_auc_is_scikit_learns():
    from sklearn.metrics import roc_auc_score

    from keras_app.decision.resampling import roc_auc

    y = RNG.random(300) < 0.7
    scores = np.round(RNG.random(300) + y * 0.3, 2)  # ties included
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
