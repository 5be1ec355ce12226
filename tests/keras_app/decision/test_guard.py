"""keras_app.decision.guard: the Mahalanobis guard's fit, scales, limit, score and stored record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_app.decision.guard import CITATION, FeatureGuard, choose_limit, fit_guard

DIMS = (8, 16)  # two blocks, as two depths of a network
D = sum(DIMS)


def gaussian(n, shift=0.0, seed=0):
    """Correlated Gaussian features, like pooled activations (a fixed random mixing)."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(D, D)) / np.sqrt(D)
    return rng.normal(size=(n, D)) @ mixing + 3.0 + shift


@pytest.fixture(scope="module")
def guard():
    fitted = fit_guard(gaussian(3000), layers=("early", "pool"), dims=DIMS)
    return fitted.with_limit(gaussian(2000, seed=1), pass_rate=0.99)


def test_the_limit_passes_about_99_percent_of_unseen_in_distribution_rows(guard):
    assert guard.validation["pass_rate"]["value"] >= 0.99
    assert guard.validation["n"] == 2000
    assert guard.passes(gaussian(5000, seed=2)).mean() == pytest.approx(0.99, abs=0.006)


def test_each_block_is_scaled_to_its_own_validation_percentile(guard):
    scaled = guard.block_scores(gaussian(2000, seed=1)) / np.asarray(guard.scales)
    np.testing.assert_allclose(np.quantile(scaled, 0.99, axis=0), 1.0)
    assert guard.limit > 1.0  # the largest of two passes 99% a little above either's 1.0


def test_shifted_rows_are_flagged(guard):
    assert (~guard.passes(gaussian(500, shift=1.5, seed=3))).mean() > 0.95
    # A shift along one block's direction of least variance: every column looks normal.
    rows = gaussian(500, seed=4)
    values, vectors = np.linalg.eigh(np.linalg.inv(guard.precisions[1]))
    signs = np.random.default_rng(4).choice([-1, 1], (500, 1))
    rows[:, DIMS[0] :] += 8 * np.sqrt(values[0]) * vectors[:, 0] * signs
    assert (~guard.passes(rows)).mean() > 0.95


def test_score_matches_the_definition_and_float32_agrees(guard):
    x = gaussian(50, seed=5)
    blocks = []
    for b, (start, stop) in enumerate(((0, DIMS[0]), (DIMS[0], D))):
        diff = x[:, start:stop] - guard.means[b][0]
        blocks.append(np.array([d @ guard.precisions[b] @ d for d in diff]) / guard.scales[b])
    expected = np.max(blocks, axis=0)
    np.testing.assert_allclose(guard.score(x), expected, rtol=1e-10)
    np.testing.assert_allclose(guard.score(x, dtype=np.float32), expected, rtol=1e-4)
    assert guard.score(x).min() > 0
    for precision in guard.precisions:
        np.testing.assert_array_equal(precision, precision.T)


def test_per_class_means_score_the_distance_to_the_nearest_class():
    a, b = gaussian(1000, seed=6), gaussian(1000, shift=4.0, seed=7)
    labels = np.r_[np.zeros(1000), np.ones(1000)]
    per_class = fit_guard(np.r_[a, b], labels)
    assert per_class.means[0].shape == (2, D) and per_class.dims == (D,)
    one_mean = fit_guard(np.r_[a, b])
    middle = gaussian(200, shift=2.0, seed=8)  # between the classes: no image was there
    assert np.median(per_class.score(middle)) > 5 * np.median(per_class.score(a))
    assert np.median(one_mean.score(middle)) < np.median(per_class.score(middle))


def test_round_trip_through_json_keeps_every_decision(guard):
    record = json.loads(json.dumps(guard.to_dict()))
    back = FeatureGuard.from_dict({**record, "added_later": 1})
    x = gaussian(300, shift=0.5, seed=9)
    np.testing.assert_array_equal(back.score(x), guard.score(x))
    np.testing.assert_array_equal(back.passes(x), guard.passes(x))
    assert (back.limit, back.scales, back.layers, back.dims, back.method) == (
        guard.limit,
        guard.scales,
        ("early", "pool"),
        DIMS,
        "mahalanobis",
    )
    assert back.citation == CITATION and "Ledoit" in back.citation
    assert back.num_weights == D + DIMS[0] ** 2 + DIMS[1] ** 2 + 2 + 1
    assert "early (8) + pool (16)" in back.describe() and "99" in back.describe()


def test_shrinkage_keeps_a_guard_fitted_on_fewer_rows_than_columns_finite():
    few = fit_guard(gaussian(10, seed=10))
    assert 0 < few.shrinkage[0] <= 1
    assert np.isfinite(few.score(gaussian(20, seed=11))).all()


def test_choose_limit_passes_at_least_the_share_with_a_margin():
    scores = np.arange(1.0, 101.0)  # 1..100
    limit = choose_limit(scores, 0.99)
    assert limit == pytest.approx(99.5)
    assert (scores <= limit).mean() == 0.99
    assert choose_limit(scores, 1.0) > 100
    assert choose_limit([5.0], 0.99) > 5.0


def one_block(**kwargs):
    return FeatureGuard(means=(np.zeros(2),), precisions=(np.eye(2),), **kwargs)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: choose_limit([1.0, 2.0], 0.0), "Received pass_rate=0.0"),
        (lambda: choose_limit([1.0, np.nan], 0.9), "finite scores"),
        (lambda: fit_guard(np.zeros((1, 3))), r"Received \(1, 3\)"),
        (lambda: fit_guard(np.full((4, 2), np.inf)), "non-finite"),
        (lambda: fit_guard(np.zeros((4, 2)), labels=[0, 1]), "labels must be"),
        (lambda: fit_guard(np.zeros((4, 3)), dims=(1, 1)), r"Received dims=\(1, 1\)"),
        (lambda: FeatureGuard(means=(np.zeros(3),), precisions=(np.eye(2),)), "Received mean"),
        (lambda: FeatureGuard(means=(np.zeros(3),), precisions=()), "Received 1 means, 0"),
        (lambda: one_block(dims=(3,)), r"Received dims=\(3,\)"),
        (lambda: one_block(scales=(0.0,)), r"Received \(0.0,\)"),
        (lambda: one_block(layers=("a", "b")), "Received layers"),
        (lambda: one_block(method="knn"), "Received method='knn'"),
        (lambda: one_block().passes(np.zeros((1, 2))), "no limit"),
        (lambda: one_block().score(np.zeros((1, 3))), r"\[n, 2\]"),
        (lambda: one_block().with_limit(np.zeros((4, 2)), 1.5), "Received pass_rate=1.5"),
    ],
)
def test_bad_arguments_say_what_was_received(call, message):
    with pytest.raises(ValueError, match=message):
        call()
