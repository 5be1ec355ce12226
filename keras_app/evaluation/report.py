"""What an evaluation leaves for a person: report.md, its figures and predictions.csv.

`keras_app.evaluate` computes (through `keras_app.metrics`); this module only
draws and writes. The page says what was judged on what, how the split was
made, which decision rule was applied and where it was chosen, and cites the
data where it recognises it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_app.reports import overlays, plots

GRADCAM_FILE = "gradcam_grid.png"
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
# Data the report recognises by its class folders, with the citation its licence asks for.
KERMANY = (
    'Kermany et al., "Identifying Medical Diagnoses and Treatable Diseases by Image-Based '
    'Deep Learning", Cell 172(5):1122-1131 (2018), doi:10.1016/j.cell.2018.02.010 (CC BY 4.0)'
)
CITATIONS = {frozenset({"normal", "pneumonia"}): KERMANY}


def citation(class_names: Sequence[str]) -> str | None:
    """The citation for data whose classes are a known public set's, else None."""
    return CITATIONS.get(frozenset(str(c).casefold() for c in class_names))


# --- figures -------------------------------------------------------------------------------------


def write_figures(out: Path, y_true, probs, class_names, positive, results, split) -> list[str]:
    """The confusion matrix, ROC curve and reliability diagram; their file names."""
    metrics = results["metrics"]
    op = results["operating_point"]
    decision = (
        f"threshold {op['applied']['threshold']:.4f} on P({class_names[positive]}), "
        f"chosen on {op['stored']['chosen_on']}"
        if op.get("applied")
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
    plots.save(
        plots.roc_figure(y_true, probs, class_names, positive=positive, points=roc_points(results)),
        out / "roc_curve.png",
    )
    calibration = results["calibration"]
    plots.save(
        plots.reliability_figure(
            y_true,
            probs,
            ece=calibration["ece_after"],
            before=calibration.get("before"),
            ece_before=calibration["ece_before"] if calibration.get("temperature") else None,
        ),
        out / "reliability.png",
    )
    return ["confusion_matrix.png", "roc_curve.png", "reliability.png"]


def roc_points(results: dict) -> list[tuple[str, float, float]]:
    """(label, specificity, sensitivity) of the operating points to mark on the ROC curve."""
    points = []
    applied = results["operating_point"].get("applied")
    if applied:
        points.append(
            (
                f"stored threshold {applied['threshold']:.3f}",
                applied["specificity"]["value"],
                applied["sensitivity"]["value"],
            )
        )
    optimistic = results.get("optimistic")
    if optimistic and optimistic.get("threshold") is not None:
        points.append(
            (
                f"optimistic: {optimistic['threshold']:.3f} chosen on this split",
                optimistic["specificity"]["value"],
                optimistic["sensitivity"]["value"],
            )
        )
    return [p for p in points if p[1] is not None and p[2] is not None]


def pick_cases(y_true, y_pred, confidence, n: int) -> tuple[list[int], list[int]]:
    """Up to `n` correct and `n` wrong decisions, the most confident first, taking the true
    classes in turn so that every class shows (a missed pneumonia and a false alarm).

    Returns:
        (correct indices, wrong indices).
    """
    y_true, y_pred, confidence = map(np.asarray, (y_true, y_pred, confidence))

    def take(mask):
        queues = [
            sorted(
                (int(i) for i in np.flatnonzero(mask & (y_true == c))), key=lambda i: -confidence[i]
            )
            for c in np.unique(y_true)
        ]
        picked = []
        while len(picked) < n and any(queues):
            for queue in queues:
                if queue and len(picked) < n:
                    picked.append(queue.pop(0))
        return picked

    return take(y_pred == y_true), take(y_pred != y_true)


def write_gradcam_grid(out: Path, predictor, split, y_true, y_pred, probs, n: int) -> str:
    """The Grad-CAM grid of correct and wrong decisions; returns the report's line about it."""
    if n == 0:
        return "Grad-CAM grid left out: --gradcam 0."
    if predictor.keras_model is None:
        return (
            "Grad-CAM grid left out: a SavedModel has no layers to take gradients through; "
            "evaluate the run folder it was exported from to get one."
        )
    from keras_app.evaluation.gradcam import explain

    confidence = probs[np.arange(len(y_pred)), y_pred]
    correct, wrong = pick_cases(y_true, y_pred, confidence, n)
    chosen = correct + wrong
    if not chosen:
        return "Grad-CAM grid left out: no images."
    images = predictor.split_images(split.subset(chosen))
    try:
        # Each map explains the decision made (at the operating point), not the argmax.
        found = explain(predictor.keras_model, images, [int(y_pred[i]) for i in chosen])
    except ValueError as err:
        return f"Grad-CAM grid left out: {err}."
    names = predictor.class_names
    panels = []
    for i, image, heat in zip(chosen, images, found.heatmaps, strict=True):
        caption = f"true {names[y_true[i]]}\ncalled {names[y_pred[i]]} ({probs[i, y_pred[i]]:.2f})"
        panels.append((image.astype(np.uint8), heat, caption))
    rows = [
        (f"correct ({len(correct)})", panels[: len(correct)]),
        (f"wrong ({len(wrong)})", panels[len(correct) :]),
    ]
    plots.save(
        overlays.heatmap_grid_figure(
            rows, title="Grad-CAM of the decision\n(its evidence, most confident first)"
        ),
        out / GRADCAM_FILE,
    )
    blank = int(found.blank.sum())
    note = (
        f" {blank} panel(s) show no positive evidence for the decision, and say so."
        if blank
        else ""
    )
    return (
        f"![Grad-CAM grid]({GRADCAM_FILE})\n\nThe {len(correct)} most confident correct and "
        f"{len(wrong)} most confidently wrong decisions, classes taken in turn; the heat map "
        "shows where the evidence for the decision lies (for a binary model, evidence for "
        f"one class is evidence against the other).{note}"
    )


# --- files ---------------------------------------------------------------------------------------


def predictions_csv(split, labels, probs, decisions, class_names) -> str:
    """Per image: index, file, true class, the decision as shown (a class name, "refer"
    inside the refer band, "not analysed" where the image guard kept it out), every
    probability."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "file", "label", "decision", *(f"p_{c}" for c in class_names)])
    files = split.files if split.files is not None else [""] * len(labels)
    for i, (f, y, d, p) in enumerate(zip(files, labels, decisions, probs, strict=True)):
        writer.writerow([i, f, class_names[y], d, *(f"{v:.6f}" for v in p)])
    return buffer.getvalue()


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _interval(metrics: dict, key: str) -> str:
    """ " [low, high]" where the metric has a stored interval (`<key>_ci`), else ""."""
    ci = metrics.get(f"{key}_ci") or {}
    return f" [{ci['low']:.4f}, {ci['high']:.4f}]" if ci.get("low") is not None else ""


def _rate(rate: dict) -> str:
    if rate.get("value") is None:
        return "n/a (no such cases)"
    return (
        f"{rate['value']:.4f} (95% CI {rate['low']:.3f}-{rate['high']:.3f}, "
        f"{rate['k']}/{rate['n']})"
    )


def report_markdown(record: dict, figures: Sequence[str], gradcam_line: str) -> str:
    """report.md: what was evaluated on what, the decision and its numbers, the figures."""
    lines = _header(record)
    lines += _decision_section(record)
    lines += _metrics_section(record)
    lines += _guard_section(record)
    lines += _refer_section(record)
    lines += _calibration_section(record)
    lines += _optimistic_section(record)
    lines += ["", "## Figures", ""]
    lines += [f"![{name.removesuffix('.png')}]({name})" for name in figures]
    lines += ["", "## Grad-CAM", "", gradcam_line, ""]
    lines += ["Files: `metrics.json` (every number), `predictions.csv` (per image).", ""]
    return "\n".join(lines)


def _header(record: dict) -> list[str]:
    data, model = record["data"], record["model"]
    size = model["image_size"]
    lines = [
        f"# Evaluation of {Path(model['path']).name} on {data['name']} ({data['split']})",
        "",
        f"- model: {model['kind']} `{model['path']}`"
        + (f", backbone {model['backbone']}" if model.get("backbone") else "")
        + (f", input {size[0]}x{size[1]} px" if size else ""),
        f"- data: {data['name']}, fingerprint `{data['fingerprint']}`, {data['n']} images "
        f"judged; classes {data['class_mapping']}",
        f"- split: {data['split_note']}",
        f"- **{data['note']}**",
    ]
    if data.get("seen_in_training") is not None:
        lines.append(f"- images seen in training (by content): {data['seen_in_training']}")
    if data.get("citation"):
        lines.append(f"- data source: {data['citation']}; cite it wherever these results go")
    return lines


def _decision_section(record: dict) -> list[str]:
    op = record["operating_point"]
    stored, applied = op["stored"], op.get("applied")
    lines = ["", "## Decision at the stored operating point", ""]
    if not applied:
        lines.append(f"- {op['note']}")
        return lines
    val = stored.get("validation", {})
    lines += [
        f"- rule: {stored['positive_class']} when P({stored['positive_class']}) >= "
        f"{applied['threshold']:.4f}, chosen on the {stored['chosen_on']} split for "
        f"sensitivity >= {stored['target_sensitivity']}, never on the data judged here",
        f"- sensitivity here: {_rate(applied['sensitivity'])}",
        f"- specificity here: {_rate(applied['specificity'])}",
        f"- precision here: {_fmt(applied['precision'])}",
    ]
    if val.get("sensitivity"):
        lines.append(
            f"- on {stored['chosen_on']} (n={val.get('n')}) it gave sensitivity "
            f"{_rate(val['sensitivity'])}, specificity {_rate(val['specificity'])}"
        )
    return lines


def _metrics_section(record: dict) -> list[str]:
    m = record["metrics"]
    lines = ["", "## Metrics (decisions at the stored operating point)", ""]
    lines += ["| metric | value |", "|---|---:|"]
    lines += [
        f"| {label} | {_fmt(m[key])}{_interval(m, key)} |" for key, label in HEADLINE if key in m
    ]
    lines += [
        "",
        "### Per class (one-vs-rest)",
        "",
        "| class | precision | recall | F1 | specificity | ROC AUC | PR AUC | support |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in m["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | "
            f"{_fmt(v['specificity'])} | {_fmt(v['roc_auc'])} | {_fmt(v['pr_auc'])} | "
            f"{v['support']} |"
        )
    mac = m["macro"]
    lines.append(
        f"| **macro** | {_fmt(mac['precision'])} | {_fmt(mac['recall'])} | {_fmt(mac['f1'])} | "
        f"{_fmt(mac['specificity'])} | {_fmt(mac['roc_auc'])} | {_fmt(mac['pr_auc'])} | "
        f"{m['n']} |"
    )
    report = record["classification_report"]["text"].rstrip()
    return lines + ["", "scikit-learn's classification report:", "", "```", report, "```"]


def _guard_section(record: dict) -> list[str]:
    guard = record.get("guard") or {}
    if not guard:
        return []
    lines = [
        "",
        "## Image guard",
        "",
        f"Images whose guard score is above {guard['limit']:.4g} are not analysed: "
        f"{_rate(guard['not_analysed'])} of the judged images. Every figure above is of the "
        "analysed images.",
    ]
    refs = guard.get("with_referrals")
    if refs:
        lines += [
            "",
            f"Counting the images not analysed as referrals ({refs['note']}): sensitivity "
            f"{_rate(refs['sensitivity'])}, specificity {_rate(refs['specificity'])}.",
        ]
    return lines


def _refer_section(record: dict) -> list[str]:
    refer = record.get("refer") or {}
    if not refer:
        return []
    decided, refs = refer.get("decided") or {}, refer["with_referrals"]
    lines = [
        "",
        "## Refer band",
        "",
        f"Analysed images with {refer['low']:.4f} <= P < {refer['high']:.4f} (the band "
        f"chosen to hold {refer['share']} of validation) are referred to a reader: "
        f"{_rate(refer['referred'])} of the {refer['n']} analysed images. Every "
        "figure above counts them as decided at the threshold.",
    ]
    if decided:
        lines += [
            "",
            f"The decided images: sensitivity {_rate(decided['sensitivity'])}, specificity "
            f"{_rate(decided['specificity'])}.",
        ]
    return lines + [
        "",
        f"With the referred read by a person ({refs['note']}): sensitivity "
        f"{_rate(refs['sensitivity'])}, specificity {_rate(refs['specificity'])}.",
    ]


def _calibration_section(record: dict) -> list[str]:
    c = record["calibration"]
    lines = ["", "## Calibration", ""]
    if not c.get("temperature"):
        return lines + [f"- no temperature scaling in this model; ECE {_fmt(c['ece_after'])}"]
    return lines + [
        f"- temperature {c['temperature']:.3f}, fitted on validation and saved inside the model",
        f"- ECE here: {_fmt(c['ece_before'])} before, {_fmt(c['ece_after'])} after "
        "(see reliability.png); the ranking, hence ROC AUC, is unchanged by it",
    ]


def _optimistic_section(record: dict) -> list[str]:
    opt = record.get("optimistic")
    if not opt:
        return []
    lines = ["", f"## Optimistic: threshold chosen on this split for sensitivity {opt['target']}"]
    lines += ["", f"- **{opt['note']}**"]
    if opt.get("threshold") is not None:
        lines += [
            f"- threshold {opt['threshold']:.4f}: sensitivity {_rate(opt['sensitivity'])}, "
            f"specificity {_rate(opt['specificity'])}"
        ]
    return lines
