"""python -m keras_app.ensemble: combine trained runs into one model and judge it on the test split.

    python -m keras_app.ensemble runs/resnet50 runs/densenet121 runs/xception \\
        --weights optimized --out runs/ensemble

Each member keeps its own input size and preprocessing: the ensemble takes raw
0-255 images at the largest member size and resizes them per member. The
--out folder reads like a run folder (`keras_app.runs.load_run`), with the
comparison of the ensemble against its members beside the model.

Like a training run, the ensemble carries its own operating point, fitted on
the validation split: a temperature inside the saved model and the decision
threshold for the members' target sensitivity in operating_point.json, so
evaluate, export and predict of the folder decide as a run folder does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# Keras, TensorFlow, data_pipelines, metrics and the comparison figure are imported in
# the functions that use them, after the flags are parsed: `--help` answers at once.
from keras_app import runs as runfiles
from keras_app.config import TrainConfig
from keras_app.ensemble.weights import combine_probs, optimize_weights, val_metric_weights
from keras_app.errors import ArgumentParser, UsageError
from keras_app.inference import KerasPredictor, load_keras
from keras_app.operating_point import OperatingPoint, fit_operating_point
from keras_app.runs import Run, RunFolder, load_run
from keras_app.runtime import import_tensorflow

if TYPE_CHECKING:
    import keras

    from keras_app.ensemble.layer import EnsembleCombine

WEIGHTINGS = ("mean", "val-metric", "optimized")
AVERAGES = ("probs", "logits")
# What must agree between members for their val and test splits to be the same images.
SPLIT_KEYS = ("data", "val_fraction", "seed")
COMPARISON = "comparison"  # comparison.csv, comparison.md, comparison.png


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


@dataclass(frozen=True)
class EvalSplits:
    """The members' val and test splits (`data_pipelines.Split`), and how to feed them."""

    val: object
    test: object
    pad_to_aspect: bool = False


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


def main(argv=None) -> None:
    config = parse_config(argv)
    import_tensorflow()
    members = load_members(config.runs, allow_ensembles=config.allow_ensemble_members)
    splits = load_eval_splits(members, config)
    out = write_ensemble(config, members, splits)
    from keras_app.model_card import write_model_card

    write_model_card(out)
    print(f"ensemble folder: {out}", flush=True)


# --- members ------------------------------------------------------------------------------------


def load_members(paths, *, allow_ensembles: bool = False) -> list[Run]:
    """The members' run folders, checked to share classes (in order) and data splits.

    Raises:
        UsageError: a member is an ensemble folder (unless `allow_ensembles`), or the
            members disagree on their classes or data splits.
    """
    members = [load_run(p) for p in paths]
    ensembles = [str(r.path) for r in members if is_ensemble(r)]
    if ensembles and not allow_ensembles:
        raise UsageError(
            f"{', '.join(ensembles)} is an ensemble folder, not a training run; leave it out "
            "of the members (or pass --allow-ensemble-members to nest it on purpose)"
        )
    first = members[0]
    for run in members[1:]:
        if run.class_names != first.class_names:
            raise UsageError(
                f"members disagree on their classes: {first.path} has {list(first.class_names)}, "
                f"{run.path} has {list(run.class_names)}; probabilities are averaged column by "
                "column, so every member needs the same classes in the same order"
            )
    shared_split_config(members)
    return members


def shared_split_config(members: list[Run]) -> dict:
    """The data spec, val fraction and seed every member was trained with (they must agree:
    else one member's test images may be another's training images)."""
    first = {k: members[0].config.get(k) for k in SPLIT_KEYS}
    for run in members[1:]:
        theirs = {k: run.config.get(k) for k in SPLIT_KEYS}
        differ = [k for k in SPLIT_KEYS if theirs[k] != first[k]]
        if differ:
            raise UsageError(
                f"members were trained on different data splits: {members[0].path} has "
                + ", ".join(f"{k}={first[k]!r}" for k in differ)
                + f", {run.path} has "
                + ", ".join(f"{k}={theirs[k]!r}" for k in differ)
            )
    return first


def is_ensemble(run: Run) -> bool:
    """Whether a run folder holds an ensemble written by this command."""
    return run.model_name == "ensemble" or "members" in run.config


def target_sensitivity(members: list[Run]) -> float | None:
    """The sensitivity the members' thresholds were chosen for; train's default where none
    says. Members that disagree are refused: the ensemble would have no single target."""
    stated = {r.config["target_sensitivity"] for r in members if "target_sensitivity" in r.config}
    if len(stated) > 1:
        raise UsageError(
            "members were trained for different --target-sensitivity values "
            f"({', '.join(map(str, sorted(stated, key=str)))}); the ensemble needs one"
        )
    return stated.pop() if stated else TrainConfig.target_sensitivity


