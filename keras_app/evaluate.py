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

import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_app.config import MANIFEST_FIELDS, UNCERTAIN_POLICIES, TrainConfig, manifest_options
from keras_app.errors import ArgumentParser, UsageError, run_cli

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


@dataclass(frozen=True)
class Judged:
    """What is judged: the data source, the split and how it was made."""

    spec: str | None
    data: object
    split: object
    name: str
    note: str


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
    for name in MANIFEST_FIELDS:
        p.add_argument(
            "--" + name.replace("_", "-"),
            default=None,
            choices=UNCERTAIN_POLICIES if name == "uncertain" else None,
            help=f"a manifest's {name.replace('_', ' ')}, as keras_app.train takes it "
            "(default: the run's own when its own data is judged)",
        )
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
    from keras_app.inference import open_predictor
    from keras_app.runtime import import_tensorflow

    import_tensorflow()

    predictor = open_predictor(config.model)
    judged = load_judged(config, predictor)
    labels, class_note = align_classes(
        judged.data.class_names, predictor.class_names, judged.split.labels
    )
    positive = check_positive(config, predictor)
    out = output_dir(config, predictor, judged)
    probs = predictor.predict_split(judged.split, config.batch_size)
    results = judge(labels, probs, predictor, positive, config.optimistic_threshold)
    origin = data_origin(predictor, judged, seen_in_training(predictor, judged.split))
    record = {
        "config": dataclasses.asdict(config),
        "model": predictor.describe(),
        "data": {**origin, "n": len(labels), "class_mapping": class_note},
        **{k: v for k, v in results.items() if k != "calibration"},
        "calibration": {k: v for k, v in results["calibration"].items() if k != "before"},
    }
    write_evaluation(out, config, predictor, judged, labels, probs, positive, results, record)
    write_cards(out, predictor)
    print_summary(out, results, origin)


# --- the data ------------------------------------------------------------------------------------


def load_judged(config: EvalConfig, predictor) -> Judged:
    """The data and split to judge, carved as the run carved its data (its seed and val
    fraction), so that a run's own test split is the one it never saw."""
    import data_pipelines
    from data_pipelines.sources import all_of

    spec = config.data
    given = {k: getattr(config, k) for k in MANIFEST_FIELDS if getattr(config, k) is not None}
    if spec is None:
        if not predictor.config.get("data") and predictor.kind != "keras":
            raise UsageError(
                f"--data is required for an exported model ({predictor.path}): it carries "
                "no record of its data"
            )
        spec = predictor.config.get("data")
        given = {**predictor.config, **given}  # the run's own task, unless one is given
    data = data_pipelines.load_dataset(
        spec,
        val_fraction=predictor.config.get("val_fraction", 0.1),
        seed=predictor.config.get("seed", 42),
        manifest=manifest_options(given),
    )
    trained_on_it = (predictor.data_record or {}).get("fingerprint") == data.fingerprint
    if not data.has_splits and not trained_on_it:
        if config.split not in (None, "all"):
            raise UsageError(
                f"--split {config.split} applies to data with train/val/test of its own; "
                f"{data.name} has none, so every image of it is judged (leave out --split)"
            )
        note = f"every readable image of {data.name} (it has no train/val/test: nothing carved)"
        return Judged(spec, data, all_of(data.splits.values()), "all", note)
    name = config.split or "test"
    split = all_of(data.splits.values()) if name == "all" else data.splits[name]
    return Judged(spec, data, split, name, split_note(data, name, predictor.config))


def seen_in_training(predictor, split) -> int | None:
    """How many judged images the model trained or validated on, by file content; None
    where its run folder does not record what it saw."""
    from data_pipelines import overlap

    if predictor.training_images is None:
        return None
    return overlap(predictor.training_images, split.content_hashes())


def split_note(data, name: str, run_config: dict) -> str:
    """How the judged split was made (with the run's carving settings), patients apart or not."""
    fraction = run_config.get("val_fraction", TrainConfig.val_fraction)
    return data.split_note(name, fraction, run_config.get("seed", TrainConfig.seed))


def align_classes(data_names: Sequence[str], model_names: Sequence[str], labels):
    """The data's labels as the model's output columns, matching classes by name.

    Names match exactly, else ignoring case (MedMNIST's "pneumonia" is the
    folders' "PNEUMONIA"); the order may differ.

    Returns:
        (labels in the model's column order, a note saying how the classes matched).

    Raises:
        UsageError: the classes are not the same set.
    """
    import numpy as np

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


