"""python -m keras_app.evaluate: judge a trained model on one split, as a screening test is judged.

    python -m keras_app.evaluate runs/resnet50-20250101-120000 --target-sensitivity 0.95
    python -m keras_app.evaluate saved_models/pneumonia/3 --data ../shared/data/chest_xray_224
    python -m keras_app.evaluate runs/resnet50-... --data npz:pneumoniamnist.npz --split all

The model is a run folder (`keras_app.train`, or an ensemble folder) or an
exported SavedModel version (`keras_app.export`: `serving_default` takes float
images 0-255 and returns `probabilities`; labels in `assets/labels.txt`).
Another dataset than the one trained on is an external validation: the data's
fingerprint is compared with the run's environment.json, the report says which
it is, and the classes are matched to the model's labels by name.

Writes into --out (default `RUN_DIR/eval-<split>-<dataname>/`):
    metrics.json          every number of the report
    report.md             the page to read
    predictions.csv       per image: index, file, true and predicted class, probabilities
    confusion_matrix.png  counts and normalised by true class
    roc_curve.png         with the default and the target-sensitivity operating points
    reliability.png       calibration: accuracy against confidence
    gradcam_grid.png      correct and wrong cases with their Grad-CAM (run folders)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn import metrics as skm

import data_pipelines
from data_pipelines.sources import concat_splits
from keras_app import plots, runs
from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.metrics import classification_metrics, positive_index, threshold_for_sensitivity

SPLITS = ("train", "val", "test", "all")
SERVING_DEFAULT = "serving_default"  # the exporter's signature: images -> probabilities
PROBABILITIES = "probabilities"
# Headline metrics, in the order a reader scans them: (key, label).
HEADLINE = (
    ("accuracy", "accuracy"),
    ("roc_auc", "ROC AUC"),
    ("pr_auc", "PR AUC (average precision)"),
    ("sensitivity", "sensitivity (recall of the positive class)"),
    ("specificity", "specificity"),
    ("precision", "precision (positive predictive value)"),
    ("f1", "F1 (positive class)"),
    ("macro_f1", "macro F1"),
    ("log_loss", "log-loss"),
    ("brier", "Brier score"),
    ("ece", "expected calibration error (15 bins)"),
)
GRADCAM_FILE = "gradcam_grid.png"


@dataclass(frozen=True)
class EvalConfig:
    """The command line, as written into metrics.json."""

    model: str
    data: str | None = None  # None: the run's own data spec
    split: str = "test"
    out: str | None = None
    positive_class: str | None = None  # None: the class named like PNEUMONIA, else the second
    target_sensitivity: float | None = None
    batch_size: int = 32
    # Cases per row of the Grad-CAM grid: enough to see a pattern, few enough to read.
    gradcam: int = 4


@dataclass(frozen=True, eq=False)
class ModelUnderTest:
    """A run folder's Keras model or a SavedModel, seen the same way.

    Attributes:
        kind: "run" or "saved_model".
        path: the run folder or the SavedModel version folder.
        name: a short name for output folders.
        class_names: the model's labels, in output order.
        image_size: (h, w) of the model input.
        predict: `f(images float32 [b, h, w, 3] 0-255) -> probabilities [b, classes]`.
        keras_model: the Keras model (run folders), for Grad-CAM; None for a SavedModel.
        config: the run's config.json ({} for a SavedModel).
        data_record: the training data record of environment.json, or None.
    """

    kind: str
    path: Path
    name: str
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    predict: Callable[[np.ndarray], np.ndarray]
    keras_model: object | None = None
    config: dict = dataclasses.field(default_factory=dict)
    data_record: dict | None = None


# --- command line --------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    d = EvalConfig(model="")
    p = ArgumentParser(
        prog="python -m keras_app.evaluate",
        description="Evaluate a run folder or exported SavedModel on a data split: "
        "metrics, plots and a Markdown report.",
    )
    p.add_argument(
        "model",
        metavar="RUN_DIR|SAVED_MODEL",
        help="a run (or ensemble) folder, or saved_models/NAME[/VERSION]",
    )
    p.add_argument(
        "--data",
        default=d.data,
        metavar="SPEC",
        help="data to evaluate on, as keras_app.train takes it (default: the run's "
        "own; required for a SavedModel)",
    )
    p.add_argument(
        "--split",
        default=d.split,
        choices=SPLITS,
        help="split to evaluate; all: every image of the source (external data)",
    )
    p.add_argument(
        "--out",
        default=d.out,
        help="output folder (default: RUN_DIR/eval-<split>-<dataname>, or "
        "runs/eval-<name>-v<version>-<split>-<dataname> for a SavedModel)",
    )
    p.add_argument(
        "--positive-class",
        default=d.positive_class,
        metavar="NAME",
        help="the class whose recall is sensitivity (default: the one named like "
        "PNEUMONIA, else the second)",
    )
    p.add_argument(
        "--target-sensitivity",
        type=float,
        default=d.target_sensitivity,
        metavar="S",
        help="also report the decision threshold reaching this "
        "sensitivity and the specificity it costs, e.g. 0.95",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per batch")
    p.add_argument(
        "--gradcam",
        type=int,
        default=d.gradcam,
        metavar="N",
        help="correct and wrong cases each in the Grad-CAM grid (0: no grid)",
    )
    return p


def parse_config(argv=None) -> EvalConfig:
    config = EvalConfig(**vars(build_parser().parse_args(argv)))
    if config.target_sensitivity is not None and not 0 < config.target_sensitivity <= 1:
        raise UsageError(
            f"--target-sensitivity must be in (0, 1]. Received {config.target_sensitivity}"
        )
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received {config.batch_size}")
    if config.gradcam < 0:
        raise UsageError(f"--gradcam must be >= 0. Received {config.gradcam}")
    return config


def main(argv=None) -> None:
    config = parse_config(argv)
    model = open_model(config.model)
    spec, data, split = load_split(config, model)
    labels, class_note = align_classes(data.class_names, model.class_names, split.labels)
    positive = check_positive(config, model.class_names)
    out = output_dir(config, model, data)
    probs = predict_split(model, split, config.batch_size, len(data.class_names))
    results = evaluate_probs(labels, probs, model.class_names, positive, config.target_sensitivity)
    origin = data_origin(model, spec, data, config.split)
    with runs.atomic_directory(out, overwrite=True) as tmp:
        figures = write_figures(
            tmp, labels, probs, model.class_names, positive, results, config.split
        )
        gradcam_line = write_gradcam_grid(tmp, model, split, labels, probs, config)
        record = {
            "config": dataclasses.asdict(config),
            "model": model_record(model),
            "data": {
                **origin,
                "split": config.split,
                "n": len(labels),
                "class_mapping": class_note,
            },
            **results,
        }
        runs.write_json_atomic(tmp / runs.METRICS, record)
        runs.write_text_atomic(
            tmp / "predictions.csv", predictions_csv(split, labels, probs, model.class_names)
        )
        runs.write_text_atomic(tmp / "report.md", report_markdown(record, figures, gradcam_line))
    print_summary(out, results, origin)


# --- the model -----------------------------------------------------------------------------------


def open_model(path: str | Path) -> ModelUnderTest:
    """A run (or ensemble) folder, or a SavedModel: a version folder or the model folder
    above its numbered versions (the highest is taken).

    Raises:
        UsageError: nothing loadable at `path`.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"no run folder or SavedModel at {path}")
    if (path / "saved_model.pb").is_file():
        return open_saved_model(path)
    versions = (
        sorted(
            (
                int(p.name)
                for p in path.iterdir()
                if p.name.isdigit() and (p / "saved_model.pb").is_file()
            ),
            reverse=True,
        )
        if path.is_dir()
        else []
    )
    if versions:
        return open_saved_model(path / str(versions[0]))
    return open_run(path)


