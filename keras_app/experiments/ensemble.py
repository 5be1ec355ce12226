"""Ensembles of trained runs (keras_app.ensemble): members checked, combined, calibrated, judged.

The members' models sit behind one input (each resizing to its own size); an
`EnsembleCombine` layer averages them. The ensemble is calibrated and given its
operating point on the members' validation split exactly as a run is
(`keras_app.inference.calibrate.calibrate_and_choose`), saved, reloaded with
safe_mode=True and judged, with every member at its own operating point beside it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import data_pipelines
from keras_app.artifacts import runs as runfiles
from keras_app.artifacts.loader import load_model
from keras_app.artifacts.runs import Run, RunFolder, load_run
from keras_app.core import files
from keras_app.core.errors import UsageError
from keras_app.decision.metrics import classification_metrics
from keras_app.decision.operating_point import OperatingPoint
from keras_app.experiments import ensemble_compare as compare
from keras_app.experiments.ensemble_weights import optimize_weights, val_metric_weights
from keras_app.inference.calibrate import calibrate_and_choose
from keras_app.inference.predictor import KerasPredictor
from keras_app.model.ensemble import build_ensemble, stack_members
from keras_app.model.ensemble_layer import EnsembleCombine
from keras_app.model.guard import classifier_of
from keras_app.recipe.config import MANIFEST_FIELDS, TrainConfig, manifest_options

# What must agree between members for their val and test splits to be the same images.
# A manifest's task (its label, columns, uncertain policy) is part of the data: members
# trained on two tasks of one table were not trained on the same images and labels.
SPLIT_KEYS = ("data", "val_fraction", "seed", *MANIFEST_FIELDS)
COMPARISON = "comparison"  # comparison.csv, comparison.md, comparison.png


@dataclass(frozen=True)
class EvalSplits:
    """The members' val and test splits (`data_pipelines.Split`), and how to feed them."""

    val: object
    test: object
    pad_to_aspect: bool = False


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


def load_eval_splits(members: list[Run], config) -> EvalSplits:
    """The members' val and test splits, rebuilt from their config (sized by the predictor)."""
    shared = shared_split_config(members)
    spec = config.data if config.data is not None else shared["data"]
    try:
        data = data_pipelines.load_dataset(
            spec,
            val_fraction=shared["val_fraction"],
            seed=shared["seed"],
            # The members' task of their own table; other data is read as it comes.
            manifest=manifest_options(shared if config.data is None else {}),
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
    # One output [n, members, classes]: the predictor's single-output contract.
    joined = keras.Model(stacked.input, keras.ops.stack(stacked.outputs, axis=1))
    predictor = split_predictor(joined, members, splits)
    val = predictor.predict_split(splits.val, batch_size)
    test = predictor.predict_split(splits.test, batch_size)
    return [val[:, i] for i in range(len(members))], [test[:, i] for i in range(len(members))]


# --- the ensemble -------------------------------------------------------------------------------


def write_ensemble(config, members: list[Run], splits: EvalSplits) -> Path:
    """Builds, calibrates, saves and judges the ensemble; writes the --out folder atomically.

    Returns:
        The --out folder.
    """
    names = member_names(members)
    class_names = list(members[0].class_names)
    stacked = load_stacked(members)
    print(f"ensemble of {len(members)}: predicting val and test", flush=True)
    val_probs, test_probs = member_probabilities(stacked, members, splits, config.batch_size)
    y_val, y_test = np.asarray(splits.val.labels), np.asarray(splits.test.labels)
    combiner = make_combiner(config, members, y_val, val_probs)
    ensemble = build_ensemble(stacked, combiner)  # builds the combiner: its weights are known
    weights = [float(w) for w in combiner.normalized_weights()]

    def predict(model):
        return split_predictor(model, members, splits).predict_split(splits.val, config.batch_size)

    # Fitted on val, as a run's is: test stays unseen until judged.
    chosen = calibrate_and_choose(
        ensemble,
        predict,
        y_val,
        class_names,
        target_sensitivity(members),
        refer_share=config.refer_band,
    )
    ensemble, op = chosen.model, chosen.operating_point
    out = Path(config.out)
    with files.atomic_directory(out, overwrite=config.overwrite) as tmp:
        folder = RunFolder(tmp)
        val_ensemble, test_ensemble = save_and_predict(
            ensemble, folder.best, members, splits, config
        )
        folder.write_operating_point(op)
        metrics, rows = judge(
            names,
            class_names,
            (y_val, val_probs, val_ensemble),
            (y_test, test_probs, test_ensemble),
            [member_operating_point(r) for r in members] + [op],
        )
        metrics["weights_fitted_on"] = "val" if config.weights == "optimized" else None
        metrics["operating_point"] = op.to_dict()
        write_folder(tmp, config, members, names, weights, metrics, rows)
    print(
        "weights: " + ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights, strict=True)),
        flush=True,
    )
    print(f"ensemble calibration and operating point, fitted on val: {op.describe()}", flush=True)
    print(compare.comparison_markdown(rows), flush=True)
    return out


