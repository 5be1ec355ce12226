"""python -m keras_app.sweep: train a grid of configurations, weigh time against quality.

    python -m keras_app.sweep --model mobilenet --data ../shared/data/chest_xray_224 \\
        --grid lr=1e-3,3e-4 fine_tune_lr=1e-5,3e-5 --out runs/sweep-lr --budget-minutes 30
    python -m keras_app.sweep --model mobilenet --random 8 --range lr=1e-4:1e-2:log \\
        --grid batch_size=16,32 --out runs/sweep-random

`--grid FIELD=V1,V2,...` takes any TrainConfig field (its values parsed with
the field's type); every combination trains. `--random N` instead draws N
configurations: `--range FIELD=LOW:HIGH[:log]` uniformly (log-uniformly), grid
values as choices, from a generator seeded with --seed so a rerun draws the
same ones. Every other flag goes to `keras_app.train` for every run: all share
the data, its split and the seed.

Each configuration trains through `keras_app.train.run` into `OUT/<name>`,
named after the values it sweeps (`lr0.001_bs16`). Rerunning the command skips
finished runs and resumes an unfinished one. A configuration that fails (its
loss turns NaN, memory runs out, anything raises) is recorded as failed with
its reason in `OUT/<name>/sweep_run.json`, and the sweep goes on;
`--retry-failed` trains those again.

Writes into OUT:
    sweep.csv        one row per configuration: its fields, status, wall time, epochs,
                     best validation value, test AUC / sensitivity / specificity
    time_quality.png val AUC against wall-clock minutes, the Pareto front labelled
    summary.md       the best configuration by validation within --budget-minutes
    sweep.json       the sweep's own command and plan
    events.out.*     TensorBoard's HParams experiment (`tensorboard --logdir OUT`)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import shutil
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.runs import RunFolder, comparable, write_json_atomic, write_text_atomic
from keras_app.runtime import import_tensorflow

SWEEP_CSV = "sweep.csv"
CHART = "time_quality.png"
SUMMARY = "summary.md"
PLAN = "sweep.json"
RECORD = "sweep_run.json"  # inside each run folder: status, reason, wall time
HPARAMS_DIR = "sweep"  # under each run's logs/: the trial's hparams and final numbers
# Fields a sweep cannot vary: the sweep names the folders, and one process holds
# one distribution strategy.
NOT_SWEPT = ("run_dir", "strategy")
# Short spellings for run folder names; other fields keep their own name.
SHORT = {
    "model": "",
    "lr": "lr",
    "fine_tune_lr": "ftlr",
    "batch_size": "bs",
    "head_epochs": "he",
    "fine_tune_epochs": "fte",
    "dropout": "do",
    "image_size": "px",
    "unfreeze": "unfreeze",
    "augment": "aug",
    "weights": "w",
}


@dataclass(frozen=True)
class Range:
    """A `--range FIELD=LOW:HIGH[:log]` to draw from."""

    field: str
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class SweepConfig:
    """The sweep's command line; `train_args` go to keras_app.train for every run."""

    out: str
    grid: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (field, raw values)
    ranges: tuple[Range, ...] = ()
    random: int | None = None
    budget_minutes: float | None = None
    retry_failed: bool = False
    train_args: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()  # as typed, for summary.md


@dataclass(frozen=True)
class Trial:
    """One configuration of the sweep: its folder name, swept values and full config."""

    name: str
    overrides: dict
    config: object  # keras_app.config.TrainConfig (imported late: it loads TensorFlow)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.config.run_dir)


# --- command line (no TensorFlow) ----------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.sweep",
        description="Train every combination of --grid (or --random draws from --range) through "
        "keras_app.train into OUT/<name>, then chart val AUC against wall time. Every other flag "
        "(--model, --data, --head-epochs, ...) goes to keras_app.train for every run.",
        allow_abbrev=False,  # train's flags must not be taken for abbreviations of these
    )
    p.add_argument(
        "--grid",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=V1,V2",
        help="a TrainConfig field and its values; several --grid axes multiply",
    )
    p.add_argument(
        "--range",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=LOW:HIGH[:log]",
        help="a numeric field to draw from under --random, uniform or log-uniform",
    )
    p.add_argument("--random", type=int, metavar="N", help="draw N configurations")
    p.add_argument("--out", required=True, help="the sweep folder, e.g. runs/sweep-lr")
    p.add_argument(
        "--budget-minutes",
        type=float,
        metavar="M",
        help="summary.md names the best configuration whose run took at most M minutes",
    )
    p.add_argument("--retry-failed", action="store_true", help="train failed configurations again")
    return p


