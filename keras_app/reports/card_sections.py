"""The model card's sections that every kind of folder shares (Mitchell et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from keras_app.artifacts.folders import GRADCAM_GRID, read_json
from keras_app.artifacts.runs import METRICS
from keras_app.reports.card_blocks import INTENDED_USE, NOT_RECORDED, Section, with_ci

# --- sections shared by every model --------------------------------------------------------------


def intended_use() -> Section:
    return Section("Intended use").p(INTENDED_USE)


def factors(class_names, data: dict) -> Section:
    return Section("Factors").kv(
        [
            ("Classes", class_names or None),
            ("Data source", data.get("name")),
            ("Patient demographics (age, sex)", None),
            ("Acquisition site, scanner, view", None),
        ]
    )


def metrics_section(op: dict | None, monitor: str | None) -> Section:
    s = Section("Metrics").p(
        "ROC AUC (threshold-free ranking), and at the operating point sensitivity and "
        "specificity with 95% Wilson intervals; accuracy, F1, log-loss, Brier score and "
        "expected calibration error (ECE)."
    )
    op = op or {}
    validation = op.get("validation") or {}
    rows = [
        ("Checkpoint chosen by", monitor),
        ("Positive class", op.get("positive_class")),
        ("Decision threshold", op.get("threshold")),
        ("Target sensitivity", op.get("target_sensitivity")),
        ("Threshold chosen on", op.get("chosen_on")),
        ("Validation sensitivity at threshold", with_ci(validation.get("sensitivity"))),
        ("Validation specificity at threshold", with_ci(validation.get("specificity"))),
    ]
    return s.kv(rows + refer_rows(op.get("refer_band") or {}))


def refer_rows(band: dict) -> list[tuple[str, str]]:
    """The refer band's rows of the operating point (none without a band)."""
    if not band:
        return []
    fitted = band.get("validation") or {}
    return [
        (
            "Refer band (a reader decides)",
            f"{band['low']:.4f} <= P < {band['high']:.4f}, chosen to hold {band.get('share')} "
            "of validation, nearest the threshold in log-odds",
        ),
        ("Validation share referred", with_ci(fitted.get("referred"))),
        ("Validation sensitivity of the decided", with_ci(fitted.get("sensitivity"))),
        ("Validation specificity of the decided", with_ci(fitted.get("specificity"))),
    ]


def training_data(data: dict, config: dict, split_notes: Sequence[str]) -> Section:
    s = Section("Training data").kv(
        [
            ("Name", data.get("name")),
            ("Spec", data.get("spec")),
            ("Fingerprint", data.get("fingerprint")),
            ("Class weights", data.get("class_weight")),
            ("Unreadable files skipped", data.get("skipped")),
            ("Validation fraction carved from train", config.get("val_fraction")),
            ("Split seed", config.get("seed")),
        ]
    )
    splits = data.get("splits") or {}
    if splits:
        names = sorted({c for counts in splits.values() for c in counts})
        rows = [
            [split, *(counts.get(c, 0) for c in names), sum(counts.values())]
            for split, counts in splits.items()
        ]
        s.table(["split", *names, "total"], rows)
    else:
        s.p(f"Split sizes: {NOT_RECORDED}.")
    how = "; ".join(dict.fromkeys(split_notes)) if split_notes else None
    return s.kv([("How the split was made (patient grouping)", how)])


def quantitative(named: Sequence[tuple[str, dict]]) -> Section:
    """One row per (split, metrics dict) with the headline numbers."""
    keys = (
        "n",
        "accuracy",
        "roc_auc",
        "pr_auc",
        "sensitivity",
        "specificity",
        "f1",
        "log_loss",
        "brier",
        "ece",
    )
    rows = [[name, *(m.get(k) for k in keys)] for name, m in named if m]
    s = Section("Quantitative analyses")
    if not rows:
        return s.p(f"Metrics: {NOT_RECORDED}.")
    s.table(["split", *keys], rows)
    for name, m in named:
        per_class = (m or {}).get("per_class") or {}
        if per_class:
            cols = ("precision", "recall", "f1", "support")
            s.p(f"Per class, {name}:")
            s.table(
                ["class", *cols], [[c, *(v.get(k) for k in cols)] for c, v in per_class.items()]
            )
    return s


def calibration(op: dict | None, evals: Sequence[Path]) -> Section:
    op = op or {}
    validation = op.get("validation") or {}
    s = Section("Calibration").kv(
        [
            ("Temperature (fitted on validation)", op.get("temperature")),
            ("Validation ECE before scaling", validation.get("ece_before")),
            ("Validation ECE after scaling", validation.get("ece_after")),
        ]
    )
    for folder in evals:
        cal = read_json(folder / METRICS, {}).get("calibration") or {}
        s.kv(
            [
                (f"{folder.name}: ECE before", cal.get("ece_before")),
                (f"{folder.name}: ECE after", cal.get("ece_after")),
            ]
        )
        s.img(folder / "reliability.png", f"Reliability diagram, {folder.name}")
    return s


