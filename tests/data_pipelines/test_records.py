"""TFRecord shards: written once, read back as the same data, split by file across workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import DataError, ManifestOptions, load_dataset, make_dataset
from data_pipelines.record_writer import write_shards
from tests.makers import write_chestxray14, write_layout


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A folder source (patients in the names) and its shards, 2 records per shard."""
    tmp = tmp_path_factory.mktemp("shards")
    counts = {"train": {"A": 30, "B": 30}, "val": {"A": 12, "B": 12}, "test": {"A": 8, "B": 8}}
    folder = write_layout(tmp / "data", counts, patients=True, size=(20, 24))
    data = load_dataset(str(folder), seed=3, report=lambda line: None)
    lines = []
    out = write_shards(
        data,
        tmp / "shards",
        image_size=(16, 16),
        images_per_shard=8,
        carved_with=(0.1, 3),
        source={"spec": str(folder)},
        report=lines.append,
    )
    return data, out, lines


def pixels(split, **kwargs):
    dataset = make_dataset(
        split, image_size=(16, 16), batch_size=8, training=False, num_classes=2, **kwargs
    )
    return np.concatenate([x.numpy() for x, _ in dataset])


def test_the_shards_are_the_same_data(written):
    data, out, lines = written
    n = len(data.splits["train"])  # 74: the tiny val was merged and carved again
    assert lines[0].startswith(f"wrote {n} train images in {-(-n // 8)} shards")
    shards = load_dataset(f"tfrecord:{out}", seed=3, report=lambda line: None)
    assert shards.fingerprint == data.fingerprint and shards.class_names == data.class_names
    assert shards.native_size == (16, 16) and shards.carved_with == (0.1, 3)
    assert shards.own_splits == data.own_splits
    for name, split in data.splits.items():
        ours = shards.splits[name]
        assert ours.records is not None and ours.all_grey
        by_hash = dict(zip(split.content_hashes(), split.labels.tolist(), strict=True))
        assert sorted(by_hash) == sorted(ours.content_hashes())
        assert [by_hash[h] for h in ours.content_hashes()] == ours.labels.tolist()
        assert sorted(ours.groups) == sorted(split.groups)
    # Pixels: as the folder pipeline makes them, item for item (matched by content hash).
    test = data.splits["test"]
    folder = dict(zip(test.content_hashes(), pixels(test), strict=True))
    read = pixels(shards.splits["test"])
    for digest, image in zip(shards.splits["test"].content_hashes(), read, strict=True):
        np.testing.assert_array_equal(image, folder[digest])


def test_training_reads_every_record_once_an_epoch_in_mixed_order(written):
    _, out, _ = written
    split = load_dataset(f"tfrecord:{out}", seed=3).splits["train"]
    dataset = make_dataset(
        split, image_size=(16, 16), batch_size=60, training=True, num_classes=2, cache=False
    )
    epochs = [next(iter(dataset))[0].numpy() for _ in range(2)]
    for images in epochs:
        assert len(images) == 60  # one batch of 60 of the 74
        assert len({im.tobytes() for im in images}) == 60
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled


def test_subsets_whole_and_carves_read_only_their_records(written):
    _, out, _ = written
    data = load_dataset(f"tfrecord:{out}", seed=3)
    whole = load_dataset(f"tfrecord:{out}", whole=True).splits["all"]
    assert len(whole) == 100 and np.all(np.diff(whole.record_ids) > 0)  # train, val, test
    part = data.splits["train"].subset([1, 4, 9, 10])
    # Its length is known, as a folder's is (Keras counts steps, no "ran out of data").
    common = dict(image_size=(16, 16), batch_size=3, num_classes=2)
    assert make_dataset(part, training=False, **common).cardinality() == 2
    assert make_dataset(part, training=True, cache=False, **common).cardinality() == 2
    images = pixels(part)
    full = pixels(data.splits["train"])
    np.testing.assert_array_equal(images, full[[1, 4, 9, 10]])
    with pytest.raises(DataError, match="must be in id order"):
        pixels(data.splits["train"].subset([4, 1]))
    with pytest.raises(DataError, match="stretched.*Received pad_to_aspect=True"):
        pixels(part, pad_to_aspect=True)


def test_other_seed_keeps_the_written_splits_and_says_so(written):
    _, out, _ = written
    lines = []
    data = load_dataset(f"tfrecord:{out}", seed=7, report=lines.append)
    written_with = load_dataset(f"tfrecord:{out}", seed=3)
    assert [len(s) for s in data.splits.values()] == [74, 10, 16]
    for name, split in data.splits.items():
        np.testing.assert_array_equal(split.record_ids, written_with.splits[name].record_ids)
    assert "seed 3 are kept" in lines[0]
    assert "fraction 0.1, seed 3" in data.split_note("val", 0.2, 7)


def test_auto_sharding_gives_each_worker_its_own_files(written):
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    _, out, _ = written
    split = load_dataset(f"tfrecord:{out}").splits["train"]
    dataset = make_dataset(
        split, image_size=(16, 16), batch_size=4, training=True, num_classes=2, cache=False
    )
    per_worker = []
    for index in (0, 1):
        shard = _AutoShardDataset(dataset, num_workers=2, index=index)
        grey = (x.numpy()[..., 0].astype(np.uint8) for x, _ in shard)  # stored: one channel
        per_worker.append({image.tobytes() for batch in grey for image in batch})
    assert not per_worker[0] & per_worker[1]
    assert len(per_worker[0] | per_worker[1]) == len(split)
    # By file, not by element: each worker has all of the records of its files.
    for path in sorted(out.glob("train-*.tfrecord")):
        stored = {
            tf.train.Example.FromString(record).features.feature["image"].bytes_list.value[0]
            for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
        }
        assert stored <= per_worker[0] or stored <= per_worker[1]


def test_bad_folders_and_tasks(written, tmp_path):
    data, out, _ = written
    with pytest.raises(DataError, match="not an empty folder"):
        write_shards(data, out, image_size=(8, 8), carved_with=(0.1, 3))
    with pytest.raises(DataError, match="no TFRecord shards at .*python -m data_pipelines.shard"):
        load_dataset(f"tfrecord:{tmp_path}")
    meta = json.loads((out / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(DataError, match="version 99"):
        load_dataset(f"tfrecord:{tmp_path}")


def test_shards_of_a_manifest_task_take_that_task_only(tmp_path):
    manifest = write_chestxray14(tmp_path / "nih", n_patients=20)
    options = ManifestOptions(label="Pneumonia")
    data = load_dataset(str(manifest), manifest=options, report=lambda line: None)
    out = write_shards(
        data,
        tmp_path / "shards",
        image_size=(16, 16),
        carved_with=(0.1, 42),
        source={"spec": str(manifest), "manifest": {"label": "Pneumonia"}},
    )
    again = load_dataset(f"tfrecord:{out}", manifest=options)
    assert again.fingerprint == data.fingerprint and again.class_names[1] == "Pneumonia"
    assert load_dataset(f"tfrecord:{out}").fingerprint == data.fingerprint
    with pytest.raises(DataError, match="written with.*label='Pneumonia'.*label='Effusion'"):
        load_dataset(f"tfrecord:{out}", manifest=ManifestOptions(label="Effusion"))
