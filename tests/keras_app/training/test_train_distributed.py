"""tf.distribute: mirrored over two logical CPU devices, multi-worker as two local processes."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.makers import write_folder

pytestmark = pytest.mark.slow

TWO_CPUS = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_app.core.cli import run_cli
    from keras_app.train import main
    sys.exit(run_cli(main, sys.argv[1:]))
""")


def train_args(data, run_dir):
    return [
        "--model",
        "simple_cnn",
        "--data",
        str(data),
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--head-epochs",
        "1",
        "--fine-tune-epochs",
        "1",
        "--run-dir",
        str(run_dir),
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("dist"), n_per_class=16, size=32)


def test_mirrored_on_two_logical_cpus(data, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", TWO_CPUS, *train_args(data, run), "--strategy", "mirrored"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    env = json.loads((run / "environment.json").read_text())
    assert env["strategy"] == "mirrored" and env["replicas"] == 2
    assert (run / "metrics.json").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A worker that also saves its final weights, so the test can compare the workers' copies,
# and with STOP_AFTER_BATCH asks to stop on its own, as a thermal guard on one machine would.
WORKER = textwrap.dedent("""
    import os
    import sys
    import keras
    import numpy as np
    from keras_app import train as train_cli
    from keras_app.training import engine as train
    from keras_app.core.cli import run_cli

    class StopAlone(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == int(os.environ["STOP_AFTER_BATCH"]):
                self.model.stop_training = True

    if os.environ.get("STOP_AFTER_BATCH"):
        # fit_phases looks phase_callbacks up in its module on each call
        from keras_app.training import callbacks as training_callbacks

        phase_callbacks = training_callbacks.phase_callbacks
        training_callbacks.phase_callbacks = lambda *a, **k: [
            *phase_callbacks(*a, **k),
            StopAlone(),
        ]

    fit_phases = train.fit_phases

    def recording(model, *args, **kwargs):
        phases = fit_phases(model, *args, **kwargs)
        np.savez(os.environ["WEIGHTS_OUT"], *model.get_weights())
        return phases

    train.fit_phases = recording
    sys.exit(run_cli(train_cli.main, sys.argv[1:]))
""")


def digits_args(run_dir, epochs=2):
    """The digits recipe, shrunk: 16 px, 4 steps of the global batch 32 per epoch.

    No augmentation or dropout, so one process and two differ only in how
    BatchNorm sees the batch (whole, or half per worker).
    """
    return [
        "--model",
        "simple_cnn",
        "--image-size",
        "16",
        "--batch-size",
        "32",
        "--steps-per-epoch",
        "4",
        "--head-epochs",
        str(epochs - 1),
        "--fine-tune-epochs",
        "1",
        "--augment",
        "none",
        "--dropout",
        "0",
        "--run-dir",
        str(run_dir),
    ]


def start(args, out_dir, name, tf_config=None, env_extra=None):
    """One training process, its output in `out_dir/name.log`, its weights in `name.npz`."""
    env = {
        **os.environ,
        **(env_extra or {}),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "WEIGHTS_OUT": str(out_dir / f"{name}.npz"),
        # A peer that never answers is given up on after this long (the default is 20 min).
        "KERAS_APP_COLLECTIVE_TIMEOUT_S": "60",
    }
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    log = open(out_dir / f"{name}.log", "w")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args], stdout=log, stderr=subprocess.STDOUT, env=env
    )


def start_workers(args_of, out_dir, tag="", env_of=lambda index: None):
    """Two workers on loopback ports; `args_of(index)` gives each its command line."""
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    return [
        start(
            [*args_of(i), "--strategy", "multiworker"],
            out_dir,
            f"worker{i}{tag}",
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}},
            env_of(i),
        )
        for i in range(2)
    ]


def finish(procs, out_dir, tag="", timeout=600) -> list[str]:
    codes = [p.wait(timeout=timeout) for p in procs]
    logs = [(out_dir / f"worker{i}{tag}.log").read_text() for i in range(len(procs))]
    assert codes == [0] * len(procs), "\n---\n".join(logs)
    return logs


def csv_rows(run_dir) -> list[dict]:
    with (run_dir / "training.csv").open() as f:
        return list(csv.DictReader(f))


