"""GpuTelemetry: GPU temperature, memory, utilisation and power beside the loss."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from callbacks._common import (
    SafeReader,
    Scalars,
    check_devices,
    check_positive,
    nan_if_none,
    open_sensor,
)
from callbacks.sensors import GpuReading, GpuSensor

# Epoch-log key suffix -> how to get it from a reading. Keys read `gpu0_temp_c`.
METRICS: dict[str, Callable[[GpuReading], float | None]] = {
    "temp_c": lambda r: r.temperature_c,
    "mem_used_mib": lambda r: r.memory_used_mib,
    "util_pct": lambda r: r.utilization_pct,
    "power_w": lambda r: r.power_w,
    "thermal_throttle": lambda r: float(r.thermal_throttled),
}


class GpuTelemetry(keras.callbacks.Callback):
    """Logs GPU stats per epoch (and optionally every N batches).

    At each epoch end it reads the watched GPUs and adds, per GPU `i`, the
    epoch-log keys `gpu{i}_temp_c`, `gpu{i}_mem_used_mib`, `gpu{i}_util_pct`,
    `gpu{i}_power_w` and `gpu{i}_thermal_throttle` (1.0 while the driver
    itself slows the GPU down for heat). They land in `model.history.history`,
    and in `CSVLogger` / `keras.callbacks.TensorBoard` placed after this
    callback. A value the GPU does not report, or a failed read, is NaN, so
    the columns stay the same every epoch.

    With `log_dir` or `summary_writer`, the same values are written as scalars
    `gpu{i}/epoch_<name>` (step: epoch) and, with `every_n_batches`, as
    `gpu{i}/batch_<name>` (step: training batches seen).

    Without a GPU it says so once and does nothing. Sensor errors are printed
    once and retried with back-off; they never stop training.

    Args:
        sensor: A `GpuSensor`; None finds the NVML one (`auto_sensor()`).
        devices: "all", or NVML indices of the GPUs to log.
        every_n_batches: Also sample every this many training batches
            (TensorBoard only); None: epoch ends only.
        log_dir: Folder for TensorBoard scalars, e.g. `<keras log_dir>/gpu` (a
            run beside "train" and "validation"). Callbacks given the same
            folder share one writer. None (and no `summary_writer`): history only.
        summary_writer: A `tf.summary` writer to use instead of `log_dir`.
        print_fn: Where console messages go.

    Raises:
        ValueError: An argument is out of range, or `devices` names a GPU
            the sensor does not have.

    Example:

    >>> telemetry = GpuTelemetry(log_dir="runs/x/logs/gpu")  # doctest: +SKIP
    >>> model.fit(x, y, epochs=3, callbacks=[telemetry])  # doctest: +SKIP
    >>> model.history.history["gpu0_temp_c"]  # doctest: +SKIP
    [61.0, 64.0, 63.0]
    """

    def __init__(
        self,
        sensor: GpuSensor | None = None,
        devices: str | int | Sequence[int] = "all",
        every_n_batches: int | None = None,
        log_dir: str | os.PathLike | None = None,
        summary_writer: tf.summary.SummaryWriter | None = None,
        print_fn: Callable[[str], Any] = print,
    ):
        super().__init__()
        name = type(self).__name__
        if every_n_batches is not None:
            check_positive(every_n_batches, "every_n_batches", name, integer=True)
        self.every_n_batches = every_n_batches
        self._scalars = Scalars(log_dir, summary_writer, name)
        picked = check_devices(devices, name)
        sensor, self.devices, self.reason = open_sensor(sensor, picked, name)
        self._reader = None if sensor is None else SafeReader(sensor, self.devices, name, print_fn)
        self._print = print_fn
        self._announced = False
        self._step = 0  # training batches seen, over all fits
        self._since_sample = 0
        self._last_batch = -1

    @property
    def active(self) -> bool:
        """Whether there is a sensor to read; False makes the callback a no-op."""
        return self._reader is not None

    @property
    def sensor_errors(self) -> int:
        return 0 if self._reader is None else self._reader.errors

    def on_train_begin(self, logs=None):
        if not self.active and not self._announced:
            self._announced = True
            self._print(f"GpuTelemetry: inactive, {self.reason}; no GPU stats logged.")

    def on_epoch_begin(self, epoch, logs=None):
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        if not self.active or self.every_n_batches is None:
            return
        covered = max(1, batch - self._last_batch)  # > 1 with steps_per_execution
        self._last_batch = batch
        self._step += covered
        self._since_sample += covered
        if self._since_sample < self.every_n_batches:
            return
        self._since_sample = 0
        readings = self._reader.read()
        if readings is not None:
            self._scalars.write(self._values(readings, "gpu{i}/batch_{name}"), self._step)

    def on_epoch_end(self, epoch, logs=None):
        if not self.active:
            return
        readings = self._reader.read()
        if logs is not None:
            logs.update(self._values(readings, "gpu{i}_{name}"))
        if readings is not None:
            self._scalars.write(self._values(readings, "gpu{i}/epoch_{name}"), epoch)
        self._scalars.flush()

    def on_train_end(self, logs=None):
        self._scalars.flush()

    def _values(self, readings: list[GpuReading] | None, key: str) -> dict[str, float]:
        """`key` filled in for each GPU and metric; NaN everywhere when unread."""
        by_index = {r.index: r for r in readings or ()}
        values = {}
        for i in self.devices:
            reading = by_index.get(i)
            for name, get in METRICS.items():
                value = None if reading is None else get(reading)
                values[key.format(i=i, name=name)] = nan_if_none(value)
        return values
