"""keras_app.ensemble.compare: the comparison chart labels every bar, zero included."""

from __future__ import annotations

from keras_app.experiments import ensemble_compare as compare


def test_every_bar_is_labelled_with_its_value_zero_included(tmp_path):
    members = {
        "a": {
            "accuracy": 0.5,
            "roc_auc": 0.9,
            "sensitivity": 0.0,
            "specificity": 1.0,
            "f1": 0.0,
            "log_loss": 0.7,
        },
        "b": {
            "accuracy": 0.8,
            "roc_auc": 0.85,
            "sensitivity": 0.6,
            "specificity": 0.9,
            "f1": 0.7,
            "log_loss": 0.5,
        },
    }
    ensemble = {
        "accuracy": 0.8,
        "roc_auc": 0.95,
        "sensitivity": 0.7,
        "specificity": 0.9,
        "f1": 0.75,
        "log_loss": 0.4,
    }
    rows = compare.comparison_rows(members, ensemble)
    fig = compare.plot_comparison(rows, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").is_file()
    scores, losses = fig.axes[:2]
    labels = [t.get_text() for t in scores.texts]
    assert len(labels) == 3 * 5  # three models, five 0-1 scores
    assert labels[:5] == ["0.5000", "0.9000", "0.0000", "1.0000", "0.0000"]  # member a's zeros
    assert [t.get_text() for t in losses.texts] == ["0.7000", "0.5000", "0.4000"]


def test_an_undefined_metric_is_labelled_not_left_blank(tmp_path):
    rows = compare.comparison_rows({"a": {"accuracy": 0.5}, "b": {"accuracy": 0.6}}, {})
    fig = compare.plot_comparison(rows, tmp_path / "comparison.png")
    assert "n/a" in [t.get_text() for t in fig.axes[0].texts]
