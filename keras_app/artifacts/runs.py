"""The run folder: what training leaves behind, written atomically, read back by name.

Layout of `runs/<model>-<timestamp>/`:
    config.json       the frozen TrainConfig
    environment.json  package versions, devices, weights used, data fingerprint, splits
    labels.txt        class names, one per line, in the model's output order
    best.keras        the best checkpoint (raw 0-255 RGB in, float32 probabilities out)
    history.json      per-epoch logs of both phases
    metrics.json      metrics on the test split
    curves.png        loss and accuracy/AUC per epoch
    train.md          the lab-notebook page
    training.csv      CSVLogger's log
    operating_point.json  the current operating point: temperature and decision threshold
                      (version 1: chosen on validation; later: a site's local refit)
    operating_points/ every version of it, training's kept (keras_app.artifacts.op_history)
    progress.json     finished phases, while a run is unfinished
    guard_table.json  the image guard on the out-of-distribution sets, where measured
    logs/             TensorBoard event files (logs/gpu: the GPU thermal guard and telemetry)
    backup/           BackupAndRestore state while a run is unfinished

An ensemble folder (keras_app.ensemble) has the same files, its config.json
naming its members. `RunFolder` owns these names and the rules about them
(finished, unfinished, progress, history, members, its summary row); every command
reads and writes a run through it. The other folder kinds are in
`keras_app.artifacts.folders`.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from keras_app.core.errors import UsageError
from keras_app.core.files import write_json_atomic, write_text_atomic

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
LABELS = "labels.txt"
BEST = "best.keras"
HISTORY = "history.json"
METRICS = "metrics.json"
PROGRESS = "progress.json"
TRAINING_CSV = "training.csv"
CURVES = "curves.png"
TRAIN_MD = "train.md"
OPERATING_POINT = "operating_point.json"
# The content hash of every image the run fitted or selected on (train and val), one per
# line: evaluate counts how many judged images the model has seen, by file identity.
TRAINING_IMAGES = "training_images.sha256"
# The shipped image guard on the out-of-distribution sets (benchmarks/guard_table.py).
GUARD_TABLE = "guard_table.json"
LOGS = "logs"
BACKUP = "backup"


@dataclass(frozen=True)
class RunFolder:
    """One run folder: its file names, its state, and what is read back from it.

    Example:
        >>> folder = RunFolder("runs/xception-20260101-120000")
        >>> folder.is_finished(), folder.best
        (True, PosixPath('runs/xception-20260101-120000/best.keras'))
    """

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config_path = property(lambda self: self.path / CONFIG)
    environment_path = property(lambda self: self.path / ENVIRONMENT)
    labels_path = property(lambda self: self.path / LABELS)
    best = property(lambda self: self.path / BEST)
    history_path = property(lambda self: self.path / HISTORY)
    metrics_path = property(lambda self: self.path / METRICS)
    progress_path = property(lambda self: self.path / PROGRESS)
    training_csv = property(lambda self: self.path / TRAINING_CSV)
    curves = property(lambda self: self.path / CURVES)
    train_md = property(lambda self: self.path / TRAIN_MD)
    operating_point_path = property(lambda self: self.path / OPERATING_POINT)
    logs = property(lambda self: self.path / LOGS)
    gpu_logs = property(lambda self: self.path / LOGS / "gpu")  # thermal guard, telemetry
    backup = property(lambda self: self.path / BACKUP)

    def phase_weights(self, phase: str) -> Path:
        """The weights a finished phase left, for a resumed run to restore."""
        return self.path / f"phase-{phase}.weights.h5"

    # --- state ---

    def is_finished(self) -> bool:
        """Training ended: the best checkpoint and its metrics are written."""
        return self.best.is_file() and self.metrics_path.is_file()

    def is_unfinished(self) -> bool:
        """Training started (its configuration is written) and has not finished."""
        return self.config_path.is_file() and not self.metrics_path.is_file()

    # --- reading ---

    def _json(self, path: Path, default=None):
        return json.loads(path.read_text()) if path.is_file() else default

    def config(self) -> dict:
        return self._json(self.config_path, {})

    def environment(self) -> dict:
        return self._json(self.environment_path, {})

    def class_names(self) -> tuple[str, ...]:
        return tuple(self.labels_path.read_text().splitlines())

    def metrics(self) -> dict:
        return self._json(self.metrics_path, {})

    def progress(self) -> dict:
        """{"phases": [records of finished phases]}: empty for a run not yet started."""
        return self._json(self.progress_path, {"phases": []})

    def operating_point(self) -> dict | None:
        """The current operating point (calibration and threshold), if the run has one: the
        one chosen on validation, or a later version (`keras_app.artifacts.op_history`)."""
        return self._json(self.operating_point_path)

    def training_images(self) -> set[str] | None:
        """The content hashes of the images the run trained and validated on; None for a
        run folder from before they were recorded."""
        path = self.path / TRAINING_IMAGES
        return set(path.read_text().split()) if path.is_file() else None

    def best_epoch(self) -> int | None:
        """The 1-based epoch of the best checkpoint (as Keras' log counts), if recorded."""
        return self.metrics().get("best_epoch")

    def history(self) -> list[dict]:
        """Every epoch of every phase and attempt, from the CSV log, labelled with its phase.

        Epochs count from 1, as Keras' log prints them.
        """
        if not self.training_csv.exists():
            return []
        phases = self.progress()["phases"]
        rows = []
        with self.training_csv.open() as f:
            for row in csv.DictReader(f):
                record = {
                    k: float(v) for k, v in row.items() if v not in ("", None) and k != "epoch"
                }
                index = int(row["epoch"])  # CSVLogger counts from 0
                record["epoch"] = index + 1
                record["phase"] = next(
                    (p["name"] for p in phases if p["start_epoch"] <= index < p["end_epoch"]),
                    "",
                )
                rows.append(record)
        return rows

    def is_ensemble(self) -> bool:
        return self.config().get("model") == "ensemble"

    def members(self) -> list[RunFolder]:
        """An ensemble's member run folders, in order (none for a run)."""
        return [RunFolder(m["run"]) for m in self.config().get("members") or [] if m.get("run")]

    def first_member(self) -> RunFolder:
        """The run itself, or an ensemble's first member: the members share their data, so
        it answers for the ensemble's training data (keras_app.ensemble checks they do)."""
        members = [m for m in self.members() if m.path.is_dir()]
        return members[0] if members else self

    def data_record(self) -> dict | None:
        """The training data record of environment.json (an ensemble: its first member's)."""
        return self.first_member().environment().get("data")

    def summary(self) -> dict:
        """One row: state, epochs, best epoch and monitored value, and the val and test
        figures of the best calibrated checkpoint at its operating point."""
        metrics, phases = self.metrics(), self.progress()["phases"]
        state = "finished" if self.is_finished() else "unfinished" if self.is_unfinished() else None
        row = {
            "status": state or "not run",
            "epochs": phases[-1]["end_epoch"] if phases else len(self.history()) or None,
            "best_epoch": metrics.get("best_epoch"),
            "monitor": metrics.get("monitor"),
            "best_val": metrics.get("best_value"),
            "fit_seconds": round(sum(p["seconds"] for p in phases), 1) if phases else None,
        }
        for split in ("val", "test"):
            m = metrics.get(split, {})
            for key in ("accuracy", "log_loss", "roc_auc", "sensitivity", "specificity"):
                row[f"{split}_{key}"] = m.get(key)
        return row

    # --- writing ---

    def write_json(self, name: str, obj) -> Path:
        write_json_atomic(self.path / name, obj)
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        write_text_atomic(self.path / name, text)
        return self.path / name

    def write_operating_point(self, op) -> Path:
        """operating_point.json: the point every predictor of this folder decides at."""
        return self.write_json(OPERATING_POINT, op.to_dict())

    def record_phase(self, progress: dict, record: dict) -> None:
        """Marks a phase finished in progress.json (its weights are written first)."""
        progress["phases"].append(record)
        self.write_json(PROGRESS, progress)


def find_unfinished(root: str | os.PathLike, prefix: str, config: dict) -> RunFolder | None:
    """The newest unfinished run under `root` named `prefix-*` whose config equals `config`
    (run_dir aside), so that rerunning a command resumes it."""
    want = comparable(config)
    for candidate in sorted(Path(root).glob(f"{prefix}-*"), reverse=True):
        folder = RunFolder(candidate)
        if folder.progress_path.exists() and folder.is_unfinished():
            if comparable(folder.config()) == want:
                return folder
    return None


def comparable(config: dict) -> dict:
    """A config without the fields that do not change what a run computes."""
    return {k: v for k, v in config.items() if k != "run_dir"}


@dataclass(frozen=True)
class Run:
    """A finished training run, as other commands (ensemble, export, evaluate) see it."""

    path: Path
    model_name: str
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    config: dict

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def model_path(self) -> Path:
        return self.path / BEST

    def metrics(self) -> dict:
        return self.folder.metrics()

    def operating_point(self) -> dict | None:
        return self.folder.operating_point()


def load_run(path: str | os.PathLike) -> Run:
    """Reads a run folder's description; a clear UsageError when it is not one."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise UsageError(f"run folder not found: {folder.path}")
    missing = [name for name in (CONFIG, LABELS, BEST) if not (folder / name).exists()]
    if missing:
        raise UsageError(
            f"{folder.path} is not a finished run folder (missing {', '.join(missing)})"
        )
    config = folder.config()
    image_size = tuple(folder.environment().get("image_size") or config["image_size"])
    return Run(folder.path, config["model"], image_size, folder.class_names(), config)
