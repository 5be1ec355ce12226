"""python -m data_pipelines.shard: writes shards that load, refuses a used folder in one line."""

from __future__ import annotations

import json

from data_pipelines import load_dataset
from data_pipelines.shard import cli
from tests.makers import write_chexpert, write_layout


def test_shard_a_folder_then_refuse_to_overwrite_it(tmp_path, capsys):
    counts = {"": {"A": 20, "B": 20}}
    folder = write_layout(tmp_path / "data", counts, patients=True, size=(12, 12))
    out = tmp_path / "shards"
    assert cli([str(folder), str(out), "--images-per-shard", "16", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert f"train from them with --data tfrecord:{out}" in printed
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["image_size"] == [12, 12] and meta["carved_with"] == [0.1, 5]
    data = load_dataset(f"tfrecord:{out}", seed=5)
    assert sum(len(s) for s in data.splits.values()) == 40
    assert cli([str(folder), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not an empty folder" in err and err.count("\n") == 1


def test_shard_a_manifest_task(tmp_path, capsys):
    manifest = write_chexpert(tmp_path)
    out = tmp_path / "shards"
    argv = [f"csv:{manifest}", str(out), "--label", "Pneumonia", "--uncertain", "ones"]
    assert cli([*argv, "--image-size", "8"]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source"]["manifest"]["uncertain"] == "ones"
    assert meta["class_names"] == ["no Pneumonia", "Pneumonia"] and meta["image_size"] == [8, 8]
    assert cli([f"csv:{manifest}", str(tmp_path / "other")]) == 2
    assert "choose the binary task" in capsys.readouterr().err
