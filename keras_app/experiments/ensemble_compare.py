"""The ensemble judged against its members: a table (CSV, Markdown) and a bar chart."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (metrics.json key, column title, higher is better)
COLUMNS = (
    ("accuracy", "accuracy", True),
    ("roc_auc", "AUC", True),
    ("sensitivity", "sensitivity", True),
    ("specificity", "specificity", True),
    ("f1", "F1", True),
    ("log_loss", "log-loss", False),
)
GAIN_ROW = "gain over best member"


def metric_value(metrics: dict, key: str) -> float | None:
    """A metric, with macro F1 standing in for F1 when there are more than two classes."""
    value = metrics.get(key)
    if value is None and key == "f1":
        value = metrics.get("macro_f1")
    return float(value) if isinstance(value, (int, float)) else None


def comparison_rows(
    member_metrics: dict[str, dict], ensemble_metrics: dict, ensemble_name: str = "ensemble"
) -> list[dict]:
    """One row per member, one for the ensemble, and its gain over the best member.

    The gain is signed so that positive means the ensemble is better: for
    log-loss it is the best (lowest) member's value minus the ensemble's.

    Args:
        member_metrics: member name -> its `classification_metrics` on the test split.
        ensemble_metrics: the ensemble's, on the same split.

    Returns:
        Dicts with "model" and the keys of `COLUMNS` (None where a metric is undefined).
    """
    rows = [
        {"model": name, **{k: metric_value(m, k) for k, _, _ in COLUMNS}}
        for name, m in member_metrics.items()
    ]
    ensemble = {
        "model": ensemble_name,
        **{k: metric_value(ensemble_metrics, k) for k, _, _ in COLUMNS},
    }
    gain = {"model": GAIN_ROW}
    for key, _, higher in COLUMNS:
        values = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
        if not values or ensemble[key] is None:
            gain[key] = None
            continue
        best = max(values) if higher else min(values)
        gain[key] = ensemble[key] - best if higher else best - ensemble[key]
    return [*rows, ensemble, gain]


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def comparison_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", *(k for k, _, _ in COLUMNS)])
    for row in rows:
        writer.writerow(
            [row["model"], *(_cell(row[k], row["model"] == GAIN_ROW) for k, _, _ in COLUMNS)]
        )
    return out.getvalue()


def comparison_markdown(rows: list[dict], split: str = "test") -> str:
    header = ["model", *(title for _, title, _ in COLUMNS)]
    lines = [
        f"Ensemble and members on the {split} split. Gain: the ensemble minus the best member "
        "per metric, positive when the ensemble is better (for log-loss, lower is better).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|",
    ]
    for row in rows:
        gain = row["model"] == GAIN_ROW
        name = f"**{row['model']}**" if gain or row is rows[-2] else row["model"]
        lines.append(
            "| " + " | ".join([name, *(_cell(row[k], gain) for k, _, _ in COLUMNS)]) + " |"
        )
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list[dict], path: Path, split: str = "test") -> plt.Figure:
    """Grouped bars: the 0-1 scores on the left, log-loss (lower is better) on the right.

    Every bar carries its value, so a zero (or undefined, "n/a") bar is read, not missed.

    Returns:
        The figure, closed (its artists stay readable for tests).
    """
    models = [r for r in rows if r["model"] != GAIN_ROW]
    scores = [(k, title) for k, title, higher in COLUMNS if higher]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [4, 1]})
    width = 0.8 / len(models)
    cmap = plt.get_cmap("tab10")
    for i, row in enumerate(models):
        is_ensemble = row is models[-1]
        style = dict(
            color=cmap(i % 10),
            edgecolor="black" if is_ensemble else "none",
            hatch="//" if is_ensemble else None,
            label=row["model"],
        )
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(scores))]
        bars = left.bar(xs, [_bar(row[k]) for k, _ in scores], width, **style)
        _label_bars(left, bars, [row[k] for k, _ in scores])
        bars = right.bar(
            [(i - (len(models) - 1) / 2) * width], [_bar(row["log_loss"])], width, **style
        )
        _label_bars(right, bars, [row["log_loss"]])
    left.set_xticks(range(len(scores)), [title for _, title in scores])
    left.set_ylim(0, 1.12)  # room for the value labels above a bar at 1.0
    right.set_ylim(0, right.get_ylim()[1] * 1.12)
    left.set_xlabel("metric")
    left.set_ylabel("score (higher is better)")
    left.set_title(f"Ensemble vs members, {split} split")
    left.grid(axis="y", alpha=0.3)
    right.set_xticks([0], ["log-loss"])
    right.set_xlabel("metric")
    right.set_ylabel("log-loss (lower is better)")
    right.set_title("Log-loss")
    right.grid(axis="y", alpha=0.3)
    # Below the axes, where no bar can hide under it.
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(models), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def _label_bars(ax, bars, values) -> None:
    """The value above each bar, vertical to fit narrow bars; "n/a" where undefined."""
    labels = [_cell(v) or "n/a" for v in values]
    ax.bar_label(bars, labels=labels, rotation=90, padding=2, fontsize=7)


def _bar(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else 0.0