def open_run(path: Path) -> ModelUnderTest:
    import keras_app.ensemble  # noqa: F401  (registers EnsembleCombine: ensemble folders load)

    run = runs.load_run(path)
    model = run.load_model()
    if int(model.output_shape[-1]) != len(run.class_names):
        raise UsageError(
            f"{path}: the model has {model.output_shape[-1]} outputs but labels.txt "
            f"names {len(run.class_names)} classes"
        )
    size = tuple(
        int(s) if s is not None else int(r)
        for s, r in zip(model.input_shape[1:3], run.image_size, strict=True)
    )

    def predict(images):
        return np.asarray(model(images, training=False), np.float32)

    return ModelUnderTest(
        "run",
        path,
        path.name,
        run.class_names,
        size,
        predict,
        model,
        run.config,
        training_data_record(path, run.config),
    )


def training_data_record(path: Path, config: dict) -> dict | None:
    """The data record of the run's environment.json; for an ensemble folder (which has
    none), its first member's: the members share their data (keras_app.ensemble checks)."""
    candidates = [path / runs.ENVIRONMENT]
    members = config.get("members") or []
    if members and members[0].get("run"):
        candidates.append(Path(members[0]["run"]) / runs.ENVIRONMENT)
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text()).get("data")
    return None


def open_saved_model(path: Path) -> ModelUnderTest:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if SERVING_DEFAULT not in loaded.signatures:
        raise UsageError(
            f"{path} has no {SERVING_DEFAULT} signature: export it with python -m keras_app.export"
        )
    inputs = loaded.signatures[SERVING_DEFAULT].structured_input_signature[1]
    if len(inputs) != 1:
        raise UsageError(
            f"{path}: {SERVING_DEFAULT} takes {sorted(inputs)}; expected one "
            "image input [batch, h, w, 3]"
        )
    ((input_name, spec),) = inputs.items()
    shape = tuple(spec.shape)
    if len(shape) != 4 or shape[-1] != 3 or None in shape[1:3]:
        raise UsageError(
            f"{path}: {SERVING_DEFAULT} input {input_name!r} has shape {shape}; "
            "expected [batch, h, w, 3] with a fixed size"
        )
    labels_file = path / "assets" / runs.LABELS
    if not labels_file.is_file():
        raise UsageError(
            f"{path} has no assets/{runs.LABELS}: export it with python -m keras_app.export"
        )
    class_names = tuple(labels_file.read_text().splitlines())

    def predict(images):
        # Through `loaded`, not a signature kept apart: it owns the variables.
        serve = loaded.signatures[SERVING_DEFAULT]
        return serve(**{input_name: tf.constant(images, tf.float32)})[PROBABILITIES].numpy()

    return ModelUnderTest(
        "saved_model",
        path,
        f"{path.parent.name}-v{path.name}",
        class_names,
        (int(shape[1]), int(shape[2])),
        predict,
    )


