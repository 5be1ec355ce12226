"""keras_app.plots: figures carry their titles, labels and class names, and save as PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from keras_app.decision.metrics import expected_calibration_error
from keras_app.reports import overlays, plots

NAMES = ["NORMAL", "PNEUMONIA"]
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P_POS = np.array([0.1, 0.4, 0.6, 0.2, 0.9, 0.8, 0.3, 0.7, 0.55, 0.95])
PROBS = np.stack([1 - P_POS, P_POS], axis=1)


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def ticks(labels) -> list[str]:
    return [t.get_text() for t in labels]


def matrices(fig):
    """The two matrix panels, without their colour bars."""
    return [ax for ax in fig.axes if ax.get_xlabel() == "predicted class"]


def test_confusion_matrix_shows_counts_and_row_percentages_with_class_names(tmp_path):
    fig = plots.confusion_matrix_figure([[3, 1], [1, 5]], NAMES, subtitle="test split")
    counts, normalised = matrices(fig)
    assert texts(counts) == ["3", "1", "1", "5"]
    assert texts(normalised) == ["75.0%", "25.0%", "16.7%", "83.3%"]
    for ax in (counts, normalised):
        assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
        assert ticks(ax.get_xticklabels()) == NAMES and ticks(ax.get_yticklabels()) == NAMES
        assert ax.get_title().startswith("Confusion matrix")
    assert fig.get_suptitle() == "test split"
    path = plots.save(fig, tmp_path / "cm.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200


def test_confusion_matrix_with_an_empty_true_class_does_not_divide_by_zero():
    fig = plots.confusion_matrix_figure([[0, 0], [2, 3]], NAMES)
    assert texts(matrices(fig)[1])[:2] == ["0.0%", "0.0%"]


def test_roc_curve_is_sklearns_with_auc_in_the_legend_and_operating_points():
    fig = plots.roc_figure(Y, PROBS, NAMES, positive=1, points=[("threshold 0.5", 0.75, 5 / 6)])
    ax = fig.axes[0]
    fpr, tpr, _ = skm.roc_curve(Y, P_POS)
    curve = ax.lines[0]
    np.testing.assert_allclose(curve.get_xdata(), fpr)
    np.testing.assert_allclose(curve.get_ydata(), tpr)
    legend = ticks(ax.get_legend().get_texts())
    assert legend[0] == f"PNEUMONIA (AUC {skm.roc_auc_score(Y, P_POS):.3f})"
    assert "threshold 0.5: sens 0.833, spec 0.750" in legend
    assert ax.lines[2].get_xdata()[0] == pytest.approx(0.25)  # 1 - specificity
    assert "sensitivity" in ax.get_ylabel() and "specificity" in ax.get_xlabel()
    assert ax.get_title() == "ROC curve, positive class PNEUMONIA"


def test_roc_curve_one_vs_rest_for_three_classes():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    fig = plots.roc_figure(y, rng.dirichlet([1, 1, 1], 30), ["a", "b", "c"])
    legend = ticks(fig.axes[0].get_legend().get_texts())
    assert [t.split(" (")[0] for t in legend[:3]] == ["a vs rest", "b vs rest", "c vs rest"]


def test_calibration_bins_are_the_bins_of_the_ece():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([2, 2], 200)
    y = rng.integers(0, 2, 200)
    bins = plots.calibration_bins(y, probs)
    assert sum(b["count"] for b in bins) == 200 and len(bins) == plots.CALIBRATION_BINS
    ece = sum(b["count"] / 200 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert ece == pytest.approx(expected_calibration_error(y, probs))


def test_reliability_diagram_titles_the_ece_and_counts_images():
    fig = plots.reliability_figure(Y, PROBS, ece=0.123)
    top, bottom = fig.axes
    assert top.get_title().endswith("ECE 0.123")
    assert "accuracy" in top.get_ylabel() and "confidence" in bottom.get_xlabel()
    assert bottom.get_ylabel() == "images"
    assert sum(p.get_height() for p in bottom.patches) == len(Y)


def test_folds_figure_has_a_bar_per_fold_and_the_mean_with_std():
    folds = [{"accuracy": 0.8, "roc_auc": 0.9}, {"accuracy": 0.6, "roc_auc": None}]
    fig = plots.folds_figure(
        folds, [("accuracy", "accuracy"), ("roc_auc", "ROC AUC")], title="2-fold"
    )
    ax = fig.axes[0]
    assert ticks(ax.get_xticklabels()) == ["accuracy", "ROC AUC"]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.0, 0.6, 0.8, 0.9]  # a missing value draws no bar height
    mean = ax.lines[0].get_ydata()[0]
    assert mean == pytest.approx(0.7)
    assert ax.get_title() == "2-fold" and "score" in ax.get_ylabel()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["fold 1", "fold 2", "mean ± std"]


def test_comparison_figure_groups_modes_per_model_and_names_the_units():
    rows = [
        {"model": "simple_cnn", "mode": "scratch", "val_accuracy": 0.7, "wall_s": 10.0},
        {"model": "mobilenet", "mode": "scratch", "val_accuracy": 0.6, "wall_s": 20.0},
        {"model": "mobilenet", "mode": "head", "val_accuracy": 0.9, "wall_s": None},
    ]
    fig = plots.comparison_figure(
        rows,
        [("val_accuracy", "accuracy (0-1)", "val accuracy"), ("wall_s", "seconds", "wall time")],
        title="compare",
    )
    accuracy, wall = fig.axes
    assert ticks(accuracy.get_xticklabels()) == ["simple_cnn", "mobilenet"]
    assert sorted(p.get_height() for p in accuracy.patches) == [0.6, 0.7, 0.9]
    assert len(wall.patches) == 2 and wall.get_ylabel() == "seconds"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["scratch", "head"]
    assert fig.get_suptitle() == "compare"


def test_heatmap_grid_labels_blank_panels_and_carries_colour_bars(tmp_path):
    image = np.full((30, 40, 3), 128, np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[2:4, 2:4] = 1.0
    rows = [("correct (2)", [(image, heat, "pred A"), (image, heat * 0, "pred B")]), ("wrong", [])]
    fig = overlays.heatmap_grid_figure(rows, title="Grad-CAM")
    panels = [ax for ax in fig.axes if ax.get_title() in ("pred A", "pred B")]
    texts = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in panels}
    assert texts == {"pred A": [], "pred B": [overlays.NO_EVIDENCE]}
    bars = [ax for ax in fig.axes if ax.get_ylabel() == overlays.HEATMAP_LABEL]
    assert len(bars) == 2
    assert plots.save(fig, tmp_path / "grid.png").is_file()
