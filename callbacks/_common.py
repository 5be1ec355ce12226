"""What ThermalGuard and GpuTelemetry share: argument checks, safe reads, summaries."""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Sequence

import tensorflow as tf

from callbacks.sensors import GpuReading, GpuSensor, probe_sensor

# After k failed reads in a row the next 2**k - 1 attempts are skipped, up to
# this many: a lost GPU is not asked a hundred times a second, and a sensor
# that comes back is noticed again within about 64 checks.
MAX_SKIPPED_READS = 63


def check_devices(devices: str | int | Sequence[int], owner: str) -> tuple[int, ...] | None:
    """Normalises a `devices` argument: None for "all", else a tuple of indices.

    Raises:
        ValueError: Neither "all" nor a non-empty list of indices >= 0.
    """
    message = f'{owner} expects devices="all" or GPU indices >= 0. Received devices={devices!r}'
    if isinstance(devices, str):
        if devices == "all":
            return None
        raise ValueError(message)
    if isinstance(devices, int) and not isinstance(devices, bool):
        picked = (devices,)
    elif isinstance(devices, Sequence):
        picked = tuple(devices)
    else:
        raise ValueError(message)
    if not picked or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in picked):
        raise ValueError(message)
    return picked


def check_positive(value, name: str, owner: str, integer: bool = False) -> None:
    """Raises ValueError unless `value` is a positive finite number (an int if asked)."""
    kinds = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or not math.isfinite(value)
        or value <= 0
    ):
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{owner} expects {name} to be {what}. Received {name}={value!r}")


def open_sensor(
    sensor: GpuSensor | None, devices: tuple[int, ...] | None, owner: str
) -> tuple[GpuSensor | None, tuple[int, ...], str]:
    """Finds the sensor (auto when None) and the device indices to read.

    Returns:
        `(sensor, indices, reason)`; sensor is None when there is nothing to
        read, and `reason` then says why.

    Raises:
        ValueError: `devices` names a GPU the sensor does not have.
    """
    if sensor is None:
        sensor, reason = probe_sensor()
    else:
        reason = getattr(sensor, "description", type(sensor).__name__)
    if sensor is None:
        return None, (), reason
    try:
        count = int(sensor.device_count())
    except Exception as err:
        return None, (), f"the sensor cannot count GPUs ({type(err).__name__}: {err})"
    if count == 0:
        return None, (), f"{reason}: no GPU to read"
    if devices is None:
        return sensor, tuple(range(count)), reason
    unknown = [i for i in devices if i >= count]
    if unknown:
        raise ValueError(
            f"{owner} got a GPU index this machine does not have (found {count} GPU(s), "
            f"indices 0-{count - 1}). Received devices={list(devices)!r}"
        )
    return sensor, devices, reason


class SafeReader:
    """Reads several GPUs; a failure is reported once, then retried with back-off.

    `read()` returns None instead of raising, so a flaky or lost sensor never
    stops training.
    """

    def __init__(
        self,
        sensor: GpuSensor,
        indices: tuple[int, ...],
        owner: str,
        print_fn: Callable[[str], None],
    ):
        self.sensor = sensor
        self.indices = indices
        self.errors = 0  # failed reads, over the reader's life
        self._owner = owner
        self._print = print_fn
        self._failures_in_row = 0
        self._skip = 0
        self._warned = False

    def read(self) -> list[GpuReading] | None:
        """All selected GPUs now, or None after a failure or while backing off."""
        if self._skip:
            self._skip -= 1
            return None
        try:
            readings = [self.sensor.read(i) for i in self.indices]
        except Exception as err:
            self.errors += 1
            self._failures_in_row += 1
            self._skip = min(2**self._failures_in_row - 1, MAX_SKIPPED_READS)
            if not self._warned:
                self._warned = True
                self._print(
                    f"{self._owner}: could not read the GPU sensor ({type(err).__name__}: "
                    f"{err}). Training continues; retrying with back-off, further "
                    "errors are counted, not printed."
                )
            return None
        self._failures_in_row = 0
        return readings


# Callbacks given the same folder share one writer: TensorBoard follows only the
# newest event file of a run folder while training runs, so a second writer's
# file there would go unread until a restart.
_WRITERS: weakref.WeakValueDictionary[str, tf.summary.SummaryWriter] = weakref.WeakValueDictionary()


class Scalars:
    """Writes tf.summary scalars to a given writer, or to one opened on a folder."""

    def __init__(
        self,
        log_dir: str | os.PathLike | None,
        summary_writer: tf.summary.SummaryWriter | None,
        owner: str,
    ):
        if log_dir is not None and summary_writer is not None:
            raise ValueError(
                f"{owner} takes log_dir or summary_writer, not both. Received "
                f"log_dir={log_dir!r}, summary_writer={summary_writer!r}"
            )
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(
                f"{owner} expects log_dir to be a folder. Received log_dir={log_dir!r}"
            )
        if summary_writer is not None and not isinstance(summary_writer, tf.summary.SummaryWriter):
            raise ValueError(
                f"{owner} expects summary_writer to be a tf.summary writer. "
                f"Received summary_writer={summary_writer!r}"
            )
        self._log_dir = None if log_dir is None else os.path.abspath(os.fspath(log_dir))
        self._writer = summary_writer

    def write(self, scalars: dict[str, float | None], step: int) -> None:
        """Writes each finite value under its tag at `step`; skips None and NaN."""
        writer = self._open()
        if writer is None:
            return
        with writer.as_default():
            for tag, value in scalars.items():
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(tag, float(value), step=step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _open(self) -> tf.summary.SummaryWriter | None:
        # Opened at the first write, so that building a callback writes no files.
        if self._writer is None and self._log_dir is not None:
            self._writer = _WRITERS.get(self._log_dir)
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self._log_dir)
                _WRITERS[self._log_dir] = self._writer
        return self._writer


def nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)