def model_record(model: ModelUnderTest) -> dict:
    return {
        "kind": model.kind,
        "path": str(model.path),
        "backbone": model.config.get("model"),
        "class_names": list(model.class_names),
        "image_size": list(model.image_size),
    }


# --- the data ------------------------------------------------------------------------------------


def load_split(config: EvalConfig, model: ModelUnderTest):
    """(spec, data source, split) for --data and --split, carved as the run carved its data
    (its seed and val fraction), so that a run's own test split is the one it never saw."""
    spec = config.data
    if spec is None:
        if model.kind != "run":
            raise UsageError(
                f"--data is required for a SavedModel ({model.path}): it carries no "
                "record of its data"
            )
        spec = model.config.get("data")
    data = data_pipelines.load_dataset(
        spec, val_fraction=model.config.get("val_fraction", 0.1), seed=model.config.get("seed", 42)
    )
    if config.split == "all":
        splits = data.splits
        split = concat_splits(
            concat_splits(splits["train"], splits["val"], "all"), splits["test"], "all"
        )
    else:
        split = data.splits[config.split]
    return spec, data, split


def align_classes(
    data_names: Sequence[str], model_names: Sequence[str], labels: np.ndarray
) -> tuple[np.ndarray, str]:
    """The data's labels as the model's output columns, matching classes by name.

    Names match exactly, else ignoring case (MedMNIST's "pneumonia" is the
    folders' "PNEUMONIA"); the order may differ.

    Returns:
        (labels in the model's column order, a note saying how the classes matched).

    Raises:
        UsageError: the classes are not the same set.
    """
    data_names, model_names = [str(c) for c in data_names], [str(c) for c in model_names]
    if data_names == model_names:
        return np.asarray(labels), "same classes, same order"
    for key, how in ((lambda s: s, "by name"), (str.casefold, "by name, ignoring case")):
        wanted = [key(n) for n in model_names]
        given = [key(n) for n in data_names]
        if sorted(given) == sorted(wanted) and len(set(wanted)) == len(wanted):
            mapping = np.asarray([wanted.index(g) for g in given])
            pairs = ", ".join(
                f"{d} -> {model_names[m]}" for d, m in zip(data_names, mapping, strict=True)
            )
            return mapping[np.asarray(labels)], f"matched {how}: {pairs}"
    raise UsageError(
        f"the data's classes {data_names} are not the model's {model_names}; "
        "evaluate on data with the classes the model was trained on"
    )


