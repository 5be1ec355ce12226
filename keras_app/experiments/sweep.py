"""The sweep behind `python -m keras_app.sweep`: its plan, and training it trial by trial.

`plan_trials` turns `--grid`/`--random` into one `TrainConfig` per trial, named after
the values it sweeps, all validated before the first trains; `run_sweep` trains what
is missing through the series engine, recording each trial's outcome (a failing
configuration is recorded, never fatal). `keras_app.experiments.sweep_results`
writes the table, chart, summary and TensorBoard's HParams.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import shutil
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keras_app.artifacts.folders import SWEEP_PLAN, TRIAL_RECORD, read_json
from keras_app.artifacts.runs import RunFolder, comparable
from keras_app.core.errors import UsageError
from keras_app.core.files import write_json_atomic
from keras_app.recipe.config import TrainConfig, validate
from keras_app.recipe.forwarding import forwarded_config

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
    config: TrainConfig

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.config.run_dir)


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


# --- the plan ------------------------------------------------------------------------------------


def field_types() -> dict[str, object]:
    """Each `TrainConfig` field's type, for parsing swept values."""
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
    base = forwarded_config(sweep.train_args, command="sweep", hint=" (under --out)")
    types_ = field_types()
    check_fields(sweep, types_)
    trials, names = [], set()
    for overrides in draws(sweep, types_, base.seed):
        name = trial_name(overrides)
        while name in names:  # two draws that round to the same name
            name += "-b"
        names.add(name)
        config = dataclasses.replace(base, **overrides, run_dir=str(Path(sweep.out) / name))
        validate(config)
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


def read_record(folder: RunFolder) -> dict:
    """A trial's outcome (sweep_run.json): status, reason, wall seconds; {} before any."""
    return read_json(folder / TRIAL_RECORD, {})


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
    write_json_atomic(folder / TRIAL_RECORD, record)
    return record


def run_sweep(
    sweep: SweepConfig,
    trials: list[Trial],
    train_one: Callable,
    clock: Callable[[], float] = time.perf_counter,
    after_each: Callable[[Trial], object] | None = None,
) -> None:
    """Trains what is missing, in order.

    Args:
        train_one: trains a TrainConfig into its run_dir (`Series().train`, or a stand-in).
        clock: seconds, for the wall time of each run.
        after_each: called with each trial once its attempt is recorded.
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
        if after_each is not None:
            after_each(trial)


# --- main ----------------------------------------------------------------------------------------


def write_plan(sweep: SweepConfig, trials: list[Trial]) -> None:
    plan = {
        "command": ["python", "-m", "keras_app.sweep", *sweep.argv],
        "sweep": dataclasses.asdict(sweep),
        "trials": [{"name": t.name, "overrides": t.overrides} for t in trials],
    }
    Path(sweep.out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(sweep.out) / SWEEP_PLAN, plan)
