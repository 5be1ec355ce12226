"""data_pipelines.ood_sets: every set built small, deterministic, split by origin."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines.ood_sets import OOD_SETS, build_ood_sets, split_by_group
from data_pipelines.ood_sources import medical_images, to_rgb_size

SIZE, PER_SET = 16, 8
# Films a guard must never have seen: here each patient's film is one grey level, so any
# image made from it tells which patient it came from.
LEVELS = np.arange(10, 250, 20, dtype=np.uint8)
FILMS = np.broadcast_to(LEVELS[:, None, None, None], (len(LEVELS), SIZE, SIZE, 3)).copy()
PATIENTS = np.asarray([f"patient{i}" for i in range(len(LEVELS))])
MNIST = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)


def build(**kwargs):
    return build_ood_sets(
        FILMS, PATIENTS, pneumoniamnist=MNIST, size=SIZE, per_set=PER_SET, **kwargs
    )


@pytest.fixture(scope="module")
def sets():
    return build()


def test_every_set_is_built_with_two_parts_split_by_origin(sets):
    assert list(sets) == list(OOD_SETS)
    for name, s in sets.items():
        assert s.images.dtype == np.uint8 and s.images.shape == (PER_SET, SIZE, SIZE, 3), name
        tuning, held_out = s.part("tuning"), s.part("held_out")
        assert len(tuning) > 0 and len(held_out) > 0 and len(tuning) + len(held_out) == len(s)
        assert not set(s.groups[s.held_out]) & set(s.groups[~s.held_out]), name
        assert s.provenance and s.refuse == OOD_SETS[name].refuse
    to_pass = {n for n, s in sets.items() if s.refuse is False}
    assert to_pass == {"mirrored", "rotated_small", "tilted", "exposure", "jpeg", "zoom_small"}
    assert [n for n, s in sets.items() if s.refuse is None] == ["pneumoniamnist"]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_images(sets):
    again = build()
    for name in sets:
        np.testing.assert_array_equal(again[name].images, sets[name].images, err_msg=name)
        np.testing.assert_array_equal(again[name].held_out, sets[name].held_out, err_msg=name)
    other = build(seed=1, names=["noise_uniform", "photos"])
    assert not np.array_equal(other["noise_uniform"].images, sets["noise_uniform"].images)
    assert not np.array_equal(other["photos"].images, sets["photos"].images)


def test_film_sets_take_each_part_from_one_half_of_the_patients(sets):
    held_out_patients = split_by_group(PATIENTS, seed=0)
    levels = {True: set(LEVELS[held_out_patients]), False: set(LEVELS[~held_out_patients])}
    inverted = sets["inverted"]
    for image, held_out in zip(inverted.images, inverted.held_out, strict=True):
        assert 255 - int(image[0, 0, 0]) in levels[bool(held_out)]
    for name in ("rot90", "rot180", "flip_ud", "mirrored"):
        for image, held_out in zip(sets[name].images, sets[name].held_out, strict=True):
            assert int(image[0, 0, 0]) in levels[bool(held_out)], name


def test_blank_frames_include_black_and_white(sets):
    blank = sets["blank"].images
    assert (blank[0] == 0).all() and (blank[1] == 255).all()
    assert all(image.std(axis=(0, 1)).max() < 5 for image in blank)  # each channel flat


def test_photographs_are_split_by_photograph_and_greys_are_grey(sets):
    photos = sets["photos"]
    assert len(set(photos.groups)) == 3  # three photographs, none in both parts
    grey = sets["photos_grey"].images
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_other_modalities_are_found_offline_and_split_by_file(sets):
    found = medical_images()
    if not found:
        pytest.skip("pydicom's test files are not installed")
    origins = {origin for origin, _ in found}
    assert {"CT_small.dcm", "MR_small.dcm"} <= origins
    assert all(image.dtype == np.uint8 and image.max() > image.min() for _, image in found)
    assert all(g.startswith("dicom:") for g in sets["modalities"].groups)


def test_only_the_named_sets_and_only_what_the_sources_allow():
    synthetic = build_ood_sets(size=SIZE, per_set=4)
    assert set(synthetic) == {n for n, spec in OOD_SETS.items() if spec.source == "synthetic"}
    assert list(build(names=["tiled", "blank"])) == ["blank", "tiled"]
    with pytest.raises(ValueError, match="unknown OOD sets"):
        build(names=["nope"])
    with pytest.raises(ValueError, match=r"sets \['rot90'\] need their source"):
        build_ood_sets(size=SIZE, per_set=4, names=["rot90"])
    with pytest.raises(ValueError, match="Received float64"):
        build_ood_sets(FILMS.astype(float), PATIENTS, size=SIZE, per_set=4, names=["rot90"])
    with pytest.raises(ValueError, match="film_groups"):
        build_ood_sets(FILMS, PATIENTS[:3], size=SIZE, per_set=4, names=["rot90"])


def test_split_by_group_keeps_groups_whole_and_balances_the_parts():
    groups = np.repeat([f"g{i}" for i in range(10)], 3)
    held_out = split_by_group(groups, seed=3)
    assert held_out.sum() in (12, 15, 18)
    for g in set(groups):
        assert len(set(held_out[groups == g])) == 1
    with pytest.raises(ValueError, match="at least two groups"):
        split_by_group(["a", "a"])


def test_to_rgb_size_takes_grey_single_channel_and_rgb():
    for image in (np.zeros((5, 7), np.uint8), np.zeros((5, 7, 1), np.uint8)):
        assert to_rgb_size(image, 9).shape == (9, 9, 3)
    rgb = np.random.default_rng(1).integers(0, 256, (9, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_size(rgb, 9), rgb)
