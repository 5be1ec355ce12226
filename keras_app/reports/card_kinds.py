"""The model card of each kind of folder: run, evaluation, ensemble, sweep."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from keras_app.artifacts.commands import ensemble_command, evaluate_command, train_command
from keras_app.artifacts.folders import (
    SWEEP_CHART,
    SWEEP_CSV,
    SWEEP_PLAN,
    audits,
    evaluations,
    kind_or_none,
    read_json,
)
from keras_app.artifacts.runs import (
    CONFIG,
    CURVES,
    ENVIRONMENT,
    GUARD_TABLE,
    METRICS,
    RunFolder,
)
from keras_app.reports.card_audit import audit_section
from keras_app.reports.card_blocks import ETHICS, NOT_RECORDED, Section, with_ci
from keras_app.reports.card_sections import (
    calibration,
    caveats,
    environment,
    external_validations,
    factors,
    gradcam,
    image_guard,
    intended_use,
    metrics_section,
    quantitative,
    recorded_caveats,
    training_data,
)


def run_sections(folder: Path) -> list[Section]:
    """Every section for a run folder (or a run chosen by a sweep)."""
    config, env, metrics = (read_json(folder / n, {}) for n in (CONFIG, ENVIRONMENT, METRICS))
    # The current operating point (a local recalibration's version where there is one).
    op = RunFolder(folder).operating_point() or metrics.get("operating_point")
    data, evals = env.get("data") or {}, evaluations(folder)
    records = [read_json(e / METRICS, {}) for e in evals]
    own = data.get("split_notes") or {}
    notes = [f"{k}: {v}" for k, v in own.items()]
    notes += [n for r in records if (n := r["data"].get("split_note")) and n not in own.values()]
    applied = [(e.name, r["metrics"]) for e, r in zip(evals, records, strict=True)]
    curves = Section("Training curves").kv([("Best epoch (1-based)", metrics.get("best_epoch"))])
    curves.img(folder / CURVES, "Loss and the monitored metric per epoch")
    return [
        run_details(folder, config, env, metrics),
        intended_use(),
        factors(env.get("class_names"), data),
        metrics_section(op, metrics.get("monitor")),
        run_evaluation_data(data, records),
        training_data(data, config, notes),
        quantitative([("val", metrics.get("val")), ("test", metrics.get("test")), *applied]),
        calibration(op, evals),
        image_guard(op, metrics, read_json(folder / GUARD_TABLE)),
        external_validations(evals),
        gradcam(evals),
        audit_section(audits(folder)),
        curves,
        environment(env),
        run_reproduce(config, records),
        Section("Ethical considerations").p(ETHICS),
        caveats(recorded_caveats(op, evals)),
    ]


def run_details(folder: Path, config: dict, env: dict, metrics: dict) -> Section:
    def pair(a: str, b: str):
        return f"{config[a]} / {config[b]}" if a in config and b in config else None

    return Section("Model details").kv(
        [
            ("Backbone", config.get("model")),
            ("Weights", env.get("weights")),
            ("Input size", config.get("image_size")),
            ("Classes", env.get("class_names")),
            ("Head / fine-tune epochs", pair("head_epochs", "fine_tune_epochs")),
            ("Learning rates (head / fine-tune)", pair("lr", "fine_tune_lr")),
            ("Batch size", config.get("batch_size")),
            ("Best epoch (1-based)", metrics.get("best_epoch")),
            ("Folder", folder.resolve()),
        ]
    )


def run_evaluation_data(data: dict, records: Sequence[dict]) -> Section:
    s = Section("Evaluation data").kv(
        [("Test split sizes", (data.get("splits") or {}).get("test"))]
    )
    for record in records:
        s.kv([(record["data"].get("split", "?") + " evaluation", record["data"].get("note"))])
    return s


def run_reproduce(config: dict, records: Sequence[dict]) -> Section:

    s = Section("Reproduce").code(train_command(config) if config else NOT_RECORDED)
    for record in records:
        if record.get("config"):
            s.code(evaluate_command(record["config"]))
    return s


def evaluation_sections(folder: Path) -> list[Section]:
    """Every section for an evaluation folder; the training side from the run it judged."""

    record = read_json(folder / METRICS, {})
    model, data = record.get("model", {}), record.get("data", {})
    op = record["operating_point"].get("stored")
    run = Path(model.get("path", ""))
    env, config = (read_json(run / n, {}) if run.is_dir() else {} for n in (ENVIRONMENT, CONFIG))
    figures = Section("Figures")
    figures.img(folder / "confusion_matrix.png", "Confusion matrix at the stored operating point")
    figures.img(folder / "roc_curve.png", "ROC curve with the operating points")
    notes = [data["split_note"]] if data.get("split_note") else []
    command = record.get("config") or {"model": model.get("path")}
    return [
        Section("Model details").kv(
            [(k.capitalize(), model.get(k)) for k in ("path", "kind", "backbone")]
            + [("Input size", model.get("image_size")), ("Classes", model.get("class_names"))]
        ),
        intended_use(),
        factors(model.get("class_names"), data),
        evaluation_metrics(record, op),
        evaluation_data(data),
        training_data(env.get("data") or data.get("trained_on") or {}, config, notes),
        quantitative([(data.get("split", "judged"), record.get("metrics"))]),
        figures,
        calibration(op, [folder]),
        external_validations([folder]),
        gradcam([folder]),
        environment(env),
        Section("Reproduce").code(evaluate_command(command)),
        Section("Ethical considerations").p(ETHICS),
        caveats(recorded_caveats(op, [folder])),
    ]


def evaluation_metrics(record: dict, op: dict | None) -> Section:
    applied = record["operating_point"].get("applied") or {}
    at = "on this data at the stored threshold"
    return metrics_section(op, None).kv(
        [
            (f"Sensitivity {at}", with_ci(applied.get("sensitivity"))),
            (f"Specificity {at}", with_ci(applied.get("specificity"))),
            ("Note", record["operating_point"].get("note")),
        ]
    )


def evaluation_data(data: dict) -> Section:
    return Section("Evaluation data").kv(
        [
            ("Data", data.get("name")),
            ("Spec", data.get("spec")),
            ("Fingerprint", data.get("fingerprint")),
            ("Split", data.get("split")),
            ("Images", data.get("n")),
            ("How the split was made", data.get("split_note")),
            ("Internal or external", data.get("note")),
            ("Classes matched", data.get("class_mapping")),
            ("Citation", data.get("citation")),
        ]
    )


def ensemble_sections(folder: Path) -> list[Section]:

    config, metrics = read_json(folder / CONFIG, {}), read_json(folder / METRICS, {})
    members = config.get("members") or []
    env = RunFolder(folder).first_member().environment()
    data = env.get("data") or {}
    details = Section("Model details").kv(
        [
            ("Kind", "ensemble"),
            ("Weighting", config.get("weights")),
            ("Averaging", config.get("average")),
            ("Input size", config.get("image_size")),
            ("Classes", config.get("class_names")),
        ]
    )
    details.table(
        ["member", "backbone", "input size", "weight", "run folder"],
        [
            [m.get("name"), m.get("model"), m.get("image_size"), m.get("weight"), m.get("run")]
            for m in members
        ],
    )
    members_table = Section("Members against the ensemble")
    members_table.img(folder / "comparison.png", "Ensemble against its members, test split")
    reproduce = Section("Reproduce")
    for m in members:
        member_config = read_json(Path(m["run"]) / CONFIG, {})
        reproduce.code(train_command(member_config) if member_config else NOT_RECORDED)
    command = config.get("command")
    reproduce.code(ensemble_command(command) if command else NOT_RECORDED)
    evals = evaluations(folder)
    return [
        details,
        intended_use(),
        factors(config.get("class_names"), data),
        metrics_section(metrics.get("operating_point"), None),
        Section("Evaluation data").kv(
            [("Test split sizes", (data.get("splits") or {}).get("test"))]
        ),
        training_data(data, config, []),
        quantitative([("val", metrics.get("val")), ("test", metrics.get("test"))]),
        members_table,
        calibration(metrics.get("operating_point"), evals),
        external_validations(evals),
        gradcam(evals),
        audit_section(audits(folder)),
        environment(env),
        reproduce,
        Section("Ethical considerations").p(ETHICS),
        caveats(recorded_caveats(metrics.get("operating_point"), evals)),
    ]


def sweep_sections(folder: Path) -> list[Section]:
    """The sweep's own page, then the card of the run it chose (by validation)."""
    plan = read_json(folder / SWEEP_PLAN, {})
    rows = []
    if (folder / SWEEP_CSV).is_file():
        with (folder / SWEEP_CSV).open() as f:
            rows = list(csv.DictReader(f))
    sweep = plan.get("sweep", {})
    best = plan.get("best") or {}
    overview = Section("Sweep").kv(
        [
            ("Configurations", len(plan.get("trials", [])) or None),
            (
                "Swept fields",
                [f for f, _ in sweep.get("grid", [])]
                + [r["field"] for r in sweep.get("ranges", [])]
                or None,
            ),
            ("Budget (minutes)", sweep.get("budget_minutes") and f"{sweep['budget_minutes']:g}"),
            ("Chosen by validation AUC", best.get("name")),
        ]
    )
    overview.code(" ".join(plan.get("command", [])) or NOT_RECORDED)
    overview.img(folder / SWEEP_CHART, "Validation AUC against wall-clock minutes")
    columns = ["name", "status", "reason", "wall_minutes", "epochs", "val_auc", "test_auc"]
    overview.table(columns, [[csv_cell(c, r.get(c)) for c in columns] for r in rows])
    chosen = folder / best["name"] if best.get("name") else None
    if chosen is None or kind_or_none(chosen) != "run":
        return [overview, intended_use(), caveats(["No finished run was chosen."])]
    for section in (sections := run_sections(chosen)):
        section.title = f"{section.title} (chosen run {best['name']})"
    return [overview, *sections]


def csv_cell(column: str, text: str | None):
    """A sweep.csv cell: numbers as numbers; an empty reason means none, other blanks that
    the run did not record the value."""
    if column == "reason":
        return text or "none"
    if not text:
        return None
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        return text


SECTIONS_OF = {
    "run": run_sections,
    "evaluation": evaluation_sections,
    "ensemble": ensemble_sections,
    "sweep": sweep_sections,
}