def member_operating_point(run: Run) -> OperatingPoint:
    """The operating point a member decides at (its operating_point.json)."""
    return OperatingPoint.from_dict(run.operating_point())


def load_stacked(members: list[Run]) -> keras.Model:
    """The members' models behind one input at the ensemble's size."""
    try:
        # Each member's classifier: an ensemble has no image guard of its own (docs/GUARD.md).
        classifiers = [classifier_of(load_model(r.path)) for r in members]
        return stack_members(classifiers, ensemble_image_size(members))
    except ValueError as err:
        raise UsageError(f"these runs cannot form an ensemble: {err}") from None


def make_combiner(config, members: list[Run], y_val, val_probs) -> EnsembleCombine:
    """The combining layer with the weights the --weights method asks for."""
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
    predictor = split_predictor(load_model(path), members, splits)
    return (
        predictor.predict_split(splits.val, config.batch_size),
        predictor.predict_split(splits.test, config.batch_size),
    )


def judge(names, class_names, val, test, operating_points) -> tuple[dict, list[dict]]:
    """Metrics of each member and the ensemble on val and test, and the comparison rows (test).

    Args:
        names: the members' names.
        class_names: in output order.
        val: (labels, the members' probabilities, the ensemble's) on the val split.
        test: the same on the test split.
        operating_points: each member's, then the ensemble's.

    Returns:
        metrics.json's content, and `compare.comparison_rows` on the test split.
    """
    (y_val, val_probs, val_ensemble), (y_test, test_probs, test_ensemble) = val, test

    def scored(y, probs, op):
        return classification_metrics(y, probs, class_names, operating_point=op)

    members = {
        name: {"val": scored(y_val, pv, op), "test": scored(y_test, pt, op)}
        for name, pv, pt, op in zip(names, val_probs, test_probs, operating_points, strict=False)
    }
    test_metrics = scored(y_test, test_ensemble, operating_points[-1])
    rows = compare.comparison_rows({n: m["test"] for n, m in members.items()}, test_metrics)
    metrics = {
        "val": scored(y_val, val_ensemble, operating_points[-1]),
        "test": test_metrics,
        "members": members,
        "gain_over_best_member": {k: v for k, v in rows[-1].items() if k != "model"},
    }
    return metrics, rows


def write_folder(
    folder: Path,
    config,
    members: list[Run],
    names,
    weights,
    metrics: dict,
    rows: list[dict],
) -> None:
    """config.json, labels.txt, metrics.json and the comparison table and chart."""
    class_names = list(members[0].class_names)
    shared = shared_split_config(members)
    run_config = {
        "model": "ensemble",  # what load_run reads as the model name
        "image_size": list(ensemble_image_size(members)),
        "class_names": class_names,
        "weights": config.weights,
        "mode": "mean" if config.weights == "mean" else "weighted",
        "average": config.average,
        "refer_band": config.refer_band,
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
    files.write_json_atomic(folder / runfiles.CONFIG, run_config)
    files.write_text_atomic(folder / runfiles.LABELS, "\n".join(class_names) + "\n")
    files.write_json_atomic(folder / runfiles.METRICS, metrics)
    files.write_text_atomic(folder / f"{COMPARISON}.csv", compare.comparison_csv(rows))
    files.write_text_atomic(folder / f"{COMPARISON}.md", compare.comparison_markdown(rows))
    compare.plot_comparison(rows, folder / f"{COMPARISON}.png")
