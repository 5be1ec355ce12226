"""Judging a trained model on one split as a screening test is judged (keras_app.evaluate).

Decisions are made at the operating point stored with the model, never at one
chosen on the judged data; `--optimistic-threshold` adds one chosen there, apart
and labelled. The judged split is carved as the run carved its data, and the
report says whether the data is what the model trained on (internal), new to it
(external), or overlapping what it saw.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import data_pipelines
from data_pipelines import overlap
from data_pipelines.sources import all_of
from keras_app.artifacts.folders import EVALUATION_REPORT, PREDICTIONS_CSV, kind_or_none
from keras_app.artifacts.runs import METRICS
from keras_app.core import files
from keras_app.core.errors import UsageError
from keras_app.decision.metrics import (
    decision_metrics,
    evaluate_probs,
    expected_calibration_error,
    guard_summary,
    positive_index,
    refer_summary,
    roc_auc_with_ci,
)
from keras_app.decision.operating_point import (
    NOT_ANALYSED,
    REFER,
    OperatingPoint,
    choose_threshold,
    scale,
)
from keras_app.evaluation import report
from keras_app.evaluation.report import citation
from keras_app.recipe.config import MANIFEST_FIELDS, TrainConfig, manifest_options
from keras_app.reports.model_card import write_model_card


@dataclass(frozen=True)
class Judged:
    """What is judged: the data source, the split and how it was made."""

    spec: str | None
    data: object
    split: object
    name: str
    note: str


def evaluate(config, predictor) -> Path:
    """Judges `predictor` as `config` (the command line, `keras_app.evaluate.EvalConfig`)
    asks; writes the evaluation folder and prints the summary.

    Returns:
        The evaluation folder.
    """
    judged = load_judged(config, predictor)
    labels, class_note = align_classes(
        judged.data.class_names, predictor.class_names, judged.split.labels
    )
    positive = check_positive(config, predictor)
    out = output_dir(config, predictor, judged)
    probs, ood = predictor.score_split(judged.split, config.batch_size)
    if config.no_guard or predictor.operating_point.guard_limit is None:
        ood = None  # judged as a model without a guard
    analysed = (
        predictor.operating_point.analysed(ood) if ood is not None else np.ones(len(labels), bool)
    )
    if not analysed.any():
        raise UsageError(
            f"the image guard kept out all {len(labels)} judged images (unlike the images the "
            "model was trained on): nothing to judge; --no-guard judges them anyway"
        )
    # Every metric is of the analysed images; the guard's section counts the others.
    kept = np.flatnonzero(analysed)
    results = judge(labels[kept], probs[kept], predictor, positive, config.optimistic_threshold)
    results["guard"] = (
        guard_summary(labels, probs, analysed, predictor.class_names, predictor.operating_point)
        if ood is not None
        else {}
    )
    # The refer band's count is of the analysed images too: only those can be referred.
    results["refer"] = refer_summary(
        labels[kept], probs[kept], predictor.class_names, predictor.operating_point
    )
    origin = data_origin(predictor, judged, seen_in_training(predictor, judged.split))
    record = {
        "config": dataclasses.asdict(config),
        "model": predictor.describe(),
        "data": {**origin, "n": len(labels), "class_mapping": class_note},
        **{k: v for k, v in results.items() if k not in ("calibration", "decisions")},
        "calibration": {k: v for k, v in results["calibration"].items() if k != "before"},
    }
    write_evaluation(out, config, predictor, judged, labels, probs, analysed, results, record)
    print_summary(out, results, origin)
    return out


# --- the data ------------------------------------------------------------------------------------


def load_judged(config, predictor) -> Judged:
    """The data and split to judge, carved as the run carved its data (its seed and val
    fraction), so that a run's own test split is the one it never saw."""
    spec = config.data
    # A command without manifest flags (the audit) judges with the run's own.
    given = {k: v for k in MANIFEST_FIELDS if (v := getattr(config, k, None)) is not None}
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


def check_positive(config, predictor) -> int | None:
    """The positive column for two classes (--positive-class, else the stored operating
    point's, else the one named like PNEUMONIA); None for more classes."""
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
    op = predictor.operating_point
    applies = positive is not None and op.positive_index(predictor.class_names) == positive
    applied = op if applies else OperatingPoint()  # else: the most probable class
    results = evaluate_probs(
        labels,
        probs,
        predictor.class_names,
        applied,
        predictor.class_names[positive] if positive is not None else None,
    )
    both = positive is not None and 0 < (np.asarray(labels) == positive).sum() < len(labels)
    if both:
        # A clinician acts on the AUC only with its interval (stratified bootstrap).
        results["metrics"]["roc_auc_ci"] = roc_auc_with_ci(
            np.asarray(labels) == positive, np.asarray(probs)[:, positive]
        )
    results["operating_point"] = {
        "stored": op.to_dict(),
        "applied": decision_metrics(labels, probs, predictor.class_names, op) if applies else None,
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
        optimistic_threshold(labels, probs, predictor.class_names, positive, optimistic, both)
        if optimistic is not None
        else None
    )
    results["decisions"] = applied.decide(probs, predictor.class_names)
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


def optimistic_threshold(
    labels, probs, class_names, positive: int, target: float, both: bool
) -> dict:
    """The threshold reaching `target` sensitivity on the judged data itself, labelled."""
    note = (
        "optimistic: this threshold was chosen on the very images it is judged on; "
        "expect lower sensitivity on new patients. The stored operating point above is "
        "the honest figure"
    )
    if not both:
        return {"target": target, "threshold": None, "note": note + " (not computable: one class)"}
    is_pos = np.asarray(labels) == positive
    threshold = choose_threshold(is_pos, np.asarray(probs)[:, positive], target)
    optimistic = OperatingPoint(positive_class=class_names[positive], threshold=threshold)
    return {
        "target": target,
        "note": note,
        **decision_metrics(labels, probs, class_names, optimistic),
    }