def parse_config(argv: Sequence[str] | None = None) -> SweepConfig:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, train_args = build_parser().parse_known_args(argv)
    config = SweepConfig(
        out=args.out,
        grid=tuple(split_axis(a, "--grid") for a in args.grid),
        ranges=tuple(parse_range(a) for a in args.range),
        random=args.random,
        budget_minutes=args.budget_minutes,
        retry_failed=args.retry_failed,
        train_args=tuple(train_args),
        argv=tuple(argv),
    )
    validate(config)
    return config


def split_axis(text: str, flag: str) -> tuple[str, tuple[str, ...]]:
    field, sep, values = text.partition("=")
    if not sep or not field or not values:
        raise UsageError(f"{flag} takes FIELD=VALUES. Received {text!r}")
    return field.strip().replace("-", "_"), tuple(v.strip() for v in values.split(","))


def parse_range(text: str) -> Range:
    field, spec = split_axis(text, "--range")
    parts = ",".join(spec).split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
        raise UsageError(f"--range takes FIELD=LOW:HIGH[:log]. Received {text!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"--range bounds must be numbers. Received {text!r}") from None
    log = len(parts) == 3 and parts[2] == "log"
    if not low < high or (log and low <= 0):
        raise UsageError(
            f"--range needs LOW < HIGH (and LOW > 0 for log). Received {field}={low}:{high}"
        )
    return Range(field, low, high, log)


def validate(c: SweepConfig) -> None:
    if c.ranges and c.random is None:
        raise UsageError("--range draws values for --random N; add --random")
    if not c.grid and c.random is None:
        raise UsageError("a sweep needs --grid FIELD=V1,V2 or --random N with --range")
    if c.random is not None and c.random < 1:
        raise UsageError(f"--random must be at least 1. Received {c.random}")
    if c.random is not None and not c.ranges and not c.grid:
        raise UsageError("--random N needs something to draw: --range or --grid")
    if c.budget_minutes is not None and c.budget_minutes <= 0:
        raise UsageError(f"--budget-minutes must be > 0. Received {c.budget_minutes}")
    axes = [f for f, _ in c.grid] + [r.field for r in c.ranges]
    twice = sorted({f for f in axes if axes.count(f) > 1})
    if twice:
        raise UsageError(f"{', '.join(twice)} swept more than once")
    fixed = [f for f in axes if f in NOT_SWEPT]
    if fixed:
        raise UsageError(f"a sweep cannot vary {', '.join(fixed)}. Received {fixed}")
    own = [a for a in c.train_args if a.split("=", 1)[0] == "--run-dir"]
    if own:
        raise UsageError(f"the sweep names each run folder itself (under --out). Received {own}")


# --- the plan ------------------------------------------------------------------------------------


def field_types() -> dict[str, object]:
    from keras_app.config import TrainConfig

    return typing.get_type_hints(TrainConfig)


def parse_value(field: str, text: str, kind) -> object:
    """`text` as a value of a TrainConfig field of type `kind` ("none" for an optional one)."""
    options = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if optional and text.lower() == "none":
        return None
    base = options[0]
    if base is bool:
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.lower() in ("false", "0", "no", "off"):
            return False
    else:
        try:
            return base(text)
        except ValueError:
            pass
    raise UsageError(f"{field} takes {base.__name__} values. Received {text!r}")


def check_fields(sweep: SweepConfig, types_: dict) -> None:
    for field in [f for f, _ in sweep.grid] + [r.field for r in sweep.ranges]:
        if field not in types_:
            raise UsageError(
                f"{field} is not a TrainConfig field; known: {', '.join(sorted(types_))}"
            )
    for r in sweep.ranges:
        base = [a for a in typing.get_args(types_[r.field]) if a is not type(None)]
        if (base or [types_[r.field]])[0] not in (int, float):
            raise UsageError(f"--range applies to numeric fields; {r.field} is not")


def draws(sweep: SweepConfig, types_: dict, seed: int) -> list[dict]:
    """The swept values of each configuration: the grid's product, or --random draws."""
    grid = {f: [parse_value(f, v, types_[f]) for v in values] for f, values in sweep.grid}
    if sweep.random is None:
        return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    import numpy as np

    rng = np.random.default_rng(seed)  # the sweep's seed: a rerun draws the same configurations
    out = []
    for _ in range(sweep.random):
        drawn = {f: values[rng.integers(len(values))] for f, values in grid.items()}
        for r in sweep.ranges:
            low, high = (math.log(r.low), math.log(r.high)) if r.log else (r.low, r.high)
            value = float(rng.uniform(low, high))
            value = math.exp(value) if r.log else value
            is_int = int in typing.get_args(types_[r.field]) or types_[r.field] is int
            drawn[r.field] = int(round(value)) if is_int else float(f"{value:.3g}")
        out.append(drawn)
    return out


def trial_name(overrides: dict) -> str:
    """A short folder name from the swept values, e.g. `lr0.001_bs16`."""
    import re

    parts = []
    for field, value in overrides.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(SHORT.get(field, field) + text)
    return re.sub(r"[^A-Za-z0-9._=-]+", "", "_".join(parts)) or "base"


def plan_trials(sweep: SweepConfig) -> list[Trial]:
    """Every configuration, validated before the first one trains."""
    from keras_app.config import parse_config as parse_train_config
    from keras_app.config import validate as validate_train

    try:
        base = parse_train_config(list(sweep.train_args))
    except SystemExit as stop:  # argparse has printed its one-line error
        raise UsageError("the training flags do not parse (see the line above)") from stop
    types_ = field_types()
    check_fields(sweep, types_)
    trials, names = [], set()
    for overrides in draws(sweep, types_, base.seed):
        name = trial_name(overrides)
        while name in names:  # two draws that round to the same name
            name += "-b"
        names.add(name)
        config = dataclasses.replace(base, **overrides, run_dir=str(Path(sweep.out) / name))
        validate_train(config)
        trials.append(Trial(name, overrides, config))
    return trials


def check_folders(trials: list[Trial]) -> None:
    """Refuses an OUT whose runs were trained with other settings (say other epochs):
    skipping them as finished would mix two sweeps in one table."""
    for trial in trials:
        recorded = trial.folder.config()
        if not recorded:
            continue
        wanted = comparable(trial.config.to_dict())
        # None is an automatic value the run resolved (image size, monitor): any is right.
        differ = [k for k, v in wanted.items() if v is not None and recorded.get(k, v) != v]
        if differ:
            k = differ[0]
            raise UsageError(
                f"{trial.folder.path} holds a run with another {k} ({recorded.get(k)!r}, "
                f"this sweep wants {wanted[k]!r}); use another --out"
            )


# --- training ------------------------------------------------------------------------------------


class Trainer:
    """Trains one TrainConfig with `keras_app.train.run`, loading each data source once."""

    def __init__(self):
        self._data = {}

    def __call__(self, config) -> Path:
        import keras

        from keras_app import train
        from keras_app.runtime import setup_runtime

        keras.backend.clear_session()  # the previous run's graphs and memory
        # Per run, so every run starts from the same seed, as it would alone.
        runtime = setup_runtime(
            config.strategy, config.precision, config.jit, config.seed, config.model
        )
        key = (config.data, config.val_fraction, config.seed)
        if key not in self._data:
            self._data[key] = train.load_data(config)
        return train.run(config, self._data[key], runtime)


def read_record(folder: RunFolder) -> dict:
    path = folder / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def state(trial: Trial, retry_failed: bool) -> str:
    """ "finished", "failed", "unfinished" (resume) or "new"."""
    folder, record = trial.folder, read_record(trial.folder)
    if record.get("status") == "failed":
        return "retry" if retry_failed else "failed"
    if folder.is_finished():
        return "finished"
    return "unfinished" if folder.is_unfinished() else "new"


def nan_reason(folder: RunFolder) -> str | None:
    """Why a run counts as failed although nothing raised: its loss turned NaN
    (Keras' TerminateOnNaN stops the fit; the run may still write its folder)."""
    for row in folder.history():
        loss = row.get("loss")
        if loss is not None and not math.isfinite(loss):
            return (
                f"loss became {loss} at epoch {row['epoch']}: training diverged "
                "(TerminateOnNaN stopped it)"
            )
    return None


def error_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0][:300] if text else ""
    if type(err).__name__ == "ResourceExhaustedError":
        return f"out of memory: {first}"
    return f"{type(err).__name__}: {first}"