def check_positive(config: EvalConfig, predictor) -> int | None:
    """The positive column for two classes (--positive-class, else the stored operating
    point's, else the one named like PNEUMONIA); None for more classes."""
    from keras_app.metrics import positive_index

    names = predictor.class_names
    if len(names) != 2:
        for flag, value in (
            ("--positive-class", config.positive_class),
            ("--optimistic-threshold", config.optimistic_threshold),
        ):
            if value is not None:
                raise UsageError(
                    f"{flag} applies to two classes; the model has {len(names)}: {list(names)}"
                )
        return None
    wanted = config.positive_class or predictor.operating_point.positive_class
    try:
        return positive_index(names, wanted)
    except ValueError:
        raise UsageError(
            f"--positive-class must be one of {list(names)}. Received {config.positive_class!r}"
        ) from None


def data_origin(predictor, judged: Judged, seen: int | None) -> dict:
    """Whether the data is what the model trained on (internal), new to it (external), or
    overlaps what it saw, and why."""
    from keras_app.evaluation_report import citation

    data, n = judged.data, len(judged.split)
    record = predictor.data_record
    here = {
        "spec": judged.spec or "digits",
        "name": data.name,
        "fingerprint": data.fingerprint,
        "split": judged.name,
        "split_note": judged.note,
        "citation": citation(data.class_names),
        "seen_in_training": seen,
    }
    if record is None and seen is None:
        what = "an exported model" if predictor.kind != "keras" else "this model"
        return {
            **here,
            "validation": "unknown",
            "trained_on": None,
            "note": f"training data unknown ({what} carries no data record): internal or "
            "external validation cannot be told",
        }
    trained = {k: (record or {}).get(k) for k in ("spec", "name", "fingerprint")}
    seen_note = (
        f"{seen} of the {n} judged images were seen in training (same file content)"
        if seen
        else "none of the judged images was seen in training (by file content)"
        if seen == 0
        else "which images it saw cannot be checked (the run predates content hashes)"
    )
    if trained["fingerprint"] == data.fingerprint:
        note = (
            f"internal validation: the data the model was trained on ({data.name}, "
            f"fingerprint {data.fingerprint}), split {judged.name}; {seen_note}"
        )
        if seen:
            note += ", so the numbers overstate how it generalises"
        return {**here, "validation": "internal", "trained_on": trained, "note": note}
    against = f"trained on {trained['name']}, evaluated on {data.name}"
    if seen:
        return {
            **here,
            "validation": "overlapping",
            "trained_on": trained,
            "note": f"not an external validation: {seen_note} ({against}); the numbers "
            "overstate how it generalises",
        }
    return {
        **here,
        "validation": "external",
        "trained_on": trained,
        "note": f"external validation: {against} (spec `{trained['spec']}`, fingerprint "
        f"{trained['fingerprint']} against {data.fingerprint}); {seen_note}",
    }


# --- the numbers ---------------------------------------------------------------------------------


def judge(labels, probs, predictor, positive: int | None, optimistic: float | None) -> dict:
    """The metrics at the stored operating point, its sensitivity and specificity with
    intervals, calibration before and after, and, on request, the optimistic threshold."""
    import numpy as np

    from keras_app.metrics import decision_metrics, evaluate_probs, expected_calibration_error
    from keras_app.operating_point import scale

    op = predictor.operating_point
    applies = (
        positive is not None
        and op.threshold is not None
        and (op.positive_class == predictor.class_names[positive])
    )
    threshold = op.threshold if applies else None
    results = evaluate_probs(labels, probs, predictor.class_names, positive, threshold)
    both = positive is not None and 0 < (np.asarray(labels) == positive).sum() < len(labels)
    results["operating_point"] = {
        "stored": op.to_dict(),
        "applied": decision_metrics(labels, probs, positive, threshold) if applies else None,
        "note": None if applies else no_threshold_note(op, predictor, positive),
    }
    before = scale(probs, 1.0 / op.temperature) if op.temperature != 1.0 else None
    results["calibration"] = {
        "temperature": op.temperature if before is not None else None,
        "ece_before": expected_calibration_error(labels, before) if before is not None else None,
        "ece_after": expected_calibration_error(labels, probs),
        "before": before,
    }
    results["optimistic"] = (
        optimistic_threshold(labels, probs, positive, optimistic, both)
        if optimistic is not None
        else None
    )
    return results


