"""Every kind of folder the product writes, how each is recognised, and the rule they share.

    run          keras_app.train            config.json (a backbone) + metrics.json
    ensemble     keras_app.ensemble         config.json with model "ensemble" + metrics.json
    evaluation   keras_app.evaluate         metrics.json holding config, data, operating_point
    sweep        keras_app.sweep            sweep.json (the plan), sweep.csv, summary.md
    cv           keras_app.cv               config.json with "fold_val", fold-K/ run folders
    comparison   keras_app.compare          config.json with models and modes, <model>-<mode>/

A run and an ensemble folder share `keras_app.artifacts.runs.RunFolder`'s file
names. Every command that writes a folder takes it with `claim`: a new folder is
created, a folder holding the same command's record is resumed, and anything else
is refused with one line, so two experiments never mix in one folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keras_app.artifacts.runs import CONFIG, METRICS, RunFolder
from keras_app.core.errors import UsageError
from keras_app.core.files import write_json_atomic
from keras_app.decision.operating_point import OperatingPoint

KINDS = ("run", "ensemble", "evaluation", "sweep", "cv", "comparison")
# What each kind is called in a sentence ("holds a cross-validation with ...").
CALLED = {
    "run": "a training run",
    "ensemble": "an ensemble",
    "evaluation": "an evaluation",
    "sweep": "a sweep",
    "cv": "a cross-validation",
    "comparison": "a comparison",
}

# --- file names of the folders that are not run folders ---
EVALUATION_REPORT = "report.md"
PREDICTIONS_CSV = "predictions.csv"
GRADCAM_GRID = "gradcam_grid.png"
SWEEP_PLAN = "sweep.json"
SWEEP_CSV = "sweep.csv"
SWEEP_CHART = "time_quality.png"
SUMMARY = "summary.md"  # a sweep's and a cross-validation's page
TRIAL_RECORD = "sweep_run.json"  # inside each sweep trial's run folder
CV_OOF_CSV, CV_OOF_NPZ, CV_FOLDS_CSV, CV_CHART = "oof.csv", "oof.npz", "folds.csv", "folds.png"
# The mark of a cross-validation's config.json: how each fold's validation split is made.
CV_FOLD_VAL = "carved from the fold's training part, grouped by patient"
COMPARISON_CSV, COMPARISON_MD = "comparison_metrics.csv", "comparison.md"
COMPARISON_CHART, COMPARISON_TIMINGS = "comparison.png", "timings.json"
REPORT_HTML = "report.html"  # every kind's model card
# A shortcut audit (keras_app.audit): RUN/audit/<split>-<data>/ beside a run or ensemble.
AUDIT_DIR, AUDIT_JSON, AUDIT_FIGURE, AUDIT_EXAMPLES = (
    "audit",
    "audit.json",
    "auc.png",
    "examples.png",
)


def read_json(path: str | os.PathLike, default=None):
    """A JSON file's content, or `default` where the file is absent."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


def cv_fold(root: str | os.PathLike, k: int) -> Path:
    """Fold k's run folder (1-based) in a cross-validation folder."""
    return Path(root) / f"fold-{k}"


# --- recognising ----------------------------------------------------------------------------------


def kind_or_none(folder: str | os.PathLike) -> str | None:
    """The kind of a finished folder (see `KINDS`), None for anything else."""
    folder = Path(folder)
    if (folder / SWEEP_PLAN).is_file():
        return "sweep"
    metrics = read_json(folder / METRICS, {})
    if {"operating_point", "data", "config"} <= set(metrics):
        return "evaluation"
    config = read_json(folder / CONFIG, {})
    if config.get("fold_val") == CV_FOLD_VAL:
        return "cv"
    if {"models", "modes"} <= set(config):
        return "comparison"
    if config.get("model") == "ensemble" and metrics:
        return "ensemble"
    if config.get("model") and metrics:
        return "run"
    return None


def kind_of(folder: str | os.PathLike) -> str:
    """The kind of a finished folder; a UsageError naming what was found otherwise."""
    kind = kind_or_none(folder)
    if kind is None:
        raise UsageError(
            f"{folder} is not a finished run, ensemble, evaluation, sweep, cross-validation "
            "or comparison folder"
        )
    return kind


def evaluations(run: str | os.PathLike) -> list[Path]:
    """The evaluation folders written inside a run folder (`eval-*`), in name order."""
    return sorted(p for p in Path(run).glob("eval-*") if kind_or_none(p) == "evaluation")


def audits(run: str | os.PathLike) -> list[Path]:
    """The shortcut audits written beside a run or ensemble (`audit/*/audit.json`), in name
    order."""
    return sorted(p.parent for p in Path(run, AUDIT_DIR).glob(f"*/{AUDIT_JSON}"))


def operating_point(folder: str | os.PathLike) -> OperatingPoint | None:
    """The operating point a folder decides (or decided) at: a run's or an ensemble's own,
    the one an evaluation applied; None for kinds that hold several."""
    kind = kind_or_none(folder)
    if kind in ("run", "ensemble") or (kind is None and Path(folder, CONFIG).is_file()):
        record = RunFolder(folder).operating_point()
        return OperatingPoint.from_dict(record) if record else None
    if kind == "evaluation":
        stored = read_json(Path(folder) / METRICS, {}).get("operating_point", {}).get("stored")
        return OperatingPoint.from_dict(stored) if stored else None
    return None


# --- claiming -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A folder taken for a command: "new" (record written now) or "resume" (same record)."""

    path: Path
    state: str


def claim(
    folder: str | os.PathLike,
    record: dict,
    *,
    kind: str,
    flag: str,
    same: Callable[[dict, dict], bool] | None = None,
    write: bool = True,
) -> Claim:
    """Takes `folder` for `kind`, described by `record` (what its command was asked to do).

    - missing or empty (dot-named scratch aside): "new"; the record is written as
      config.json (unless `write` is off: a command that writes it itself, as training);
    - holding config.json with the same record: "resume";
    - holding another record, or files without a record: a UsageError naming `flag`.

    Args:
        same: whether a recorded and a wanted record are the same experiment (default:
            equal); a run compares its configuration without the fields that change nothing.
    """
    path = Path(folder)
    recorded = read_json(path / CONFIG)
    what = CALLED[kind]
    if recorded is not None:
        if not (same or (lambda a, b: a == b))(recorded, record):
            raise UsageError(
                f"{path} holds {what} with another configuration; choose another {flag}"
            )
        return Claim(path, "resume")
    # Dot-named entries are the product's own scratch (temporary files, a worker's folder).
    if path.exists() and any(not p.name.startswith(".") for p in path.iterdir()):
        raise UsageError(f"{flag} {path} exists and is not {what} folder; choose another")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if write:
            write_json_atomic(path / CONFIG, record)
        else:
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
    except OSError as err:
        raise UsageError(f"cannot write the {kind} folder {path}: {err.strerror}") from None
    return Claim(path, "new")
