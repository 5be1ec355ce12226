"""python -m keras_app.ensemble: combine trained runs into one model and judge it on the test split.

    python -m keras_app.ensemble runs/resnet50 runs/densenet121 runs/xception \\
        --weights optimized --out runs/ensemble

Each member keeps its own input size and preprocessing: the ensemble takes raw
0-255 images at the largest member size and resizes them per member. The
--out folder reads like a run folder (`keras_app.artifacts.runs.load_run`), with the
comparison of the ensemble against its members beside the model.

Like a training run, the ensemble carries its own operating point, fitted on
the validation split: a temperature inside the saved model and the decision
threshold for the members' target sensitivity in operating_point.json, so
evaluate, export and predict of the folder decide as a run folder does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.recipe.config import check_refer_band

WEIGHTINGS = ("mean", "val-metric", "optimized")
AVERAGES = ("probs", "logits")


@dataclass(frozen=True)
class EnsembleConfig:
    """The command line, as written into the ensemble's config.json."""

    runs: tuple[str, ...]
    out: str
    weights: str = "mean"
    average: str = "probs"
    data: str | None = None  # None: the members' own data spec from their config.json
    batch_size: int = 32
    overwrite: bool = False
    allow_ensemble_members: bool = False
    refer_band: float | None = None  # the share of val to refer (None: no band)


def build_parser() -> ArgumentParser:
    d = EnsembleConfig(runs=(), out="")
    p = ArgumentParser(
        prog="python -m keras_app.ensemble",
        description="Combine trained runs into one ensemble model and compare it "
        "with its members on the test split.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run folders (two or more)")
    p.add_argument(
        "--out", required=True, help="folder to write the ensemble to (a run-like folder)"
    )
    p.add_argument(
        "--weights",
        default=d.weights,
        choices=WEIGHTINGS,
        help="mean: equal; val-metric: by each member's validation AUC (accuracy for "
        "more than two classes); optimized: minimum log-loss on the validation split",
    )
    p.add_argument(
        "--average",
        default=d.average,
        choices=AVERAGES,
        help="average probabilities, or log-probabilities followed by a softmax",
    )
    p.add_argument(
        "--data",
        default=d.data,
        metavar="SPEC",
        help="the members' data, for when the spec in their config.json does not resolve "
        "from here; val fraction and seed stay theirs (default: the members' spec)",
    )
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="images per prediction step"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument(
        "--allow-ensemble-members",
        action="store_true",
        help="accept an ensemble folder as a member (refused otherwise: a glob such as "
        "runs/members/* easily picks up an earlier ensemble)",
    )
    p.add_argument(
        "--refer-band",
        type=float,
        default=d.refer_band,
        metavar="SHARE",
        help="refer this share of the validation images nearest the ensemble's threshold "
        "(in log-odds) to a reader instead of deciding them, as keras_app.train's "
        "--refer-band (default: no band)",
    )
    return p


def parse_config(argv=None) -> EnsembleConfig:
    args = build_parser().parse_args(argv)
    config = EnsembleConfig(**{**vars(args), "runs": tuple(args.runs)})
    validate(config)
    return config


def validate(c: EnsembleConfig) -> None:
    if len(c.runs) < 2:
        raise UsageError(
            f"an ensemble needs at least 2 run folders. Received {len(c.runs)}: {c.runs[0]}"
        )
    resolved = [Path(r).resolve() for r in c.runs]
    if len(set(resolved)) != len(resolved):
        raise UsageError(f"a run folder is given twice. Received {' '.join(c.runs)}")
    if Path(c.out).resolve() in resolved:
        raise UsageError(f"--out {c.out} is one of the members; choose a new folder")
    if Path(c.out).exists() and not c.overwrite:
        raise UsageError(f"--out {c.out} already exists; choose another or pass --overwrite")
    if c.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received {c.batch_size}")
    check_refer_band(c.refer_band)


def main(argv=None) -> None:
    config = parse_config(argv)
    import_tensorflow()
    from keras_app.experiments import ensemble
    from keras_app.reports.model_card import write_model_card

    members = ensemble.load_members(config.runs, allow_ensembles=config.allow_ensemble_members)
    splits = ensemble.load_eval_splits(members, config)
    out = ensemble.write_ensemble(config, members, splits)
    write_model_card(out)
    print(f"ensemble folder: {out}", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
