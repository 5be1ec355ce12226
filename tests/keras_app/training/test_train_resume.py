"""A run killed mid-epoch resumes where it stopped when the same command is rerun."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.makers import write_folder

pytestmark = pytest.mark.slow


def command(data, run_dir):
    return [
        sys.executable,
        "-u",
        "-m",
        "keras_app.train",
        "--model",
        "simple_cnn",
        "--data",
        str(data),
        "--image-size",
        "64",
        "--batch-size",
        "8",
        "--head-epochs",
        "0",
        "--fine-tune-epochs",
        "4",
        "--patience",
        "10",
        "--augment",
        "standard",
        "--run-dir",
        str(run_dir),
    ]


def test_killed_run_resumes_not_restarts(tmp_path):
    data = write_folder(tmp_path / "data", n_per_class=120, size=64)
    run = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        command(data, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    seen = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch 2/4"):
            time.sleep(0.5)  # inside epoch 2's batches
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "".join(seen)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert (run / "backup").exists() and not (run / "metrics.json").exists()

    rerun = subprocess.run(command(data, run), capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    epochs = [line.split()[1] for line in rerun.stdout.splitlines() if line.startswith("Epoch ")]
    assert f"resuming the unfinished run in {run}" in rerun.stdout
    assert epochs[0] == "2/4", rerun.stdout  # not 1/4: the finished epoch is not redone
    with (run / "training.csv").open() as f:
        logged = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert logged == [0, 1, 2, 3]
    assert (run / "metrics.json").exists() and not (run / "backup").exists()