# --- files ---------------------------------------------------------------------------------------


def output_dir(config, predictor, judged: Judged) -> Path:
    """--out, or the default beside the model; refuses to replace a folder that is not an
    evaluation's."""
    dataname = re.sub(r"[^A-Za-z0-9_.-]+", "-", judged.data.name).strip("-") or "data"
    if config.out is not None:
        out = Path(config.out)
    elif predictor.kind == "keras" and predictor.path and predictor.path.is_dir():
        out = predictor.path / f"eval-{judged.name}-{dataname}"
    else:
        out = Path("runs") / f"eval-{predictor.name}-{judged.name}-{dataname}"
    if out.exists() and any(out.iterdir()) and kind_or_none(out) != "evaluation":
        raise UsageError(f"--out {out} holds files that are not an evaluation; choose another")
    return out


def write_evaluation(out, config, predictor, judged, labels, probs, analysed, results, record):
    """The evaluation folder, written whole or not at all: the figures of the analysed
    images, every image in predictions.csv (those the guard kept out said so)."""
    kept = np.flatnonzero(analysed)
    decisions = results["decisions"]  # of the analysed images, in order
    names, positive = predictor.class_names, check_positive(config, predictor)
    split = judged.split.subset(kept)
    with files.atomic_directory(out, overwrite=True) as tmp:
        figures = report.write_figures(
            tmp, labels[kept], probs[kept], names, positive, results, judged.name
        )
        gradcam_line = report.write_gradcam_grid(
            tmp, predictor, split, labels[kept], decisions, probs[kept], config.gradcam
        )
        files.write_json_atomic(tmp / METRICS, record)
        every = np.full(len(labels), NOT_ANALYSED, dtype=object)
        every[kept] = [names[d] for d in decisions]
        every[kept[predictor.operating_point.referred(probs[kept], names)]] = REFER
        files.write_text_atomic(
            tmp / PREDICTIONS_CSV,
            report.predictions_csv(judged.split, labels, probs, every, names),
        )
        files.write_text_atomic(
            tmp / EVALUATION_REPORT, report.report_markdown(record, figures, gradcam_line)
        )


def write_cards(out: Path, predictor) -> None:
    """report.html for the evaluation, and again for the run it judged, whose card lists
    every evaluation run so far."""
    write_model_card(out)
    run = predictor.path
    if predictor.kind == "keras" and run is not None and out.parent == run:
        write_model_card(run)


def print_summary(out: Path, results: dict, origin: dict) -> None:
    m = results["metrics"]
    shown = ", ".join(f"{k} {m[k]:.4f}" for k in ("accuracy", "roc_auc") if m.get(k) is not None)
    ci = m.get("roc_auc_ci") or {}
    if ci.get("low") is not None:
        shown += f" [95% CI {ci['low']:.4f}, {ci['high']:.4f}]"
    print(
        f"{origin['validation']} validation on {origin['name']} ({origin['split']}, "
        f"{m['n']} images): {shown}",
        flush=True,
    )
    applied = results["operating_point"]["applied"]
    if applied:
        sens, spec = applied["sensitivity"], applied["specificity"]
        stored = results["operating_point"]["stored"]
        print(
            f"at the threshold {applied['threshold']:.4f} (operating point "
            f"v{stored.get('version', 1)}, chosen on {stored.get('chosen_on', 'val')}): "
            f"sensitivity {_ci(sens)}, specificity {_ci(spec)}",
            flush=True,
        )
    else:
        print(results["operating_point"]["note"], flush=True)
    guard = results.get("guard") or {}
    if guard:
        refs = guard.get("with_referrals")
        print(
            f"image guard: {guard['not_analysed']['k']} of {guard['n']} images not analysed "
            f"({_ci(guard['not_analysed'])}); the figures above are of the analysed ones"
            + (
                f"; counting those as referrals: sensitivity {_ci(refs['sensitivity'])}, "
                f"specificity {_ci(refs['specificity'])}"
                if refs
                else ""
            ),
            flush=True,
        )
    refer = results.get("refer") or {}
    if refer:
        print(refer_line(refer), flush=True)
    opt = results.get("optimistic")
    if opt and opt.get("threshold") is not None:
        print(
            f"optimistic (threshold {opt['threshold']:.4f} chosen on this split for "
            f"sensitivity {opt['target']}): specificity {_ci(opt['specificity'])}",
            flush=True,
        )
    print(f"evaluation folder: {out}", flush=True)


def refer_line(refer: dict) -> str:
    """One line: how many analysed images the band referred, the decided ones' figures, and
    the figures with the referred read by a person."""
    decided, refs = refer.get("decided") or {}, refer["with_referrals"]
    shown = (
        f"sensitivity {_ci(decided['sensitivity'])}, specificity {_ci(decided['specificity'])}"
        if decided
        else "none decided"
    )
    return (
        f"refer band [{refer['low']:.4f}, {refer['high']:.4f}): {refer['referred']['k']} of "
        f"{refer['n']} analysed images referred ({_ci(refer['referred'])}); the decided: "
        f"{shown}; with the referred read by a person: sensitivity "
        f"{_ci(refs['sensitivity'])}, specificity {_ci(refs['specificity'])}"
    )


def _ci(rate: dict) -> str:
    if rate["value"] is None:
        return "n/a"
    return f"{rate['value']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}]"