def check_positive(config: EvalConfig, class_names: Sequence[str]) -> int | None:
    """The positive column for two classes; --positive-class and --target-sensitivity
    need two classes."""
    if len(class_names) != 2:
        for flag, value in (
            ("--positive-class", config.positive_class),
            ("--target-sensitivity", config.target_sensitivity),
        ):
            if value is not None:
                raise UsageError(
                    f"{flag} applies to two classes; the model has "
                    f"{len(class_names)}: {list(class_names)}"
                )
        return None
    try:
        return positive_index(class_names, config.positive_class)
    except ValueError:
        raise UsageError(
            f"--positive-class must be one of {list(class_names)}. "
            f"Received {config.positive_class!r}"
        ) from None


def data_origin(model: ModelUnderTest, spec: str | None, data, split: str) -> dict:
    """Whether the data is what the model trained on (internal) or not (external), and why."""
    record = model.data_record
    here = {"spec": spec or "digits", "name": data.name, "fingerprint": data.fingerprint}
    if record is None:
        what = "a SavedModel" if model.kind == "saved_model" else "this run folder"
        return {
            **here,
            "validation": "unknown",
            "trained_on": None,
            "note": f"training data unknown ({what} carries no data record in "
            "environment.json): internal or external validation cannot be told",
        }
    trained = {k: record.get(k) for k in ("spec", "name", "fingerprint")}
    if record.get("fingerprint") == data.fingerprint:
        note = (
            f"internal validation: the data the model was trained on ({data.name}, "
            f"fingerprint {data.fingerprint}), split {split}"
        )
        if split in ("train", "all"):
            note += (
                "; these images include the ones it was trained on, so the numbers "
                "overstate how it generalises"
            )
        return {**here, "validation": "internal", "trained_on": trained, "note": note}
    return {
        **here,
        "validation": "external",
        "trained_on": trained,
        "note": f"external validation: trained on {record.get('name')} (spec "
        f"`{record.get('spec')}`, fingerprint {record.get('fingerprint')}), evaluated "
        f"on {data.name} (fingerprint {data.fingerprint})",
    }


def predict_split(model: ModelUnderTest, split, batch_size: int, num_classes: int) -> np.ndarray:
    """Probabilities for every image of `split`, in its order, through the training pipeline's
    deterministic decode and resize."""
    dataset = data_pipelines.make_dataset(
        split,
        image_size=model.image_size,
        batch_size=batch_size,
        training=False,
        num_classes=num_classes,
        cache=False,
        pad_to_aspect=bool(model.config.get("pad_to_aspect", False)),
    )
    probs = np.concatenate([model.predict(images.numpy()) for images, _ in dataset])
    if probs.shape != (len(split), len(model.class_names)):
        raise RuntimeError(
            f"predicted {probs.shape} for {len(split)} images and {len(model.class_names)} classes"
        )
    return probs.astype(np.float64)


# --- the numbers ---------------------------------------------------------------------------------


