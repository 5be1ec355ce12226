"""A cross-validation's outputs: out-of-fold predictions, per-fold rows, the summary page."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_app.artifacts import runs
from keras_app.artifacts.folders import CV_CHART, CV_FOLDS_CSV, CV_OOF_CSV, CV_OOF_NPZ, SUMMARY
from keras_app.core import files
from keras_app.decision.metrics import classification_metrics
from keras_app.reports import plots

if TYPE_CHECKING:
    from keras_app.experiments.cv import CvConfig, FoldResult

# Metrics summarised per fold, in the order a reader scans them: (key, label, in 0..1).
METRICS = (
    ("accuracy", "accuracy", True),
    ("roc_auc", "ROC AUC (scikit-learn)", True),
    ("pr_auc", "PR AUC", True),
    ("sensitivity", "sensitivity", True),
    ("specificity", "specificity", True),
    ("precision", "precision", True),
    ("f1", "F1", True),
    ("macro_f1", "macro F1", True),
    ("log_loss", "log-loss", False),
    ("brier", "Brier", False),
    ("ece", "ECE", False),
)


def oof_arrays(pooled, results: Sequence[FoldResult]) -> dict[str, np.ndarray]:
    """Out-of-fold predictions for every pooled image, in pooled order."""
    n = len(pooled)
    probs = np.full((n, results[0].probs.shape[1]), np.nan)
    fold = np.zeros(n, np.int64)
    for r in results:
        probs[r.held_out] = r.probs
        fold[r.held_out] = r.fold
    if (fold == 0).any():
        raise RuntimeError(f"{int((fold == 0).sum())} pooled images are in no held-out fold")
    return {
        "index": np.arange(n),
        "fold": fold,
        "label": pooled.labels.astype(np.int64),
        "probs": probs,
        "group": (
            pooled.groups.astype(str) if pooled.groups is not None else np.full(n, "", dtype=str)
        ),
        "path": np.asarray(pooled.files if pooled.files is not None else [""] * n, dtype=str),
    }


def oof_csv(oof: dict[str, np.ndarray], class_names: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["index", "fold", "group", "path", "label", "label_index", *(f"p_{c}" for c in class_names)]
    )
    for i in range(len(oof["index"])):
        label = int(oof["label"][i])
        writer.writerow(
            [
                int(oof["index"][i]),
                int(oof["fold"][i]),
                oof["group"][i],
                oof["path"][i],
                class_names[label],
                label,
                *(f"{p:.6f}" for p in oof["probs"][i]),
            ]
        )
    return buffer.getvalue()


def fold_rows(results: Sequence[FoldResult], pooled, class_names) -> list[dict]:
    """Per fold: sizes, epochs, time, and the metrics of its held-out predictions at the
    fold's own operating point (chosen on its val)."""
    rows = []
    for r in results:
        labels = pooled.labels[r.held_out]
        m = classification_metrics(labels, r.probs, class_names, operating_point=r.operating_point)
        rows.append(
            {
                "fold": r.fold,
                "n_fit": r.n_fit,
                "n_val": r.n_val,
                "n_held_out": len(r.held_out),
                "epochs": r.epochs,
                "best_epoch": r.best_epoch,
                "seconds": r.seconds,
                **{key: m.get(key) for key, _, _ in METRICS if key in m},
            }
        )
    return rows