def test_multiworker_with_two_local_workers(tmp_path):
    run = tmp_path / "run"
    procs = start_workers(lambda i: digits_args(run), tmp_path)
    single = start([*digits_args(tmp_path / "single"), "--strategy", "none"], tmp_path, "single")
    finish(procs, tmp_path)
    assert single.wait(timeout=600) == 0, (tmp_path / "single.log").read_text()
    env = json.loads((run / "environment.json").read_text())
    assert env["strategy"] == "multiworker" and env["replicas"] == 2
    assert (run / "metrics.json").exists()
    assert not list(run.glob(".worker-*")), "the non-chief worker's scratch folder was left behind"
    assert "global batch 32 (16 per replica x 2;" in (run / "train.md").read_text()
    chief, other = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name])
    # Same global batches, seed and initial weights; BatchNorm's batch statistics differ
    # (16 rows per worker against 32), hence a tolerance.
    two, one = csv_rows(run), csv_rows(tmp_path / "single")
    assert [r["epoch"] for r in two] == [r["epoch"] for r in one] == ["0", "1"]
    for a, b in zip(two, one, strict=True):
        for key in ("loss", "val_loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=0.2), key
        # Validation accuracy is left out: after 8 steps both sit near chance (0.1 on ten
        # digits), where a handful of images moves it by more than any tolerance says.
        assert float(a["accuracy"]) == pytest.approx(float(b["accuracy"]), abs=0.1)


def test_multiworker_from_tfrecord_shards_reads_them_by_file(tmp_path):
    """--data tfrecord: with --steps-per-epoch each worker reads its own shards (FILE)."""
    from data_pipelines import load_dataset
    from data_pipelines.record_writer import write_shards

    shards = write_shards(
        load_dataset("digits", report=lambda line: None),
        tmp_path / "shards",
        image_size=(16, 16),
        images_per_shard=200,
        carved_with=(0.1, 42),
        source={"spec": "digits"},
        report=lambda line: None,
    )
    train = json.loads((shards / "dataset.json").read_text())["splits"]["train"]
    run = tmp_path / "run"
    procs = start_workers(lambda i: [*digits_args(run), "--data", f"tfrecord:{shards}"], tmp_path)
    logs = finish(procs, tmp_path)
    line = f"each worker reads its own share of the {len(train['shards'])} train shards (2 workers"
    assert all(line in log for log in logs), logs[0]
    chief, other = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name])
    assert [r["epoch"] for r in csv_rows(run)] == ["0", "1"]


def test_a_killed_worker_stops_the_other_and_the_rerun_resumes(tmp_path):
    run = tmp_path / "run"
    procs = start_workers(lambda i: digits_args(run, epochs=3), tmp_path)
    deadline = time.monotonic() + 600
    while not ((run / "training.csv").exists() and csv_rows(run)):
        assert time.monotonic() < deadline and procs[0].poll() is None
        time.sleep(0.2)
    procs[1].kill()  # after epoch 1, during epoch 2
    killed_at = time.monotonic()
    code = procs[0].wait(timeout=180)
    log = (tmp_path / "worker0.log").read_text()
    assert code == 75, log
    assert "another worker stopped answering" in log
    print(f"chief stopped {time.monotonic() - killed_at:.0f} s after the kill")

    # The rerun also checks that a stop asked by one worker alone stops both at one step
    # (a worker leaving by itself would leave the other waiting in a collective).
    stop_alone = {1: {"STOP_AFTER_BATCH": "1"}}
    procs = start_workers(lambda i: digits_args(run, epochs=3), tmp_path, "-rerun", stop_alone.get)
    logs = finish(procs, tmp_path, "-rerun")
    assert "resuming the unfinished run" in logs[0]
    assert "Epoch 1/3" not in logs[0] and "Epoch 2/3" in logs[0]
    assert "Epoch 3/3" not in logs[0], "the stop asked by worker 1 did not end the phase"
    assert [r["epoch"] for r in csv_rows(run)] == ["0", "1"]
    assert (run / "metrics.json").exists()


def test_workers_started_differently_are_refused(tmp_path):
    run = tmp_path / "run"
    batch = {0: "32", 1: "16"}
    procs = start_workers(lambda i: [*digits_args(run), "--batch-size", batch[i]], tmp_path)
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [2, 2], "\n---\n".join(logs)
    for log in logs:
        line = next(x for x in log.splitlines() if x.startswith("error: "))
        assert "worker 1: batch_size" in line, line
    assert not (run / "training.csv").exists()
