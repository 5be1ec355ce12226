"""Tests for callbacks/thermal.py: hooks called directly with a manual clock,
then one real `fit()` read back from History, CSVLogger and TensorBoard."""

from __future__ import annotations

import csv
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import GpuReading, ScriptedSensor, ThermalGuard, auto_sensor
from callbacks.thermal import PauseEvent

HOT_ERROR = RuntimeError("NVML: GPU is lost")


@pytest.fixture
def make_guard(clock, messages, stub_model):
    """ThermalGuard over a scripted sensor: limit 65, resume 60, a read every batch."""

    def make(script, **kwargs):
        options = dict(check_every_n_batches=1, poll_s=10, max_pause_s=None)
        options.update(kwargs)
        guard = ThermalGuard(
            sensor=ScriptedSensor(script),
            sleep=clock.sleep,
            clock=clock,
            print_fn=messages.append,
            **options,
        )
        guard.set_model(stub_model)
        guard.on_train_begin()
        guard.on_epoch_begin(0)
        return guard

    return make


def run_batches(guard, count, first=0):
    for batch in range(first, first + count):
        guard.on_train_batch_end(batch, logs={})


def epoch_logs(guard, epoch=0):
    logs = {"loss": 0.5}
    guard.on_epoch_end(epoch, logs)
    return logs


def test_cool_gpu_never_pauses(make_guard, clock):
    guard = make_guard([[50, 52, 51]])

    run_batches(guard, 5)

    assert clock.sleeps == [] and guard.pause_count == 0
    assert epoch_logs(guard) == {
        "loss": 0.5,
        "thermal_pauses": 0,
        "thermal_paused_s": 0.0,
        "gpu_max_temp_c": 52.0,
    }


def test_at_the_limit_is_not_above_it(make_guard, clock):
    guard = make_guard([[65]])

    run_batches(guard, 3)

    assert clock.sleeps == []


def test_pause_lasts_until_resume_c_not_just_below_limit(make_guard, clock, messages):
    # 64 and 61 are below the limit but above resume_c=60: still paused.
    sensor_script = [[66, 64, 61, 60, 50]]
    guard = make_guard(sensor_script)

    run_batches(guard, 1)

    assert clock.sleeps == [10, 10, 10]
    assert guard.events == (
        PauseEvent(
            epoch=0,
            step=1,
            gpu=0,
            start_temp_c=66.0,
            end_temp_c=60.0,
            duration_s=30.0,
            outcome="resumed",
        ),
    )
    assert "GPU 0 at 66 °C is above the 65 °C limit" in messages[-2]
    assert "resumed after 30 s" in messages[-1]
    run_batches(guard, 2, first=1)
    assert guard.pause_count == 1
    assert epoch_logs(guard)["thermal_paused_s"] == 30.0


def test_resume_c_can_be_set(make_guard, clock):
    guard = make_guard([[70, 62, 55]], resume_c=62)

    run_batches(guard, 1)

    assert guard.resume_c == 62.0
    assert clock.sleeps == [10]


def test_reads_every_n_batches_counting_steps_per_execution(clock, messages):
    sensor = ScriptedSensor([[50]])
    guard = ThermalGuard(check_every_n_batches=3, sensor=sensor, print_fn=messages.append)

    run_batches(guard, 7)
    assert sensor.reads == [2]

    # steps_per_execution=4: Keras reports batches 3, 7, 11; each covers 4 steps.
    guard.on_epoch_begin(1)
    for batch in (3, 7, 11):
        guard.on_train_batch_end(batch)
    assert sensor.reads == [5]


def test_hottest_gpu_decides(make_guard):
    guard = make_guard([[50], [70, 50]])

    run_batches(guard, 1)

    assert guard.events[0].gpu == 1 and guard.events[0].start_temp_c == 70.0
    assert guard.max_temp_c == 70.0 and guard.max_temp_gpu == 1


def test_resume_waits_for_every_watched_gpu(make_guard, clock):
    # GPU 0 cools at once; GPU 1 warms up while paused and holds the pause.
    guard = make_guard([[70, 58, 58], [55, 63, 59]])

    run_batches(guard, 1)

    assert clock.sleeps == [10, 10]
    assert guard.events[0].end_temp_c == 59.0


def test_unwatched_gpu_is_ignored(make_guard, clock):
    guard = make_guard([[50], [90]], devices=[0])

    run_batches(guard, 3)

    assert clock.sleeps == [] and guard.summary()["devices"] == [0]


def test_max_pause_with_stop_ends_training(make_guard, clock, messages, stub_model):
    guard = make_guard([[70]], max_pause_s=25, on_timeout="stop")

    run_batches(guard, 1)

    assert clock.sleeps == [10, 10, 10]
    assert stub_model.stop_training is True and guard.stopped
    assert guard.events[0].outcome == "stopped"
    assert "STOPPING TRAINING" in messages[-1] and "Checkpoints" in messages[-1]
    assert guard.summary()["stopped"] is True
    assert "training stopped: the GPU did not cool to 60 °C within 25 s" in guard.report_lines()


