"""A small CNN, a head-only and a full fine-tune on equal terms (keras_app.compare).

`plan` turns the models and modes into training configurations sharing the data,
split, seed and epoch budget; `train_all` trains them through the series engine;
`collect_row` reads each run folder's summary into the comparison's table, chart
and page. ROC AUC is scikit-learn's on the best calibrated checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_app.artifacts.folders import (
    COMPARISON_CHART,
    COMPARISON_CSV,
    COMPARISON_MD,
    COMPARISON_TIMINGS,
    claim,
    read_json,
)
from keras_app.artifacts.runs import RunFolder
from keras_app.core import files
from keras_app.core.errors import UsageError
from keras_app.experiments import series
from keras_app.recipe.backbones import BACKBONES
from keras_app.recipe.config import TrainConfig
from keras_app.recipe.config import validate as validate_train_config
from keras_app.recipe.forwarding import forwarded_config

MODES = ("scratch", "head", "finetune")
# Flags compare sets itself for each configuration.
OWN_FLAGS = ("--model", "--run-dir")
# (key, column title): the CSV's columns; the Markdown table shows those with a title.
COLUMNS = (
    ("model", "model"),
    ("mode", "mode"),
    ("weights", "weights"),
    ("status", None),
    ("epochs", "epochs"),
    ("best_epoch", "best epoch"),
    ("best_phase", "best from"),
    ("train_accuracy", "train acc"),
    ("train_loss", "train loss"),
    ("val_accuracy", "val acc"),
    ("val_loss", "val loss"),
    ("val_roc_auc", "val ROC AUC (scikit-learn)"),
    ("test_accuracy", "test acc"),
    ("test_roc_auc", "test ROC AUC (scikit-learn)"),
    ("wall_s", "wall time (s)"),
    ("fit_s", "fit time (s)"),
    ("total_params", "params"),
    ("trainable_params", "trainable params"),
    ("run_dir", None),
)


@dataclass(frozen=True)
class CompareConfig:
    models: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    out: str | None = None  # None: runs/compare-<time>
    train_args: tuple[str, ...] = ()  # passed to keras_app.train for every configuration


@dataclass(frozen=True)
class Configuration:
    """One model in one mode: its training configuration (run folder included)."""

    mode: str
    config: TrainConfig

    model = property(lambda self: self.config.model)
    weights = property(lambda self: self.config.weights)
    run_dir = property(lambda self: Path(self.config.run_dir))

    @property
    def name(self) -> str:
        return f"{self.model}-{self.mode}"


def plan(config: CompareConfig, out: Path) -> tuple[list[Configuration], list[str]]:
    """Every configuration to train, and a note for each one skipped.

    Raises:
        UsageError: a mode the budget cannot give, or flags a configuration refuses.
    """
    base = forwarded_config(
        config.train_args, command="compare", own_flags=OWN_FLAGS, model=config.models[0]
    )
    pretrained = "imagenet" if base.weights == "auto" else base.weights
    budget = base.head_epochs + base.fine_tune_epochs
    wants_pretrained = [m for m in config.models if BACKBONES[m].imagenet]
    if {"head", "finetune"} & set(config.modes) and wants_pretrained:
        if pretrained == "none":
            raise UsageError(
                "--weights none leaves nothing pretrained for the head and finetune "
                "modes; pass imagenet (the default) or a weights file"
            )
        if pretrained != "imagenet" and len(wants_pretrained) > 1:
            raise UsageError(
                f"--weights {pretrained} is one backbone's weights file, and "
                f"{', '.join(wants_pretrained)} are pretrained here; compare one of "
                "them, or use imagenet"
            )
    if "finetune" in config.modes and base.fine_tune_epochs == 0 and wants_pretrained:
        raise UsageError(
            "--modes finetune needs --fine-tune-epochs > 0 (with 0 it is the head mode)"
        )
    epochs = {
        "scratch": (base.head_epochs, base.fine_tune_epochs),
        "head": (budget, 0),
        "finetune": (base.head_epochs, base.fine_tune_epochs),
    }
    configurations, notes = [], []
    for model in config.models:
        for mode in config.modes:
            if mode != "scratch" and not BACKBONES[model].imagenet:
                notes.append(
                    f"{model} {mode}: skipped, {model} has no pretrained weights (scratch only)"
                )
                continue
            head, fine = epochs[mode]
            derived = dataclasses.replace(
                base,
                model=model,
                run_dir=str(out / f"{model}-{mode}"),
                weights="none" if mode == "scratch" else pretrained,
                head_epochs=head,
                fine_tune_epochs=fine,
            )
            try:
                validate_train_config(derived)
            except UsageError as err:
                raise UsageError(f"{model} {mode}: {err}") from None
            configurations.append(Configuration(mode, derived))
    return configurations, notes


def prepare_out(out: Path, config: CompareConfig) -> None:
    """Takes --out for this comparison; refuses one holding another comparison or other files."""
    record = {
        "models": list(config.models),
        "modes": list(config.modes),
        "train_args": list(config.train_args),
    }
    claim(out, record, kind="comparison", flag="--out")


def report_failures(failures: dict[str, str], out: Path) -> None:
    """Ends the command with one line (exit 2) naming each configuration that failed."""
    if failures:
        raise UsageError(
            f"{len(failures)} configuration(s) failed ("
            + "; ".join(f"{k}: {v}" for k, v in failures.items())
            + f"); the others are compared in {out / COMPARISON_MD}"
        )


# --- training ------------------------------------------------------------------------------------


def train_all(
    configurations: Sequence[Configuration], out: Path, train: Callable[[list[str]], object]
) -> dict[str, str]:
    """Trains each configuration not yet trained, one after another.

    A configuration that fails with a UsageError (say, ImageNet weights that
    cannot be loaded offline) is noted and the others go on.

    Args:
        configurations: from `plan`.
        out: where timings.json records each one's wall time.
        train: trains one TrainConfig (`keras_app.series.Series.train`, or a stand-in).

    Returns:
        Configuration name -> why it failed.
    """
    timings_path = out / COMPARISON_TIMINGS
    timings = read_json(timings_path, {})
    failures = {}
    for i, c in enumerate(configurations, 1):
        step = f"[{i}/{len(configurations)}] {c.model} {c.mode}"
        if series.announce(step, c.run_dir, f"weights {c.weights}") == "finished":
            continue
        start = time.perf_counter()
        try:
            train(c.config)
        except UsageError as err:
            print(f"{step}: failed: {err}", flush=True)
            failures[c.name] = str(err)
            continue
        timings[c.name] = round(time.perf_counter() - start, 1)
        files.write_json_atomic(timings_path, timings)
        print(f"{step}: {val_auc_line(RunFolder(c.run_dir))}", flush=True)
    return failures


def val_auc_line(folder: RunFolder) -> str:
    """The one val AUC compare reports, said with how it is computed."""
    auc = folder.metrics().get("val", {}).get("roc_auc")
    shown = "undefined" if auc is None else f"{auc:.4f}"
    return (
        f"val ROC AUC {shown} (scikit-learn, best checkpoint; the table's AUC, not Keras' "
        "streaming val_auc above)"
    )


# --- the comparison ------------------------------------------------------------------------------


def collect_row(c: Configuration, out: Path, failure: str | None = None) -> dict:
    """One configuration's row: its run folder's numbers at the best epoch."""
    row = {key: None for key, _ in COLUMNS}
    row.update(model=c.model, mode=c.mode, weights=c.weights, run_dir=str(c.run_dir))
    folder = RunFolder(c.run_dir)
    if failure is not None or not folder.is_finished():
        row["status"] = f"failed: {failure}" if failure else "not trained"
        return row
    from keras_app.artifacts.loader import load_model  # Keras: only once a row needs it

    summary, history, phases = folder.summary(), folder.history(), folder.progress()["phases"]
    best = summary["best_epoch"]  # 1-based, as history's epochs
    at_best = next((h for h in history if h["epoch"] == best), history[-1] if history else {})
    kept = phase_of(phases, best)
    timings = read_json(out / COMPARISON_TIMINGS, {})
    row.update(
        status="trained",
        epochs=summary["epochs"],
        best_epoch=best,
        best_phase=best_phase_note(kept, phases),
        train_accuracy=at_best.get("accuracy"),
        train_loss=at_best.get("loss"),
        val_accuracy=summary["val_accuracy"],
        val_loss=summary["val_log_loss"],
        val_roc_auc=summary["val_roc_auc"],
        test_accuracy=summary["test_accuracy"],
        test_roc_auc=summary["test_roc_auc"],
        wall_s=timings.get(c.name),
        fit_s=summary["fit_seconds"],
        total_params=int(load_model(c.run_dir).count_params()),
        # The phase whose weights were kept: its trainable parameters made the model.
        trainable_params=(kept or (phases[-1] if phases else {})).get("trainable_params"),
    )
    return row


def phase_of(phases: Sequence[dict], epoch: int | None) -> dict | None:
    """The phase record holding 1-based `epoch` (records count epochs from 0, end exclusive)."""
    if epoch is None:
        return None
    return next((p for p in phases if p["start_epoch"] < epoch <= p["end_epoch"]), None)


def best_phase_note(kept: dict | None, phases: Sequence[dict]) -> str | None:
    """The phase the best checkpoint came from, saying when later phases' weights were dropped."""
    if kept is None:
        return None
    later = [p["name"] for p in phases if p["start_epoch"] >= kept["end_epoch"]]
    if not later:
        return kept["name"]
    dropped = " and ".join(later)
    return f"{kept['name']} ({dropped} weights discarded: no {dropped} epoch beat it)"


