"""python -m keras_app.compare: a small CNN, a head-only and a full fine-tune, on equal terms.

    python -m keras_app.compare --models simple_cnn,mobilenet,resnet50 \\
        --modes scratch,head,finetune --data ../shared/data/chest_xray_224 \\
        --head-epochs 5 --fine-tune-epochs 5

Modes, each with the same data, split, seed and epoch budget (head + fine-tune epochs):
    scratch    --weights none: random initialisation, trained end to end for the whole budget
    head       pretrained, backbone frozen: the head alone for the whole budget
    finetune   pretrained: the head for --head-epochs, then the unfrozen backbone for
               --fine-tune-epochs
A backbone without pretrained weights (simple_cnn) has scratch only; its other
modes are skipped with a note. Pretrained means --weights as given, ImageNet by
default; never train's "auto", which falls back to random weights silently and
would mislabel the mode. Every other flag goes to keras_app.train as is.

Writes into --out (default runs/compare-<time>/): a run folder per configuration
(`<model>-<mode>/`), `comparison_metrics.csv`, `comparison.md` and
`comparison.png`. Rerunning with the same --out skips finished configurations
and resumes an unfinished one. The data is loaded once for all configurations.

AUC: every AUC compare prints or tabulates is scikit-learn's ROC AUC of the
best (calibrated) checkpoint's predictions, as metrics.json holds it. The
`best val_auc` keras_app.train logs per phase is Keras' streaming AUC over 200
thresholds, an approximation used to pick the checkpoint, not to compare runs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# plots (matplotlib) is imported where it draws, and train once the flags are parsed:
# `--help` answers at once.
from keras_app import runs, series
from keras_app.backbones import BACKBONES
from keras_app.config import TrainConfig, add_models_flag, check_models
from keras_app.config import parse_config as parse_train_config
from keras_app.config import validate as validate_train_config
from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.runs import RunFolder
from keras_app.runtime import import_tensorflow

MODES = ("scratch", "head", "finetune")
# Flags compare sets itself for each configuration.
OWN_FLAGS = ("--model", "--run-dir")
TIMINGS = "timings.json"  # wall seconds per configuration, kept across reruns
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


# --- command line --------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.compare",
        description="Train each backbone in each mode (scratch, head, finetune) on the same "
        "data and epoch budget and compare them; every other flag goes to "
        "python -m keras_app.train (see its --help).",
        allow_abbrev=False,  # train's --model must not be taken for --models
    )
    add_models_flag(p)
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        metavar="MODE,...",
        help="comma-separated, from: scratch (random init, end to end), head "
        "(pretrained, frozen backbone), finetune (pretrained, both phases)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: runs/compare-<time>); rerun with the same one to resume",
    )
    return p


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def parse_config(argv: Sequence[str] | None = None) -> CompareConfig:
    args, train_args = build_parser().parse_known_args(argv)
    config = CompareConfig(
        models=_names(args.models),
        modes=_names(args.modes),
        out=args.out,
        train_args=tuple(train_args),
    )
    validate(config)
    return config


def validate(c: CompareConfig) -> None:
    check_models(c.models)
    bad = [m for m in c.modes if m not in MODES]
    if bad or not c.modes:
        raise UsageError(
            f"--modes takes {', '.join(MODES)}. Received {','.join(c.modes) or 'none'}"
        )
    own = [a for a in c.train_args if a.split("=", 1)[0] in OWN_FLAGS]
    if own:
        raise UsageError(
            f"compare sets {' and '.join(OWN_FLAGS)} per configuration itself "
            f"(use --models and --out). Received {own}"
        )


def _train_config(argv: Sequence[str], what: str) -> TrainConfig:
    try:
        return parse_train_config(list(argv))
    except SystemExit as stop:  # argparse has printed its one-line error
        raise UsageError(f"the training flags do not parse for {what}") from stop


def plan(config: CompareConfig, out: Path) -> tuple[list[Configuration], list[str]]:
    """Every configuration to train, and a note for each one skipped.

    Raises:
        UsageError: a mode the budget cannot give, or flags a configuration refuses.
    """
    base = _train_config([*config.train_args, "--model", config.models[0]], "the shared flags")
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


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    out = Path(config.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    configurations, notes = plan(config, out)
    prepare_out(out, config)
    import_tensorflow()
    runner = series.Series(configurations[0].config)  # one data load for every configuration
    failures = train_all(configurations, out, runner.train)
    rows = [collect_row(c, out, failures.get(c.name)) for c in configurations]
    write_outputs(out, rows, notes, config)
    print(f"comparison folder: {out}", flush=True)
    if failures:
        raise UsageError(
            f"{len(failures)} configuration(s) failed ("
            + "; ".join(f"{k}: {v}" for k, v in failures.items())
            + f"); the others are compared in {out / 'comparison.md'}"
        )


def prepare_out(out: Path, config: CompareConfig) -> None:
    """Creates --out; refuses one holding another comparison's configuration."""
    record = {
        "models": list(config.models),
        "modes": list(config.modes),
        "train_args": list(config.train_args),
    }
    saved = out / runs.CONFIG
    if saved.exists():
        if json.loads(saved.read_text()) != record:
            raise UsageError(f"{out} holds a comparison with other flags; choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not a comparison folder; choose another")
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(saved, record)


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
    timings_path = out / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
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
        runs.write_json_atomic(timings_path, timings)
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
    metrics, history, phases = folder.metrics(), folder.history(), folder.progress()["phases"]
    best = folder.best_epoch()  # 1-based, as history's epochs
    at_best = next((h for h in history if h["epoch"] == best), history[-1] if history else {})
    kept = phase_of(phases, best)
    timings_path = out / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    val, test = metrics.get("val", {}), metrics.get("test", {})
    row.update(
        status="trained",
        epochs=phases[-1]["end_epoch"] if phases else len(history),
        best_epoch=best,
        best_phase=best_phase_note(kept, phases),
        train_accuracy=at_best.get("accuracy"),
        train_loss=at_best.get("loss"),
        val_accuracy=val.get("accuracy"),
        val_loss=val.get("log_loss"),
        val_roc_auc=val.get("roc_auc"),
        test_accuracy=test.get("accuracy"),
        test_roc_auc=test.get("roc_auc"),
        wall_s=timings.get(c.name),
        fit_s=round(sum(p["seconds"] for p in phases), 1) if phases else None,
        total_params=int(runs.load_run(c.run_dir).load_model().count_params()),
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
    from keras_app import plots

    runs.write_text_atomic(out / "comparison_metrics.csv", comparison_csv(rows))
    runs.write_text_atomic(out / "comparison.md", comparison_markdown(rows, notes, config))
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
        out / "comparison.png",
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
