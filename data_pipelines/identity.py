"""Which images are the same file: per-image content hashes, and the overlap of two sets.

A fingerprint (`data.fingerprint_files`) says whether two data sets are the same
as a whole. Content hashes say which images of one set are in another, whatever
their names or folders: a model judged on images it was trained on is not
externally validated, however the folder is called.

Example (splits from `load_dataset`):
    seen = data.splits["train"].content_hashes() + data.splits["val"].content_hashes()
    external = load_dataset(other_folder, whole=True).splits["all"]
    n = overlap(seen, external.content_hashes())
    print(f"{n} of {len(external)} evaluated images were seen in training")
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# 128 bits of sha256: no chance collision among millions of images, half the storage.
HASH_CHARS = 32
_CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes, as `HASH_CHARS` hex characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:HASH_CHARS]


def content_hashes(files: Sequence[str | Path], *, workers: int | None = None) -> list[str]:
    """The content hash of each file, in order (see `file_hash`).

    Args:
        files: paths of files to read (all of each).
        workers: threads reading files (hashlib releases the GIL on large buffers).
    """
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(file_hash, files))


def array_hashes(images: np.ndarray) -> list[str]:
    """The content hash of each image of an array `[n, ...]`: its shape, dtype and bytes."""
    hashes = []
    for image in images:
        image = np.ascontiguousarray(image)
        digest = hashlib.sha256(f"{image.shape}{image.dtype}".encode())
        digest.update(image.data)
        hashes.append(digest.hexdigest()[:HASH_CHARS])
    return hashes


def overlap(reference_hashes: Iterable[str], evaluated_hashes: Iterable[str]) -> int:
    """How many evaluated images are in the reference set (each evaluated image counted).

    Args:
        reference_hashes: hashes of the images a model saw (e.g. train and val).
        evaluated_hashes: hashes of the images it is judged on.

    Returns:
        The number of entries of `evaluated_hashes` found in `reference_hashes`;
        0 means the evaluated images are external to the reference.
    """
    seen = set(reference_hashes)
    return sum(h in seen for h in evaluated_hashes)