def test_max_pause_with_wait_warns_once_and_waits_for_cooling(
    make_guard, clock, messages, stub_model
):
    guard = make_guard([[70, 70, 70, 70, 70, 58]], max_pause_s=25, on_timeout="wait")

    run_batches(guard, 1)

    assert clock.sleeps == [10] * 5
    assert stub_model.stop_training is False and not guard.stopped
    assert guard.events[0].outcome == "resumed" and guard.events[0].duration_s == 50
    assert sum("waiting on" in m for m in messages) == 1


def test_sensor_errors_never_raise_and_back_off(make_guard, messages):
    guard = make_guard([[50, HOT_ERROR, HOT_ERROR, 51]])
    sensor = guard._reader.sensor

    # Batch 1 reads; 2 fails; 3 is skipped; 4 fails; 5-7 are skipped; 8 reads.
    run_batches(guard, 8)

    assert sensor.reads == [4]
    assert guard.summary()["sensor_errors"] == 2
    warnings = [m for m in messages if "could not read" in m]
    assert len(warnings) == 1 and "GPU is lost" in warnings[0]
    assert epoch_logs(guard)["gpu_max_temp_c"] == 51.0


def test_sensor_error_during_pause_keeps_waiting(make_guard, clock):
    guard = make_guard([[70, HOT_ERROR, 58]])

    run_batches(guard, 1)

    # Poll 1 fails, poll 2 is the back-off skip, poll 3 reads 58.
    assert clock.sleeps == [10, 10, 10]
    assert guard.events[0].outcome == "resumed"


def test_sensor_lost_while_waiting_resumes_training(make_guard, stub_model, messages):
    guard = make_guard([[70, HOT_ERROR]], max_pause_s=25, on_timeout="wait")

    run_batches(guard, 1)

    assert guard.events[0].outcome == "sensor_lost"
    assert stub_model.stop_training is False
    assert "resuming unguarded" in messages[-1]


def test_epoch_logs_count_per_epoch(make_guard):
    guard = make_guard([[70, 55, 50]])
    run_batches(guard, 2)
    first = epoch_logs(guard, 0)

    guard.on_epoch_begin(1)
    run_batches(guard, 2)
    second = epoch_logs(guard, 1)

    assert (first["thermal_pauses"], first["thermal_paused_s"]) == (1, 10.0)
    assert first["gpu_max_temp_c"] == 70.0
    assert (second["thermal_pauses"], second["thermal_paused_s"]) == (0, 0.0)
    assert second["gpu_max_temp_c"] == 50.0


def test_summary_and_report_lines(make_guard):
    guard = make_guard([[GpuReading(index=0, temperature_c=71, name="RTX"), 59, 50]])
    run_batches(guard, 3)
    guard.on_train_end()

    summary = guard.summary()

    assert summary == {
        "active": True,
        "reason": "scripted sensor",
        "limit_c": 65.0,
        "resume_c": 60.0,
        "devices": [0],
        "pauses": 1,
        "paused_s": 10.0,
        "max_temp_c": 71.0,
        "max_temp_gpu": 0,
        "stopped": False,
        "sensor_errors": 0,
        "events": [
            {
                "epoch": 0,
                "step": 1,
                "gpu": 0,
                "start_temp_c": 71.0,
                "end_temp_c": 59.0,
                "duration_s": 10.0,
                "outcome": "resumed",
            }
        ],
    }
    json.dumps(summary)
    assert guard.report_lines() == [
        "pause above 65 °C, resume at or below 60 °C, GPU 0",
        "1 thermal pause(s), 10 s paused, hottest 71 °C on GPU 0",
        "pause 1: epoch 1, batch 1, GPU 0 at 71 °C, 10 s, resumed at 59 °C",
    ]


def test_no_gpu_makes_the_guard_a_no_op(messages, stub_model):
    guard = ThermalGuard(sensor=ScriptedSensor([]), print_fn=messages.append)
    guard.set_model(stub_model)

    for _ in range(2):  # two fits: the reason is printed once
        guard.on_train_begin()
        guard.on_epoch_begin(0)
        run_batches(guard, 3)
        logs = epoch_logs(guard)
        guard.on_train_end()

    assert not guard.active and logs == {"loss": 0.5}
    assert len(messages) == 1 and "inactive" in messages[0]
    assert guard.summary()["active"] is False
    assert guard.report_lines() == ["inactive (scripted sensor: no GPU to read)"]


def test_real_auto_sensor_without_gpu_is_a_no_op(messages):
    if auto_sensor() is not None:
        pytest.skip("this machine has an NVIDIA GPU")

    guard = ThermalGuard(limit_c=65, print_fn=messages.append)
    guard.on_train_begin()
    run_batches(guard, 3)

    assert not guard.active and "NVML" in guard.reason
    assert "inactive" in messages[0]