def member_names(members: list[Run]) -> list[str]:
    """Run folder names, made unique with the member's position where two share one."""
    names = [run.path.name for run in members]
    return [f"{n}-{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def ensemble_image_size(members: list[Run]) -> tuple[int, int]:
    """The largest member size: no member then gets an image upsampled from a smaller one."""
    return (max(int(r.image_size[0]) for r in members), max(int(r.image_size[1]) for r in members))


# --- data ---------------------------------------------------------------------------------------


def load_eval_splits(members: list[Run], config: EnsembleConfig) -> EvalSplits:
    """The members' val and test splits, rebuilt from their config (sized by the predictor)."""
    import data_pipelines

    shared = shared_split_config(members)
    spec = config.data if config.data is not None else shared["data"]
    try:
        data = data_pipelines.load_dataset(
            spec, val_fraction=shared["val_fraction"], seed=shared["seed"]
        )
    except data_pipelines.DataError as err:
        if config.data is not None:
            raise
        raise UsageError(f"{err} (the members' data spec; --data points to it from here)") from None
    class_names = members[0].class_names
    if tuple(data.class_names) != tuple(class_names):
        raise UsageError(
            f"the data's classes {list(data.class_names)} are not the members' {list(class_names)}"
        )
    for split in ("val", "test"):
        if not len(data.splits[split].labels):
            raise UsageError(f"the members' {split} split is empty")
    return EvalSplits(
        val=data.splits["val"],
        test=data.splits["test"],
        pad_to_aspect=all(r.config.get("pad_to_aspect") for r in members),
    )


def split_predictor(model: keras.Model, members: list[Run], splits: EvalSplits) -> KerasPredictor:
    """A predictor over `model` that feeds it the splits as every member was fed in training."""
    return KerasPredictor(
        model,
        members[0].class_names,
        image_size=ensemble_image_size(members),
        config={"pad_to_aspect": splits.pad_to_aspect},
    )


def member_probabilities(
    stacked: keras.Model, members: list[Run], splits: EvalSplits, batch_size: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each member's probabilities on val and on test, from one pass of the stacked model."""
    import keras

    # One output [n, members, classes]: the predictor's single-output contract.
    joined = keras.Model(stacked.input, keras.ops.stack(stacked.outputs, axis=1))
    predictor = split_predictor(joined, members, splits)
    val = predictor.predict_split(splits.val, batch_size)
    test = predictor.predict_split(splits.test, batch_size)
    return [val[:, i] for i in range(len(members))], [test[:, i] for i in range(len(members))]


# --- the ensemble -------------------------------------------------------------------------------


def write_ensemble(config: EnsembleConfig, members: list[Run], splits: EvalSplits) -> Path:
    """Builds, calibrates, saves and judges the ensemble; writes the --out folder atomically.

    Returns:
        The --out folder.
    """
    from keras_app.calibration import calibrated_model
    from keras_app.ensemble import compare
    from keras_app.ensemble.model import build_ensemble

    names = member_names(members)
    class_names = list(members[0].class_names)
    stacked = load_stacked(members)
    print(f"ensemble of {len(members)}: predicting val and test", flush=True)
    val_probs, test_probs = member_probabilities(stacked, members, splits, config.batch_size)
    y_val, y_test = np.asarray(splits.val.labels), np.asarray(splits.test.labels)
    combiner = make_combiner(config, members, y_val, val_probs)
    ensemble = build_ensemble(stacked, combiner)  # builds the combiner: its weights are known
    weights = [float(w) for w in combiner.normalized_weights()]
    raw_val = combine_probs(val_probs, weights, logit_average=combiner.logit_average)
    # Fitted on val, as train.evaluate_best fits a run's: test stays unseen until judged.
    op = fit_operating_point(y_val, raw_val, class_names, target_sensitivity(members))
    ensemble = calibrated_model(ensemble, op.temperature)
    out = Path(config.out)
    with runfiles.atomic_directory(out, overwrite=config.overwrite) as tmp:
        folder = RunFolder(tmp)
        val_ensemble, test_ensemble = save_and_predict(
            ensemble, folder.best, members, splits, config
        )
        folder.write_json(runfiles.OPERATING_POINT, op.to_dict())
        metrics, rows = judge(
            names,
            class_names,
            (y_val, val_probs, val_ensemble),
            (y_test, test_probs, test_ensemble),
            thresholds=[member_threshold(r) for r in members] + [op.threshold],
        )
        metrics["weights_fitted_on"] = "val" if config.weights == "optimized" else None
        metrics["operating_point"] = op.to_dict()
        write_folder(tmp, config, members, names, weights, metrics, rows)
    print(
        "weights: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights, strict=True)),
        flush=True,
    )
    print(operating_point_line(op), flush=True)
    print(compare.comparison_markdown(rows), flush=True)
    return out


def member_threshold(run: Run) -> float | None:
    """The threshold a member decides at (its operating_point.json), None for argmax."""
    return OperatingPoint.from_dict(run.operating_point()).threshold


def operating_point_line(op: OperatingPoint) -> str:
    line = f"ensemble calibration: temperature {op.temperature:.3f} fitted on val"
    if op.threshold is None:
        return line
    return (
        f"{line}; operating point: P({op.positive_class}) >= {op.threshold:.4f} "
        f"for sensitivity >= {op.target_sensitivity} on val"
    )


def load_stacked(members: list[Run]) -> keras.Model:
    """The members' models behind one input at the ensemble's size."""
    from keras_app.ensemble.model import stack_members

    try:
        return stack_members([r.load_model() for r in members], ensemble_image_size(members))
    except ValueError as err:
        raise UsageError(f"these runs cannot form an ensemble: {err}") from None


def make_combiner(config: EnsembleConfig, members: list[Run], y_val, val_probs) -> EnsembleCombine:
    """The combining layer with the weights the --weights method asks for."""
    from keras_app.ensemble.layer import EnsembleCombine

    logit_average = config.average == "logits"
    if config.weights == "mean":
        return EnsembleCombine("mean", logit_average=logit_average, name="combine")
    if config.weights == "val-metric":
        weights = val_metric_weights(
            [r.metrics().get("val", {}) for r in members],
            len(members[0].class_names),
            [str(r.path) for r in members],
        )
    else:
        # Fitted on val, never test: the test split then still judges the ensemble fairly.
        weights = [
            float(w) for w in optimize_weights(val_probs, y_val, logit_average=logit_average)
        ]
    return EnsembleCombine(
        "weighted", member_weights=weights, logit_average=logit_average, name="combine"
    )


def save_and_predict(
    ensemble: keras.Model, path: Path, members: list[Run], splits: EvalSplits, config
) -> tuple[np.ndarray, np.ndarray]:
    """Saves the ensemble and predicts val and test with the saved file itself, reloaded
    with safe_mode=True as the exporter will load it: what is judged is what ships."""
    ensemble.save(path)
    predictor = split_predictor(load_keras(path), members, splits)
    return (
        predictor.predict_split(splits.val, config.batch_size),
        predictor.predict_split(splits.test, config.batch_size),
    )


def judge(names, class_names, val, test, thresholds=None) -> tuple[dict, list[dict]]:
    """Metrics of each member and the ensemble on val and test, and the comparison rows (test).

    Args:
        names: the members' names.
        class_names: in output order.
        val: (labels, the members' probabilities, the ensemble's) on the val split.
        test: the same on the test split.
        thresholds: each member's decision threshold, then the ensemble's (None: argmax).

    Returns:
        metrics.json's content, and `compare.comparison_rows` on the test split.
    """
    from keras_app.ensemble import compare
    from keras_app.metrics import classification_metrics

    (y_val, val_probs, val_ensemble), (y_test, test_probs, test_ensemble) = val, test
    thresholds = thresholds or [None] * (len(names) + 1)

    def scored(y, probs, threshold):
        return classification_metrics(y, probs, class_names, threshold=threshold)

    members = {
        name: {"val": scored(y_val, pv, t), "test": scored(y_test, pt, t)}
        for name, pv, pt, t in zip(names, val_probs, test_probs, thresholds[:-1], strict=True)
    }
    test_metrics = scored(y_test, test_ensemble, thresholds[-1])
    rows = compare.comparison_rows({n: m["test"] for n, m in members.items()}, test_metrics)
    metrics = {
        "val": scored(y_val, val_ensemble, thresholds[-1]),
        "test": test_metrics,
        "members": members,
        "gain_over_best_member": {k: v for k, v in rows[-1].items() if k != "model"},
    }
    return metrics, rows


def write_folder(
    folder: Path,
    config: EnsembleConfig,
    members: list[Run],
    names,
    weights,
    metrics: dict,
    rows: list[dict],
) -> None:
    """config.json, labels.txt, metrics.json and the comparison table and chart."""
    from keras_app.ensemble import compare

    class_names = list(members[0].class_names)
    shared = shared_split_config(members)
    run_config = {
        "model": "ensemble",  # what load_run reads as the model name
        "image_size": list(ensemble_image_size(members)),
        "class_names": class_names,
        "weights": config.weights,
        "mode": "mean" if config.weights == "mean" else "weighted",
        "average": config.average,
        "members": [
            {
                "name": n,
                "run": str(r.path.resolve()),
                "model": r.model_name,
                "image_size": list(r.image_size),
                "weight": w,
            }
            for n, r, w in zip(names, members, weights, strict=True)
        ],
        **shared,
        "data": config.data if config.data is not None else shared["data"],
        "command": dataclasses.asdict(config),
    }
    runfiles.write_json_atomic(folder / runfiles.CONFIG, run_config)
    runfiles.write_text_atomic(folder / runfiles.LABELS, "\n".join(class_names) + "\n")
    runfiles.write_json_atomic(folder / runfiles.METRICS, metrics)
    runfiles.write_text_atomic(folder / f"{COMPARISON}.csv", compare.comparison_csv(rows))
    runfiles.write_text_atomic(folder / f"{COMPARISON}.md", compare.comparison_markdown(rows))
    compare.plot_comparison(rows, folder / f"{COMPARISON}.png")
