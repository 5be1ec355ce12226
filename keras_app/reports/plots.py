"""Figures for the evaluation, K-fold and comparison reports, drawn with matplotlib's Agg.

Each `*_figure` function returns a Figure on an Agg canvas (no display, no
pyplot state shared between threads or tests) that `save` writes as a PNG.
Every figure carries a title, axis labels with units, and the class names.

Example:
    >>> fig = confusion_matrix_figure([[50, 3], [4, 120]], ["NORMAL", "PNEUMONIA"])
    >>> save(fig, "confusion_matrix.png")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm

from keras_app.decision.metrics import CALIBRATION_BINS, calibration_bins

DPI = 110


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Writes `fig` as a PNG (tight layout) and returns the path."""
    path = Path(path)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


# --- evaluation ----------------------------------------------------------------------------------


def confusion_matrix_figure(cm, class_names: Sequence[str], *, subtitle: str = "") -> Figure:
    """Counts on the left, the same matrix normalised by true class (row %) on the right.

    Args:
        cm: `[classes, classes]`, rows the true class, columns the predicted one.
        class_names: in the matrix's order.
        subtitle: appended to the title, e.g. the split and decision threshold.
    """
    cm = np.asarray(cm, dtype=np.int64)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    side = max(3.5, 0.9 * len(class_names) + 2)
    fig = new_figure(2 * side + 1, side)
    axes = fig.subplots(1, 2)
    panels = (
        (axes[0], cm / max(cm.max(), 1), "counts (images)", lambda v: f"{v:d}", cm),
        (axes[1], normalised, "% of each true class", lambda v: f"{100 * v:.1f}%", normalised),
    )
    for ax, shade, title, fmt, values in panels:
        image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(values):
            ax.text(
                j,
                i,
                fmt(value),
                ha="center",
                va="center",
                fontsize=11,
                color="white" if shade[i, j] > 0.5 else "black",
            )
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=30 if len(class_names) > 3 else 0)
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusion matrix,\n{title}")
        fig.colorbar(
            image,
            ax=ax,
            fraction=0.046,
            pad=0.04,
            label="share of the largest cell" if ax is axes[0] else "share of the row",
        )
    if subtitle:
        fig.suptitle(subtitle)
    return fig


