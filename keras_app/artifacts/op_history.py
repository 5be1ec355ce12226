"""The versions of a run's operating point: training's first, each local refit after it.

`operating_point.json` stays the current point for every reader (predict, evaluate,
export, the DICOM node), and `best.keras` the model that goes with it. Beside them,
`operating_points/` keeps every version, append-only:

    operating_points/
        v1.json            training's point, exactly as training wrote it, with its model's digest
        v1.keras           training's best.keras, byte for byte (copied at the first refit)
        v2.json            a local refit: its point (provenance: data fingerprint, counts,
                           date, target, AdaBN) and its model's digest
        v2.keras           the model that point was fitted for (temperature, BatchNorm statistics)
        v2.reference.json  the calibrated scores it was fitted on: the monitor's reference
        current.jsonl      one line per change of the current version (time, version, why)

A version's model is a whole `.keras` file, so any version can be made current again
exactly (`make_current`), whatever it changed (the temperature inside the model, or its
BatchNorm statistics under AdaBN); the trainable weights are training's in every one.
Making a version current copies its model over best.keras (atomically), then writes
operating_point.json: a reader sees the old pair or the new one, and `consistent` tells
an interrupted switch (best.keras not the current version's model) from a whole one.
Nothing in the folder is ever rewritten: a version number is taken once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from keras_app.artifacts.runs import RunFolder
from keras_app.core.errors import UsageError
from keras_app.core.files import locked, write_json_atomic

HISTORY = "operating_points"
SWITCHES = "current.jsonl"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class OperatingPointHistory:
    """The versions of one run (or ensemble) folder's operating point.

    Example:
        >>> history = OperatingPointHistory("runs/readme")
        >>> history.versions(), history.current_version()
        ([1, 2], 2)
        >>> history.make_current(1, why="restore")  # training's point again
    """

    def __init__(self, run: str | os.PathLike | RunFolder):
        self.folder = run if isinstance(run, RunFolder) else RunFolder(run)
        self.path = self.folder.path / HISTORY

    # --- reading ---

    def record_path(self, version: int) -> Path:
        return self.path / f"v{version}.json"

    def model_path(self, version: int) -> Path:
        return self.path / f"v{version}.keras"

    def reference_path(self, version: int) -> Path:
        return self.path / f"v{version}.reference.json"

    def versions(self) -> list[int]:
        """The versions kept, ascending; [1] for a run never refitted (its point is training's)."""
        kept = sorted(
            int(p.stem[1:])
            for p in self.path.glob("v*.json")
            if p.stem[1:].isdigit() and p.suffixes == [".json"]
        )
        return kept or [1]

    def record(self, version: int) -> dict:
        """{"operating_point": ..., "model_file", "model_sha256", "written"} of a version.

        Version 1 of a run never refitted is read from operating_point.json and best.keras.
        """
        path = self.record_path(version)
        if path.is_file():
            return json.loads(path.read_text())
        if version == 1 and self.current_version() == 1:  # never refitted: training's own files
            return {"operating_point": self.folder.operating_point() or {}, "model_file": None}
        raise UsageError(
            f"{self.folder.path} has no operating point version {version} "
            f"(versions: {', '.join(map(str, self.versions()))})"
        )

    def current_version(self) -> int:
        return int((self.folder.operating_point() or {}).get("version", 1))

    def consistent(self) -> bool:
        """Whether best.keras is the current version's model (always, for a run never refitted)."""
        record = self.record(self.current_version())
        digest = record.get("model_sha256")
        return digest is None or sha256_file(self.folder.best) == digest

    def reference(self, version: int) -> dict | None:
        """The calibrated scores version `version` was fitted on, where recorded."""
        path = self.reference_path(version)
        return json.loads(path.read_text()) if path.is_file() else None

    def switches(self) -> list[dict]:
        path = self.path / SWITCHES
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    # --- writing (under the run folder's lock: two refits never take one number) ---

    @contextlib.contextmanager
    def lock(self):
        with locked(self.folder.path):
            yield

    def keep_training_version(self) -> None:
        """Copies training's point and model in as version 1, once, before the first refit."""
        if self.record_path(1).is_file():
            return
        op = self.folder.operating_point() or {}
        if int(op.get("version", 1)) != 1:
            raise UsageError(
                f"{self.folder.path}: operating_point.json is version {op.get('version')} but "
                f"{HISTORY}/ does not hold version 1: the training point was not kept"
            )
        self.path.mkdir(exist_ok=True)
        _copy_atomic(self.folder.best, self.model_path(1))
        self._write_record(1, op, why="training")

    def add(self, operating_point: dict, save_model: Callable[[Path], None]) -> int:
        """Writes the next version: its model (`save_model(path)` writes a .keras file), then
        its record. Returns the version number, also set in the record's point."""
        self.keep_training_version()
        version = max(self.versions()) + 1
        operating_point = {**operating_point, "version": version}
        tmp = self.path / f".v{version}.tmp.keras"
        save_model(tmp)
        os.replace(tmp, self.model_path(version))
        self._write_record(version, operating_point, why="refit")
        return version

    def write_reference(self, version: int, reference: dict) -> Path:
        self.path.mkdir(exist_ok=True)
        write_json_atomic(self.reference_path(version), reference)
        return self.reference_path(version)

    def make_current(self, version: int, *, why: str) -> dict:
        """Makes `version` the folder's point: its model over best.keras, then its
        operating_point.json. Returns the point."""
        record = self.record(version)
        model = record.get("model_file")
        if model is not None:
            source = self.path / model
            if sha256_file(source) != record["model_sha256"]:
                raise UsageError(f"{source} is not the model version {version} recorded")
            _copy_atomic(source, self.folder.best)
        op = record["operating_point"]
        self.folder.write_json(self.folder.operating_point_path.name, op)
        self.path.mkdir(exist_ok=True)
        with open(self.path / SWITCHES, "a") as f:
            f.write(json.dumps({"time": now(), "version": version, "why": why}) + "\n")
        return op

    def _write_record(self, version: int, operating_point: dict, *, why: str) -> None:
        model = self.model_path(version)
        record = {
            "operating_point": operating_point,
            "model_file": model.name,
            "model_sha256": sha256_file(model),
            "written": now(),
            "why": why,
        }
        path = self.record_path(version)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record, indent=2, default=str) + "\n")
            os.link(tmp, path)  # whole, and never over a version already taken
        except FileExistsError:
            raise UsageError(f"{path} exists: version {version} is already taken") from None
        finally:
            os.unlink(tmp)


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
