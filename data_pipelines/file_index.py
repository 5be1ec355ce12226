"""The file index: what the scan learned about each image file, kept between runs.

Checking a file (is it an image tf.io can decode, its size, whether it is grey,
its content hash for `training_images.sha256`) means reading and decoding it:
0.3 ms or more a file, a minute at 200,000 files. The index keeps those facts
so that a second run checks only what changed.

- Where: one file per data root, `$KERAS_HOME/data_index/<name>-<hash>.npz`, where
  `<hash>` is taken from the root's resolved path (and the kind of source), so two
  roots never share an index, and a test's temporary KERAS_HOME has its own.
- Key: a file's facts are reused while its path, byte size and modification time
  (ns) are those recorded; a changed or new file is checked again, a deleted one
  dropped at the next write.
- Writes: the whole index, to a temporary file beside it, then `os.replace`: a
  reader sees the old index or the new one, never half of one. Two processes that
  scan the same root at once each write a complete index; the last one stays.
- A missing, unreadable or older-version index is read as empty: the worst a bad
  index can cost is one full scan. Delete the folder to forget everything.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_pipelines.identity import HASH_CHARS
from data_pipelines.medmnist import keras_home

# Bump when what a check decides changes (formats read, the grey rule, hash length):
# indexes of another version are then ignored, and every file is checked again.
INDEX_VERSION = 1
INDEX_DIR = "data_index"


@dataclass(frozen=True, eq=False)
class FileFacts:
    """What checking files found, one row per file (columns as NumPy arrays).

    Attributes:
        paths: the files, as given.
        byte_size: bytes of each file when it was checked.
        mtime_ns: its modification time then, in ns.
        height, width: image size from the header; 0 for an unreadable file.
        grey: whether the content is grey (see `scan.GREY_TOLERANCE`).
        digest: sha256 content hash, `identity.HASH_CHARS` hex characters.
        reasons: row -> why the file is not a usable image; absent rows are usable.
    """

    paths: list[str]
    byte_size: np.ndarray
    mtime_ns: np.ndarray
    height: np.ndarray
    width: np.ndarray
    grey: np.ndarray
    digest: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: np.ndarray) -> FileFacts:
        """The facts of `rows`, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        where = {int(r): i for i, r in enumerate(rows)} if self.reasons else {}
        return FileFacts(
            [self.paths[r] for r in rows],
            self.byte_size[rows],
            self.mtime_ns[rows],
            self.height[rows],
            self.width[rows],
            self.grey[rows],
            self.digest[rows],
            {where[r]: why for r, why in self.reasons.items() if r in where},
        )

    @staticmethod
    def empty() -> FileFacts:
        ints = np.zeros(0, dtype=np.int64)
        return FileFacts([], ints, ints, ints, ints, np.zeros(0, bool), _digests([]))


def concat_facts(parts: list[FileFacts]) -> FileFacts:
    """The rows of `parts`, one after the other."""
    reasons, start = {}, 0
    for part in parts:
        reasons.update({start + r: why for r, why in part.reasons.items()})
        start += len(part)
    parts = [FileFacts.empty(), *parts]
    return FileFacts(
        [p for part in parts for p in part.paths],
        *(
            np.concatenate([getattr(part, name) for part in parts])
            for name in ("byte_size", "mtime_ns", "height", "width", "grey", "digest")
        ),
        reasons,
    )


def _digests(values) -> np.ndarray:
    return np.asarray(values, dtype=f"U{HASH_CHARS}")


def index_path(key: str) -> Path:
    """The index file of a data root; `key` names the root and its kind of source.

    Example: `index_path("folder:/data/chest_xray")` is
    `$KERAS_HOME/data_index/chest_xray-<16 hex>.npz`.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(key.partition(":")[2] or key).name)[:40]
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return keras_home() / INDEX_DIR / f"{name or 'data'}-{digest}.npz"


def load_index(key: str) -> FileFacts:
    """The facts kept for `key`; empty where there is no usable index."""
    path = index_path(key)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if int(npz["version"]) != INDEX_VERSION:
                return FileFacts.empty()
            bad = npz["bad_rows"].tolist()
            return FileFacts(
                [os.fsdecode(p) for p in npz["paths"].tolist()],
                npz["byte_size"],
                npz["mtime_ns"],
                npz["height"],
                npz["width"],
                npz["grey"],
                npz["digest"].astype(f"U{HASH_CHARS}"),
                dict(zip(bad, npz["bad_reasons"].tolist(), strict=True)),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, cut, foreign
        return FileFacts.empty()


def save_index(key: str, facts: FileFacts) -> Path:
    """Writes `facts` as the index of `key`, atomically (see the module docstring)."""
    path = index_path(key)
    bad = sorted(facts.reasons)
    _write_atomic(
        path,
        lambda f: np.savez(
            f,
            version=np.int64(INDEX_VERSION),
            paths=np.asarray([os.fsencode(p) for p in facts.paths], dtype=bytes),
            byte_size=facts.byte_size.astype(np.int64),
            mtime_ns=facts.mtime_ns.astype(np.int64),
            height=facts.height.astype(np.int32),
            width=facts.width.astype(np.int32),
            grey=facts.grey.astype(bool),
            digest=facts.digest.astype(f"S{HASH_CHARS}"),
            bad_rows=np.asarray(bad, dtype=np.int64),
            bad_reasons=np.asarray([facts.reasons[r] for r in bad], dtype=str),
        ),
    )
    return path


def remembered(key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`compute()`, kept in the data index folder under `key` and read back next time.

    For results that are pure functions of the data (a carve's folds): `key` must
    name everything they depend on. Written atomically; an unreadable copy is
    computed again, and one that cannot be written is not kept.
    """
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    path = keras_home() / INDEX_DIR / "remembered" / f"{digest}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        pass
    result = np.asarray(compute())
    try:
        _write_atomic(path, lambda f: np.save(f, result, allow_pickle=False))
    except OSError:  # a read-only or full KERAS_HOME: computed again next time
        pass
    return result


def _write_atomic(path: Path, write: Callable) -> None:
    """`write(file)` into a temporary file beside `path`, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def known_rows(index: FileFacts, paths: list[str], byte_size, mtime_ns) -> np.ndarray:
    """For each of `paths`, its row in `index` if its size and time are as recorded, else -1."""
    where = {p: i for i, p in enumerate(index.paths)}
    rows = np.fromiter((where.get(p, -1) for p in paths), dtype=np.int64, count=len(paths))
    found = rows >= 0
    same = np.zeros(len(paths), dtype=bool)
    same[found] = (index.byte_size[rows[found]] == np.asarray(byte_size)[found]) & (
        index.mtime_ns[rows[found]] == np.asarray(mtime_ns)[found]
    )
    return np.where(same, rows, -1)