def roc_figure(
    y_true,
    probs,
    class_names: Sequence[str],
    *,
    positive: int | None = None,
    points: Sequence[tuple[str, float, float]] = (),
) -> Figure:
    """ROC curves: of the positive class (two classes), else one-vs-rest per class.

    Args:
        y_true: int labels `[n]`.
        probs: `[n, classes]`.
        class_names: column order of `probs`.
        positive: the positive column for two classes; None draws every class one-vs-rest.
        points: operating points `(label, specificity, sensitivity)` to mark.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    fig = new_figure(6, 5.5)
    ax = fig.subplots()
    columns = [positive] if positive is not None else range(probs.shape[1])
    for c in columns:
        is_c = (y_true == c).astype(int)
        if is_c.min() == is_c.max():
            continue  # one class only: no curve
        fpr, tpr, _ = skm.roc_curve(is_c, probs[:, c])
        auc = skm.roc_auc_score(is_c, probs[:, c])
        label = f"{class_names[c]} vs rest" if positive is None else class_names[c]
        ax.plot(fpr, tpr, lw=2, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (AUC 0.5)")
    for (label, specificity, sensitivity), marker in zip(points, "os^Dv", strict=False):
        ax.plot(
            1 - specificity,
            sensitivity,
            marker,
            ms=9,
            mfc="none",
            mew=2,
            label=f"{label}: sens {sensitivity:.3f}, spec {specificity:.3f}",
        )
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    what = f"positive class {class_names[positive]}" if positive is not None else "one-vs-rest"
    ax.set_title(f"ROC curve, {what}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def reliability_figure(
    y_true,
    probs,
    *,
    n_bins: int = CALIBRATION_BINS,
    ece: float | None = None,
    before=None,
    ece_before: float | None = None,
) -> Figure:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), counts below.

    Args:
        before: the probabilities before temperature scaling, drawn as a line beside
            the calibrated bars, with `ece_before` in the title.
    """
    bins = calibration_bins(y_true, probs, n_bins)
    fig = new_figure(6, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / n_bins
    filled = [b for b in bins if b["count"]]
    top.bar(
        [b["low"] for b in filled],
        [b["accuracy"] for b in filled],
        width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        label="accuracy in bin",
    )
    top.bar(
        [b["low"] for b in filled],
        [b["confidence"] - b["accuracy"] for b in filled],
        width,
        bottom=[b["accuracy"] for b in filled],
        align="edge",
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    if before is not None:
        raw = [b for b in calibration_bins(y_true, before, n_bins) if b["count"]]
        top.plot(
            [b["confidence"] for b in raw],
            [b["accuracy"] for b in raw],
            "o-",
            color="tab:orange",
            label="before temperature scaling",
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (fraction correct)")
    title = "Reliability diagram, top-class confidence"
    if ece_before is not None and ece is not None:
        title += f"\nECE {ece_before:.3f} before, {ece:.3f} after calibration"
    elif ece is not None:
        title += f", ECE {ece:.3f}"
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(
        [b["low"] for b in bins],
        [b["count"] for b in bins],
        width,
        align="edge",
        color="grey",
        edgecolor="black",
    )
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("images")
    bottom.grid(alpha=0.3)
    return fig


def folds_figure(
    folds: Sequence[dict], metrics: Sequence[tuple[str, str]], *, title: str
) -> Figure:
    """One group of bars per metric, one bar per fold, and the mean ± std across folds.

    Args:
        folds: one dict per fold holding the `metrics` keys (None or NaN: left out).
        metrics: `(key, label)` pairs, scores in 0..1.
        title: the figure title.
    """
    fig = new_figure(max(7.0, 1.1 * len(metrics) + 3), 4.8)
    fig.set_layout_engine("constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(folds), 1)
    for i, fold in enumerate(folds):
        xs = [j + (i - (len(folds) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(
            xs,
            [_finite(fold.get(k)) for k, _ in metrics],
            width,
            label=f"fold {i + 1}",
            color=f"C{i % 10}",
            alpha=0.8,
        )
    for j, (key, _) in enumerate(metrics):
        values = [v for v in (fold.get(key) for fold in folds) if _is_finite(v)]
        if values:
            mean = float(np.mean(values))
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            ax.errorbar(
                j,
                mean,
                yerr=std,
                fmt="D",
                color="black",
                capsize=6,
                ms=5,
                label="mean ± std" if j == 0 else None,
            )
    ax.set_xticks(range(len(metrics)), [label for _, label in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("metric (held-out fold)")
    ax.set_ylabel("score (0-1, higher is better)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # Beside the axes, where no bar can hide under it.
    fig.legend(loc="outside right upper", fontsize=8)
    return fig


def comparison_figure(
    rows: Sequence[dict], panels: Sequence[tuple[str, str, str]], *, title: str
) -> Figure:
    """Grouped bars: one group per model, one bar per mode, one panel per value.

    Args:
        rows: dicts with "model", "mode" and the panels' keys (None: no bar).
        panels: `(key, axis label with unit, panel title)`.
        title: the figure title.
    """
    models = list(dict.fromkeys(r["model"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig = new_figure(max(5.0, 0.9 * len(models) * len(modes)) * len(panels) / 1.5 + 1, 4.8)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    width = 0.8 / len(modes)
    for ax, (key, label, panel_title) in zip(axes, panels, strict=True):
        for i, mode in enumerate(modes):
            xs, heights = [], []
            for j, model in enumerate(models):
                row = next((r for r in rows if r["model"] == model and r["mode"] == mode), None)
                if row is not None and _is_finite(row.get(key)):
                    xs.append(j + (i - (len(modes) - 1) / 2) * width)
                    heights.append(float(row[key]))
            bars = ax.bar(xs, heights, width, label=mode, color=f"C{i % 10}")
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.margins(y=0.1)  # room for the bar labels
        ax.set_xticks(range(len(models)), models, rotation=20 if len(models) > 3 else 0)
        ax.set_xlabel("backbone")
        ax.set_ylabel(label)
        ax.set_title(panel_title)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, title="mode", loc="outside lower center", ncol=len(modes), fontsize=8
    )
    fig.suptitle(title)
    return fig


def time_quality_figure(
    points: Sequence[tuple[float, float]],
    names: Sequence[str],
    front: Sequence[int],
    *,
    failed: int = 0,
) -> Figure:
    """Validation AUC against wall-clock minutes, one dot per run, the Pareto front joined.

    Args:
        points: `(minutes, val AUC)` per finished run.
        names: the runs' names, in the order of `points`.
        front: indices into `points` of the Pareto front, in order of time; labelled.
        failed: runs left out because they failed, said in the title.
    """
    fig = new_figure(7.5, 4.8)
    ax = fig.subplots()
    if points:
        xs, ys = zip(*points, strict=True)
        ax.scatter(xs, ys, s=28, color="C0", alpha=0.6, label="run")
    if front:
        fx, fy = zip(*(points[i] for i in front), strict=True)
        # A step: until a slower run beats it, the best within t minutes stays the same.
        ax.step(fx, fy, where="post", color="C3", lw=1.5, label="Pareto front")
        ax.scatter(fx, fy, s=40, color="C3", zorder=3)
        for i in front:
            ax.annotate(names[i], points[i], textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.margins(x=0.15, y=0.1)  # room for the labels of the front's outer points
    ax.set_xlabel("wall-clock time per run (minutes)")
    ax.set_ylabel("validation ROC AUC")
    title = f"Time against quality: {len(points)} run(s)"
    ax.set_title(title + (f", {failed} failed (not shown)" if failed else ""))
    ax.grid(alpha=0.3)
    if points:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished run with a val AUC", ha="center", transform=ax.transAxes)
    return fig


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _finite(value) -> float:
    return float(value) if _is_finite(value) else 0.0
