"""The callbacks of one training phase, and the two small ones Keras lacks."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import keras
import numpy as np

from keras_app.artifacts.runs import RunFolder


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras' `ModelCheckpoint(save_best_only=True)`, written through a temporary file.

    Keras writes the file in place, so a crash mid-save would leave a broken
    best.keras; here the previous best survives until the new one is whole.

    Args:
        path: the `.keras` file.
        monitor: a key of the epoch logs, e.g. "val_auc".
        mode: "max" or "min".
        best: the best value reached before (a resumed run must beat it), or None.
    """

    def __init__(self, path, monitor: str, mode: str = "max", best: float | None = None):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'. Received mode={mode!r}")
        self.final = Path(path)
        tmp = self.final.with_name(f".{self.final.stem}.tmp.keras")
        super().__init__(
            str(tmp), monitor=monitor, mode=mode, save_best_only=True, initial_value_threshold=best
        )

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if os.path.exists(self.filepath):
            os.replace(self.filepath, self.final)


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to the epoch logs (so history, CSV and TensorBoard carry it)."""

    def __init__(self, clock=time.perf_counter):
        super().__init__()
        self.clock = clock
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = self.clock() - self._start


def best_logged(csv_path, monitor: str, mode: str) -> float | None:
    """The best `monitor` value in a CSVLogger file: a resumed run must beat it."""
    path = Path(csv_path)
    if not path.exists():
        return None
    with path.open() as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def phase_callbacks(
    run_dir: Path,
    phase: str,
    *,
    monitor: str,
    mode: str,
    patience: int,
    is_chief: bool,
    extra=(),
    reduce_lr: bool = True,
) -> list[keras.callbacks.Callback]:
    """The callbacks of one fit() call, in the order their effects must happen.

    `reduce_lr=False` leaves out ReduceLROnPlateau, for an optimizer whose
    learning rate is a schedule (the callback cannot set one).

    EpochTimer first so every later callback sees `epoch_seconds`; the checkpoint
    and early stopping before the loggers; BackupAndRestore last, after the
    epoch's state is final.
    """
    folder = RunFolder(run_dir)
    csv_path = folder.training_csv
    callbacks = [
        EpochTimer(),
        keras.callbacks.TerminateOnNaN(),
        *extra,
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=patience, restore_best_weights=True, verbose=1
        ),
    ]
    if reduce_lr:
        # Halve the step when the monitor stalls for half the patience.
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                mode=mode,
                factor=0.5,
                patience=max(1, patience // 2),
                min_lr=1e-7,
                verbose=1,
            )
        )
    if is_chief:
        callbacks += [
            BestCheckpoint(folder.best, monitor, mode, best_logged(csv_path, monitor, mode)),
            keras.callbacks.TensorBoard(log_dir=str(folder.logs)),
            keras.callbacks.CSVLogger(str(csv_path), append=True),
        ]
    callbacks.append(keras.callbacks.BackupAndRestore(str(folder.backup / phase)))
    return callbacks
