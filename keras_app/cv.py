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

import sys
from collections.abc import Sequence

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.experiments.cv import CvConfig
from keras_app.recipe.forwarding import forwarded_config

# Flags cv sets itself for each fold.
OWN_FLAGS = ("--run-dir",)


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
    if args.folds < 2:
        raise UsageError(f"--folds must be at least 2. Received {args.folds}")
    train_config = forwarded_config(
        train_args, command="cv", own_flags=OWN_FLAGS, hint=" (<out>/fold-K; use --out)"
    )
    return CvConfig(
        train=train_config, folds=args.folds, out=args.out, train_args=tuple(train_args)
    )


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    import_tensorflow()
    from keras_app.experiments import cv

    cv.cross_validate(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