def external_validations(evals: Sequence[Path]) -> Section:
    s = Section("External validations")
    rows = []
    for folder in evals:
        record = read_json(folder / METRICS, {})
        data, applied = record.get("data", {}), record["operating_point"].get("applied") or {}
        rows.append(
            [
                folder.name,
                data.get("validation"),
                data.get("name"),
                data.get("split"),
                data.get("n"),
                record.get("metrics", {}).get("roc_auc"),
                with_ci(applied.get("sensitivity")),
                with_ci(applied.get("specificity")),
            ]
        )
    if not rows:
        return s.p(f"{NOT_RECORDED}: no evaluation folder (eval-*) in this folder yet.")
    external = sum(r[1] == "external" for r in rows)
    s.p(f"{len(rows)} evaluation(s) recorded, {external} on data the model did not train on.")
    return s.table(
        ["folder", "validation", "data", "split", "n", "ROC AUC", "sensitivity", "specificity"],
        rows,
    )


def gradcam(evals: Sequence[Path]) -> Section:
    s = Section("Grad-CAM examples")
    grids = [f / GRADCAM_GRID for f in evals if (f / GRADCAM_GRID).is_file()]
    if not grids:
        return s.p(f"{NOT_RECORDED}: no evaluation with Grad-CAM examples in this folder.")
    for grid in grids:
        s.img(grid, f"Correct and wrong decisions with their Grad-CAM, {grid.parent.name}")
    return s


def environment(env: dict) -> Section:
    packages = env.get("packages") or {}
    return Section("Environment").kv(
        [
            ("Python", env.get("python")),
            ("Platform", env.get("platform")),
            ("CPUs", env.get("cpu_count")),
            (
                "GPUs",
                [g.get("name") for g in env.get("gpus", [])] or "none" if "gpus" in env else None,
            ),
            ("Precision", env.get("precision")),
            ("XLA", env.get("jit_compile")),
            ("Strategy", env.get("strategy")),
            *((name, version) for name, version in packages.items()),
        ]
    )


def caveats(lines: Sequence[str]) -> Section:
    s = Section("Caveats and recommendations")
    for line in lines:
        s.p(line)
    return s


def recorded_caveats(op: dict | None, evals: Sequence[Path]) -> list[str]:
    """What the recorded numbers themselves warn about."""
    out = []
    validation = (op or {}).get("validation") or {}
    n = validation.get("n")
    if n is not None and n < 200:
        out.append(
            f"The operating point was chosen on {n} validation images: its sensitivity and "
            "specificity are uncertain (see the intervals)."
        )
    notes = [read_json(f / METRICS, {}).get("data", {}) for f in evals]
    if not any(d.get("validation") == "external" for d in notes):
        out.append(
            "No external validation recorded: all numbers come from the data the model was "
            "trained on (held-out splits of it) and may not carry over to other hospitals."
        )
    for d in notes:
        if "also appear in the other splits" in (d.get("split_note") or ""):
            out.append(f"{d.get('split_note')}: the test numbers may be optimistic.")
    out.append("Judge the model on local data before any use beyond research.")
    return out


def image_guard(op: dict | None, metrics: dict, table: dict | None) -> Section:
    """What the image guard keeps out: its limit, its pass rates, its detection rates."""
    guard = (op or {}).get("guard") or {}
    s = Section("Image guard: when the model does not answer")
    if not guard:
        return s.p(
            "No image guard: this model answers every image it is sent, whatever it shows "
            "(trained without one, or with --no-image-guard)."
        )
    s.p(
        "Images unlike those the model was trained on (photographs, blank or noisy frames, "
        "other modalities and body parts, rotated or inverted films) are not analysed: "
        "they get 'not analysed' with the reason instead of a decision. Method: "
        f"{guard.get('method', 'mahalanobis')}, {guard.get('citation') or NOT_RECORDED}."
    )
    s.kv(
        [
            ("Limit (guard score above it: not analysed)", guard.get("limit")),
            ("Chosen on", guard.get("chosen_on")),
            ("Layers read", guard.get("layers")),
            (
                "Validation images analysed",
                with_ci((guard.get("validation") or {}).get("pass_rate")),
            ),
            ("Test images analysed", with_ci((metrics.get("test_guard") or {}).get("analysed"))),
        ]
    )
    if not table:
        return s.p(
            f"Detection rates on out-of-distribution sets: {NOT_RECORDED} "
            "(benchmarks/guard_table.py RUN --out RUN/guard_table.json makes them)."
        )
    kinds = {True: "refused", False: "valid look-alike", None: "no right answer"}
    rows = [
        [
            name,
            kinds[row["refuse"]],
            row["held_out"]["n"],
            with_ci(row["held_out"]["not_analysed"]),
            row["held_out"]["auroc"]["value"],
        ]
        for name, row in table.get("sets", {}).items()
    ]
    s.p(f"Out-of-distribution sets, held-out parts ({table.get('command', NOT_RECORDED)}):")
    return s.table(["set", "kind", "n", "not analysed", "AUROC"], rows)
