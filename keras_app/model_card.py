"""python -m keras_app.model_card FOLDER: one self-contained report.html a person can open.

    python -m keras_app.model_card runs/mobilenet-20260101-120000
    python -m keras_app.model_card runs/mobilenet-20260101-120000/eval-test-chest_xray_224

FOLDER is a run, an evaluation, an ensemble or a sweep folder. The page
follows the sections of Mitchell et al., "Model Cards for Model Reporting"
(FAT* 2019): model details, intended use, factors, metrics, evaluation data,
training data, quantitative analyses, ethical considerations, caveats; with
calibration, external validations, Grad-CAM examples, training curves, the
environment and the commands that reproduce it. Every value comes from the
folder's own files; what the folder did not record reads "not recorded".
Figures are embedded as base64 PNG, the style is inline and there is no
script: the file opens anywhere, offline, without keras-app installed.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.runs import CONFIG, CURVES, ENVIRONMENT, METRICS, write_text_atomic

REPORT = "report.html"
NOT_RECORDED = "not recorded"
PAPER = 'Mitchell et al., "Model Cards for Model Reporting", FAT* 2019, doi:10.1145/3287560.3287596'
INTENDED_USE = (
    "Research, teaching and the comparison of training recipes on medical images. "
    "Not for diagnostic use: this model is not a medical device, has not been validated "
    "clinically, and must not inform the care of any patient."
)
ETHICS = (
    "Images of patients are sensitive data: keep them under the terms they were shared on. "
    "A screening model that misses disease harms the patients it misses; one that over-calls "
    "it burdens patients and clinicians with follow-up. Models trained on one hospital's "
    "images can learn its scanners, labels and markers instead of the disease, and perform "
    "worse, unevenly, on other populations. Demographic factors (age, sex, ethnicity) were "
    "not recorded, so performance across them is unknown."
)


# --- the card as data ----------------------------------------------------------------------------


@dataclass
class Section:
    """One titled section: a list of blocks, each `(kind, payload)`.

    Kinds: "p" text; "kv" `[(label, value)]`; "table" `(header, rows)`;
    "img" `(path, caption)`; "code" text.
    """

    title: str
    blocks: list = field(default_factory=list)

    def p(self, text: str) -> Section:
        self.blocks.append(("p", text))
        return self

    def kv(self, pairs: Sequence[tuple[str, object]]) -> Section:
        self.blocks.append(("kv", [(k, shown(v)) for k, v in pairs]))
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Section:
        self.blocks.append(("table", (list(header), [[shown(c) for c in r] for r in rows])))
        return self

    def img(self, path: Path, caption: str) -> Section:
        if path.is_file():
            self.blocks.append(("img", (path, caption)))
        else:
            self.p(f"{caption}: {NOT_RECORDED} ({path.name} is absent).")
        return self

    def code(self, text: str) -> Section:
        self.blocks.append(("code", text))
        return self


def shown(value) -> str:
    """A recorded value as text; None (and NaN) read "not recorded"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_RECORDED
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {shown(v)}" for k, v in value.items())
    return str(value)


def with_ci(rate: dict | None) -> str:
    """A rate with its recorded 95% Wilson interval and counts."""
    if not rate or rate.get("value") is None:
        return NOT_RECORDED
    return (
        f"{rate['value']:.3f} (95% CI {rate['low']:.3f} to {rate['high']:.3f}; "
        f"{rate['k']} of {rate['n']})"
    )


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# --- which folder ---------------------------------------------------------------------------------


def folder_kind(folder: Path) -> str:
    """ "sweep", "evaluation", "ensemble" or "run"; a UsageError for anything else."""
    if (folder / "sweep.json").is_file():
        return "sweep"
    metrics = read_json(folder / METRICS)
    if "operating_point" in metrics and "data" in metrics and "config" in metrics:
        return "evaluation"
    config = read_json(folder / CONFIG)
    if config.get("model") == "ensemble":
        return "ensemble"
    if config and metrics:
        return "run"
    raise UsageError(
        f"{folder} is not a finished run, evaluation, ensemble or sweep folder "
        "(no config.json with metrics.json, and no sweep.json)"
    )


def evaluations(run: Path) -> list[Path]:
    """The evaluation folders written inside a run folder (`eval-*`), in name order."""
    return sorted(p for p in run.glob("eval-*") if folder_kind_or_none(p) == "evaluation")


def folder_kind_or_none(folder: Path) -> str | None:
    try:
        return folder_kind(folder)
    except UsageError:
        return None


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
    return s.kv(
        [
            ("Checkpoint chosen by", monitor),
            ("Positive class", op.get("positive_class")),
            ("Decision threshold", op.get("threshold")),
            ("Target sensitivity", op.get("target_sensitivity")),
            ("Threshold chosen on", op.get("chosen_on")),
            ("Validation sensitivity at threshold", with_ci(validation.get("sensitivity"))),
            ("Validation specificity at threshold", with_ci(validation.get("specificity"))),
        ]
    )


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
        cal = read_json(folder / METRICS).get("calibration") or {}
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
        record = read_json(folder / METRICS)
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
    grids = [f / "gradcam_grid.png" for f in evals if (f / "gradcam_grid.png").is_file()]
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
    notes = [read_json(f / METRICS).get("data", {}) for f in evals]
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


