"""keras_app.decision.sample_size: how many local images a refit needs, and its floor."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from keras_app.decision.sample_size import SampleSize, cases_needed, floor_cases, wilson_lower


@pytest.mark.parametrize("k, n", [(0, 5), (3, 7), (52, 53), (40, 40), (110, 111)])
def test_wilson_lower_is_scipys(k, n):
    expected = binomtest(k, n).proportion_ci(0.95, method="wilson").low
    assert wilson_lower(k, n) == pytest.approx(expected, abs=1e-9)


def test_the_documented_defaults():
    size = SampleSize(0.97)
    assert (size.positives_needed, size.positives_floor) == (53, 35)
    assert (size.negatives_needed, size.negatives_floor) == (25, 9)


@pytest.mark.parametrize("level", [0.5, 0.7, 0.9, 0.95])
def test_the_floor_is_where_a_perfect_result_first_clears_the_level(level):
    n = floor_cases(level)
    assert wilson_lower(n, n) >= level > wilson_lower(n - 1, n - 1)


def test_needed_is_where_the_planned_rate_first_clears_the_level():
    n = cases_needed(0.97, 0.90)
    assert wilson_lower(52, 53) >= 0.90 and n == 53
    assert all(wilson_lower(-(-97 * m // 100), m) < 0.90 for m in range(1, n))


def test_below_the_floor_is_refused_between_floor_and_need_warned():
    size = SampleSize(0.97)
    assert "34 positives (floor 35)" in size.shortfall(34, 30)
    assert "8 negatives (floor 9)" in size.shortfall(40, 8)
    assert size.shortfall(35, 9) is None and size.below_need(35, 9) is not None
    assert size.below_need(53, 25) is None
    assert "53 positives" in size.statement(139, 61) and "139 positives" in size.statement(139, 61)


@pytest.mark.parametrize(
    "kwargs", [{"min_sensitivity": 0.98}, {"min_specificity": 0.9}, {"min_specificity": 0}]
)
def test_levels_that_cannot_be_planned_for_are_refused(kwargs):
    with pytest.raises(ValueError, match="Received"):
        SampleSize(0.97, **kwargs)
