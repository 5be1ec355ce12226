"""The outside of the lungs swapped or erased in training, and the lung regions cached."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import DataError, Split, make_dataset
from data_pipelines.outside import OUTSIDE_MODES, get_outside_lungs
from data_pipelines.region_cache import sample_fallback_rate, split_regions
from keras_app.recipe.config import OUTSIDE_LUNGS
from tests.makers import MODES, run, shortcut_films

N, SIZE = 6, 16


def batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, SIZE, SIZE, 1)).astype(np.uint8)
    regions = np.zeros((N, SIZE, SIZE, 1), np.uint8)
    regions[:, 4:12, 4:12] = 1
    return images, regions


@pytest.mark.parametrize("mode", MODES)
def test_swap_keeps_the_lungs_and_takes_the_next_films_outside(mode):
    images, regions = batch()
    out = run(mode, get_outside_lungs("swap", 1.0, seed=0), images, regions)
    assert out.dtype == np.uint8 and out.shape == images.shape
    inside = regions[0, ..., 0] > 0
    np.testing.assert_array_equal(out[:, inside], images[:, inside])
    donor = np.roll(images, -1, axis=0)
    np.testing.assert_array_equal(out[:, ~inside], donor[:, ~inside])  # same regions: no blur


@pytest.mark.parametrize("mode", MODES)
def test_erase_fills_the_outside_with_the_mean_of_the_lungs(mode):
    images, regions = batch()
    out = run(mode, get_outside_lungs("erase", 1.0, seed=0), images, regions)
    inside = regions[0, ..., 0] > 0
    for film, original in zip(out, images, strict=True):
        np.testing.assert_array_equal(film[inside], original[inside])
        assert (film[~inside] == np.round(original[inside].mean())).all()


def test_the_donors_own_lungs_are_blurred_away():
    images = np.zeros((2, 64, 64, 1), np.uint8)
    images[1, 30:34, 30:34] = 255  # the donor's "lesion", inside its own region
    regions = np.zeros((2, 64, 64, 1), np.uint8)
    regions[0, :8, :8] = 1  # film 0 keeps a corner; film 1's region holds the lesion
    regions[1, 16:48, 16:48] = 1
    out = get_outside_lungs("swap", 1.0, seed=0)(images, regions).numpy()
    assert 0 < out[0, 30:34, 30:34].max() < 64  # a blur of it, not the lesion


def test_p_draws_which_films_change_and_a_seed_repeats_it():
    images, regions = batch()
    assert np.array_equal(get_outside_lungs("swap", 1e-9, seed=1)(images, regions), images)
    a = get_outside_lungs("swap", 0.5, seed=3)(images, regions).numpy()
    b = get_outside_lungs("swap", 0.5, seed=3)(images, regions).numpy()
    np.testing.assert_array_equal(a, b)


def test_bad_modes_and_regions_are_refused():
    for mode, p in (("none", 1.0), ("noise", 1.0), ("swap", 1.5)):
        with pytest.raises(DataError, match="Received"):
            get_outside_lungs(mode, p)
    assert OUTSIDE_MODES == OUTSIDE_LUNGS  # the flag's choices, kept apart from TensorFlow
    split = Split("train", ("a", "b"), np.array([0, 1]), images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="needs regions of shape"):
        make_dataset(split, image_size=(8, 8), batch_size=2, training=True, num_classes=2,
                     outside_lungs="swap", regions=np.zeros((2, 4, 4), bool))  # fmt: skip


def test_make_dataset_swaps_before_augmenting_and_keeps_its_order():
    films, labels = shortcut_films(8, np.random.default_rng(0), size=32)
    split = Split("train", ("normal", "pneumonia"), labels, images=films)
    regions = split_regions(split, (32, 32), cache=False).region

    def images(outside, augment="none"):
        data = make_dataset(split, image_size=(32, 32), batch_size=4, training=True,
                            num_classes=2, augment=augment, seed=5, regions=regions,
                            outside_lungs=outside)  # fmt: skip
        return np.concatenate([x.numpy() for x, _ in data])

    plain, swapped = images("none"), images("swap")
    assert plain.shape == swapped.shape == (8, 32, 32, 3)
    assert not np.array_equal(plain, swapped)
    # The same order: each swapped film keeps, inside its own region, the plain film's
    # pixels at its place (the region rode along with its film through the shuffle).
    for s, p in zip(swapped, plain, strict=True):
        assert any(np.array_equal(s[r], p[r]) and not np.array_equal(s, p) for r in regions)
    np.testing.assert_array_equal(images("swap", "standard"), images("swap", "standard"))


def test_regions_are_cached_per_image_content(tmp_path):
    films, labels = shortcut_films(5, np.random.default_rng(1), size=32)
    split = Split("test", ("normal", "pneumonia"), labels, images=films)
    fresh = split_regions(split, (32, 32), cache=False)
    assert fresh.region.shape == (5, 32, 32) and fresh.region.any(axis=(1, 2)).all()
    assert (fresh.region >= fresh.lungs).all()  # the region holds the lungs
    first = split_regions(split.subset([0, 1]), (32, 32), cache=tmp_path)
    np.testing.assert_array_equal(first.region, fresh.region[:2])
    (store,) = tmp_path.iterdir()
    again = split_regions(split.subset([4, 0, 0, 2]), (32, 32), cache=tmp_path)
    np.testing.assert_array_equal(again.region, fresh.region[[4, 0, 0, 2]])
    np.testing.assert_array_equal(again.fell_back, fresh.fell_back[[4, 0, 0, 2]])
    assert list(tmp_path.iterdir()) == [store]  # one store per size, grown
    assert len(np.load(store)["hashes"]) == 4
    split_regions(split, (16, 16), cache=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_the_fallback_rate_tells_films_from_flat_images():
    flat = np.full((4, 40, 40), 90, np.uint8)
    split = Split("train", ("a", "b"), np.arange(4) % 2, images=flat)
    assert sample_fallback_rate(split, (40, 40), n=4) == 1.0
    films, labels = shortcut_films(8, np.random.default_rng(3), size=32)
    chest = Split("train", ("a", "b"), labels, images=films)
    assert sample_fallback_rate(chest, (32, 32), n=8) < 0.25
