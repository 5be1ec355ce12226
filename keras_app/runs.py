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
    logs/             TensorBoard event files
    backup/           BackupAndRestore state while a run is unfinished
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from keras_app.errors import UsageError

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
LABELS = "labels.txt"
BEST = "best.keras"
HISTORY = "history.json"
METRICS = "metrics.json"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes a file through a temporary beside it and a rename: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, overwrite: bool = False):
    """Yields a temporary folder beside `final`, renamed to `final` on success.

    A reader polling the parent (TF Serving, a resumed run) never sees a
    half-written folder; on error the temporary folder is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise UsageError(f"{final} already exists")
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(frozen=True)
class Run:
    """A finished training run, as other commands (ensemble, export, evaluate) see it."""

    path: Path
    model_name: str
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    config: dict

    @property
    def model_path(self) -> Path:
        return self.path / BEST

    def load_model(self):
        """The best checkpoint, loaded with `safe_mode=True`."""
        import keras

        import keras_app.ensemble  # noqa: F401  (registers EnsembleCombine)
        import keras_app.model  # noqa: F401  (registers BackbonePreprocess)

        return keras.models.load_model(self.model_path, safe_mode=True, compile=False)

    def metrics(self) -> dict:
        path = self.path / METRICS
        return json.loads(path.read_text()) if path.exists() else {}


def load_run(path: str | os.PathLike) -> Run:
    """Reads a run folder's description; a clear UsageError when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"run folder not found: {path}")
    missing = [name for name in (CONFIG, LABELS, BEST) if not (path / name).exists()]
    if missing:
        raise UsageError(f"{path} is not a finished run folder (missing {', '.join(missing)})")
    config = json.loads((path / CONFIG).read_text())
    environment = (
        json.loads((path / ENVIRONMENT).read_text()) if (path / ENVIRONMENT).exists() else {}
    )
    image_size = tuple(environment.get("image_size") or config["image_size"])
    labels = tuple((path / LABELS).read_text().splitlines())
    return Run(path, config["model"], image_size, labels, config)
