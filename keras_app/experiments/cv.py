"""K-fold cross-validation of one training recipe (keras_app.cv): folds, runs, out-of-fold.

The train and val splits are pooled and cut into K folds, stratified and grouped
by patient; each fold trains through the series engine on a view of the data
whose "test" is the held-out fold, and is judged once, at the end, by its best
calibrated model. See `python -m keras_app.cv --help` and keras_app/cv.py.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_app.artifacts.folders import (
    CV_FOLD_VAL,
    claim,
    cv_fold,
)
from keras_app.artifacts.runs import RunFolder
from keras_app.core.errors import UsageError
from keras_app.decision.operating_point import OperatingPoint
from keras_app.experiments import cv_report, series
from keras_app.recipe.config import TrainConfig

if TYPE_CHECKING:
    import data_pipelines


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
            "fold_val": CV_FOLD_VAL,
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
    operating_point: OperatingPoint  # the fold's, chosen on its own val
    n_fit: int
    n_val: int
    epochs: int | None
    best_epoch: int | None  # 1-based, as Keras' log counts
    seconds: float | None  # None: trained by an earlier invocation


def cross_validate(config: CvConfig) -> Path:
    """Every fold trained (or resumed) and judged on its held-out part, then the summary.

    Returns:
        The cross-validation folder.
    """
    t = config.train
    runner = series.Series()
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
        results.append(run_fold(runner, t, view, cv_fold(out, k), k, held_out))
    summary = cv_report.write_outputs(out, config, data, pooled, results)
    print(cv_report.summary_line(summary), flush=True)
    print(f"cross-validation folder: {out}", flush=True)
    return out


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
    """The output folder, taken for this cross-validation (resumed if it is this one's)."""
    out = Path(
        config.out or Path("runs") / f"cv-{config.train.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    mine = {**config.to_dict(), "out": str(out)}
    taken = claim(
        out,
        mine,
        kind="cv",
        flag="--out",
        # The same experiment wherever its folder was named from.
        same=lambda a, b: (
            {k: v for k, v in a.items() if k != "out"} == {k: v for k, v in b.items() if k != "out"}
        ),
    )
    if taken.state == "resume":
        print(f"resuming the cross-validation in {out}", flush=True)
    return out


def run_fold(
    runner: series.Series, config: TrainConfig, view, run_dir: Path, k: int, held_out
) -> FoldResult:
    """Trains fold k (unless an earlier invocation finished it), then judges its held-out
    images once, with the fold's best calibrated model."""
    import keras

    from keras_app.inference.predictor import open_run

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
        predictor.operating_point,
        len(view.splits["train"]),
        len(view.splits["val"]),
        phases[-1]["end_epoch"] if phases else None,
        folder.best_epoch(),
        seconds,
    )