def evaluate_probs(
    y_true,
    probs,
    class_names: Sequence[str],
    positive: int | None,
    target_sensitivity: float | None = None,
) -> dict:
    """Every metric of the report, JSON-ready.

    Returns:
        {"metrics": classification_metrics plus per-class one-vs-rest and "macro",
         "classification_report": scikit-learn's, as a dict and as text,
         "target_sensitivity": the operating point, or None}.
    """
    y_true = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    # As classification_metrics does: float32 softmax rows sum to 1 +- 1e-7, and a threshold
    # found on unnormalised scores could miss its own boundary case by that much.
    probs = probs / probs.sum(axis=1, keepdims=True)
    names = [str(c) for c in class_names]
    positive_name = names[positive] if positive is not None else None
    metrics = classification_metrics(y_true, probs, names, positive_class=positive_name)
    y_pred = np.asarray(probs).argmax(axis=1)
    extra = one_vs_rest(y_true, probs)
    for name, values in zip(names, extra, strict=True):
        metrics["per_class"][name].update(values)
    metrics["macro"] = macro_average(metrics["per_class"])
    labels = list(range(len(names)))
    report = {
        "dict": skm.classification_report(
            y_true, y_pred, labels=labels, target_names=names, output_dict=True, zero_division=0
        ),
        "text": skm.classification_report(
            y_true, y_pred, labels=labels, target_names=names, digits=4, zero_division=0
        ),
    }
    target = None
    if target_sensitivity is not None and positive is not None:
        target = operating_point(y_true, probs, names, positive, target_sensitivity, metrics)
    return {"metrics": metrics, "classification_report": report, "target_sensitivity": target}


def one_vs_rest(y_true, probs) -> list[dict]:
    """Per class: specificity, ROC AUC and PR AUC of that class against the rest (None where
    the split lacks the class or its complement)."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    out = []
    for c in range(probs.shape[1]):
        is_c = y_true == c
        negatives = int((~is_c).sum())
        true_negatives = int(((y_pred != c) & ~is_c).sum())
        both = 0 < is_c.sum() < len(is_c)
        out.append(
            {
                "specificity": true_negatives / negatives if negatives else None,
                "roc_auc": float(skm.roc_auc_score(is_c, probs[:, c])) if both else None,
                "pr_auc": float(skm.average_precision_score(is_c, probs[:, c])) if both else None,
            }
        )
    return out


def macro_average(per_class: dict[str, dict]) -> dict:
    """The unweighted mean over classes of each per-class value (classes where it is defined)."""
    keys = ("precision", "recall", "f1", "specificity", "roc_auc", "pr_auc")
    out = {}
    for key in keys:
        values = [v[key] for v in per_class.values() if v.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


def operating_point(
    y_true, probs, class_names: Sequence[str], positive: int, target: float, default: dict
) -> dict:
    """The highest threshold on the positive probability whose sensitivity reaches `target`,
    the metrics there, and the specificity that costs against the default decision."""
    is_pos = (np.asarray(y_true) == positive).astype(int)
    if is_pos.min() == is_pos.max():
        return {
            "target": target,
            "threshold": None,
            "note": "not computable: the split holds only one class",
        }
    threshold, _, _ = threshold_for_sensitivity(is_pos, np.asarray(probs)[:, positive], target)
    # A hair below the boundary case's score, which must stay positive whatever the last
    # bit of a renormalisation does to it; far closer than any two distinct scores.
    threshold -= 1e-12
    at = classification_metrics(
        y_true, probs, class_names, positive_class=class_names[positive], threshold=threshold
    )
    return {
        "target": target,
        "threshold": threshold,
        "sensitivity": at["sensitivity"],
        "specificity": at["specificity"],
        "precision": at["precision"],
        "accuracy": at["accuracy"],
        "confusion_matrix": at["confusion_matrix"],
        "default_sensitivity": default["sensitivity"],
        "default_specificity": default["specificity"],
        # Positive: specificity given up to reach the target; negative: gained.
        "specificity_cost": default["specificity"] - at["specificity"],
    }


# --- files ---------------------------------------------------------------------------------------


def output_dir(config: EvalConfig, model: ModelUnderTest, data) -> Path:
    """--out, or the default beside the model; refuses to replace a folder that is not an
    evaluation's."""
    dataname = re.sub(r"[^A-Za-z0-9_.-]+", "-", data.name).strip("-") or "data"
    if config.out is not None:
        out = Path(config.out)
    elif model.kind == "run":
        out = model.path / f"eval-{config.split}-{dataname}"
    else:
        out = Path("runs") / f"eval-{model.name}-{config.split}-{dataname}"
    if out.exists() and any(out.iterdir()) and not (out / "report.md").exists():
        raise UsageError(f"--out {out} holds files that are not an evaluation; choose another")
    return out


