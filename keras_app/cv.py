"""python -m keras_app.cv: K-fold cross-validation of one training recipe.

    python -m keras_app.cv --model resnet50 --folds 5 --data ../shared/data/chest_xray_224 \\
        --head-epochs 5 --fine-tune-epochs 5

The train and val splits are pooled and cut into K folds, stratified by class
and grouped by patient (no patient in two folds, where file names identify
patients); the test split stays out, kept for the final judgement. Fold k
holds fold k out and carves its validation split (checkpoint choice, early
stopping, LR schedule, calibration and operating point) out of the other
folds, stratified and grouped by patient as keras_app.train carves one
(--val-fraction, --seed), and fits on the rest. Fold k is judged once, at the
end, by the fold's best calibrated model through keras_app.inference: it
chose nothing, so every pooled image gets one truly out-of-fold prediction
(what ensemble weights may be fitted on). Every flag other than --folds and
--out goes to keras_app.train as is. Rerunning with the same --out skips
finished folds and resumes an unfinished one.

Each fold trains through keras_app.train's own steps (`train.run` via
`keras_app.series`), given the fold's data view in place of the --data
source: no --data spec names a fold. In the view, "train" is the fit part,
"val" the carved validation and "test" the held-out fold, so each fold's run
folder judges its held-out fold as its test split; the real test split is
never touched.

Writes into --out (default runs/cv-<model>-<time>/):
    fold-1/ ... fold-K/   a run folder per fold (keras_app.train's layout; its test split is
                          the held-out fold)
    oof.csv, oof.npz      per pooled image: index, fold, patient group, path, label, probabilities
    folds.csv             per fold: sizes (fit, val, held out), epochs, held-out metrics
    metrics.json          per fold, mean and std over folds, pooled out-of-fold metrics
    folds.png             the per-fold chart
    summary.md            the page to read
    config.json           folds, seed and the training configuration
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# data_pipelines (TensorFlow), metrics and plots are imported in the functions that
# use them, after the flags are parsed: `--help` answers at once.
from keras_app import runs, series
from keras_app.config import TrainConfig
from keras_app.config import parse_config as parse_train_config
from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.runs import RunFolder
from keras_app.runtime import import_tensorflow

if TYPE_CHECKING:
    import data_pipelines

# Flags cv sets itself for each fold.
OWN_FLAGS = ("--run-dir",)
# How each fold's validation split is made (config.json), see fold_view.
FOLD_VAL = "carved from the fold's training part, grouped by patient"
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


@dataclass(frozen=True)
class CvConfig:
    """The command line: cv's own flags and the training configuration every fold shares."""

    train: TrainConfig
    folds: int = 5
    out: str | None = None  # None: runs/cv-<model>-<time>
    train_args: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            # Folds trained before validation was carved from the training part validated on
            # the held-out fold: such an --out must not be resumed as if it were unbiased.
            "fold_val": FOLD_VAL,
            "folds": self.folds,
            "out": self.out,
            "train_args": list(self.train_args),
            "train": {**self.train.to_dict(), "run_dir": None},
        }


@dataclass(frozen=True)
class FoldResult:
    fold: int
    run_dir: Path
    held_out: np.ndarray  # indices into the pooled train+val
    probs: np.ndarray  # the held-out images' calibrated probabilities, in held_out's order
    threshold: float | None  # the fold's operating point, chosen on its own val
    n_fit: int
    n_val: int
    epochs: int | None
    best_epoch: int | None  # 1-based, as Keras' log counts
    seconds: float | None  # None: trained by an earlier invocation


# --- command line --------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.cv",
        description="K-fold cross-validation over train+val, stratified and grouped by "
        "patient; every other flag goes to python -m keras_app.train (see its --help).",
        allow_abbrev=False,  # train's flags must reach train whole
    )
    p.add_argument("--folds", type=int, default=5, help="number of folds K (at least 2)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: runs/cv-<model>-<time>); rerun with the same one to resume",
    )
    return p


