"""keras_app/distributed.py without a cluster: the agreement check, the lost-peer line, dispatch.

The loop itself runs across two processes in test_train_distributed.py.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import tensorflow as tf

from keras_app.core.cli import run_cli
from keras_app.core.errors import WorkerLostError
from keras_app.training import distributed

FIELDS = {"batch_size": 32, "model": "simple_cnn", "data fingerprint": "0131f3a3"}


def test_equal_rows_have_no_differences():
    row = distributed.fields_row(FIELDS)
    assert distributed.differences(np.stack([row, row]), FIELDS) is None


def test_differences_name_the_worker_and_the_field():
    other = distributed.fields_row({**FIELDS, "batch_size": 16})
    rows = np.stack([distributed.fields_row(FIELDS), other, other, other])
    # Two replicas per worker: replicas 2 and 3 are worker 1's, replica 1 is the chief's own.
    assert distributed.differences(rows[[0, 0, 2, 3]], FIELDS, 2) == "worker 1: batch_size"
    assert distributed.differences(rows, FIELDS) == (
        "worker 1: batch_size; worker 2: batch_size; worker 3: batch_size"
    )


def test_another_field_list_is_named():
    rows = np.stack([distributed.fields_row(FIELDS), distributed.fields_row({**FIELDS, "x": 1})])
    assert distributed.differences(rows, FIELDS).startswith("worker 1: the field list")


def test_too_many_fields_are_refused():
    with pytest.raises(ValueError, match="Received 64"):
        distributed.fields_row({str(i): i for i in range(64)})


def test_a_lost_peer_is_one_line_and_exit_75(capsys):
    def main(argv):
        with distributed.peers_answering():
            raise tf.errors.UnavailableError(None, None, "Collective ops is aborted by:\nreset")

    assert run_cli(main, []) == 75
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "another worker stopped answering" in err and "resume from the last" in err


def test_single_machine_runs_keep_tensorflow_errors():
    runtime = types.SimpleNamespace(strategy_name="none")
    with pytest.raises(tf.errors.UnavailableError), distributed.lost_peers_reported(runtime):
        raise tf.errors.UnavailableError(None, None, "a local failure")
    runtime = types.SimpleNamespace(strategy_name="multiworker")
    with pytest.raises(WorkerLostError), distributed.lost_peers_reported(runtime):
        raise tf.errors.UnavailableError(None, None, "heartbeats stopped")


def test_other_errors_pass_through():
    with pytest.raises(tf.errors.ResourceExhaustedError), distributed.peers_answering():
        raise tf.errors.ResourceExhaustedError(None, None, "out of memory")
    assert issubclass(WorkerLostError, RuntimeError)


def test_single_machine_strategies_keep_fit():
    model = types.SimpleNamespace(fit=object())
    for name in ("none", "mirrored"):
        runtime = types.SimpleNamespace(strategy_name=name)
        assert distributed.fit_function(model, runtime) is model.fit
    runtime = types.SimpleNamespace(strategy_name="multiworker", strategy=None)
    assert distributed.fit_function(model, runtime).func is distributed.fit


def test_the_collective_timeout_must_be_positive(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="Received 'soon'"):
        distributed.make_strategy()


def test_shards_are_split_by_file_only_where_an_epoch_counts_steps(tmp_path):
    from data_pipelines import load_dataset
    from data_pipelines.record_writer import write_shards
    from keras_app.training.sharding import shard_by_file, worker_count
    from tests.makers import write_layout

    counts = {"train": {"A": 12, "B": 12}, "val": {"A": 4, "B": 4}, "test": {"A": 4, "B": 4}}
    folder = write_layout(tmp_path / "data", counts, size=(12, 12))
    out = write_shards(
        load_dataset(str(folder), seed=1, report=lambda line: None),
        tmp_path / "shards",
        image_size=(8, 8),
        images_per_shard=8,
        carved_with=(0.1, 1),
        report=lambda line: None,
    )
    records = load_dataset(f"tfrecord:{out}", seed=1, report=lambda line: None)
    train, files = records.splits["train"], load_dataset(str(folder), seed=1).splits["train"]
    shards = len(train.records.shards_holding(train.record_ids))
    assert shards >= 3
    assert shard_by_file(train, 4, 2) == (
        True,
        f"multiworker: each worker reads its own share of the {shards} train shards "
        "(2 workers; tf.data FILE sharding, 4 steps an epoch)",
    )
    by_file, line = shard_by_file(train, None, 2)
    assert not by_file and "give --steps-per-epoch" in line
    by_file, line = shard_by_file(train, 4, shards + 1)
    assert not by_file and f"{shards} train shard(s) for {shards + 1} workers" in line
    assert shard_by_file(files, 4, 2) == (False, "")  # image files: DATA, nothing to say
    assert shard_by_file(train, 4, 1) == (False, "")
    assert worker_count(tf.distribute.get_strategy()) == 1
