"""stratified_group_folds makes scikit-learn's StratifiedGroupKFold choices, ties included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from data_pipelines.group_folds import stratified_group_folds
from data_pipelines.splits import patient_groups


def sklearn_folds(labels, groups, k, seed) -> np.ndarray:
    folds = np.full(len(labels), -1)
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has only ..."
        for i, (_, test) in enumerate(splitter.split(labels, labels, groups)):
            folds[test] = i
    return folds


def random_cases(n_cases=80, seed=0):
    rng = np.random.default_rng(seed)
    for case in range(n_cases):
        n = int(rng.integers(12, 300))
        classes = int(rng.integers(2, 5))
        k = int(rng.integers(2, 11))
        labels = rng.integers(0, classes, n)
        # From one image per patient to several: many exact ties between folds.
        groups = rng.integers(0, max(k, n // int(rng.integers(1, 5))), n).astype(str)
        yield labels, groups, k, case


def test_the_same_folds_as_scikit_learn_on_random_cases():
    compared = 0
    for labels, groups, k, seed in random_cases():
        try:
            expected = sklearn_folds(labels, groups, k, seed)
        except ValueError:
            with pytest.raises(ValueError):
                stratified_group_folds(labels, groups, k, seed)
            continue
        np.testing.assert_array_equal(stratified_group_folds(labels, groups, k, seed), expected)
        compared += 1
    assert compared > 60


@pytest.mark.needs_data
def test_the_same_folds_as_scikit_learn_on_chest_xray_names(chest_xray_dir):
    files = sorted(str(p) for p in (chest_xray_dir / "train").rglob("*.jpeg"))
    labels = np.array([int("/PNEUMONIA/" in f) for f in files])
    groups = patient_groups(files)
    for k, seed in ((10, 42), (5, 0)):
        np.testing.assert_array_equal(
            stratified_group_folds(labels, groups, k, seed), sklearn_folds(labels, groups, k, seed)
        )


def test_string_labels_and_refusals():
    labels = np.array(["a", "b"] * 6)
    groups = np.arange(12) // 2
    np.testing.assert_array_equal(
        stratified_group_folds(labels, groups, 3, 1), sklearn_folds(labels, groups, 3, 1)
    )
    with pytest.raises(ValueError, match="number of groups"):
        stratified_group_folds(labels, np.zeros(12), 2, 0)
    with pytest.raises(ValueError, match="members in each class"):
        stratified_group_folds(labels, groups, 7, 0)