def no_threshold_note(op, predictor, positive) -> str:
    if positive is None:
        return "more than two classes: each image is called its most probable class"
    if op.threshold is None:
        return (
            "this model stores no operating point (trained before keras-app chose one on "
            "validation, or with --target-sensitivity none): decisions at P >= 0.5"
        )
    return (
        f"the stored threshold is for {op.positive_class}, not for "
        f"{predictor.class_names[positive]}: decisions at P >= 0.5"
    )


def optimistic_threshold(labels, probs, positive: int, target: float, both: bool) -> dict:
    """The threshold reaching `target` sensitivity on the judged data itself, labelled."""
    import numpy as np

    from keras_app.metrics import decision_metrics
    from keras_app.operating_point import choose_threshold

    note = (
        "optimistic: this threshold was chosen on the very images it is judged on; "
        "expect lower sensitivity on new patients. The stored operating point above is "
        "the honest figure"
    )
    if not both:
        return {"target": target, "threshold": None, "note": note + " (not computable: one class)"}
    is_pos = np.asarray(labels) == positive
    threshold = choose_threshold(is_pos, np.asarray(probs)[:, positive], target)
    return {"target": target, "note": note, **decision_metrics(labels, probs, positive, threshold)}


# --- files ---------------------------------------------------------------------------------------


def output_dir(config: EvalConfig, predictor, judged: Judged) -> Path:
    """--out, or the default beside the model; refuses to replace a folder that is not an
    evaluation's."""
    dataname = re.sub(r"[^A-Za-z0-9_.-]+", "-", judged.data.name).strip("-") or "data"
    if config.out is not None:
        out = Path(config.out)
    elif predictor.kind == "keras" and predictor.path and predictor.path.is_dir():
        out = predictor.path / f"eval-{judged.name}-{dataname}"
    else:
        out = Path("runs") / f"eval-{predictor.name}-{judged.name}-{dataname}"
    if out.exists() and any(out.iterdir()) and not (out / "report.md").exists():
        raise UsageError(f"--out {out} holds files that are not an evaluation; choose another")
    return out


def write_evaluation(out, config, predictor, judged, labels, probs, positive, results, record):
    """The evaluation folder, written whole or not at all."""
    import numpy as np

    from keras_app import evaluation_report as report
    from keras_app import runs

    applied = results["operating_point"]["applied"]
    if applied:
        decisions = np.where(probs[:, positive] >= applied["threshold"], positive, 1 - positive)
    else:
        decisions = np.asarray(probs).argmax(axis=1)
    names = predictor.class_names
    with runs.atomic_directory(out, overwrite=True) as tmp:
        figures = report.write_figures(tmp, labels, probs, names, positive, results, judged.name)
        gradcam_line = report.write_gradcam_grid(
            tmp, predictor, judged.split, labels, decisions, probs, config.gradcam
        )
        runs.write_json_atomic(tmp / runs.METRICS, record)
        runs.write_text_atomic(
            tmp / "predictions.csv",
            report.predictions_csv(judged.split, labels, probs, decisions, names),
        )
        runs.write_text_atomic(
            tmp / "report.md", report.report_markdown(record, figures, gradcam_line)
        )


def write_cards(out: Path, predictor) -> None:
    """report.html for the evaluation, and again for the run it judged, whose card lists
    every evaluation run so far."""
    from keras_app.model_card import write_model_card

    write_model_card(out)
    run = predictor.path
    if predictor.kind == "keras" and run is not None and out.parent == run:
        write_model_card(run)


def print_summary(out: Path, results: dict, origin: dict) -> None:
    m = results["metrics"]
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("accuracy", "roc_auc") if m.get(k) is not None)
    print(
        f"{origin['validation']} validation on {origin['name']} ({origin['split']}, "
        f"{m['n']} images): {shown}",
        flush=True,
    )
    applied = results["operating_point"]["applied"]
    if applied:
        sens, spec = applied["sensitivity"], applied["specificity"]
        print(
            f"at the validation-chosen threshold {applied['threshold']:.4f}: sensitivity "
            f"{_ci(sens)}, specificity {_ci(spec)}",
            flush=True,
        )
    else:
        print(results["operating_point"]["note"], flush=True)
    opt = results.get("optimistic")
    if opt and opt.get("threshold") is not None:
        print(
            f"optimistic (threshold {opt['threshold']:.4f} chosen on this split for "
            f"sensitivity {opt['target']}): specificity {_ci(opt['specificity'])}",
            flush=True,
        )
    print(f"evaluation folder: {out}", flush=True)


def _ci(rate: dict) -> str:
    if rate["value"] is None:
        return "n/a"
    return f"{rate['value']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}]"


if __name__ == "__main__":
    sys.exit(run_cli(main))
