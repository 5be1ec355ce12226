"""ThermalGuard: pause training while a GPU is too hot, resume once it has cooled."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from callbacks._common import SafeReader, Scalars, check_devices, check_positive, open_sensor
from callbacks.sensors import GpuReading, GpuSensor

ON_TIMEOUT_CHOICES = ("stop", "wait")
# Below `limit_c` by this much before training resumes: without a gap, a GPU
# hovering at the limit would pause and resume every few batches.
DEFAULT_HYSTERESIS_C = 5.0


@dataclasses.dataclass(frozen=True)
class PauseEvent:
    """One pause of training.

    Attributes:
        epoch: Epoch the pause happened in (0-based, as Keras counts).
        step: Training batches run by this guard before the pause, over all fits.
        gpu: Index of the hottest GPU when the pause began.
        start_temp_c: Its temperature then.
        end_temp_c: Hottest watched GPU at the last successful reading of the
            pause (`start_temp_c` if none succeeded).
        duration_s: Seconds paused.
        outcome: "resumed" (cooled to `resume_c`), "stopped" (`max_pause_s`
            passed with `on_timeout="stop"`) or "sensor_lost" (no reading for
            `max_pause_s` with `on_timeout="wait"`; training went on).
    """

    epoch: int
    step: int
    gpu: int
    start_temp_c: float
    end_temp_c: float
    duration_s: float
    outcome: str


class ThermalGuard(keras.callbacks.Callback):
    """Pauses training while a GPU is above a temperature limit.

    Every `check_every_n_batches` training batches it reads the watched GPUs.
    If the hottest is above `limit_c`, it sleeps, reading every `poll_s`
    seconds, until every watched GPU is at or below `resume_c`; then training
    goes on. A pause longer than `max_pause_s` stops training
    (`on_timeout="stop"`: `model.stop_training = True`, checkpoints already
    written stay as they are) or keeps waiting (`on_timeout="wait"`).

    Each pause is printed, counted in the epoch logs (so in `model.history`,
    and in `CSVLogger` or `keras.callbacks.TensorBoard` listed after the guard):
    `thermal_pauses`, `thermal_paused_s` (both for that epoch) and
    `gpu_max_temp_c` (hottest reading in that epoch), and written as
    TensorBoard scalars under `thermal/` when `log_dir` or `summary_writer`
    is given.

    Without a GPU or NVML driver the guard says so once and does nothing. A
    sensor error during training never stops training: it is printed once,
    then reads are retried with back-off. Totals cover every `fit()` the guard
    took part in; see `summary()` and `report_lines()`.

    Args:
        limit_c: Pause when the hottest watched GPU is above this (°C).
        resume_c: Resume when every watched GPU is at or below this (°C);
            None means `limit_c - 5`. Must be below `limit_c`.
        check_every_n_batches: Training batches between two readings.
        poll_s: Seconds between readings while paused.
        max_pause_s: Longest pause before `on_timeout` applies; None: no cap.
        on_timeout: "stop" ends training cleanly; "wait" prints a warning once
            and keeps waiting for the GPU to cool (only while it can still be
            read: after `max_pause_s` without any reading, training resumes).
        devices: "all", or NVML indices (as `nvidia-smi` numbers GPUs) to watch.
        sensor: A `GpuSensor`; None finds the NVML one (`auto_sensor()`).
        sleep: Called with seconds to wait; tests pass a fake.
        clock: Monotonic seconds; tests pass a fake that `sleep` advances.
        log_dir: Folder for TensorBoard scalars; None (and no
            `summary_writer`): no TensorBoard output. Next to
            `keras.callbacks.TensorBoard(log_dir=d)`, `os.path.join(d, "gpu")`
            shows up as a run beside "train" and "validation". Callbacks given
            the same folder share one writer.
        summary_writer: A `tf.summary` writer to use instead of `log_dir`.
        print_fn: Where console messages go.

    Raises:
        ValueError: An argument is out of range, or `devices` names a GPU
            the sensor does not have.

    Example:

    >>> guard = ThermalGuard(limit_c=65, max_pause_s=900)  # doctest: +SKIP
    >>> csv_log = keras.callbacks.CSVLogger("log.csv")  # after the guard: sees its keys
    >>> model.fit(x, y, callbacks=[guard, csv_log])  # doctest: +SKIP
    >>> guard.summary()["pauses"]  # doctest: +SKIP
    2
    """

    def __init__(
        self,
        limit_c: float = 65.0,  # the limit users asked for in the logs
        resume_c: float | None = None,
        check_every_n_batches: int = 10,  # a read is a few NVML calls; heat builds over seconds
        poll_s: float = 5.0,  # cooling takes tens of seconds; faster polls only add reads
        max_pause_s: float | None = 600.0,  # still hot after 10 idle minutes: a cooling problem
        on_timeout: str = "stop",  # ends cleanly, frees the machine, keeps the best checkpoint
        devices: str | int | Sequence[int] = "all",
        sensor: GpuSensor | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        log_dir: str | os.PathLike | None = None,
        summary_writer: tf.summary.SummaryWriter | None = None,
        print_fn: Callable[[str], Any] = print,
    ):
        super().__init__()
        name = type(self).__name__
        self.limit_c, self.resume_c = _check_limits(limit_c, resume_c, name)
        check_positive(check_every_n_batches, "check_every_n_batches", name, integer=True)
        check_positive(poll_s, "poll_s", name)
        if max_pause_s is not None:
            check_positive(max_pause_s, "max_pause_s", name)
        if on_timeout not in ON_TIMEOUT_CHOICES:
            raise ValueError(
                f"{name} expects on_timeout to be one of {ON_TIMEOUT_CHOICES}. "
                f"Received on_timeout={on_timeout!r}"
            )
        self.check_every_n_batches = check_every_n_batches
        self.poll_s = float(poll_s)
        self.max_pause_s = None if max_pause_s is None else float(max_pause_s)
        self.on_timeout = on_timeout
        self._scalars = Scalars(log_dir, summary_writer, name)
        picked = check_devices(devices, name)
        sensor, self.devices, self.reason = open_sensor(sensor, picked, name)
        self._reader = None if sensor is None else SafeReader(sensor, self.devices, name, print_fn)
        self._sleep = sleep
        self._clock = clock
        self._print = print_fn
        self._announced = False
        self._events: list[PauseEvent] = []
        self.max_temp_c: float | None = None  # hottest reading seen, over all fits
        self.max_temp_gpu: int | None = None
        self.stopped = False  # whether this guard ended a training run
        self._step = 0  # training batches seen, over all fits
        self._since_check = 0
        self._last_batch = -1
        self._epoch = 0
        self._reset_epoch()

    @property
    def active(self) -> bool:
        """Whether there is a sensor to read; False makes the guard a no-op."""
        return self._reader is not None

    @property
    def events(self) -> tuple[PauseEvent, ...]:
        return tuple(self._events)

    @property
    def pause_count(self) -> int:
        return len(self._events)

    @property
    def paused_s(self) -> float:
        return sum(e.duration_s for e in self._events)

    # Keras hooks

    def on_train_begin(self, logs=None):
        if self._announced:
            return
        self._announced = True
        if not self.active:
            self._print(f"ThermalGuard: inactive, {self.reason}; training is not guarded.")
            return
        self._print(
            f"ThermalGuard: watching GPU {_join(self.devices)} ({self.reason}); pausing above "
            f"{self.limit_c:g} °C until all are at or below {self.resume_c:g} °C."
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1
        self._reset_epoch()

    def on_train_batch_end(self, batch, logs=None):
        if not self.active:
            return
        # With steps_per_execution > 1 Keras calls this once per group of steps.
        covered = max(1, batch - self._last_batch)
        self._last_batch = batch
        self._step += covered
        self._since_check += covered
        if self._since_check < self.check_every_n_batches:
            return
        self._since_check = 0
        readings = self._reader.read()
        if readings is None:
            return
        hottest = self._note(readings)
        self._scalars.write({"thermal/batch_gpu_max_temp_c": hottest.temperature_c}, self._step)
        if hottest.temperature_c > self.limit_c:
            self._pause(hottest)

    def on_epoch_end(self, epoch, logs=None):
        if not self.active:
            return
        values = {
            "thermal_pauses": self._epoch_pauses,
            "thermal_paused_s": self._epoch_paused_s,
            "gpu_max_temp_c": self._epoch_max_c,
        }
        if logs is not None:
            logs.update(values)
        self._scalars.write({f"thermal/epoch_{k}": float(v) for k, v in values.items()}, epoch)
        self._scalars.flush()

    def on_train_end(self, logs=None):
        if not self.active:
            return
        self._scalars.flush()
        self._print("ThermalGuard: " + self._totals_line())

    # Reporting

    def summary(self) -> dict[str, Any]:
        """Totals over every fit, JSON-ready, for the training report.

        Returns:
            A dict with keys `active`, `reason`, `limit_c`, `resume_c`,
            `devices`, `pauses`, `paused_s`, `max_temp_c`, `max_temp_gpu`,
            `stopped`, `sensor_errors` and `events` (one dict per
            `PauseEvent`, with NaN temperatures as None).
        """
        return {
            "active": self.active,
            "reason": self.reason,
            "limit_c": self.limit_c,
            "resume_c": self.resume_c,
            "devices": list(self.devices),
            "pauses": self.pause_count,
            "paused_s": round(self.paused_s, 3),
            "max_temp_c": self.max_temp_c,
            "max_temp_gpu": self.max_temp_gpu,
            "stopped": self.stopped,
            "sensor_errors": 0 if self._reader is None else self._reader.errors,
            "events": [_json_ready(dataclasses.asdict(e)) for e in self._events],
        }

    def report_lines(self) -> list[str]:
        """Plain lines for a report such as train.md: no bullets, prefix as needed.

        Returns:
            e.g. `["pause above 65 °C, resume at or below 60 °C, GPU 0",
            "1 thermal pause(s), 42 s paused, hottest 71 °C on GPU 0",
            "pause 1: epoch 3, batch 1210, GPU 0 at 71 °C, 42 s, resumed at 60 °C"]`,
            or `["inactive (<reason>)"]` without a sensor.
        """
        if not self.active:
            return [f"inactive ({self.reason})"]
        lines = [
            f"pause above {self.limit_c:g} °C, resume at or below {self.resume_c:g} °C, "
            f"GPU {_join(self.devices)}",
            self._totals_line(),
        ]
        for number, e in enumerate(self._events, start=1):
            lines.append(
                f"pause {number}: epoch {e.epoch + 1}, batch {e.step}, GPU {e.gpu} at "
                f"{e.start_temp_c:g} °C, {e.duration_s:.0f} s, {e.outcome} at {_temp(e.end_temp_c)}"
            )
        if self.stopped:
            lines.append(
                f"training stopped: the GPU did not cool to {self.resume_c:g} °C "
                f"within {self.max_pause_s:g} s"
            )
        if self._reader.errors:
            lines.append(f"GPU sensor: {self._reader.errors} failed read(s)")
        return lines

    # Internals

    def _reset_epoch(self) -> None:
        self._epoch_pauses = 0
        self._epoch_paused_s = 0.0
        self._epoch_max_c = math.nan

    def _note(self, readings: list[GpuReading]) -> GpuReading:
        """Records the hottest of `readings` in the maxima and returns it."""
        hottest = max(readings, key=lambda r: r.temperature_c)
        t = hottest.temperature_c
        if not t <= self._epoch_max_c:  # also true while the epoch max is NaN
            self._epoch_max_c = t
        if self.max_temp_c is None or t > self.max_temp_c:
            self.max_temp_c, self.max_temp_gpu = t, hottest.index
        return hottest

    def _pause(self, hottest: GpuReading) -> None:
        start = last_ok = self._clock()
        cap = "" if self.max_pause_s is None else f", at most {self.max_pause_s:g} s"
        self._print(
            f"ThermalGuard: GPU {hottest.index} at {hottest.temperature_c:g} °C is above the "
            f"{self.limit_c:g} °C limit; pausing training until every watched GPU is at or "
            f"below {self.resume_c:g} °C (reading every {self.poll_s:g} s{cap})."
        )
        end_c, outcome, warned = hottest.temperature_c, None, False
        while outcome is None:
            self._sleep(self.poll_s)
            readings = self._reader.read()
            now = self._clock()
            if readings is not None:
                last_ok, end_c = now, self._note(readings).temperature_c
                if end_c <= self.resume_c:
                    outcome = "resumed"
                    break
            if self.max_pause_s is None or now - start < self.max_pause_s:
                continue
            if self.on_timeout == "stop":
                outcome = "stopped"
            elif now - last_ok >= self.max_pause_s:
                outcome = "sensor_lost"
            elif not warned:
                warned = True
                self._print(
                    f"ThermalGuard: still {end_c:g} °C after {now - start:.0f} s "
                    f"(max_pause_s={self.max_pause_s:g}); on_timeout='wait', so waiting on."
                )
        self._finish_pause(hottest, end_c, self._clock() - start, outcome)

    def _finish_pause(self, hottest: GpuReading, end_c: float, duration: float, outcome: str):
        event = PauseEvent(
            self._epoch, self._step, hottest.index, hottest.temperature_c, end_c, duration, outcome
        )
        self._events.append(event)
        self._epoch_pauses += 1
        self._epoch_paused_s += duration
        self._scalars.write(
            {
                "thermal/pause_s": duration,
                "thermal/pause_start_temp_c": hottest.temperature_c,
                "thermal/pause_end_temp_c": end_c,
            },
            self._step,
        )
        self._scalars.flush()
        if outcome == "resumed":
            self._print(
                f"ThermalGuard: resumed after {duration:.0f} s paused; hottest GPU now "
                f"{end_c:g} °C (was {hottest.temperature_c:g} °C)."
            )
        elif outcome == "stopped":
            self.stopped = True
            if self.model is not None:
                self.model.stop_training = True
            self._print(
                f"ThermalGuard: STOPPING TRAINING. The GPU is still {_temp(end_c)} after "
                f"{duration:.0f} s paused (limit {self.limit_c:g} °C, resume at "
                f"{self.resume_c:g} °C, max_pause_s={self.max_pause_s:g}). Checkpoints "
                "already saved are intact; check the cooling, then resume from the best one."
            )
        else:
            self._print(
                f"ThermalGuard: no GPU reading for {duration:.0f} s while paused; resuming "
                "unguarded (the driver's own thermal slowdown still protects the GPU)."
            )

    def _totals_line(self) -> str:
        hottest = (
            "no temperature read"
            if self.max_temp_c is None
            else f"hottest {self.max_temp_c:g} °C on GPU {self.max_temp_gpu}"
        )
        return f"{self.pause_count} thermal pause(s), {self.paused_s:.0f} s paused, {hottest}"


def _check_limits(limit_c, resume_c, owner: str) -> tuple[float, float]:
    for name, value in (("limit_c", limit_c), ("resume_c", resume_c)):
        if value is None and name == "resume_c":
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ValueError(f"{owner} expects {name} in °C as a number. Received {name}={value!r}")
    resume = limit_c - DEFAULT_HYSTERESIS_C if resume_c is None else resume_c
    if resume >= limit_c:
        raise ValueError(
            f"{owner} expects resume_c below limit_c, so that a GPU at the limit does not "
            f"pause and resume every batch. Received resume_c={resume_c!r}, limit_c={limit_c!r}"
        )
    return float(limit_c), float(resume)


def _join(indices) -> str:
    return ", ".join(str(i) for i in indices)


def _temp(value: float) -> str:
    return "unknown °C" if math.isnan(value) else f"{value:g} °C"


def _json_ready(values: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
