"""Patient ids, stratified grouped carving, K-fold, the counts table."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import DataError, counts_table, kfold_splits, patient_id
from data_pipelines.splits import carve, is_tiny, patient_groups


@pytest.mark.parametrize(
    "name, patient",
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("IM-0011-0001-0002.jpeg", "IM-0011"),
        ("IM-0011-0001.jpeg", "IM-0011"),
        ("NORMAL2-IM-0123-0001.jpeg", "NORMAL2-IM-0123"),
        ("/some/dir/NORMAL/IM-0006-0001.jpeg", "IM-0006"),
        ("scan_0001.png", None),
    ],
)
def test_patient_id(name, patient):
    assert patient_id(name) == patient


def test_patient_groups_fall_back_to_the_file():
    groups = patient_groups(["a/person1_x_1.jpeg", "a/person1_x_2.jpeg", "a/other.png"])
    assert groups.tolist() == ["person1", "person1", "file:a/other.png"]
    assert patient_groups(["a.png", "b.png"]) is None


def grouped_labels(n_patients=60, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    patient_labels = (rng.random(n_patients) < 0.3).astype(int)  # imbalanced, ~1 to 2.3
    labels = np.repeat(patient_labels, per_patient)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    return labels, groups


def test_carve_with_groups_keeps_patients_apart_and_stratifies():
    labels, groups = grouped_labels()
    kept, carved = carve(labels, groups, 0.2, seed=1)
    assert len(kept) + len(carved) == len(labels)
    assert not set(groups[kept]) & set(groups[carved])
    assert abs(len(carved) / len(labels) - 0.2) < 0.05
    assert abs(labels[carved].mean() - labels.mean()) < 0.1


def test_carve_without_groups_is_exact_and_stratified():
    labels = np.array([0] * 80 + [1] * 20)
    kept, carved = carve(labels, None, 0.1, seed=0)
    assert len(carved) == 10 and np.bincount(labels[carved]).tolist() == [8, 2]
    assert np.all(np.diff(kept) > 0)  # sorted


def test_carve_same_seed_same_split_other_seed_other_split():
    labels, groups = grouped_labels()
    a = carve(labels, groups, 0.1, seed=3)
    b = carve(labels, groups, 0.1, seed=3)
    c = carve(labels, groups, 0.1, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_carve_too_small_is_a_data_error():
    with pytest.raises(DataError, match="cannot carve"):
        carve(np.array([0, 1, 1]), None, 0.1, seed=0)


def test_kfold_every_item_in_one_val_fold_and_patients_apart():
    labels, groups = grouped_labels()
    folds = kfold_splits(labels, groups, 5, seed=0)
    assert len(folds) == 5
    seen = np.concatenate([val for _, val in folds])
    assert sorted(seen.tolist()) == list(range(len(labels)))
    for train, val in folds:
        assert not set(groups[train]) & set(groups[val])
        assert len(train) + len(val) == len(labels)


def test_kfold_without_groups_and_determinism():
    labels = np.array([0, 1] * 20)
    a = kfold_splits(labels, None, 4, seed=7)
    b = kfold_splits(labels, None, 4, seed=7)
    for (ta, va), (tb, vb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(va, vb)
        assert np.bincount(labels[va]).tolist() == [5, 5]


@pytest.mark.parametrize("k", [1, 0, 2.5])
def test_kfold_bad_k(k):
    with pytest.raises(DataError, match="k >= 2"):
        kfold_splits(np.array([0, 1] * 5), None, k, seed=0)


def test_is_tiny():
    assert is_tiny(np.array([0] * 4 + [1] * 13), 2)  # the public release's val
    assert is_tiny(np.array([0] * 5 + [1] * 100), 2)  # too few of one class
    assert not is_tiny(np.array([0] * 25 + [1] * 25), 2)


def test_counts_table():
    table = counts_table({"train": np.array([0, 1, 1]), "val": np.array([1])}, ["NORMAL", "PN"])
    assert table.splitlines() == [
        "split  NORMAL  PN  total",
        "train       1   2      3",
        "val         0   1      1",
    ]