def parse_config(argv: Sequence[str] | None = None) -> CvConfig:
    args, train_args = build_parser().parse_known_args(argv)
    own = [a for a in train_args if a.split("=", 1)[0] in OWN_FLAGS]
    if own:
        raise UsageError(f"cv sets --run-dir per fold (<out>/fold-K); use --out. Received {own}")
    if args.folds < 2:
        raise UsageError(f"--folds must be at least 2. Received {args.folds}")
    train_config = parse_train_config(list(train_args))
    return CvConfig(
        train=train_config, folds=args.folds, out=args.out, train_args=tuple(train_args)
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    import_tensorflow()
    t = config.train
    runner = series.Series(t)
    data = runner.data(t)  # loaded once, for every fold
    pooled = pool_train_val(data)
    views = fold_views(data, pooled, make_folds(pooled, config.folds, t.seed), t)
    out = prepare_out(config)
    print(f"cross-validation folder: {out}", flush=True)
    results = []
    for k, (held_out, view) in enumerate(views, 1):
        fit, val, test = (len(view.splits[s]) for s in ("train", "val", "test"))
        print(
            f"[fold {k}/{config.folds}] fit {fit}, val {val} (carved from the other folds), "
            f"held out {test} images",
            flush=True,
        )
        results.append(run_fold(runner, t, view, out / f"fold-{k}", k, held_out))
    summary = write_outputs(out, config, data, pooled, results)
    print(summary_line(summary), flush=True)
    print(f"cross-validation folder: {out}", flush=True)


# --- folds ---------------------------------------------------------------------------------------


def pool_train_val(data) -> data_pipelines.Split:
    """train then val, as one split: the images K-fold divides (test stays out)."""
    from data_pipelines.sources import concat_splits

    return concat_splits(data.splits["train"], data.splits["val"], "train+val")


def make_folds(pooled, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified, patient-grouped folds, checked to hold every class before any trains.

    Raises:
        UsageError: a fold holds no image, or a held-out fold lacks a class (too few
            patients for K folds: its metrics would be undefined).
    """
    import data_pipelines

    folds = data_pipelines.kfold_splits(pooled.labels, pooled.groups, k, seed)
    units = (
        f"{len(np.unique(pooled.groups))} patients"
        if pooled.groups is not None
        else f"{len(pooled)} images"
    )
    for i, (_, val_idx) in enumerate(folds, 1):
        held_out = set(pooled.labels[val_idx].tolist())
        missing = [name for c, name in enumerate(pooled.class_names) if c not in held_out]
        if missing:
            raise UsageError(
                f"--folds {k}: fold {i} holds no {', '.join(missing)} image; "
                f"{units} over {len(pooled)} images are too few for {k} folds. "
                "Use fewer folds"
            )
    return folds


def fold_view(
    data,
    pooled,
    train_idx,
    held_idx,
    k: int,
    folds: int,
    *,
    val_fraction: float = TrainConfig.val_fraction,
    seed: int = TrainConfig.seed,
) -> data_pipelines.ImageData:
    """The data as fold k sees it: fit and val carved from the other folds, fold k held out.

    The validation split picks the checkpoint, stops training early, drives the
    LR schedule and fixes the operating point, so it must not be the held-out
    fold, which is then reported as unseen. It is carved from the training part
    as keras_app.train carves one: stratified, grouped by patient.

    Returns:
        ImageData whose "train" is the fit part, "val" the carved validation and
        "test" the held-out fold (the real test split is left out).
    """
    import data_pipelines
    from data_pipelines.splits import carve

    train_part = pooled.subset(train_idx, "train")
    fit, val = carve(train_part.labels, train_part.groups, val_fraction, seed)
    splits = {
        "train": train_part.subset(fit, "train"),
        "val": train_part.subset(val, "val"),
        "test": pooled.subset(held_idx, "test"),
    }
    return data_pipelines.ImageData(
        f"{data.name} fold {k}/{folds}",
        data.class_names,
        splits,
        data.fingerprint,
        data.native_size,
        data.skipped,
    )


def fold_views(data, pooled, folds, config: TrainConfig) -> list[tuple[np.ndarray, object]]:
    """Every fold's (held-out indices, view), checked to hold every class in its val.

    Raises:
        UsageError: a fold's carved val lacks a class (its AUC, checkpoint choice and
            operating point would be undefined).
    """
    views = []
    for k, (train_idx, held_idx) in enumerate(folds, 1):
        view = fold_view(
            data,
            pooled,
            train_idx,
            held_idx,
            k,
            len(folds),
            val_fraction=config.val_fraction,
            seed=config.seed,
        )
        counts = view.splits["val"].counts()
        missing = [name for name, n in counts.items() if n == 0]
        if missing:
            raise UsageError(
                f"fold {k}: the val split carved from its training part holds no "
                f"{', '.join(missing)} image ({len(view.splits['val'])} images); "
                "use a larger --val-fraction or fewer --folds"
            )
        views.append((np.asarray(held_idx), view))
    return views


def prepare_out(config: CvConfig) -> Path:
    """The output folder; refuses one holding another cross-validation."""
    out = Path(
        config.out or Path("runs") / f"cv-{config.train.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    saved = out / runs.CONFIG
    mine = {k: v for k, v in config.to_dict().items() if k != "out"}
    if saved.exists():
        theirs = {k: v for k, v in json.loads(saved.read_text()).items() if k != "out"}
        if theirs != mine:
            raise UsageError(
                f"{out} holds a cross-validation with another configuration; choose another --out"
            )
        print(f"resuming the cross-validation in {out}", flush=True)
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not a cross-validation folder; choose another")
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(saved, {**mine, "out": str(out)})
    return out


def run_fold(
    runner: series.Series, config: TrainConfig, view, run_dir: Path, k: int, held_out
) -> FoldResult:
    """Trains fold k (unless an earlier invocation finished it), then judges its held-out
    images once, with the fold's best calibrated model."""
    import keras

    from keras_app.inference import open_run

    seconds = None
    if series.announce(f"[fold {k}]", run_dir) != "finished":
        start = time.perf_counter()
        runner.train(dataclasses.replace(config, run_dir=str(run_dir)), view)
        seconds = round(time.perf_counter() - start, 1)
    predictor = open_run(run_dir)
    probs = predictor.predict_split(view.splits["test"], config.batch_size)
    keras.backend.clear_session()  # the next fold builds its model afresh
    folder = RunFolder(run_dir)
    phases = folder.progress()["phases"]
    return FoldResult(
        k,
        run_dir,
        np.asarray(held_out),
        np.asarray(probs, np.float64),
        predictor.threshold,
        len(view.splits["train"]),
        len(view.splits["val"]),
        phases[-1]["end_epoch"] if phases else None,
        folder.best_epoch(),
        seconds,
    )


# --- outputs -------------------------------------------------------------------------------------


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
    from keras_app.metrics import classification_metrics

    rows = []
    for r in results:
        labels = pooled.labels[r.held_out]
        m = classification_metrics(labels, r.probs, class_names, threshold=r.threshold)
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
    from keras_app import plots
    from keras_app.metrics import classification_metrics

    names = list(data.class_names)
    oof = oof_arrays(pooled, results)
    np.savez(out / ".oof.tmp.npz", class_names=np.asarray(names), **oof)
    (out / ".oof.tmp.npz").replace(out / "oof.npz")
    runs.write_text_atomic(out / "oof.csv", oof_csv(oof, names))
    rows = fold_rows(results, pooled, names)
    runs.write_text_atomic(out / "folds.csv", rows_csv(rows))
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
    runs.write_json_atomic(out / runs.METRICS, summary)
    shown = [(key, label) for key, label, unit in METRICS if unit and key in mean]
    plots.save(
        plots.folds_figure(
            rows,
            shown,
            title=f"{config.folds}-fold cross-validation of "
            f"{config.train.model} on {data.name}: held-out folds",
        ),
        out / "folds.png",
    )
    runs.write_text_atomic(out / "summary.md", summary_markdown(summary, config))
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


if __name__ == "__main__":
    sys.exit(run_cli(main))