def write_figures(out: Path, y_true, probs, class_names, positive, results, split) -> list[str]:
    """The confusion matrix, ROC curve and reliability diagram; their file names."""
    metrics = results["metrics"]
    decision = (
        "threshold 0.5 on P(" + class_names[positive] + ")"
        if positive is not None
        else "the most probable class"
    )
    plots.save(
        plots.confusion_matrix_figure(
            metrics["confusion_matrix"],
            class_names,
            subtitle=f"{split} split, decision: {decision}",
        ),
        out / "confusion_matrix.png",
    )
    points = []
    if positive is not None and "sensitivity" in metrics:
        points.append(("threshold 0.5", metrics["specificity"], metrics["sensitivity"]))
        target = results["target_sensitivity"]
        if target and target.get("threshold") is not None:
            points.append(
                (
                    f"threshold {target['threshold']:.3f} (target sens {target['target']})",
                    target["specificity"],
                    target["sensitivity"],
                )
            )
    plots.save(
        plots.roc_figure(y_true, probs, class_names, positive=positive, points=points),
        out / "roc_curve.png",
    )
    plots.save(plots.reliability_figure(y_true, probs, ece=metrics["ece"]), out / "reliability.png")
    return ["confusion_matrix.png", "roc_curve.png", "reliability.png"]


def pick_cases(y_true, probs, n: int) -> tuple[list[int], list[int]]:
    """Up to `n` correct and `n` wrong cases, the most confident first, taking the true
    classes in turn so that every class shows (a missed pneumonia and a false alarm).

    Returns:
        (correct indices, wrong indices).
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    y_pred = probs.argmax(axis=1)
    confidence = probs.max(axis=1)

    def take(mask):
        queues = [
            [
                int(i)
                for i in sorted(np.flatnonzero(mask & (y_true == c)), key=lambda i: -confidence[i])
            ]
            for c in range(probs.shape[1])
        ]
        picked = []
        while len(picked) < n and any(queues):
            for queue in queues:
                if queue and len(picked) < n:
                    picked.append(queue.pop(0))
        return picked

    return take(y_pred == y_true), take(y_pred != y_true)


def write_gradcam_grid(
    out: Path, model: ModelUnderTest, split, y_true, probs, config: EvalConfig
) -> str:
    """The Grad-CAM grid of correct and wrong cases; returns the report's line about it."""
    if config.gradcam == 0:
        return "Grad-CAM grid left out: --gradcam 0."
    if model.keras_model is None:
        return (
            "Grad-CAM grid left out: a SavedModel has no layers to take gradients through; "
            "evaluate the run folder it was exported from to get one."
        )
    try:
        from keras_app.gradcam import gradcam, overlay
    except ImportError as err:
        return f"Grad-CAM grid left out: keras_app.gradcam is not available ({err})."
    correct, wrong = pick_cases(y_true, probs, config.gradcam)
    chosen = correct + wrong
    if not chosen:
        return "Grad-CAM grid left out: no images."
    images = np.concatenate(
        [
            x.numpy()
            for x, _ in data_pipelines.make_dataset(
                split.subset(chosen),
                image_size=model.image_size,
                batch_size=len(chosen),
                training=False,
                num_classes=len(split.class_names),
                cache=False,
                pad_to_aspect=bool(model.config.get("pad_to_aspect", False)),
            )
        ]
    )
    try:
        heatmaps = gradcam(model.keras_model, images)
    except ValueError as err:
        return f"Grad-CAM grid left out: {err}."
    names = model.class_names
    panels = []
    for i, image, heat in zip(chosen, images, heatmaps, strict=True):
        pred = int(np.argmax(probs[i]))
        caption = f"true {names[y_true[i]]}\npred {names[pred]} ({probs[i, pred]:.2f})"
        panels.append((overlay(image.astype(np.uint8), heat), caption))
    rows = [
        (f"correct ({len(correct)})", panels[: len(correct)]),
        (f"wrong ({len(wrong)})", panels[len(correct) :]),
    ]
    plots.save(
        plots.image_grid_figure(
            rows, title="Grad-CAM of the predicted class\n(red: its evidence; most confident first)"
        ),
        out / GRADCAM_FILE,
    )
    return (
        f"![Grad-CAM grid]({GRADCAM_FILE})\n\nThe {len(correct)} most confident correct and "
        f"{len(wrong)} most confidently wrong cases, classes taken in turn; the heat map "
        "shows where the evidence for the predicted class lies."
    )


