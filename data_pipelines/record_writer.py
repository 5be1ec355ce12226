"""Writing TFRecord shards (format: `records`): a loaded ImageData, decoded and resized once."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_pipelines import records
from data_pipelines.data import ImageData, Split
from data_pipelines.errors import DataError
from data_pipelines.pipeline import decoded_images

# Records per shard: 1024 images of 224 px grey are 51 MB, in the 10-100+ MB range the
# tf.data guide gives for reading well; the 4,070 chest X-ray training images make 4
# shards, enough for 4 workers to read their own.
IMAGES_PER_SHARD = 1024


def write_shards(
    data: ImageData,
    out: str | Path,
    *,
    image_size: tuple[int, int],
    pad_to_aspect: bool = False,
    images_per_shard: int = IMAGES_PER_SHARD,
    carved_with: tuple[float, int],
    source: dict | None = None,
    report: Callable[[str], None] = print,
) -> Path:
    """Writes every split of `data` as TFRecord shards in a new folder `out`.

    The folder is written beside `out` under a temporary name and renamed when
    complete: `out` is either absent or whole.

    Args:
        data: from `load_dataset`, its splits complete (train, val, test).
        out: the folder to create; it must not exist, or be empty.
        image_size: `(h, w)` the images are resized to.
        pad_to_aspect: keep the aspect ratio and pad with black instead of stretching.
        images_per_shard: records per shard file.
        carved_with: the `(val_fraction, seed)` that completed the splits; the seed
            also draws each split's record order.
        source: what the data was loaded from (spec, manifest options), kept in
            `dataset.json`.
        report: called with a line per split written.

    Returns:
        `out`.

    Raises:
        DataError: `out` exists and is not empty, or a bad argument.
    """
    out = Path(out).expanduser()
    if images_per_shard < 1:
        raise DataError(
            f"images_per_shard must be at least 1. Received images_per_shard={images_per_shard}"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder: choose a new one")
    if any(split.records is not None for split in data.splits.values()):
        raise DataError("the data is TFRecord shards already")
    size = (int(image_size[0]), int(image_size[1]))
    grey = all(split.all_grey for split in data.splits.values())
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta, table = _write_splits(
            data, tmp, size, pad_to_aspect, grey, images_per_shard, carved_with[1], report
        )
        meta.update(
            format=records.FORMAT,
            version=records.VERSION,
            name=data.name,
            class_names=list(data.class_names),
            fingerprint=data.fingerprint,
            own_splits=list(data.own_splits),
            carved_with=[float(carved_with[0]), int(carved_with[1])],
            source=source or {},
            image_size=list(size),
            channels=1 if grey else 3,
            pad_to_aspect=pad_to_aspect,
            skipped=[list(s) for s in data.skipped],
            written=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        np.savez(tmp / records.TABLE, **table)
        (tmp / records.META).write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_splits(data, folder, size, pad_to_aspect, grey, per_shard, seed, report):
    """Each split's shards into `folder`: `(dataset.json's "splits", table.npz's columns)`."""
    splits_meta, columns, first_id = {}, [], 0
    for name in records.SPLIT_ORDER:
        if name not in data.splits:
            continue
        # A seeded random order: reading the shards in turn already mixes the classes.
        split = data.splits[name]
        split = split.subset(np.random.default_rng(seed).permutation(len(split)))
        started = time.perf_counter()
        hashes = split.content_hashes()
        shards = _write_split(split, hashes, folder, first_id, size, pad_to_aspect, grey, per_shard)
        splits_meta[name] = {"first_id": first_id, "count": len(split), "shards": shards}
        columns.append((split, hashes))
        first_id += len(split)
        plural = "" if len(shards) == 1 else "s"
        report(
            f"wrote {len(split)} {name} images in {len(shards)} shard{plural} "
            f"({time.perf_counter() - started:.0f} s)"
        )
    return {"splits": splits_meta}, _table(columns)


def _write_split(
    split: Split, hashes, folder: Path, first_id, size, pad_to_aspect, grey, per_shard
):
    count = math.ceil(len(split) / per_shard)
    names = [records.shard_name(split.name, i, count) for i in range(count)]
    patients = split.groups.tolist() if split.groups is not None else [""] * len(split)
    sources = split.files or [""] * len(split)
    images = decoded_images(split, image_size=size, pad_to_aspect=pad_to_aspect, grey=grey)
    writer = None
    for i, (image, label) in enumerate(images.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()):
        if i % per_shard == 0:
            if writer is not None:
                writer.close()
            writer = tf.io.TFRecordWriter(str(folder / names[i // per_shard]))
        writer.write(
            records.serialize(image, label, first_id + i, patients[i], hashes[i], sources[i])
        )
    if writer is not None:
        writer.close()
    sizes = [min(per_shard, len(split) - i * per_shard) for i in range(count)]
    return [{"file": n, "count": c} for n, c in zip(names, sizes, strict=True)]


def _table(written: list[tuple[Split, list[str]]]) -> dict[str, np.ndarray]:
    """The columns of table.npz: each record's label, patient, hash and greyness, in id order."""
    splits = [split for split, _ in written]
    table = {
        "labels": np.concatenate([s.labels for s in splits]).astype(np.int64),
        "grey": np.concatenate([s.grey for s in splits]).astype(bool),
        "hashes": np.asarray([h for _, hashes in written for h in hashes], dtype=str),
    }
    if all(s.groups is not None for s in splits):
        table["groups"] = np.concatenate([s.groups for s in splits]).astype(str)
    return table
