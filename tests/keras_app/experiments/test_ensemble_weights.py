"""Member weights (validation metric, log-loss on the simplex) and the comparison table."""

from __future__ import annotations

import numpy as np
import pytest

from keras_app.core.errors import UsageError
from keras_app.experiments import ensemble_compare as compare
from keras_app.experiments.ensemble_weights import (
    combine_probs,
    optimize_weights,
    val_metric_weights,
)


def log_loss(probs, y):
    return -np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, None)))


@pytest.fixture
def members():
    """A good member, a noisy one, and the labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    good = np.where(np.eye(2)[y] == 1, 0.75, 0.25)
    good[:30] = good[:30, ::-1]  # wrong, confidently, on some rows: the optimum mixes
    noise = rng.dirichlet(np.ones(2), size=200)
    return [noise, good], y


@pytest.mark.parametrize("logit_average", [False, True])
def test_optimized_weights_reach_the_minimum_log_loss(members, logit_average):
    probs, y = members
    w = optimize_weights(probs, y, logit_average=logit_average)
    assert w.shape == (2,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert w[1] > w[0]
    grid = np.linspace(0, 1, 1001)
    losses = [
        log_loss(combine_probs(probs, [1 - g, g], logit_average=logit_average), y) for g in grid
    ]
    found = log_loss(combine_probs(probs, w, logit_average=logit_average), y)
    assert found <= min(losses) + 1e-6
    assert w[1] == pytest.approx(grid[int(np.argmin(losses))], abs=0.01)


def test_optimized_weights_stay_on_the_simplex_for_many_members():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=100)
    probs = [rng.dirichlet(np.ones(3), size=100) for _ in range(4)]
    w = optimize_weights(probs, y)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert log_loss(combine_probs(probs, w), y) <= log_loss(combine_probs(probs, [1] * 4), y) + 1e-9


def test_optimize_weights_checks_label_count(members):
    probs, y = members
    with pytest.raises(ValueError, match="200 rows. Received 199 labels"):
        optimize_weights(probs, y[:-1])


def test_val_metric_weights_use_auc_for_two_classes_accuracy_otherwise():
    val = [{"roc_auc": 0.9, "accuracy": 0.5}, {"roc_auc": 0.6, "accuracy": 0.8}]
    assert val_metric_weights(val, 2, ["a", "b"]) == [0.9, 0.6]
    assert val_metric_weights(val, 3, ["a", "b"]) == [0.5, 0.8]
    with pytest.raises(UsageError, match="runs/b has no usable validation roc_auc"):
        val_metric_weights([{"roc_auc": 0.9}, {}], 2, ["runs/a", "runs/b"])
    with pytest.raises(UsageError, match="roc_auc"):
        val_metric_weights([{"roc_auc": 0.9}, {"roc_auc": float("nan")}], 2, ["a", "b"])


def test_comparison_gain_is_positive_when_the_ensemble_is_better():
    members = {
        "a": {"accuracy": 0.80, "roc_auc": 0.90, "log_loss": 0.40, "f1": 0.7},
        "b": {"accuracy": 0.85, "roc_auc": 0.88, "log_loss": 0.50, "macro_f1": 0.9},
    }
    ensemble = {"accuracy": 0.84, "roc_auc": 0.93, "log_loss": 0.30, "macro_f1": 0.8}
    rows = compare.comparison_rows(members, ensemble)
    assert [r["model"] for r in rows] == ["a", "b", "ensemble", compare.GAIN_ROW]
    gain = rows[-1]
    assert gain["accuracy"] == pytest.approx(-0.01)
    assert gain["roc_auc"] == pytest.approx(0.03)
    assert gain["log_loss"] == pytest.approx(0.10)  # best member 0.40, ensemble 0.30: better
    assert gain["f1"] == pytest.approx(-0.1)  # macro F1 stands in where F1 is absent
    assert gain["sensitivity"] is None
    csv = compare.comparison_csv(rows).splitlines()
    assert csv[0] == "model,accuracy,roc_auc,sensitivity,specificity,f1,log_loss"
    assert csv[-1] == "gain over best member,-0.0100,+0.0300,,,-0.1000,+0.1000"
    md = compare.comparison_markdown(rows)
    assert "| **gain over best member** | -0.0100 | +0.0300 |" in md