def test_plain_cli_values_construct_a_guard():
    # What `--thermal-limit 70 --thermal-resume 62 --thermal-max-pause 900` passes.
    guard = ThermalGuard(70, 62, max_pause_s=900, sensor=ScriptedSensor([[40]]))

    assert (guard.limit_c, guard.resume_c, guard.max_pause_s) == (70.0, 62.0, 900.0)
    assert ThermalGuard(limit_c=80.5, sensor=ScriptedSensor([[40]])).resume_c == 75.5


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"limit_c": 65, "resume_c": 65}, "resume_c=65, limit_c=65"),
        ({"limit_c": 65, "resume_c": 70}, "resume_c=70"),
        ({"limit_c": "hot"}, "limit_c='hot'"),
        ({"limit_c": math.nan}, "limit_c=nan"),
        ({"check_every_n_batches": 0}, "check_every_n_batches=0"),
        ({"check_every_n_batches": 2.5}, "check_every_n_batches=2.5"),
        ({"poll_s": 0}, "poll_s=0"),
        ({"poll_s": -1.0}, "poll_s=-1.0"),
        ({"max_pause_s": 0}, "max_pause_s=0"),
        ({"on_timeout": "abort"}, "on_timeout='abort'"),
        ({"devices": [2]}, "devices=[2]"),
        ({"devices": [-1]}, "devices=[-1]"),
        ({"devices": []}, "devices=[]"),
        ({"devices": "gpu0"}, "devices='gpu0'"),
        ({"log_dir": 42}, "log_dir=42"),
        ({"summary_writer": "logs"}, "summary_writer='logs'"),
        ({"log_dir": "logs", "summary_writer": "w"}, "log_dir='logs', summary_writer='w'"),
    ],
)
def test_bad_arguments_name_the_received_value(kwargs, received):
    with pytest.raises(ValueError, match="Received " + received.replace("[", r"\[")):
        ThermalGuard(sensor=ScriptedSensor([[40], [40]]), **kwargs)


def tensor_values(log_dir, tag):
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]


def tiny_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_fit_shows_the_pause_in_history_csv_and_tensorboard(tmp_path, clock, messages):
    # 4 batches per epoch, a read after each: batch 3 of epoch 0 finds 70 °C.
    guard = ThermalGuard(
        sensor=ScriptedSensor([[50, 52, 70, 63, 58, 50]]),
        check_every_n_batches=1,
        poll_s=15,
        sleep=clock.sleep,
        clock=clock,
        log_dir=tmp_path / "tb" / "gpu",
        print_fn=messages.append,
    )
    csv_path = tmp_path / "log.csv"
    x, y = np.zeros((32, 4), "float32"), np.zeros((32, 1), "float32")

    history = tiny_model().fit(
        x, y, batch_size=8, epochs=2, verbose=0,
        callbacks=[
            guard,
            keras.callbacks.CSVLogger(str(csv_path)),
            keras.callbacks.TensorBoard(str(tmp_path / "tb"), write_graph=False),
        ],
    )  # fmt: skip

    assert history.history["thermal_pauses"] == [1, 0]
    assert history.history["thermal_paused_s"] == [30.0, 0.0]
    assert history.history["gpu_max_temp_c"] == [70.0, 50.0]
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["thermal_pauses"] for r in rows] == ["1", "0"]
    log_dir = tmp_path / "tb" / "gpu"
    assert tensor_values(log_dir, "thermal/pause_s") == [(3, 30.0)]
    assert tensor_values(log_dir, "thermal/pause_start_temp_c") == [(3, 70.0)]
    assert tensor_values(log_dir, "thermal/epoch_thermal_pauses") == [(0, 1.0), (1, 0.0)]
    assert [v for _, v in tensor_values(log_dir, "thermal/batch_gpu_max_temp_c")][:4] == [
        50.0, 52.0, 70.0, 50.0,
    ]  # fmt: skip
    # keras.callbacks.TensorBoard, listed after the guard, logs its keys as well.
    assert tensor_values(tmp_path / "tb" / "train", "epoch_thermal_pauses") == [
        (0, 1.0), (1, 0.0),
    ]  # fmt: skip
    assert messages[-1] == "ThermalGuard: 1 thermal pause(s), 30 s paused, hottest 70 °C on GPU 0"


def test_fit_stops_cleanly_and_keeps_the_checkpoint(tmp_path, clock, messages):
    guard = ThermalGuard(
        sensor=ScriptedSensor([[50, 50, 50, 50, 75]]),  # cool epoch 0, hot from epoch 1
        check_every_n_batches=1,
        max_pause_s=60,
        on_timeout="stop",
        sleep=clock.sleep,
        clock=clock,
        print_fn=messages.append,
    )
    checkpoint = tmp_path / "best.keras"
    x, y = np.zeros((32, 4), "float32"), np.zeros((32, 1), "float32")

    history = tiny_model().fit(
        x, y, batch_size=8, epochs=5, verbose=0,
        callbacks=[guard, keras.callbacks.ModelCheckpoint(str(checkpoint))],
    )  # fmt: skip

    assert len(history.history["loss"]) == 2  # epoch 1 was cut short, then training ended
    assert guard.stopped and guard.events[0].outcome == "stopped"
    assert checkpoint.exists()
    keras.models.load_model(checkpoint)
