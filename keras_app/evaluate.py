"""python -m keras_app.evaluate: judge a trained model on one split, as a screening test is judged.

    python -m keras_app.evaluate runs/resnet50-20250101-120000
    python -m keras_app.evaluate saved_models/pneumonia/3 --data ../shared/data/chest_xray_224
    python -m keras_app.evaluate runs/resnet50-... --data external_xrays/

The model is anything `keras_app.inference.open_predictor` opens: a run or
ensemble folder, a .keras file, or an exported SavedModel. Its decisions are
made at the operating point stored with it (the threshold chosen on the
validation split when it was trained), never at one chosen on the data judged;
sensitivity and specificity come with 95% Wilson intervals.
`--optimistic-threshold S` adds, apart and labelled optimistic, the threshold
that reaches sensitivity S on the judged data itself.

Data with its own train/val/test is judged on --split (default test, carved as
the run carved it). A folder of class folders without splits, that the model
did not train on, is judged whole: every readable image. Another dataset than
the one trained on is an external validation; the classes are matched to the
model's labels by name.

Writes into --out (default `RUN_DIR/eval-<split>-<dataname>/`):
    metrics.json          every number of the report
    report.md             the page to read
    predictions.csv       per image: index, file, true class, decision, probabilities
    confusion_matrix.png  at the stored operating point
    roc_curve.png         with the operating points marked
    reliability.png       calibration before and after temperature scaling
    gradcam_grid.png      correct and wrong decisions with their Grad-CAM (Keras models)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.recipe.config import add_manifest_flags

SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class EvalConfig:
    """The command line, as written into metrics.json."""

    model: str
    data: str | None = None  # None: the run's own data spec
    split: str | None = None  # None: test, or all of a folder without splits
    out: str | None = None
    positive_class: str | None = None  # None: the class named like PNEUMONIA, else the second
    # A manifest's task and columns; None: the run's own where its data is judged, else defaults.
    label: str | None = None
    path_column: str | None = None
    patient_column: str | None = None
    uncertain: str | None = None
    optimistic_threshold: float | None = None
    batch_size: int = 32
    # Cases per row of the Grad-CAM grid: enough to see a pattern, few enough to read.
    gradcam: int = 4
    # Judge every image, as if the model had no image guard (an external validation of the
    # classifier itself); by default the guard's refusals are counted apart.
    no_guard: bool = False


# --- command line --------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    d = EvalConfig(model="")
    p = ArgumentParser(
        prog="python -m keras_app.evaluate",
        description="Evaluate a run folder or exported model on data, at the operating "
        "point chosen on validation: metrics with confidence intervals, plots and a "
        "Markdown report.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a run (or ensemble) folder, a .keras file, or saved_models/NAME[/VERSION]",
    )
    p.add_argument(
        "--data",
        default=d.data,
        metavar="SPEC",
        help="data to evaluate on, as keras_app.train takes it (default: the run's "
        "own; required for a SavedModel)",
    )
    add_manifest_flags(p, "the run's own when its own data is judged")
    p.add_argument(
        "--split",
        default=d.split,
        choices=SPLITS,
        help="split of data that has its own splits (default: test); all: every image. "
        "A folder of class folders without splits is always judged whole",
    )
    p.add_argument(
        "--out",
        default=d.out,
        help="output folder (default: RUN_DIR/eval-<split>-<dataname>, or "
        "runs/eval-<name>-<split>-<dataname> for an exported model)",
    )
    p.add_argument(
        "--positive-class",
        default=d.positive_class,
        metavar="NAME",
        help="the class whose recall is sensitivity (default: the stored operating "
        "point's, else the one named like PNEUMONIA, else the second)",
    )
    p.add_argument(
        "--optimistic-threshold",
        "--target-sensitivity",
        dest="optimistic_threshold",
        type=float,
        default=d.optimistic_threshold,
        metavar="S",
        help="also report the threshold reaching sensitivity S chosen on the judged data "
        "itself: an optimistic figure, reported apart and labelled so",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per batch")
    p.add_argument(
        "--gradcam",
        type=int,
        default=d.gradcam,
        metavar="N",
        help="correct and wrong cases each in the Grad-CAM grid (0: no grid)",
    )
    p.add_argument(
        "--no-guard",
        action="store_true",
        help="judge every image, also those the model's image guard would not analyse (the "
        "classifier alone, as for an external validation of it)",
    )
    return p


def parse_config(argv=None) -> EvalConfig:
    config = EvalConfig(**vars(build_parser().parse_args(argv)))
    target = config.optimistic_threshold
    if target is not None and not 0 < target <= 1:
        raise UsageError(f"--optimistic-threshold must be in (0, 1]. Received {target}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received {config.batch_size}")
    if config.gradcam < 0:
        raise UsageError(f"--gradcam must be >= 0. Received {config.gradcam}")
    return config


def main(argv=None) -> None:
    config = parse_config(argv)
    import_tensorflow()
    from keras_app.evaluation import evaluate
    from keras_app.inference.predictor import open_predictor

    predictor = open_predictor(config.model)
    out = evaluate.evaluate(config, predictor)
    evaluate.write_cards(out, predictor)


if __name__ == "__main__":
    sys.exit(run_cli(main))
