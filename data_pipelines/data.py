"""What `load_dataset` returns: splits of files or arrays, with labels and patient groups."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_pipelines.identity import array_hashes, content_hashes
from data_pipelines.scan import GREY_TOLERANCE
from data_pipelines.splits import counts_table

FINGERPRINT_CHARS = 16


@dataclass(frozen=True, eq=False)
class ShardSet:
    """TFRecord shards of decoded images (written by `tfrecords.write_shards`).

    Every record has an id, 0 to `total - 1`, in the order of the shards; shard i
    holds ids `first_ids[i]` to `first_ids[i] + counts[i] - 1`.

    Attributes:
        root: the folder of the shards.
        files: the shard files, in id order.
        first_ids: the id of each shard's first record.
        counts: records per shard.
        image_size: `(h, w)` every image was resized to.
        channels: 1 (every image grey) or 3.
        pad_to_aspect: whether the resize kept the aspect ratio (black bars).
    """

    root: str
    files: tuple[str, ...]
    first_ids: tuple[int, ...]
    counts: tuple[int, ...]
    image_size: tuple[int, int]
    channels: int
    pad_to_aspect: bool

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    def shards_holding(self, ids: np.ndarray) -> list[int]:
        """The shards (indices into `files`) that hold any of `ids`."""
        shard_of = np.searchsorted(np.asarray(self.first_ids), ids, side="right") - 1
        return sorted(set(shard_of.tolist()))


@dataclass(frozen=True, eq=False)
class Split:
    """One split (train, val or test): image files, an image array, or TFRecord shards.

    Attributes:
        name: "train", "val" or "test".
        class_names: shared by all splits of a dataset.
        labels: int class index per item.
        files: image paths (file-based sources), else None.
        images: uint8 `[n, h, w]` or `[n, h, w, c]` (array-based sources), else None.
        groups: patient id per item where a manifest or the file names identify one,
            else None.
        sizes: `(h, w)` per item, int `[n, 2]`, read from image headers.
        grey: whether each item's content is grey, bool `[n]`; where all are, the
            pipeline carries one channel until the end (a third of the work).
        hashes: each item's content hash where the scan already knows it (from one
            read of each file, or the file index), str `[n]`; else None, and
            `content_hashes` reads the files.
        records: the TFRecord shards the items are in (shard-based sources), else None.
        record_ids: the id of each item in `records`, int `[n]`; read in shard order,
            so a split read unshuffled must have them ascending (`subset` with sorted
            indices keeps them so).

    Example:
        >>> split = Split("train", ("a", "b"), np.array([0, 1, 1]),
        ...               images=np.zeros((3, 8, 8), np.uint8))
        >>> split.counts(), split.min_image_size, len(split.subset([0, 2]))
        ({'a': 1, 'b': 2}, (8, 8), 2)
    """

    name: str
    class_names: tuple[str, ...]
    labels: np.ndarray
    files: list[str] | None = None
    images: np.ndarray | None = None
    groups: np.ndarray | None = None
    sizes: np.ndarray | None = field(default=None, repr=False)
    grey: np.ndarray | None = field(default=None, repr=False)
    hashes: np.ndarray | None = field(default=None, repr=False)
    records: ShardSet | None = field(default=None, repr=False)
    record_ids: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        held = [x is not None for x in (self.files, self.images, self.record_ids)]
        if sum(held) != 1:
            raise ValueError("a Split holds one of files, images or records")
        if (self.records is None) != (self.record_ids is None):
            raise ValueError("a Split of records needs both records and record_ids")
        n = len(next(x for x in (self.files, self.images, self.record_ids) if x is not None))
        if len(self.labels) != n:
            raise ValueError(f"{n} items but {len(self.labels)} labels in split {self.name}")
        if self.sizes is None and self.images is not None:
            size = np.asarray(self.images.shape[1:3], dtype=np.int64)
            object.__setattr__(self, "sizes", np.tile(size, (n, 1)))
        if self.sizes is None and self.records is not None:
            size = np.asarray(self.records.image_size, dtype=np.int64)
            object.__setattr__(self, "sizes", np.tile(size, (n, 1)))
        if self.grey is None and self.images is not None:
            object.__setattr__(self, "grey", _grey_arrays(self.images))

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Class name -> number of items."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}

    @property
    def min_image_size(self) -> tuple[int, int] | None:
        """The smallest `(h, w)` seen (each side on its own), or None for an empty split."""
        if self.sizes is None or len(self.sizes) == 0:
            return None
        h, w = self.sizes.min(axis=0)
        return int(h), int(w)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Split:
        """The items at `indices`, in that order (for K-fold and carving)."""
        indices = np.asarray(indices, dtype=np.int64)
        return Split(
            name=name or self.name,
            class_names=self.class_names,
            labels=self.labels[indices],
            files=[self.files[i] for i in indices] if self.files is not None else None,
            images=self.images[indices] if self.images is not None else None,
            groups=self.groups[indices] if self.groups is not None else None,
            sizes=self.sizes[indices] if self.sizes is not None else None,
            grey=self.grey[indices] if self.grey is not None else None,
            hashes=self.hashes[indices] if self.hashes is not None else None,
            records=self.records,
            record_ids=self.record_ids[indices] if self.record_ids is not None else None,
        )

    def content_hashes(self) -> list[str]:
        """Each item's content hash, in order (see `data_pipelines.identity`).

        Where the scan did not record them, reads every file of a file-based split:
        call it once and keep the result.
        """
        if self.hashes is not None:
            return self.hashes.tolist()
        if self.files is not None:
            return content_hashes(self.files)
        if self.images is None:
            raise ValueError(f"split {self.name} of records has no content hashes")
        return array_hashes(self.images)

    @property
    def all_grey(self) -> bool:
        """Whether every item is known to be grey."""
        return self.grey is not None and len(self.grey) > 0 and bool(self.grey.all())


def _grey_arrays(images: np.ndarray) -> np.ndarray:
    """Per image: one channel, or channels equal (see scan.GREY_TOLERANCE)."""
    if images.ndim == 3 or images.shape[-1] == 1:
        return np.ones(len(images), dtype=bool)
    rgb = images[..., :3].astype(np.int16)
    spread = np.abs(rgb[..., 1:] - rgb[..., :1]).reshape(len(images), -1).max(axis=1, initial=0)
    return spread <= GREY_TOLERANCE


@dataclass(frozen=True, eq=False)
class ImageData:
    """A loaded data source: class names, the three splits, and where it came from.

    Attributes:
        name: e.g. "digits", "chest_xray_224", "tfds:mnist".
        class_names: class index -> name.
        splits: "train", "val" and "test", always all three (or "all" alone, from
            `load_dataset(spec, whole=True)`).
        fingerprint: short hex digest of the data (files and sizes, or array bytes).
        native_size: the typical `(h, w)` of the source's images.
        skipped: `(file, reason)` for each unreadable image file (or bad manifest row)
            left out.
        ignored: files left out because they are not images (`.DS_Store`, ...).
        own_splits: the splits the source itself has, in order (e.g. `("train",
            "test")` for a folder with train/ and test/); empty for one pool of
            images (a folder of class folders, digits), where all were carved.
        carved_with: `(val_fraction, seed)` where the splits were completed before
            loading and are kept as they are (TFRecord shards); else None, and
            `load_dataset` completes them with its own arguments.
    """

    name: str
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    fingerprint: str
    native_size: tuple[int, int] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    own_splits: tuple[str, ...] = ()
    carved_with: tuple[float, int] | None = None

    @property
    def has_splits(self) -> bool:
        """Whether the source came split; if not, judge external data with `whole=True`."""
        return bool(self.own_splits)

    def split_note(self, name: str, val_fraction: float, seed: int) -> str:
        """How split `name` was made, and whether its patients are apart from the others'.

        Args:
            name: a key of `splits`.
            val_fraction, seed: what carved the splits the source did not have
                (`carved_with` instead, where the data has it).
        """
        if self.carved_with is not None:
            val_fraction, seed = self.carved_with
        if name == "all":
            return f"every image of {self.name}: train, val and test together"
        if name in self.own_splits and name != "val":
            how = f"the source's own {name} split"
        else:
            how = (
                f"{name}, carved from the source's training images by keras_app "
                f"(fraction {val_fraction}, seed {seed}; stratified, grouped by patient where "
                "a manifest or the file names identify one)"
            )
        judged = self.splits[name].groups
        if judged is None:
            return how + "; patients unknown (no patient ids in a manifest or the file names)"
        others = {
            g
            for k, s in self.splits.items()
            if k != name and s.groups is not None
            for g in s.groups
        }
        shared = len(set(judged) & others)
        return how + (
            f"; patient-disjoint: none of its {len(set(judged))} patients is in the other splits"
            if not shared
            else f"; {shared} of its {len(set(judged))} patients also appear in the other splits"
        )

    def summary(self) -> str:
        """A header line and the per-split, per-class counts table, to print at start."""
        head = f"data {self.name} (fingerprint {self.fingerprint}"
        if self.skipped:
            head += f", {len(self.skipped)} unreadable files skipped"
        if self.ignored:
            head += f", {len(self.ignored)} non-image files ignored"
        head += ")"
        table = counts_table({k: s.labels for k, s in self.splits.items()}, self.class_names)
        return f"{head}\n{table}"


def fingerprint_files(
    root: str | Path, files: Sequence[str], byte_sizes: Sequence[int] | None = None
) -> str:
    """sha256 over the sorted relative paths and byte sizes of `files`, short hex.

    Args:
        root: the folder the paths are taken relative to.
        files: paths under `root`.
        byte_sizes: each file's size where the caller has it (from the scan);
            else each file is asked (one stat each).
    """
    root = Path(root)
    if byte_sizes is None:
        byte_sizes = [os.path.getsize(f) for f in files]
    prefix = str(root).rstrip("/") + "/"
    rows = sorted(
        (f[len(prefix) :] if f.startswith(prefix) else Path(f).relative_to(root).as_posix(), n)
        for f, n in zip(files, byte_sizes, strict=True)
    )
    digest = hashlib.sha256()
    digest.update("".join(f"{rel}\t{int(n)}\n" for rel, n in rows).encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def fingerprint_rows(
    base: str | Path, files: Sequence[str], byte_sizes: Sequence[int], labels: Sequence[str]
) -> str:
    """sha256 over the sorted paths (relative to `base` where under it), byte sizes and
    label names of a manifest's files, short hex: the same files with other labels (another
    task of the same table) are other data."""
    prefix = str(base).rstrip("/") + "/"
    rows = sorted(
        f"{f[len(prefix) :] if f.startswith(prefix) else f}\t{int(n)}\t{label}\n"
        for f, n, label in zip(files, byte_sizes, labels, strict=True)
    )
    return hashlib.sha256("".join(rows).encode("utf-8", "surrogateescape")).hexdigest()[
        :FINGERPRINT_CHARS
    ]


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """sha256 over the shapes, dtypes and bytes of `arrays`, short hex."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.data)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def typical_size(sizes: np.ndarray) -> tuple[int, int] | None:
    """The most common `(h, w)` in `sizes`, or None if there are none."""
    if len(sizes) == 0:
        return None
    unique, counts = np.unique(sizes, axis=0, return_counts=True)
    h, w = unique[np.argmax(counts)]
    return int(h), int(w)