def attempt(trial: Trial, train_one: Callable, clock: Callable[[], float]) -> dict:
    """Trains (or resumes) one configuration; never raises for a failing configuration."""
    folder = trial.folder
    earlier = read_record(folder).get("wall_seconds")
    if earlier is None:
        # A killed attempt left no record, but the phases it finished kept their seconds.
        earlier = sum(p.get("seconds", 0.0) for p in folder.progress()["phases"])
    start = clock()
    reason = None
    try:
        train_one(trial.config)
    except Exception as err:  # noqa: BLE001  a configuration that fails must not end the sweep
        reason = nan_reason(folder) or error_reason(err)
    else:
        reason = nan_reason(folder)
    folder.path.mkdir(parents=True, exist_ok=True)
    record = {
        "name": trial.name,
        "overrides": trial.overrides,
        "status": "failed" if reason else "finished",
        "reason": reason,
        # A killed attempt's unfinished phase is not counted: its time died with the process.
        "wall_seconds": round(earlier + clock() - start, 2),
    }
    write_json_atomic(folder / RECORD, record)
    return record


def run_sweep(
    sweep: SweepConfig,
    trials: list[Trial],
    train_one: Callable,
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict]:
    """Trains what is missing, in order, and returns one result row per configuration.

    Args:
        train_one: trains a TrainConfig into its run_dir (`Trainer()`, or a stand-in).
        clock: seconds, for the wall time of each run.
    """
    for i, trial in enumerate(trials, 1):
        now = state(trial, sweep.retry_failed)
        tag = f"[{i}/{len(trials)}] {trial.name}"
        if now in ("finished", "failed"):
            print(f"{tag}: {now} earlier, skipped", flush=True)
            continue
        if now == "retry":
            shutil.rmtree(trial.folder.path)  # a clean start: resuming would fail the same way
        print(f"{tag}: {'resuming' if now == 'unfinished' else 'training'}", flush=True)
        record = attempt(trial, train_one, clock)
        print(f"{tag}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else ""))
        write_trial_hparams(trial, result_row(trial))
    return [result_row(t) for t in trials]


# --- results -------------------------------------------------------------------------------------

RESULT_COLUMNS = (
    "status",
    "reason",
    "wall_minutes",
    "epochs",
    "best_epoch",
    "monitor",
    "best_val",
    "val_auc",
    "test_auc",
    "test_sensitivity",
    "test_specificity",
)


def result_row(trial: Trial) -> dict:
    """One row of sweep.csv: the swept values, the outcome, then every other config field."""
    folder, record = trial.folder, read_record(trial.folder)
    metrics = folder.metrics()
    val, test = metrics.get("val", {}), metrics.get("test", {})
    status = (
        "failed"
        if record.get("status") == "failed"
        else "finished"
        if folder.is_finished()
        else "unfinished"
        if folder.is_unfinished()
        else "not run"
    )
    seconds = record.get("wall_seconds")
    row = {"name": trial.name, **trial.overrides}
    row.update(
        status=status,
        reason=record.get("reason"),
        wall_minutes=round(seconds / 60, 3) if seconds is not None else None,
        epochs=len(folder.history()) or None,
        best_epoch=metrics.get("best_epoch"),
        monitor=metrics.get("monitor"),
        best_val=metrics.get("best_value"),
        val_auc=val.get("roc_auc"),
        test_auc=test.get("roc_auc"),
        test_sensitivity=test.get("sensitivity"),
        test_specificity=test.get("specificity"),
    )
    recorded = folder.config() or trial.config.to_dict()
    row.update({k: v for k, v in recorded.items() if k not in row})
    return row


def sweep_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def scored(rows: list[dict]) -> list[dict]:
    """Finished rows with a val AUC and a wall time: what the chart and the choice weigh."""
    return [
        r
        for r in rows
        if r["status"] == "finished" and _finite(r["val_auc"]) and _finite(r["wall_minutes"])
    ]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both time (lower) and quality (higher),
    in order of time."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def best_within(rows: list[dict], budget_minutes: float | None) -> dict | None:
    """The finished configuration with the highest val AUC among those within the budget.
    Validation only: the test split must not choose the model it then judges."""
    budget = math.inf if budget_minutes is None else budget_minutes
    fits = [r for r in scored(rows) if r["wall_minutes"] <= budget]
    return max(fits, key=lambda r: r["val_auc"], default=None)


def write_chart(rows: list[dict], path: Path) -> Path:
    from keras_app import plots

    points = scored(rows)
    xy = [(r["wall_minutes"], r["val_auc"]) for r in points]
    fig = plots.time_quality_figure(
        xy,
        [r["name"] for r in points],
        pareto_front(xy),
        failed=sum(r["status"] == "failed" for r in rows),
    )
    return plots.save(fig, path)


def summary_markdown(sweep: SweepConfig, trials: list[Trial], rows: list[dict]) -> str:
    """summary.md: the choice within the budget, how to reproduce it, and every row."""
    from keras_app.commands import train_command

    budget = sweep.budget_minutes
    best = best_within(rows, budget)
    within = f"within {budget:g} minutes" if budget is not None else "(no --budget-minutes)"
    lines = [
        f"# Sweep {Path(sweep.out).name}",
        "",
        "    " + " ".join(["python", "-m", "keras_app.sweep", *sweep.argv]),
        "",
        f"{len(rows)} configurations: "
        + ", ".join(f"{sum(r['status'] == s for r in rows)} {s}" for s in ("finished", "failed"))
        + ".",
        "",
        f"## Best configuration {within}, chosen by validation AUC",
        "",
    ]
    if best is None:
        lines.append("None: no finished run with a validation AUC fits the budget.")
    else:
        trial = next(t for t in trials if t.name == best["name"])
        lines += [
            f"**{best['name']}** ({', '.join(f'{k}={v}' for k, v in trial.overrides.items())}): "
            f"val AUC {best['val_auc']:.4f} in {best['wall_minutes']:.1f} min; "
            f"its folder is `{trial.folder.path}`.",
            "",
            "Test split, reported and not used to choose: "
            + ", ".join(
                f"{k} {best[k]:.4f}"
                for k in ("test_auc", "test_sensitivity", "test_specificity")
                if _finite(best.get(k))
            ),
            "",
            "Train it alone:",
            "",
            "    " + train_command(trial.folder.config() or trial.config.to_dict()),
        ]
    lines += ["", f"![val AUC against wall-clock minutes]({CHART})", "", "## Every run", ""]
    lines += results_table(rows, list(trials[0].overrides) if trials else [])
    lines += ["", f"In TensorBoard, with the HParams tab: `tensorboard --logdir {sweep.out}`", ""]
    return "\n".join(lines)


def results_table(rows: list[dict], swept: list[str]) -> list[str]:
    columns = ["name", *swept, "status", "wall_minutes", "epochs", "val_auc", "test_auc"]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
        if row.get("reason"):
            cells[columns.index("status")] += f": {row['reason']}"
        table.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return table


# --- TensorBoard HParams -------------------------------------------------------------------------

# (tag, group: the run under the trial's session folder holding it, display name)
HPARAM_METRICS = (
    ("epoch_auc", "validation", "val AUC per epoch"),
    ("epoch_accuracy", "validation", "val accuracy per epoch"),
    ("epoch_loss", "validation", "val loss per epoch"),
    ("val_auc", HPARAMS_DIR, "val AUC (calibrated best)"),
    ("test_auc", HPARAMS_DIR, "test AUC"),
    ("test_sensitivity", HPARAMS_DIR, "test sensitivity"),
    ("test_specificity", HPARAMS_DIR, "test specificity"),
    ("wall_minutes", HPARAMS_DIR, "wall-clock minutes"),
)


def hparam_value(value):
    """The HParams plugin takes bool, int, float or str; None becomes "none"."""
    return "none" if value is None else value


def hparam_domain(values: list):
    from tensorboard.plugins.hparams import api as hp

    values = sorted({hparam_value(v) for v in values}, key=str)
    kinds = {type(v) for v in values}
    if len(kinds) != 1:
        return None  # a mixed domain (say 16 and "none"): shown without a declared domain
    return hp.Discrete(values)


def write_sweep_hparams(sweep: SweepConfig, trials: list[Trial]) -> None:
    """The experiment's declaration (hparams and metrics) at the sweep root, replacing any
    earlier one so TensorBoard reads a single experiment."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    root = Path(sweep.out)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("events.out.tfevents.*"):
        old.unlink()
    hparams = []
    for field in trials[0].overrides if trials else []:
        ranged = next((r for r in sweep.ranges if r.field == field), None)
        if ranged is not None:
            drawn = [t.overrides[field] for t in trials]
            whole = all(isinstance(v, int) for v in drawn)
            interval = (
                hp.IntInterval(math.floor(ranged.low), math.ceil(ranged.high))
                if whole
                else hp.RealInterval(ranged.low, ranged.high)
            )
            hparams.append(hp.HParam(field, interval))
        else:
            domain = hparam_domain([t.overrides[field] for t in trials])
            hparams.append(hp.HParam(field, domain) if domain else hp.HParam(field))
    metrics = [
        hp.Metric(tag, group=group, display_name=name) for tag, group, name in HPARAM_METRICS
    ]
    with tf.summary.create_file_writer(str(root)).as_default():
        hp.hparams_config(hparams=hparams, metrics=metrics)


def write_trial_hparams(trial: Trial, row: dict) -> None:
    """The trial's session (its hparams) in `logs/`, beside Keras' train and validation
    logs, and its final numbers in `logs/sweep/`; written once per attempt."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    logs = trial.folder.logs
    logs.mkdir(parents=True, exist_ok=True)
    for old in [*logs.glob("events.out.tfevents.*"), *(logs / HPARAMS_DIR).glob("events.*")]:
        old.unlink()  # a retried or resumed trial: one session per folder
    with tf.summary.create_file_writer(str(logs)).as_default():
        hparams = {k: hparam_value(v) for k, v in trial.overrides.items()}
        hp.hparams(hparams, trial_id=trial.name)
    with tf.summary.create_file_writer(str(logs / HPARAMS_DIR)).as_default():
        for tag, group, _ in HPARAM_METRICS:
            if group == HPARAMS_DIR and _finite(row.get(tag)):
                tf.summary.scalar(tag, float(row[tag]), step=0)


# --- main ----------------------------------------------------------------------------------------


def write_plan(sweep: SweepConfig, trials: list[Trial]) -> None:
    plan = {
        "command": ["python", "-m", "keras_app.sweep", *sweep.argv],
        "sweep": dataclasses.asdict(sweep),
        "trials": [{"name": t.name, "overrides": t.overrides} for t in trials],
    }
    Path(sweep.out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(sweep.out) / PLAN, plan)


def write_results(sweep: SweepConfig, trials: list[Trial], rows: list[dict]) -> None:
    """sweep.csv, the chart, summary.md, and the choice added to sweep.json (for the card)."""
    out = Path(sweep.out)
    plan = json.loads((out / PLAN).read_text())
    best = best_within(rows, sweep.budget_minutes)
    plan["best"] = {"name": best["name"], "val_auc": best["val_auc"]} if best else None
    write_json_atomic(out / PLAN, plan)
    write_text_atomic(out / SWEEP_CSV, sweep_csv(rows))
    write_chart(rows, out / CHART)
    write_text_atomic(out / SUMMARY, summary_markdown(sweep, trials, rows))


def write_card(sweep: SweepConfig) -> None:
    from keras_app.model_card import write_model_card

    print(f"model card: {write_model_card(sweep.out)}", flush=True)


def main(argv: Sequence[str] | None = None, train_one: Callable | None = None) -> int:
    sweep = parse_config(argv)  # argparse only: TensorFlow loads after this line
    trials = plan_trials(sweep)
    import_tensorflow()
    check_folders(trials)
    write_plan(sweep, trials)
    write_sweep_hparams(sweep, trials)
    rows = run_sweep(sweep, trials, train_one or Trainer())
    write_results(sweep, trials, rows)
    write_card(sweep)
    best = best_within(rows, sweep.budget_minutes)
    print(f"sweep folder: {sweep.out}; best by val AUC: {best['name'] if best else 'none'}")
    print(f"tensorboard --logdir {sweep.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