# --- one card per kind of folder -----------------------------------------------------------------


def run_sections(folder: Path) -> list[Section]:
    """Every section for a run folder (or a run chosen by a sweep)."""
    config, env, metrics = (read_json(folder / n) for n in (CONFIG, ENVIRONMENT, METRICS))
    data, op, evals = env.get("data") or {}, metrics.get("operating_point"), evaluations(folder)
    records = [read_json(e / METRICS) for e in evals]
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
        external_validations(evals),
        gradcam(evals),
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
    from keras_app.commands import evaluate_command, train_command

    s = Section("Reproduce").code(train_command(config) if config else NOT_RECORDED)
    for record in records:
        if record.get("config"):
            s.code(evaluate_command(record["config"]))
    return s


def evaluation_sections(folder: Path) -> list[Section]:
    """Every section for an evaluation folder; the training side from the run it judged."""
    from keras_app.commands import evaluate_command

    record = read_json(folder / METRICS)
    model, data = record.get("model", {}), record.get("data", {})
    op = record["operating_point"].get("stored")
    run = Path(model.get("path", ""))
    env, config = (read_json(run / n) if run.is_dir() else {} for n in (ENVIRONMENT, CONFIG))
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
    from keras_app.commands import ensemble_command, train_command

    config, metrics = read_json(folder / CONFIG), read_json(folder / METRICS)
    members = config.get("members") or []
    first = Path(members[0]["run"]) if members else folder
    env = read_json(first / ENVIRONMENT)
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
        member_config = read_json(Path(m["run"]) / CONFIG)
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
        environment(env),
        reproduce,
        Section("Ethical considerations").p(ETHICS),
        caveats(recorded_caveats(metrics.get("operating_point"), evals)),
    ]


def sweep_sections(folder: Path) -> list[Section]:
    """The sweep's own page, then the card of the run it chose (by validation)."""
    plan = read_json(folder / "sweep.json")
    rows = []
    if (folder / "sweep.csv").is_file():
        with (folder / "sweep.csv").open() as f:
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
    overview.img(folder / "time_quality.png", "Validation AUC against wall-clock minutes")
    columns = ["name", "status", "reason", "wall_minutes", "epochs", "val_auc", "test_auc"]
    overview.table(columns, [[csv_cell(c, r.get(c)) for c in columns] for r in rows])
    chosen = folder / best["name"] if best.get("name") else None
    if chosen is None or folder_kind_or_none(chosen) != "run":
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


# --- HTML ----------------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.kv th{width:34%}.missing{color:#a33;font-style:italic}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:.9em;color:#555}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}
.warning{background:#fff3cd;border:1px solid #e0c060;padding:.6em}
"""


def cell(text: str) -> str:
    escaped = html.escape(text)
    return f'<span class="missing">{escaped}</span>' if text == NOT_RECORDED else escaped


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_block(kind: str, payload) -> str:
    if kind == "p":
        return f"<p>{cell(payload)}</p>"
    if kind == "code":
        return f"<pre><code>{html.escape(payload)}</code></pre>"
    if kind == "kv":
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in payload)
        return f'<table class="kv">{rows}</table>'
    if kind == "table":
        header, rows = payload
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"
    path, caption = payload
    return (
        f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption, quote=True)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render(title: str, sections: Sequence[Section]) -> str:
    """The whole page: inline style, no script, no link or source outside the file."""
    body = [
        f"<h1>{html.escape(title)}</h1>",
        '<p class="warning"><strong>Not for diagnostic use.</strong> '
        f"Model card after {html.escape(PAPER)}. Values the folder did not record read "
        f'<span class="missing">{NOT_RECORDED}</span>.</p>',
    ]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [render_block(kind, payload) for kind, payload in section.blocks]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # No request may leave the file, whatever a value contains.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_model_card(folder: str | Path) -> Path:
    """Writes FOLDER/report.html for a run, evaluation, ensemble or sweep folder.

    Args:
        folder: the folder; its kind is told from its files.

    Returns:
        The path of report.html.

    Raises:
        UsageError: the folder is none of the four kinds.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"folder not found: {folder}")
    kind = folder_kind(folder)
    sections = SECTIONS_OF[kind](folder)
    page = render(f"Model card: {kind} {folder.resolve().name}", sections)
    path = folder / REPORT
    write_text_atomic(path, page)
    return path


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.model_card",
        description="Write FOLDER/report.html: a self-contained model card for a run, "
        "evaluation, ensemble or sweep folder.",
    )
    p.add_argument("folder", help="a run, evaluation, ensemble or sweep folder")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    path = write_model_card(args.folder)
    print(f"model card: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
