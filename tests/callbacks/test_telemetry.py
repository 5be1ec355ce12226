"""Tests for callbacks/telemetry.py: epoch logs, batch samples, a real fit()."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import GpuReading, GpuTelemetry, ScriptedSensor, ThermalGuard, auto_sensor


def reading(temp, **fields):
    values = dict(memory_used_mib=2048.0, memory_total_mib=8192.0, utilization_pct=97.0)
    values.update(fields)
    return GpuReading(index=0, temperature_c=temp, **values)


def test_epoch_logs_per_gpu(messages):
    sensor = ScriptedSensor(
        [
            [reading(61, power_w=180.5)],
            [reading(73, power_w=None, throttle_reasons=("sw_thermal_slowdown",))],
        ]
    )
    telemetry = GpuTelemetry(sensor=sensor, print_fn=messages.append)
    logs = {"loss": 0.1}

    telemetry.on_epoch_end(0, logs)

    assert logs.pop("loss") == 0.1
    assert math.isnan(logs.pop("gpu1_power_w"))  # not reported by that GPU
    assert logs == {
        "gpu0_temp_c": 61.0,
        "gpu0_mem_used_mib": 2048.0,
        "gpu0_util_pct": 97.0,
        "gpu0_power_w": 180.5,
        "gpu0_thermal_throttle": 0.0,
        "gpu1_temp_c": 73.0,
        "gpu1_mem_used_mib": 2048.0,
        "gpu1_util_pct": 97.0,
        "gpu1_thermal_throttle": 1.0,
    }
    assert messages == []


def test_selected_devices_only():
    telemetry = GpuTelemetry(sensor=ScriptedSensor([[50], [60]]), devices=1)
    logs = {}

    telemetry.on_epoch_end(0, logs)

    assert logs["gpu1_temp_c"] == 60.0 and not any(k.startswith("gpu0") for k in logs)


def test_batch_samples_every_n_batches():
    sensor = ScriptedSensor([[50]])
    telemetry = GpuTelemetry(sensor=sensor, every_n_batches=2)

    for batch in range(5):
        telemetry.on_train_batch_end(batch)

    assert sensor.reads == [2]
    assert GpuTelemetry(sensor=sensor).every_n_batches is None


def test_sensor_error_gives_nan_with_the_same_keys(messages):
    sensor = ScriptedSensor([[50, RuntimeError("Unknown Error"), 52]])
    telemetry = GpuTelemetry(sensor=sensor, print_fn=messages.append)

    per_epoch = []
    for epoch in range(4):  # reads 50, fails, skips (back-off), reads 52
        logs = {}
        telemetry.on_epoch_end(epoch, logs)
        per_epoch.append(logs)

    assert [logs["gpu0_temp_c"] for logs in per_epoch][::3] == [50.0, 52.0]
    assert all(math.isnan(logs["gpu0_temp_c"]) for logs in per_epoch[1:3])
    assert all(logs.keys() == per_epoch[0].keys() for logs in per_epoch)
    assert telemetry.sensor_errors == 1
    assert len(messages) == 1 and "Unknown Error" in messages[0]


def test_no_gpu_is_a_no_op(messages):
    telemetry = GpuTelemetry(sensor=ScriptedSensor([]), every_n_batches=1, print_fn=messages.append)
    logs = {"loss": 1.0}

    telemetry.on_train_begin()
    telemetry.on_train_begin()
    telemetry.on_train_batch_end(0)
    telemetry.on_epoch_end(0, logs)

    assert not telemetry.active and logs == {"loss": 1.0}
    assert len(messages) == 1 and "inactive" in messages[0]


def test_real_auto_sensor_without_gpu_is_a_no_op(messages):
    if auto_sensor() is not None:
        pytest.skip("this machine has an NVIDIA GPU")

    telemetry = GpuTelemetry(print_fn=messages.append)
    telemetry.on_train_begin()

    assert not telemetry.active and "NVML" in messages[0]


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"every_n_batches": 0}, r"every_n_batches=0"),
        ({"devices": [3]}, r"devices=\[3\]"),
        ({"devices": True}, r"devices=True"),
        ({"summary_writer": object()}, r"summary_writer=<object"),
    ],
)
def test_bad_arguments_name_the_received_value(kwargs, received):
    with pytest.raises(ValueError, match="Received " + received):
        GpuTelemetry(sensor=ScriptedSensor([[40]]), **kwargs)


def test_fit_logs_gpu_stats_to_history_and_a_shared_writer(tmp_path, messages):
    writer = tf.summary.create_file_writer(str(tmp_path / "gpu"))
    temps = [reading(t, power_w=150.0) for t in (55, 56, 57, 58, 59, 60, 61, 62)]
    sensor = ScriptedSensor([temps])
    callbacks = [
        ThermalGuard(
            sensor=ScriptedSensor([[50]]),
            check_every_n_batches=4,
            summary_writer=writer,
            print_fn=messages.append,
        ),
        GpuTelemetry(sensor=sensor, every_n_batches=2, summary_writer=writer),
    ]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((32, 4), "float32"), np.zeros((32, 1), "float32")

    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks)

    # Per epoch: two batch samples (after batches 2 and 4), then the epoch read.
    assert history.history["gpu0_temp_c"] == [57.0, 60.0]
    assert history.history["gpu0_power_w"] == [150.0, 150.0]
    events = EventAccumulator(str(tmp_path / "gpu"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"gpu0/epoch_temp_c", "gpu0/batch_util_pct", "thermal/epoch_gpu_max_temp_c"} <= tags
    steps = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(
        "gpu0/batch_temp_c")]  # fmt: skip
    assert steps == [(2, 55.0), (4, 56.0), (6, 58.0), (8, 59.0)]


def test_callbacks_given_one_folder_share_one_event_file(tmp_path):
    log_dir = tmp_path / "logs" / "gpu"
    guard = ThermalGuard(sensor=ScriptedSensor([[50]]), check_every_n_batches=1, log_dir=log_dir)
    telemetry = GpuTelemetry(sensor=ScriptedSensor([[51]]), log_dir=str(log_dir))

    for callback in (guard, telemetry):
        callback.on_train_begin()
        callback.on_train_batch_end(0)
        callback.on_epoch_end(0, {})
        callback.on_train_end()

    assert len(list(log_dir.iterdir())) == 1
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    assert {"thermal/epoch_gpu_max_temp_c", "gpu0/epoch_temp_c"} <= set(events.Tags()["tensors"])
