"""keras_app.runs: the unfinished-run lookup that lets a rerun without --run-dir resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from keras_app.artifacts import runs
from keras_app.recipe.config import TrainConfig


def write_run(path: Path, config: dict, *, started: bool = True, finished: bool = False) -> Path:
    """A run folder as train leaves it: config first, progress once a phase ran, metrics last."""
    path.mkdir(parents=True)
    (path / runs.CONFIG).write_text(json.dumps({**config, "run_dir": str(path)}))
    if started:
        (path / runs.PROGRESS).write_text(json.dumps({"phases": []}))
    if finished:
        (path / runs.BEST).write_bytes(b"")
        (path / runs.METRICS).write_text("{}")
    return path


CONFIG = {"model": "simple_cnn", "seed": 42, "data": "digits"}


def test_find_unfinished_takes_the_newest_unfinished_run_of_the_same_configuration(tmp_path):
    older = write_run(tmp_path / "simple_cnn-20260101-000000", CONFIG)
    newer = write_run(tmp_path / "simple_cnn-20260102-000000", CONFIG)
    write_run(tmp_path / "simple_cnn-20260103-000000", CONFIG, finished=True)
    write_run(tmp_path / "simple_cnn-20260104-000000", {**CONFIG, "seed": 1})
    write_run(tmp_path / "simple_cnn-20260105-000000", CONFIG, started=False)  # no progress
    write_run(tmp_path / "resnet50-20260106-000000", CONFIG)  # another prefix
    found = runs.find_unfinished(tmp_path, "simple_cnn", {**CONFIG, "run_dir": None})
    assert found == runs.RunFolder(newer)
    assert found.is_unfinished() and not found.is_finished()
    (newer / runs.METRICS).write_text("{}")  # it finished: the older one is next
    assert runs.find_unfinished(tmp_path, "simple_cnn", CONFIG) == runs.RunFolder(older)


def test_find_unfinished_finds_nothing_under_a_missing_root(tmp_path):
    assert runs.find_unfinished(tmp_path / "runs", "simple_cnn", CONFIG) is None


@dataclass
class StandInData:
    class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
    native_size: tuple[int, int] = (32, 32)


def test_a_rerun_without_run_dir_resumes_the_unfinished_run(tmp_path, monkeypatch):
    from keras_app.training import engine as train

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(model="simple_cnn", data="digits")
    first = train.resolve_config(config, StandInData())
    assert Path(first.run_dir).parent == Path("runs")
    # The first attempt wrote its config and finished a phase, then died.
    write_run(Path(first.run_dir), {**first.to_dict(), "run_dir": None})
    again = train.resolve_config(config, StandInData())
    assert again.run_dir == first.run_dir
    # Another configuration does not take it over: it gets a new folder (a later stamp, as
    # names made within one second would collide).
    monkeypatch.setattr(train.time, "strftime", lambda fmt: "20991231-235959")
    other = train.resolve_config(
        TrainConfig(model="simple_cnn", data="digits", seed=1), StandInData()
    )
    assert other.run_dir == str(Path("runs") / "simple_cnn-20991231-235959")


@pytest.mark.parametrize("name", [runs.BEST, runs.METRICS])
def test_a_run_is_finished_only_with_both_its_checkpoint_and_metrics(tmp_path, name):
    folder = runs.RunFolder(write_run(tmp_path / "run", CONFIG))
    (folder / name).write_text("{}")
    assert not folder.is_finished()
