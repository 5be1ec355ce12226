"""TFRecord shards of decoded images: the format, and reading them (`--data tfrecord:OUT`).

Large or remote data trains faster from a few hundred files of decoded, resized
pixels than from 200,000 small encoded ones: no per-file open, no JPEG decode,
no resize, reads in large sequential blocks, and under multi-worker training
tf.data's automatic sharding gives each worker its own shard files. They are
written by `python -m data_pipelines.shard SPEC OUT` (`record_writer`).

A shard folder holds:

    dataset.json   what `load_dataset` needs: name, class names, the source's
                   fingerprint, splits (record ids and shard files), image size,
                   channels, how the splits were carved, skipped files
    table.npz      per record, in id order: label, patient, content hash, grey
    train-00000-of-00004.tfrecord, ..., val-..., test-...

Each record is a tf.train.Example: `image` (raw uint8 bytes, `h * w * c`),
`label` (int64), `id` (int64), `patient`, `hash` and `file` (bytes; the source
file's path). Records of a split are in a seeded random order, so that reading
shards in turn already mixes the classes.

The splits are those written (the writer's val fraction and seed, kept in
`ImageData.carved_with`), so a run on the shards judges on the very test images
a run on the source with that seed would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_pipelines.data import ImageData, ShardSet, Split
from data_pipelines.errors import DataError
from data_pipelines.manifest import ManifestOptions

FORMAT = "keras-app-tfrecord-shards"
VERSION = 1
META = "dataset.json"
TABLE = "table.npz"
SPLIT_ORDER = ("train", "val", "test")
# Shards read at once while training: enough to mix records of several shards and to
# keep the disk busy, few enough that each is read in long runs.
INTERLEAVE = 8

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "id": tf.io.FixedLenFeature([], tf.int64),
}


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00008.tfrecord`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def serialize(image: np.ndarray, label: int, record_id: int, patient: str, digest: str, file: str):
    """One record as the bytes of a tf.train.Example (see the module docstring)."""

    def raw(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def integer(value: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    features = {
        "image": raw(np.ascontiguousarray(image, dtype=np.uint8).tobytes()),
        "label": integer(label),
        "id": integer(record_id),
        "patient": raw(patient.encode()),
        "hash": raw(digest.encode()),
        "file": raw(os.fsencode(file)),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def read_shards(out: str | Path, *, manifest: ManifestOptions | None = None) -> ImageData:
    """The ImageData of a shard folder: its splits as written, read from TFRecords.

    Args:
        out: the shard folder.
        manifest: the manifest options the caller means; where given (not the
            defaults), they must be those the shards were written with.

    Raises:
        DataError: no shard folder at `out`, one of another format or version, or
            shards of another manifest task than `manifest` says.
    """
    out = Path(out).expanduser()
    try:
        meta = json.loads((out / META).read_text())
    except (OSError, ValueError) as e:
        raise DataError(
            f"no TFRecord shards at {out} (no readable {META}; write them with "
            f"`python -m data_pipelines.shard SPEC {out}`). Received data='tfrecord:{out}'"
        ) from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise DataError(
            f"{out} holds shards of format {meta.get('format')!r} version {meta.get('version')!r}; "
            f"this version reads {FORMAT!r} version {VERSION}: write them again"
        )
    _check_task(out, meta, manifest)
    with np.load(out / TABLE, allow_pickle=False) as table:
        columns = {k: table[k] for k in table.files}
    shards = _shard_set(out, meta)
    class_names = tuple(meta["class_names"])
    splits = {}
    for name in SPLIT_ORDER:
        info = meta["splits"].get(name)
        if info is None:
            continue
        ids = np.arange(info["first_id"], info["first_id"] + info["count"], dtype=np.int64)
        splits[name] = Split(
            name,
            class_names,
            columns["labels"][ids],
            groups=columns["groups"][ids] if "groups" in columns else None,
            grey=columns["grey"][ids],
            hashes=columns["hashes"][ids],
            records=shards,
            record_ids=ids,
        )
    return ImageData(
        meta["name"],
        class_names,
        splits,
        meta["fingerprint"],
        tuple(shards.image_size),
        [tuple(s) for s in meta.get("skipped", [])],
        [],
        own_splits=tuple(meta.get("own_splits", ())),
        carved_with=tuple(meta["carved_with"]),
    )


def _check_task(out: Path, meta: dict, manifest: ManifestOptions | None) -> None:
    """Options given for shards must be those they were written with (a run's --label)."""
    if manifest is None or manifest.is_default:
        return
    written = ManifestOptions(**meta.get("source", {}).get("manifest", {}))
    if written != manifest:
        raise DataError(
            f"the shards at {out} were written with {written}; write shards for another task. "
            f"Received {manifest}"
        )


def _shard_set(out: Path, meta: dict) -> ShardSet:
    files, first_ids, counts = [], [], []
    for name in SPLIT_ORDER:
        info = meta["splits"].get(name)
        start = info["first_id"] if info else 0
        for shard in info["shards"] if info else []:
            files.append(shard["file"])
            first_ids.append(start)
            counts.append(shard["count"])
            start += shard["count"]
    return ShardSet(
        root=str(out),
        files=tuple(files),
        first_ids=tuple(first_ids),
        counts=tuple(counts),
        image_size=tuple(meta["image_size"]),
        channels=int(meta["channels"]),
        pad_to_aspect=bool(meta["pad_to_aspect"]),
    )


def read_records(split: Split, *, shuffle: bool, seed: int | None) -> tf.data.Dataset:
    """`(uint8 [h, w, c], int32 label)` of each item of a split of records.

    Unshuffled, shards are read one after the other, so items come in id order
    (the split's order where its ids ascend). Shuffled, the shard order is drawn
    anew each epoch and `INTERLEAVE` shards are read at once. Either way the
    source is a list of files feeding TFRecordDataset, the pattern tf.data's
    automatic sharding (policy AUTO or FILE) splits among workers by file.

    Raises:
        DataError: an unshuffled read of a split whose ids do not ascend.
    """
    shards, ids = split.records, split.record_ids
    if not shuffle and np.any(np.diff(ids) <= 0):
        raise DataError(
            f"split {split.name!r} of TFRecord shards is read in shard order, so its items "
            "must be in id order (take subsets with sorted indices)"
        )
    which = shards.shards_holding(ids)
    files = [os.path.join(shards.root, shards.files[i]) for i in which]
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(INTERLEAVE, len(files)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=seed is not None,
        )
    else:
        dataset = dataset.flat_map(tf.data.TFRecordDataset)
    dataset = dataset.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
    if sum(shards.counts[i] for i in which) != len(ids):  # a part of the shards: keep its ids
        wanted = np.zeros(shards.total, dtype=bool)
        wanted[ids] = True
        keep = tf.constant(wanted)
        dataset = dataset.filter(lambda record: tf.gather(keep, record["id"]))
    # A known length, as a folder's pipeline has: Keras then counts steps, and does not warn
    # that the input "ran out of data" at the end of the first epoch. Sharding among workers
    # drops the assertion (each worker's share is shorter).
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(ids)))
    shape = [*shards.image_size, shards.channels]

    def decode(record):
        image = tf.reshape(tf.io.decode_raw(record["image"], tf.uint8), shape)
        return image, tf.cast(record["label"], tf.int32)

    return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _parse(serialized):
    return tf.io.parse_single_example(serialized, FEATURES)
