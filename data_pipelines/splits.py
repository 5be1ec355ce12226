"""Splitting: patient ids from file names, stratified patient-grouped carving, K-fold.

A patient often has several images; if they land in both train and val, val
measures memory of that patient, not generalisation. So every split here is
grouped by patient where file names identify one, and stratified by class
(the chest X-ray classes are imbalanced about 1 to 2.7).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from data_pipelines.errors import DataError
from data_pipelines.file_index import remembered
from data_pipelines.group_folds import stratified_group_folds

# File names of the public chest X-ray release (Kermany et al. 2018): the prefix
# before the image number names the patient.
PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_"),  # person1000_bacteria_2931.jpeg
    re.compile(r"^(NORMAL2-IM-\d+)-"),  # NORMAL2-IM-0123-0001.jpeg
    re.compile(r"^(IM-\d+)-"),  # IM-0011-0001-0002.jpeg
)

# A val split smaller than this is noise, not a measurement (the public release
# has 16 val images): it is merged back into train and a real one carved.
TINY_SPLIT_IMAGES = 50
TINY_SPLIT_PER_CLASS = 10
# From this many items, grouped folds are kept in the data index (`file_index.remembered`):
# 200,000 images of 100,000 patients take seconds to place, every run and every carve.
REMEMBER_FOLDS_FROM = 20_000
# Bump when the fold assignment changes, so that no remembered folds are reused.
FOLDS_VERSION = 1


def patient_id(path: str | Path) -> str | None:
    """The patient a file name identifies, or None where it names none."""
    name = os.path.basename(os.fspath(path))  # not Path(): called for every file
    for pattern in PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return None


def patient_groups(files: Sequence[str | Path]) -> np.ndarray | None:
    """Group ids for `files`: the patient, else the file itself; None if no patient is known."""
    ids = [patient_id(f) for f in files]
    if all(i is None for i in ids):
        return None
    return np.asarray(
        [i if i is not None else f"file:{f}" for i, f in zip(ids, files, strict=True)]
    )


def is_tiny(labels: np.ndarray, num_classes: int) -> bool:
    """Whether a split is too small to measure anything (see TINY_SPLIT_*)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return len(labels) < TINY_SPLIT_IMAGES or counts.min() < TINY_SPLIT_PER_CLASS


def carve(
    labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into (kept, carved), stratified and grouped by patient.

    With groups, the carved part is one fold of `round(1 / fraction)` stratified
    group folds, so its size is about, not exactly, `fraction`.

    Args:
        labels: class index per item.
        groups: patient id per item, or None where unknown.
        fraction: the share to carve out, in (0, 1).
        seed: the same seed gives the same split.

    Returns:
        Two sorted index arrays.

    Raises:
        DataError: too few items or patients per class to carve such a split.
    """
    labels = np.asarray(labels)
    indices = np.arange(len(labels))
    try:
        if groups is None:
            kept, carved = train_test_split(
                indices, test_size=fraction, stratify=labels, random_state=seed
            )
        else:  # the first of StratifiedGroupKFold's folds (see group_folds)
            k = max(2, round(1 / fraction))
            in_first = group_folds(labels, groups, k, seed) == 0
            kept, carved = indices[~in_first], indices[in_first]
    except ValueError as e:
        raise DataError(
            f"cannot carve a stratified {fraction:.0%} split from {len(labels)} items "
            f"(class counts {np.bincount(labels).tolist()}): {e}"
        ) from e
    return np.sort(kept), np.sort(carved)


def group_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """`group_folds.stratified_group_folds`, remembered between runs for large inputs."""
    if len(labels) < REMEMBER_FOLDS_FROM:
        return stratified_group_folds(labels, groups, k, seed)
    digest = hashlib.sha256(np.asarray(labels, dtype=np.int64).tobytes())
    digest.update("\0".join(map(str, groups)).encode("utf-8", "surrogateescape"))
    key = f"folds:v{FOLDS_VERSION}:k={k}:seed={seed}:n={len(labels)}:{digest.hexdigest()}"
    folds = remembered(
        key, lambda: stratified_group_folds(labels, groups, k, seed).astype(np.int16)
    )
    return folds.astype(np.int64)


def kfold_splits(
    labels: np.ndarray, groups: np.ndarray | None, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K stratified folds, grouped by patient where `groups` is given.

    Args:
        labels: class index per item.
        groups: patient id per item, or None.
        k: number of folds, at least 2.
        seed: the same seed gives the same folds.

    Returns:
        `[(train_idx, val_idx), ...]`, k pairs of sorted index arrays; every item is
        in exactly one val fold.

    Raises:
        DataError: k < 2, or too few items (patients) per class for k folds.
    """
    if not isinstance(k, int) or k < 2:
        raise DataError(f"K-fold needs k >= 2. Received k={k!r}")
    labels = np.asarray(labels)
    indices = np.arange(len(labels))
    try:
        if groups is None:
            folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            return [(np.sort(t), np.sort(v)) for t, v in folds.split(indices, labels)]
        fold = group_folds(labels, groups, k, seed)
        return [(indices[fold != i], indices[fold == i]) for i in range(k)]
    except ValueError as e:
        raise DataError(f"cannot make {k} folds from {len(labels)} items: {e}") from e


def counts_table(labels_by_split: Mapping[str, np.ndarray], class_names: Sequence[str]) -> str:
    """Per-split, per-class counts as a small aligned text table.

    >>> print(counts_table({"train": np.array([0, 1, 1])}, ["a", "b"]))
    split  a  b  total
    train  1  2      3
    """
    header = ["split", *class_names, "total"]
    rows = [header]
    for name, labels in labels_by_split.items():
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
        rows.append([name, *map(str, counts.tolist()), str(len(labels))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines)