def predictions_csv(split, labels, probs, class_names) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "file", "label", "predicted", *(f"p_{c}" for c in class_names)])
    files = split.files if split.files is not None else [""] * len(labels)
    for i, (f, y, p) in enumerate(zip(files, labels, probs, strict=True)):
        writer.writerow(
            [i, f, class_names[y], class_names[int(np.argmax(p))], *(f"{v:.6f}" for v in p)]
        )
    return buffer.getvalue()


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def report_markdown(record: dict, figures: Sequence[str], gradcam_line: str) -> str:
    """report.md: what was evaluated on what, the numbers, the figures."""
    m, data, model = record["metrics"], record["data"], record["model"]
    lines = [
        f"# Evaluation of {Path(model['path']).name} on {data['name']} ({data['split']})",
        "",
        f"- model: {model['kind']} `{model['path']}`"
        + (f", backbone {model['backbone']}" if model["backbone"] else "")
        + f", input {model['image_size'][0]}x{model['image_size'][1]} px",
        f"- data: {data['name']}, fingerprint `{data['fingerprint']}`, split {data['split']}, "
        f"{data['n']} images; classes {data['class_mapping']}",
        f"- **{data['note']}**",
    ]
    if "positive_class" in m:
        lines.append(
            f"- positive class: {m['positive_class']}; decision threshold "
            f"{m['threshold']} on its probability"
        )
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {label} | {_fmt(m[key])} |" for key, label in HEADLINE if key in m]
    lines += [
        "",
        "## Per class (one-vs-rest)",
        "",
        "| class | precision | recall | F1 | specificity | ROC AUC | PR AUC | support |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in m["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | "
            f"{_fmt(v['f1'])} | {_fmt(v['specificity'])} | {_fmt(v['roc_auc'])} | "
            f"{_fmt(v['pr_auc'])} | {v['support']} |"
        )
    mac = m["macro"]
    lines.append(
        f"| **macro** | {_fmt(mac['precision'])} | {_fmt(mac['recall'])} | "
        f"{_fmt(mac['f1'])} | {_fmt(mac['specificity'])} | {_fmt(mac['roc_auc'])} | "
        f"{_fmt(mac['pr_auc'])} | {m['n']} |"
    )
    lines += [
        "",
        "scikit-learn's classification report:",
        "",
        "```",
        record["classification_report"]["text"].rstrip(),
        "```",
    ]
    target = record["target_sensitivity"]
    if target is not None:
        lines += ["", f"## Threshold for sensitivity {target['target']}", ""]
        if target.get("threshold") is None:
            lines.append(f"- {target['note']}")
        else:
            lines += [
                f"- threshold {target['threshold']:.4f} on P({m['positive_class']}): "
                f"sensitivity {target['sensitivity']:.4f}, specificity "
                f"{target['specificity']:.4f}, precision {target['precision']:.4f}",
                f"- at the default 0.5: sensitivity {target['default_sensitivity']:.4f}, "
                f"specificity {target['default_specificity']:.4f}",
                f"- specificity cost: {target['specificity_cost']:+.4f} "
                "(positive: specificity given up to reach the target)",
            ]
    lines += ["", "## Figures", ""]
    lines += [f"![{name.removesuffix('.png')}]({name})" for name in figures]
    lines += [
        "",
        "## Grad-CAM",
        "",
        gradcam_line,
        "",
        "Files: `metrics.json` (every number), `predictions.csv` (per image).",
        "",
    ]
    return "\n".join(lines)


def print_summary(out: Path, results: dict, origin: dict) -> None:
    m = results["metrics"]
    shown = ", ".join(
        f"{k} {m[k]:.4f}"
        for k in ("accuracy", "roc_auc", "sensitivity", "specificity")
        if m.get(k) is not None
    )
    print(f"{origin['validation']} validation on {origin['name']}: {shown}", flush=True)
    target = results["target_sensitivity"]
    if target and target.get("threshold") is not None:
        print(
            f"sensitivity >= {target['target']} at threshold {target['threshold']:.4f}: "
            f"specificity {target['specificity']:.4f} "
            f"(cost {target['specificity_cost']:+.4f})",
            flush=True,
        )
    print(f"evaluation folder: {out}", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
