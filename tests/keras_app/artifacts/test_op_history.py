"""keras_app.artifacts.op_history: training's operating point is never lost; any version
can be made current again, exactly."""

from __future__ import annotations

import json

import pytest

from keras_app.artifacts import runs
from keras_app.artifacts.op_history import HISTORY, OperatingPointHistory
from keras_app.core.errors import UsageError

TRAINING_OP = {"temperature": 0.9, "positive_class": "PNEUMONIA", "threshold": 0.7, "version": 1}


@pytest.fixture
def run(tmp_path):
    """A run folder's files as training leaves them (the model a stand-in file)."""
    path = tmp_path / "run"
    path.mkdir()
    (path / runs.BEST).write_bytes(b"training model")
    (path / runs.OPERATING_POINT).write_text(json.dumps(TRAINING_OP))
    return path


def refit(history, threshold, model=b"refit model"):
    op = {**TRAINING_OP, "threshold": threshold, "provenance": {"data": "local"}}
    return history.add(op, save_model=lambda path: path.write_bytes(model))


def test_a_run_never_refitted_has_training_s_version_only(run):
    history = OperatingPointHistory(run)
    assert history.versions() == [1] and history.current_version() == 1
    assert history.record(1)["operating_point"] == TRAINING_OP
    assert history.consistent() and not (run / HISTORY).exists()


def test_a_refit_keeps_training_s_point_and_model_byte_for_byte(run):
    history = OperatingPointHistory(run)
    assert refit(history, 0.5) == 2
    assert history.record(1)["operating_point"] == TRAINING_OP
    assert history.model_path(1).read_bytes() == b"training model"
    # Written, not yet current: every reader still decides at training's point.
    assert json.loads((run / runs.OPERATING_POINT).read_text()) == TRAINING_OP
    history.make_current(2, why="calibrate")
    current = json.loads((run / runs.OPERATING_POINT).read_text())
    assert current["version"] == 2 and current["threshold"] == 0.5
    assert (run / runs.BEST).read_bytes() == b"refit model" and history.consistent()


def test_versions_are_numbered_once_and_any_can_be_restored(run):
    history = OperatingPointHistory(run)
    refit(history, 0.5, b"model 2")
    history.make_current(2, why="calibrate")
    assert refit(history, 0.4, b"model 3") == 3  # from the history, not from the current point
    history.make_current(1, why="restore")
    assert json.loads((run / runs.OPERATING_POINT).read_text()) == TRAINING_OP
    assert (run / runs.BEST).read_bytes() == b"training model"
    assert refit(history, 0.3) == 4
    assert [s["version"] for s in history.switches()] == [2, 1]
    with pytest.raises(UsageError, match="already taken"):
        history._write_record(3, TRAINING_OP, why="again")
    assert history.record(3)["operating_point"]["threshold"] == 0.4


def test_an_interrupted_switch_is_detected(run):
    history = OperatingPointHistory(run)
    refit(history, 0.5)
    history.make_current(2, why="calibrate")
    (run / runs.BEST).write_bytes(b"training model")  # as if the op file were newer than the model
    assert not history.consistent()


def test_a_tampered_version_model_is_not_made_current(run):
    history = OperatingPointHistory(run)
    refit(history, 0.5)
    history.model_path(2).write_bytes(b"something else")
    with pytest.raises(UsageError, match="not the model version 2"):
        history.make_current(2, why="calibrate")


def test_no_such_version(run):
    with pytest.raises(UsageError, match="no operating point version 7"):
        OperatingPointHistory(run).record(7)
