"""Content hashes find the same image under another name; overlap counts evaluated images seen."""

from __future__ import annotations

import shutil

import numpy as np

from data_pipelines import content_hashes, load_dataset, overlap
from data_pipelines.data import Split
from data_pipelines.identity import HASH_CHARS, array_hashes, file_hash
from tests.makers import grey_pixels, write_image, write_layout


def test_same_bytes_same_hash_whatever_the_name(tmp_path):
    a = write_image(tmp_path / "a.png", grey_pixels(seed=1))
    (tmp_path / "elsewhere").mkdir()
    copy = shutil.copy(a, tmp_path / "elsewhere" / "renamed.png")
    other = write_image(tmp_path / "b.png", grey_pixels(seed=2))
    hashes = content_hashes([a, copy, other])
    assert hashes[0] == hashes[1] != hashes[2]
    assert len(hashes[0]) == HASH_CHARS
    assert hashes[2] == file_hash(other)


def test_one_changed_byte_changes_the_hash(tmp_path):
    a = write_image(tmp_path / "a.png", grey_pixels())
    changed = tmp_path / "changed.png"
    data = bytearray(a.read_bytes())
    data[-20] ^= 1
    changed.write_bytes(bytes(data))
    assert file_hash(a) != file_hash(changed)


def test_overlap_counts_evaluated_images_seen_in_the_reference():
    assert overlap(["a", "b", "c"], ["x", "b", "y", "a"]) == 2
    assert overlap(["a"], ["a", "a", "z"]) == 2  # each evaluated image counts
    assert overlap([], ["a"]) == 0
    assert overlap(iter(["a", "b"]), iter(["b"])) == 1  # any iterables, read once


def test_array_hashes_see_pixels_and_shape():
    images = np.zeros((3, 4, 4), np.uint8)
    images[1, 0, 0] = 1
    hashes = array_hashes(images)
    assert hashes[0] == hashes[2] != hashes[1]
    assert array_hashes(np.zeros((1, 2, 8), np.uint8)) != array_hashes(
        np.zeros((1, 4, 4), np.uint8)
    )


def test_split_hashes_follow_the_items(tmp_path):
    split = Split(
        "t",
        ("a", "b"),
        np.array([0, 1, 1]),
        images=np.arange(3)[:, None, None] * np.ones((3, 2, 2), np.uint8),
    )
    hashes = split.content_hashes()
    assert split.subset([2, 0]).content_hashes() == [hashes[2], hashes[0]]


def test_training_folder_inside_an_external_superset_is_found(tmp_path):
    train_root = write_layout(tmp_path / "train", {"": {"A": 12, "B": 12}})
    superset = tmp_path / "superset"
    shutil.copytree(train_root, superset)
    write_layout(tmp_path / "new", {"": {"A": 5, "B": 5}}, size=(24, 24))
    for path in (tmp_path / "new").rglob("*.png"):
        shutil.copy(path, superset / path.parent.name / f"new_{path.name}")
    seen = load_dataset(str(train_root), whole=True).splits["all"].content_hashes()
    evaluated = load_dataset(str(superset), whole=True).splits["all"]
    assert len(evaluated) == 34
    assert overlap(seen, evaluated.content_hashes()) == 24
    fresh = load_dataset(str(tmp_path / "new"), whole=True).splits["all"]
    assert overlap(seen, fresh.content_hashes()) == 0
