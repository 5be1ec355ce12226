"""A sweep's results: sweep.csv, the time/quality chart, summary.md, TensorBoard's HParams."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from keras_app.artifacts.commands import train_command
from keras_app.artifacts.folders import SUMMARY, SWEEP_CHART, SWEEP_CSV, SWEEP_PLAN, read_json
from keras_app.core.files import write_json_atomic, write_text_atomic
from keras_app.experiments.sweep import HPARAMS_DIR, SweepConfig, Trial, read_record
from keras_app.reports import plots
from keras_app.reports.model_card import write_model_card

RESULT_COLUMNS = (
    "status",
    "reason",
    "wall_minutes",
    "epochs",
    "best_epoch",
    "monitor",
    "best_val",
    "val_auc",
    "test_auc",
    "test_sensitivity",
    "test_specificity",
)


def result_row(trial: Trial) -> dict:
    """One row of sweep.csv: the swept values, the outcome, then every other config field."""
    folder, record = trial.folder, read_record(trial.folder)
    metrics = folder.metrics()
    val, test = metrics.get("val", {}), metrics.get("test", {})
    status = (
        "failed"
        if record.get("status") == "failed"
        else "finished"
        if folder.is_finished()
        else "unfinished"
        if folder.is_unfinished()
        else "not run"
    )
    seconds = record.get("wall_seconds")
    row = {"name": trial.name, **trial.overrides}
    row.update(
        status=status,
        reason=record.get("reason"),
        wall_minutes=round(seconds / 60, 3) if seconds is not None else None,
        epochs=len(folder.history()) or None,
        best_epoch=metrics.get("best_epoch"),
        monitor=metrics.get("monitor"),
        best_val=metrics.get("best_value"),
        val_auc=val.get("roc_auc"),
        test_auc=test.get("roc_auc"),
        test_sensitivity=test.get("sensitivity"),
        test_specificity=test.get("specificity"),
    )
    recorded = folder.config() or trial.config.to_dict()
    row.update({k: v for k, v in recorded.items() if k not in row})
    return row


def sweep_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def scored(rows: list[dict]) -> list[dict]:
    """Finished rows with a val AUC and a wall time: what the chart and the choice weigh."""
    return [
        r
        for r in rows
        if r["status"] == "finished" and _finite(r["val_auc"]) and _finite(r["wall_minutes"])
    ]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both time (lower) and quality (higher),
    in order of time."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def best_within(rows: list[dict], budget_minutes: float | None) -> dict | None:
    """The finished configuration with the highest val AUC among those within the budget.
    Validation only: the test split must not choose the model it then judges."""
    budget = math.inf if budget_minutes is None else budget_minutes
    fits = [r for r in scored(rows) if r["wall_minutes"] <= budget]
    return max(fits, key=lambda r: r["val_auc"], default=None)


def write_chart(rows: list[dict], path: Path) -> Path:
    points = scored(rows)
    xy = [(r["wall_minutes"], r["val_auc"]) for r in points]
    fig = plots.time_quality_figure(
        xy,
        [r["name"] for r in points],
        pareto_front(xy),
        failed=sum(r["status"] == "failed" for r in rows),
    )
    return plots.save(fig, path)


def summary_markdown(sweep: SweepConfig, trials: list[Trial], rows: list[dict]) -> str:
    """summary.md: the choice within the budget, how to reproduce it, and every row."""
    budget = sweep.budget_minutes
    best = best_within(rows, budget)
    within = f"within {budget:g} minutes" if budget is not None else "(no --budget-minutes)"
    lines = [
        f"# Sweep {Path(sweep.out).name}",
        "",
        "    " + " ".join(["python", "-m", "keras_app.sweep", *sweep.argv]),
        "",
        f"{len(rows)} configurations: "
        + ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in ("finished", "failed"))
        + ".",
        "",
        f"## Best configuration {within}, chosen by validation AUC",
        "",
    ]
    if best is None:
        lines.append("None: no finished run with a validation AUC fits the budget.")
    else:
        trial = next(t for t in trials if t.name == best["name"])
        lines += [
            f"**{best['name']}** ({', '.join(f'{k}={v}' for k, v in trial.overrides.items())}): "
            f"val AUC {best['val_auc']:.4f} in {best['wall_minutes']:.1f} min; "
            f"its folder is `{trial.folder.path}`.",
            "",
            "Test split, reported and not used to choose: "
            + ", ".join(
                f"{k} {best[k]:.4f}"
                for k in ("test_auc", "test_sensitivity", "test_specificity")
                if _finite(best.get(k))
            ),
            "",
            "Train it alone:",
            "",
            "    " + train_command(trial.folder.config() or trial.config.to_dict()),
        ]
    lines += ["", f"![val AUC against wall-clock minutes]({SWEEP_CHART})", "", "## Every run", ""]
    lines += results_table(rows, list(trials[0].overrides) if trials else [])
    lines += ["", f"In TensorBoard, with the HParams tab: `tensorboard --logdir {sweep.out}`", ""]
    return "\n".join(lines)


def results_table(rows: list[dict], swept: list[str]) -> list[str]:
    columns = ["name", *swept, "status", "wall_minutes", "epochs", "val_auc", "test_auc"]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
        if row.get("reason"):
            cells[columns.index("status")] += f": {row['reason']}"
        table.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return table


# --- TensorBoard HParams -------------------------------------------------------------------------

# (tag, group: the run under the trial's session folder holding it, display name)
HPARAM_METRICS = (
    ("epoch_auc", "validation", "val AUC per epoch"),
    ("epoch_accuracy", "validation", "val accuracy per epoch"),
    ("epoch_loss", "validation", "val loss per epoch"),
    ("val_auc", HPARAMS_DIR, "val AUC (calibrated best)"),
    ("test_auc", HPARAMS_DIR, "test AUC"),
    ("test_sensitivity", HPARAMS_DIR, "test sensitivity"),
    ("test_specificity", HPARAMS_DIR, "test specificity"),
    ("wall_minutes", HPARAMS_DIR, "wall-clock minutes"),
)


def hparam_value(value):
    """The HParams plugin takes bool, int, float or str; None becomes "none"."""
    return "none" if value is None else value


def hparam_domain(values: list):
    values = sorted({hparam_value(v) for v in values}, key=str)
    kinds = {type(v) for v in values}
    if len(kinds) != 1:
        return None  # a mixed domain (say 16 and "none"): shown without a declared domain
    return hp.Discrete(values)


def write_sweep_hparams(sweep: SweepConfig, trials: list[Trial]) -> None:
    """The experiment's declaration (hparams and metrics) at the sweep root, replacing any
    earlier one so TensorBoard reads a single experiment."""
    root = Path(sweep.out)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("events.out.tfevents.*"):
        old.unlink()
    hparams = []
    for field in trials[0].overrides if trials else []:
        ranged = next((r for r in sweep.ranges if r.field == field), None)
        if ranged is not None:
            drawn = [t.overrides[field] for t in trials]
            whole = all(isinstance(v, int) for v in drawn)
            interval = (
                hp.IntInterval(math.floor(ranged.low), math.ceil(ranged.high))
                if whole
                else hp.RealInterval(ranged.low, ranged.high)
            )
            hparams.append(hp.HParam(field, interval))
        else:
            domain = hparam_domain([t.overrides[field] for t in trials])
            hparams.append(hp.HParam(field, domain) if domain else hp.HParam(field))
    metrics = [
        hp.Metric(tag, group=group, display_name=name) for tag, group, name in HPARAM_METRICS
    ]
    with tf.summary.create_file_writer(str(root)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)


def write_trial_hparams(trial: Trial, row: dict) -> None:
    """The trial's session (its hparams) in `logs/`, beside Keras' train and validation
    logs, and its final numbers in `logs/sweep/`; written once per attempt."""
    logs = trial.folder.logs
    logs.mkdir(parents=True, exist_ok=True)
    for old in [*logs.glob("events.out.tfevents.*"), *(logs / HPARAMS_DIR).glob("events.*")]:
        old.unlink()  # a retried or resumed trial: one session per folder
    with tf.summary.create_file_writer(str(logs)).as_default():
        hparams = {k: hparam_value(v) for k, v in trial.overrides.items()}
        hp.hparams(hparams, trial_id=trial.name)
    with tf.summary.create_file_writer(str(logs / HPARAMS_DIR)).as_default():
        for tag, group, _ in HPARAM_METRICS:
            if group == HPARAMS_DIR and _finite(row.get(tag)):
                tf.summary.scalar(tag, float(row[tag]), step=0)


def record_trial(trial: Trial) -> None:
    """After each attempt: the trial's session and final numbers for TensorBoard's HParams."""
    write_trial_hparams(trial, result_row(trial))


def write_results(sweep: SweepConfig, trials: list[Trial]) -> dict | None:
    """sweep.csv, the chart, summary.md, the choice added to sweep.json, and the model card.

    Returns:
        The row chosen by val AUC within the budget, or None.
    """
    out = Path(sweep.out)
    rows = [result_row(t) for t in trials]
    plan = read_json(out / SWEEP_PLAN)
    best = best_within(rows, sweep.budget_minutes)
    plan["best"] = {"name": best["name"], "val_auc": best["val_auc"]} if best else None
    write_json_atomic(out / SWEEP_PLAN, plan)
    write_text_atomic(out / SWEEP_CSV, sweep_csv(rows))
    write_chart(rows, out / SWEEP_CHART)
    write_text_atomic(out / SUMMARY, summary_markdown(sweep, trials, rows))
    print(f"model card: {write_model_card(sweep.out)}", flush=True)
    return best