def mean_std(rows: Sequence[dict]) -> tuple[dict, dict]:
    """Mean and sample standard deviation (ddof 1) over folds, per metric."""
    mean, std = {}, {}
    for key, _, _ in METRICS:
        values = [r[key] for r in rows if isinstance(r.get(key), float) and np.isfinite(r[key])]
        if values:
            mean[key] = float(np.mean(values))
            std[key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return mean, std


def write_outputs(out: Path, config: CvConfig, data, pooled, results: Sequence[FoldResult]) -> dict:
    """oof.csv/.npz, folds.csv, metrics.json, folds.png and summary.md; returns metrics.json's."""
    names = list(data.class_names)
    oof = oof_arrays(pooled, results)
    np.savez(out / ".oof.tmp.npz", class_names=np.asarray(names), **oof)
    (out / ".oof.tmp.npz").replace(out / CV_OOF_NPZ)
    files.write_text_atomic(out / CV_OOF_CSV, oof_csv(oof, names))
    rows = fold_rows(results, pooled, names)
    files.write_text_atomic(out / CV_FOLDS_CSV, rows_csv(rows))
    mean, std = mean_std(rows)
    summary = {
        "model": config.train.model,
        "folds": config.folds,
        "seed": config.train.seed,
        "data": {
            "spec": config.train.data or "digits",
            "name": data.name,
            "fingerprint": data.fingerprint,
            "pooled": len(pooled),
            "test_left_out": len(data.splits["test"]),
        },
        "grouped_by_patient": pooled.groups is not None,
        "patients": int(len(np.unique(pooled.groups))) if pooled.groups is not None else None,
        "per_fold": rows,
        "mean": mean,
        "std": std,
        "oof": classification_metrics(oof["label"], oof["probs"], names),
    }
    files.write_json_atomic(out / runs.METRICS, summary)
    shown = [(key, label) for key, label, unit in METRICS if unit and key in mean]
    plots.save(
        plots.folds_figure(
            rows,
            shown,
            title=f"{config.folds}-fold cross-validation of "
            f"{config.train.model} on {data.name}: held-out folds",
        ),
        out / CV_CHART,
    )
    files.write_text_atomic(out / SUMMARY, summary_markdown(summary, config))
    return summary


def rows_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows
    )
    return buffer.getvalue()


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_markdown(summary: dict, config: CvConfig) -> str:
    keys = [(key, label) for key, label, _ in METRICS if key in summary["mean"]]
    data = summary["data"]
    grouping = (
        f"grouped by patient ({summary['patients']} patients): no patient in two folds"
        if summary["grouped_by_patient"]
        else "not grouped: the file names identify no patients, images split one by one"
    )
    lines = [
        f"# {config.folds}-fold cross-validation: {summary['model']} on {data['name']}",
        "",
        f"- data `{data['spec']}`, fingerprint `{data['fingerprint']}`: train+val pooled, "
        f"{data['pooled']} images, cut into {config.folds} folds stratified by class, {grouping}",
        f"- the test split ({data['test_left_out']} images) is left out, kept for the final "
        "judgement (no fold sees it; choose by these out-of-fold numbers, then judge once on "
        "test)",
        "- each fold fits on the other folds less a validation split carved from them "
        "(stratified, grouped by patient, --val-fraction), which picks the checkpoint, stops "
        "early, drives the LR schedule and fixes the operating point; the held-out fold chooses "
        "nothing and is judged once, at the end, by the fold's best calibrated model",
        f"- seed {summary['seed']}; training flags: "
        f"`{' '.join(config.train_args) or '(defaults)'}`",
        "",
        "## Held-out fold metrics",
        "",
        "| fold | fit | val | held out | epochs | best epoch | "
        + " | ".join(label for _, label in keys)
        + " |",
        "|" + "---:|" * (6 + len(keys)),
    ]
    for r in summary["per_fold"]:
        lines.append(
            f"| {r['fold']} | {r['n_fit']} | {r['n_val']} | {r['n_held_out']} | "
            f"{_fmt(r['epochs'])} | {_fmt(r['best_epoch'])} | "
            + " | ".join(_fmt(r.get(k)) for k, _ in keys)
            + " |"
        )
    lines.append(
        "| **mean ± std** | | | | | | "
        + " | ".join(f"{summary['mean'][k]:.4f} ± {summary['std'][k]:.4f}" for k, _ in keys)
        + " |"
    )
    oof = summary["oof"]
    lines.append(
        "| **pooled out-of-fold** | | | | | | "
        + " | ".join(_fmt(oof.get(k)) for k, _ in keys)
        + " |"
    )
    lines += [
        "",
        "std: sample standard deviation over folds (ddof 1). Per fold, decisions at the fold's "
        "operating point (chosen on its val); pooled: the metrics of all out-of-fold "
        "predictions at once, deciding by the highest probability (the folds' thresholds "
        "differ). ROC AUC: scikit-learn's, on the calibrated held-out probabilities.",
        "",
        "![per-fold metrics](folds.png)",
        "",
        "## Files",
        "- `oof.csv`, `oof.npz`: one out-of-fold prediction per pooled image (index into "
        "train+val as load_dataset orders them, fold, patient group, path, label, probabilities); "
        "the same data, seed and val fraction give the same order, so several recipes' files "
        "line up for fitting ensemble weights",
        "- `folds.csv`, `metrics.json`; `fold-K/`: the run folder of fold K",
        "",
    ]
    return "\n".join(lines)


def summary_line(summary: dict) -> str:
    shown = ", ".join(
        f"{k} {summary['mean'][k]:.4f} ± {summary['std'][k]:.4f}"
        for k in ("accuracy", "roc_auc", "sensitivity", "specificity")
        if k in summary["mean"]
    )
    return (
        f"{summary['folds']}-fold mean ± std over the held-out folds (ROC AUC: scikit-learn's, "
        f"not Keras' streaming val_auc): {shown}"
    )
