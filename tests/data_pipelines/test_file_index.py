"""The file index: a second scan reads only new and changed files, and finds what the first did."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from data_pipelines import file_index, load_dataset, scan, splits
from data_pipelines.file_index import FileFacts, index_path, load_index, remembered, save_index
from tests.makers import grey_pixels, write_image, write_layout


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def reads(monkeypatch):
    """The files each check read, in a list (the check still runs)."""
    seen = []
    check = scan._check_one

    def counting(path):
        seen.append(os.path.basename(path))
        return check(path)

    monkeypatch.setattr(scan, "_check_one", counting)
    return seen


def loaded(root):
    data = load_dataset(str(root), report=lambda line: None)
    found = {k: (s.files, s.content_hashes(), s.sizes.tolist()) for k, s in data.splits.items()}
    return data, found


def test_a_second_load_reads_no_file_and_finds_the_same(tmp_path, keras_home, reads):
    root = write_layout(tmp_path / "data", {"": {"A": 12, "B": 12}}, patients=True)
    (root / "A" / "zero.png").write_bytes(b"")
    first, first_splits = loaded(root)
    assert len(reads) == 25
    reads.clear()
    second, second_splits = loaded(root)
    assert reads == []
    assert second_splits == first_splits
    assert second.fingerprint == first.fingerprint
    assert second.skipped == first.skipped == [(str(root / "A" / "zero.png"), "zero-byte file")]
    assert list((keras_home / "data_index").glob("data-*.npz")) == [
        index_path(f"folder:{root.resolve()}")
    ]


def test_changed_and_new_files_are_read_deleted_ones_dropped(tmp_path, keras_home, reads):
    root = write_layout(tmp_path / "data", {"": {"A": 10, "B": 10}})
    before, _ = loaded(root)
    changed = root / "A" / "a_000.png"
    write_image(changed, grey_pixels(40, 40, seed=99))
    write_image(root / "B" / "new.png", grey_pixels(seed=7))
    (root / "B" / "b_009.png").unlink()
    reads.clear()
    after, _ = loaded(root)
    assert sorted(reads) == ["a_000.png", "new.png"]
    assert after.fingerprint != before.fingerprint
    all_files = after.splits["train"].files + after.splits["val"].files + after.splits["test"].files
    assert str(root / "B" / "b_009.png") not in all_files
    index = load_index(f"folder:{root.resolve()}")
    assert len(index) == 20 and str(root / "B" / "b_009.png") not in index.paths
    row = index.paths.index(str(changed))
    assert (index.height[row], index.width[row]) == (40, 40)


def test_a_file_rewritten_with_the_same_size_and_time_is_not_read_again(tmp_path, keras_home):
    """The documented limit of the key: path, size and mtime, not the bytes."""
    root = write_layout(tmp_path / "data", {"": {"A": 10, "B": 10}})
    path = root / "A" / "a_000.png"
    loaded(root)
    stat = path.stat()
    path.write_bytes(bytes(reversed(path.read_bytes())))  # same size, unreadable now
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    data, _ = loaded(root)
    assert data.skipped == []


def test_two_roots_have_two_indexes_and_a_bad_index_is_a_rescan(tmp_path, keras_home, reads):
    a = write_layout(tmp_path / "a" / "data", {"": {"A": 10, "B": 10}})
    b = write_layout(tmp_path / "b" / "data", {"": {"A": 10, "B": 10}})
    loaded(a)
    loaded(b)
    assert index_path(f"folder:{a.resolve()}") != index_path(f"folder:{b.resolve()}")
    assert len(list((keras_home / "data_index").glob("*.npz"))) == 2
    index_path(f"folder:{a.resolve()}").write_bytes(b"PK\x03\x04 truncated")
    reads.clear()
    loaded(a)
    assert len(reads) == 20
    assert len(load_index(f"folder:{a.resolve()}")) == 20


def test_two_writers_at_once_leave_a_whole_index(keras_home):
    def facts(n):
        ints = np.arange(n, dtype=np.int64)
        digests = np.asarray([f"{i:032x}" for i in range(n)])
        return FileFacts(
            [f"/x/{i}.png" for i in range(n)], ints, ints, ints, ints, ints > 0, digests
        )

    writers = [
        threading.Thread(target=lambda n=n: [save_index("folder:/x", facts(n)) for _ in range(20)])
        for n in (300, 500)
    ]
    for writer in writers:
        writer.start()
    lengths = set()
    while any(w.is_alive() for w in writers):
        lengths.add(len(load_index("folder:/x")))
    for writer in writers:
        writer.join()
    assert lengths <= {0, 300, 500}  # never half an index
    assert len(load_index("folder:/x")) in (300, 500)
    assert not list((keras_home / "data_index").glob(".*.tmp"))


def test_remembered_results_are_computed_once(keras_home):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(5)

    assert remembered("k1", compute).tolist() == [0, 1, 2, 3, 4]
    assert remembered("k1", compute).tolist() == [0, 1, 2, 3, 4]
    assert len(calls) == 1
    remembered("k2", compute)
    assert len(calls) == 2


def test_large_carves_are_remembered_and_unchanged(keras_home, monkeypatch):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    groups = (np.arange(400) // 2).astype(str)
    direct = splits.carve(labels, groups, 0.1, seed=3)
    monkeypatch.setattr(splits, "REMEMBER_FOLDS_FROM", 100)
    first = splits.carve(labels, groups, 0.1, seed=3)
    monkeypatch.setattr(file_index, "INDEX_DIR", "elsewhere")  # a fresh store...
    monkeypatch.setattr(splits, "stratified_group_folds", None)  # ...that must not compute
    with pytest.raises(TypeError):
        splits.carve(labels, groups, 0.1, seed=3)
    monkeypatch.setattr(file_index, "INDEX_DIR", "data_index")
    again = splits.carve(labels, groups, 0.1, seed=3)
    for a, b, c in zip(direct, first, again, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_a_keras_home_that_cannot_be_written_costs_only_the_next_scan(tmp_path, monkeypatch):
    root = write_layout(tmp_path / "data", {"": {"A": 10, "B": 10}})
    home = tmp_path / "file-not-folder"
    home.write_text("")  # data_index/ cannot be made below a file
    monkeypatch.setenv("KERAS_HOME", str(home))
    lines = []
    data = load_dataset(str(root), report=lines.append)
    assert sum(len(s) for s in data.splits.values()) == 20
    assert lines == ["file index not kept (Not a directory): the next run reads every file"]
    assert remembered("k", lambda: np.arange(3)).tolist() == [0, 1, 2]