def comparison_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key for key, _ in COLUMNS])
    for row in rows:
        writer.writerow([_cell(key, row[key], raw=True) for key, _ in COLUMNS])
    return buffer.getvalue()


def _cell(key: str, value, raw: bool = False) -> str:
    if value is None:
        return "" if raw else "-"
    if isinstance(value, float):
        return f"{value:.6f}" if raw else f"{value:.1f}" if key.endswith("_s") else f"{value:.4f}"
    if isinstance(value, int) and not raw:
        return f"{value:,}"
    return str(value)


def comparison_markdown(rows: Sequence[dict], notes: Sequence[str], config: CompareConfig) -> str:
    shown = [(key, title) for key, title in COLUMNS if title]
    lines = [
        "# Comparison: scratch, head-only and full fine-tune",
        "",
        f"- training flags shared by all: `{' '.join(config.train_args) or '(defaults)'}`",
        "- same data, split and seed for all; the same epoch budget (head + fine-tune epochs): "
        "scratch trains end to end for all of it, head trains the head alone for all of it, "
        "finetune splits it into head then fine-tune phases (early stopping may end any sooner)",
        "- train acc/loss: the training epoch logs at the best epoch (augmented, class-weighted); "
        "val: the best checkpoint on the val split; test: shown for the final judgement, choose "
        "by val",
        "- best from: the phase of the best epoch, whose checkpoint every number of the row "
        "comes from; where a later phase never beat it, its weights were discarded; trainable "
        "params: of that phase",
        "- ROC AUC: scikit-learn's, on the best (calibrated) checkpoint's predictions "
        "(metrics.json); the `best val_auc` keras_app.train logs is Keras' streaming AUC over "
        "200 thresholds, which picks the checkpoint but can differ in the second decimal",
        "- wall time: keras_app.train's run (model, fit, evaluation; the first configuration's "
        "also loads the data, once for all); fit time: the phases alone",
        "",
        "| " + " | ".join(title for _, title in shown) + " |",
        "|"
        + "|".join(
            "---" if key in ("model", "mode", "weights", "best_phase") else "---:"
            for key, _ in shown
        )
        + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(key, row[key]) for key, _ in shown) + " |")
    problems = [
        f"{r['model']} {r['mode']}: {r['status']}" for r in rows if r["status"] != "trained"
    ]
    if notes or problems:
        lines += ["", "Notes:", *(f"- {n}" for n in [*notes, *problems])]
    lines += [
        "",
        "![comparison](comparison.png)",
        "",
        "Run folders: `<model>-<mode>/`; every number: `comparison_metrics.csv`.",
        "",
    ]
    return "\n".join(lines)


def write_outputs(
    out: Path, rows: Sequence[dict], notes: Sequence[str], config: CompareConfig
) -> None:
    from keras_app.reports import plots

    files.write_text_atomic(out / COMPARISON_CSV, comparison_csv(rows))
    files.write_text_atomic(out / COMPARISON_MD, comparison_markdown(rows, notes, config))
    trained = [r for r in rows if r["status"] == "trained"]
    if not trained:
        return
    panels = [("val_accuracy", "accuracy (0-1)", "val accuracy")]
    if any(r["val_roc_auc"] is not None for r in trained):
        panels.append(("val_roc_auc", "ROC AUC (0-1)", "val ROC AUC"))
    panels += [
        ("val_loss", "log-loss (lower is better)", "val loss"),
        ("wall_s", "seconds", "wall time"),
    ]
    plots.save(
        plots.comparison_figure(
            trained,
            panels,
            title="Scratch vs head-only vs full fine-tune, same data and epoch budget",
        ),
        out / COMPARISON_CHART,
    )
