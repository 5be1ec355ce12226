"""Split and ImageData: counts, subsets, sizes, fingerprints, the summary."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import ImageData, Split
from data_pipelines.data import fingerprint_arrays, fingerprint_files, typical_size


def file_split():
    return Split(
        "train",
        ("a", "b"),
        np.array([0, 1, 1]),
        files=["x/1.png", "x/2.png", "y/3.png"],
        groups=np.array(["p1", "p2", "p2"]),
        sizes=np.array([[10, 20], [30, 5], [8, 8]]),
    )


def test_counts_and_len():
    split = file_split()
    assert len(split) == 3 and split.counts() == {"a": 1, "b": 2}


def test_min_image_size_is_per_side():
    assert file_split().min_image_size == (8, 5)


def test_subset_keeps_everything_aligned():
    sub = file_split().subset([2, 0], name="val")
    assert sub.name == "val" and sub.files == ["y/3.png", "x/1.png"]
    assert sub.labels.tolist() == [1, 0] and sub.groups.tolist() == ["p2", "p1"]
    assert sub.sizes.tolist() == [[8, 8], [10, 20]]


def test_array_split_sizes_come_from_the_array():
    split = Split("test", ("a", "b"), np.array([0, 1]), images=np.zeros((2, 6, 7), np.uint8))
    assert split.min_image_size == (6, 7) and split.files is None
    assert split.subset([1]).images.shape == (1, 6, 7)


def test_split_must_hold_files_images_or_records_and_matching_labels():
    with pytest.raises(ValueError, match="one of files, images or records"):
        Split("train", ("a",), np.array([0]))
    with pytest.raises(ValueError, match="labels"):
        Split("train", ("a",), np.array([0, 0]), files=["one.png"])


def test_summary():
    split = file_split()
    data = ImageData(
        "demo",
        ("a", "b"),
        {"train": split, "val": split, "test": split},
        "abc123",
        (8, 8),
        [("bad.png", "zero-byte file")],
    )
    lines = data.summary().splitlines()
    assert lines[0] == "data demo (fingerprint abc123, 1 unreadable files skipped)"
    assert lines[1].split() == ["split", "a", "b", "total"]
    assert lines[2].split() == ["train", "1", "2", "3"]


def test_fingerprints(tmp_path):
    (tmp_path / "a").mkdir()
    for name, content in (("a/1.png", b"x"), ("a/2.png", b"yy")):
        (tmp_path / name).write_bytes(content)
    files = [str(tmp_path / "a/2.png"), str(tmp_path / "a/1.png")]
    first = fingerprint_files(tmp_path, files)
    assert first == fingerprint_files(tmp_path, files[::-1])  # order does not matter
    (tmp_path / "a/1.png").write_bytes(b"xxx")
    assert fingerprint_files(tmp_path, files) != first
    a = np.zeros((2, 3), np.uint8)
    assert fingerprint_arrays(a) == fingerprint_arrays(a.copy())
    assert fingerprint_arrays(a) != fingerprint_arrays(a.reshape(3, 2))


def test_typical_size():
    assert typical_size(np.array([[2, 3], [4, 5], [4, 5]])) == (4, 5)
    assert typical_size(np.zeros((0, 2))) is None
