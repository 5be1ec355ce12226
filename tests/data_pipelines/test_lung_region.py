"""The lung-region estimate on synthetic phantoms and real films, and the region fills."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import DataError
from data_pipelines.lung_region import (
    PRIOR_BOXES,
    LungMask,
    convex_hull,
    estimate_lung_mask,
    prior_lung_mask,
)
from data_pipelines.regions import (
    border_strips,
    erase_region,
    get_keep_lungs,
    keep_lungs,
    keep_region,
    lung_region,
    neutral_fill,
)
from tests.makers import phantom


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_phantom_lungs_are_found_at_224():
    image, truth = phantom(224)
    lungs = estimate_lung_mask(image.astype(np.uint8))
    assert lungs.method == "estimate" and lungs.reason == "" and not lungs.fell_back
    assert lungs.labels.shape == (224, 224) and lungs.labels.dtype == np.uint8
    for value in (1, 2):
        assert iou(lungs.labels == value, truth == value) > 0.85
    top, left, bottom, right = lungs.thorax_box
    assert abs(top - 0.18 * 224) < 8 and abs(bottom - 0.82 * 224) < 8
    assert abs(left - 0.17 * 224) < 8 and abs(right - 0.83 * 224) < 8
    assert abs(lungs.midline - 112) <= 4


@pytest.mark.parametrize(
    "shape, scale, channels",
    [
        ((32, 32), 255.0, None),  # tiny, float in 0-255
        ((64, 48), 1.0, 1),  # float in 0-1, [h, w, 1], not square
        ((96, 96), 4095.0, 3),  # 12-bit range, [h, w, 3]
        ((1100, 900), 255.0, None),  # an original's size, portrait
    ],
)
def test_sizes_ranges_and_channels(shape, scale, channels):
    image, truth = phantom(*shape, scale=scale)
    if channels:
        image = np.repeat(image[:, :, None], channels, axis=2)
    lungs = estimate_lung_mask(image)
    assert lungs.method == "estimate", lungs.reason
    assert lungs.shape == shape
    assert iou(lungs.mask, truth > 0) > 0.8


def test_a_mirrored_film_swaps_the_labels():
    image, truth = phantom(128)
    heart = (truth == 2) & (np.mgrid[0:128, 0:128][0] > 80) & (np.mgrid[0:128, 0:128][1] < 85)
    image[heart] = 0.8 * 255  # the image-right lung smaller than the left: sides tell apart
    lungs = estimate_lung_mask(image)
    mirrored = estimate_lung_mask(image[:, ::-1])
    assert lungs.method == mirrored.method == "estimate"
    assert iou(lungs.labels == 2, (truth == 2) & ~heart) > 0.8
    # the mirror's image-left lung is the original's image-right lung, and so on
    assert iou(mirrored.labels[:, ::-1] == 1, lungs.labels == 2) > 0.9
    assert iou(mirrored.labels[:, ::-1] == 2, lungs.labels == 1) > 0.9


def test_blank_and_noise_fall_back_to_the_prior():
    blank = estimate_lung_mask(np.zeros((64, 64), np.uint8))
    assert blank.fell_back and blank.method == "prior" and blank.reason == "flat image"
    noise = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)
    noisy = estimate_lung_mask(noise)
    assert noisy.fell_back and noisy.reason  # says why
    prior = prior_lung_mask((100, 200))
    assert np.array_equal(noisy.labels, prior_lung_mask((128, 128)).labels)
    top, left, bottom, right = PRIOR_BOXES["left"]
    assert (prior.labels[round(top * 100) : round(bottom * 100), round(left * 200)] == 1).all()
    assert prior.labels[:, : round(left * 200)].sum() == 0
    assert set(np.unique(prior.labels)) == {0, 1, 2}
    lowest = min(PRIOR_BOXES["left"][0], PRIOR_BOXES["right"][0])
    assert prior.thorax_box[:2] == (round(lowest * 100), round(left * 200))


def test_a_missing_lung_falls_back():
    image, truth = phantom(128)
    image[truth == 2] = 0.7 * 255  # the right lung as dense as the body (consolidated)
    image[image > 0.8 * 255] = 0.7 * 255  # no spine: a step beside it would look like lung
    lungs = estimate_lung_mask(image)
    assert lungs.fell_back and "image-right" in lungs.reason


def test_gas_under_the_diaphragm_is_not_lung():
    image, truth = phantom(128)
    y, x = (np.mgrid[0:128, 0:128] + 0.5) / 128
    bubble = (((y - 0.9) / 0.06) ** 2 + ((x - 0.68) / 0.09) ** 2 <= 1) & (y > 0.845)
    image[bubble] = 0.25 * 255  # stomach gas, as dark as the lung
    image[(np.abs(y - 0.835) < 0.012) & (np.abs(x - 0.68) < 0.12)] = 0.85 * 255  # diaphragm
    lungs = estimate_lung_mask(image)
    assert lungs.method == "estimate"
    assert not (lungs.labels[bubble] == 2).any()
    assert iou(lungs.labels == 2, truth == 2) > 0.85


@pytest.mark.parametrize("half_band, covered", [(8, 0.7), (14, 0.9)])
def test_a_lung_in_pieces_is_joined(half_band, covered):
    """A narrow gap is closed (the band partly covered), a wide one takes the hull."""
    image, truth = phantom(128)
    band = (truth == 2) & (np.abs(np.mgrid[0:128, 0:128][0] - 64) < half_band)
    image[band] = 0.7 * 255  # consolidation across the middle of the image-right lung
    lungs = estimate_lung_mask(image)
    assert lungs.method == "estimate" and lungs.joined == (False, True)
    assert (lungs.labels[band] == 2).mean() > covered
    assert iou(lungs.labels == 2, truth == 2) > 0.75
    assert estimate_lung_mask(phantom(128)[0]).joined == (False, False)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((32, 32, 2)), r"\[h, w\], \[h, w, 1\] or \[h, w, 3\]"),
        (np.zeros((2, 32, 32, 3)), "Received"),
        (np.zeros((4, 32)), "at least 8 px"),
        (np.full((32, 32), np.nan), "NaN"),
        (np.full((32, 32), "a"), "numeric"),
    ],
)
def test_bad_images_are_refused(image, match):
    with pytest.raises(DataError, match=match):
        estimate_lung_mask(image)


def test_lung_mask_validates_its_method():
    with pytest.raises(DataError, match="method"):
        LungMask(np.zeros((4, 4), np.uint8), "guess", "", (0, 0, 0, 0), 2)


def test_lung_region_holds_the_heart_between_the_lungs():
    _, truth = phantom(128)
    lungs = truth > 0
    region = lung_region(lungs, dilate=0.0)
    assert region[lungs].all()
    assert region[64, 64]  # the mediastinum between the lungs
    assert not region[5, 5] and not region[64, 5]
    assert np.array_equal(lung_region(lungs, with_mediastinum=False, dilate=0.0), lungs)
    grown = lung_region(lungs, dilate=0.05)
    assert grown[region].all() and grown.sum() > region.sum()
    assert grown[64, round(0.17 * 128) - 5]  # 5 px out from the lung's side, inside 6.4 px
    estimated = estimate_lung_mask(phantom(128)[0])
    assert lung_region(estimated)[64, 64]
    with pytest.raises(DataError, match="dilate"):
        lung_region(lungs, dilate=0.7)


def test_convex_hull_fills_between_pieces():
    mask = np.zeros((20, 20), bool)
    mask[2:5, 2:5] = mask[14:17, 14:17] = True
    hull = convex_hull(mask)
    assert hull[mask].all() and hull[9, 9] and not hull[2, 16]
    line = np.zeros((5, 5), bool)
    line[2, 1:4] = True
    assert np.array_equal(convex_hull(line), line)  # degenerate: the pixels themselves


def test_border_strips():
    strips = border_strips((100, 200, 3), width=0.1)
    assert strips.shape == (100, 200)
    assert (
        strips[:10].all() and strips[90:].all() and strips[:, :20].all() and strips[:, 180:].all()
    )
    assert not strips[10:90, 20:180].any()
    assert border_strips((10, 10), width=0.01).sum() == 36  # at least one pixel deep
    with pytest.raises(DataError, match="width"):
        border_strips((10, 10), width=0.5)


def test_mean_fill_is_each_channels_mean():
    image = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    fill = neutral_fill(image, "mean")
    assert fill.shape == image.shape and fill.dtype == np.float32
    np.testing.assert_allclose(fill[3, 5], image.reshape(-1, 3).mean(axis=0), rtol=1e-5)
    assert neutral_fill(image[:, :, 0], "mean").shape == (16, 24)
    with pytest.raises(DataError, match="fill"):
        neutral_fill(image, "noise")


def test_blur_fill_removes_detail_and_keeps_a_constant():
    constant = np.full((40, 40), 7.0)
    np.testing.assert_allclose(neutral_fill(constant, "blur"), 7.0, rtol=1e-5)
    checker = (np.indices((40, 40)).sum(axis=0) % 2 * 200).astype(np.uint8)
    blurred = neutral_fill(checker, "blur")
    assert blurred.std() < 2 and abs(blurred.mean() - 100) < 1


@pytest.mark.parametrize("fill", ["mean", "blur", "constant"])
def test_erase_and_keep_replace_exactly_their_pixels(fill):
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    region = np.zeros((32, 32), bool)
    region[8:20, 4:30] = True
    erased = erase_region(image, region, fill)
    assert erased.dtype == np.uint8 and erased.shape == image.shape
    from_outside = np.round(neutral_fill(image, fill, source=~region)).astype(np.uint8)
    assert np.array_equal(erased[region], from_outside[region])
    assert np.array_equal(erased[~region], image[~region])
    kept = keep_region(image, region, fill)
    assert np.array_equal(kept[region], image[region])
    from_region = neutral_fill(image, fill, source=region)
    assert np.array_equal(kept[~region], np.round(from_region).astype(np.uint8)[~region])
    floats = keep_region(image.astype(np.float32), region, fill)
    assert floats.dtype == np.float32
    np.testing.assert_allclose(floats[~region], from_region[~region], rtol=1e-6)
    with pytest.raises(DataError, match="region must be the image"):
        erase_region(image, region[:, :16])


@pytest.mark.parametrize("fill", ["mean", "blur"])
def test_a_fill_says_nothing_of_the_erased_pixels(fill):
    image = np.full((32, 32), 50.0)
    region = np.zeros((32, 32), bool)
    region[8:24, 8:24] = True
    bright = image.copy()
    bright[region] = 250.0  # the erased pixels: only they differ
    for erased in (erase_region(image, region, fill), erase_region(bright, region, fill)):
        np.testing.assert_allclose(erased, 50.0, atol=1e-4)
    assert neutral_fill(bright, "mean")[0, 0] > 50  # the whole image's mean would tell


def test_the_constant_fill_is_mid_grey_whatever_the_film():
    dark, bright = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 250, np.uint8)
    region = np.zeros((8, 8), bool)
    region[2:6, 2:6] = True
    for image in (dark, bright):
        assert (erase_region(image, region, "constant")[region] == 128).all()
        assert (keep_region(image, region, "constant")[~region] == 128).all()


@pytest.mark.parametrize("mode", ["eager", "map"])
def test_keep_lungs_stage_matches_numpy(mode):
    image = np.repeat(phantom(64)[0][:, :, None], 3, axis=2)
    expected = keep_lungs(image, fill="mean")
    assert (expected[0, 0] != image[0, 0]).all() and np.array_equal(expected[32, 20], image[32, 20])
    stage = get_keep_lungs(fill="mean")
    if mode == "eager":
        out = stage(tf.constant(image))
    else:
        dataset = tf.data.Dataset.from_tensors(image).map(stage)
        out = next(iter(dataset))
        assert dataset.element_spec.shape == (64, 64, 3)
    np.testing.assert_array_equal(out.numpy(), expected)
    with pytest.raises(DataError, match="fill"):
        get_keep_lungs(fill="zero")


@pytest.mark.needs_data
def test_real_films_are_mostly_plausible(chest_xray_dir):
    from PIL import Image

    files = [
        path
        for cls in ("NORMAL", "PNEUMONIA")
        for path in sorted((chest_xray_dir / "test" / cls).glob("*.jpeg"))[:5]
    ]
    results = [estimate_lung_mask(np.asarray(Image.open(path))) for path in files]
    assert sum(not r.fell_back for r in results) >= 8, [r.reason for r in results]
    for r in results:
        assert r.shape == (224, 224)
        if not r.fell_back:
            assert 0.08 < r.mask.mean() < 0.6
    # the same film at an original's size gives the same lungs
    grey = np.asarray(Image.open(files[0]).convert("L"))
    big = np.asarray(Image.fromarray(grey).resize((1024, 1180), Image.BILINEAR))
    small_again = np.asarray(
        Image.fromarray(estimate_lung_mask(big).mask).resize((224, 224), Image.NEAREST)
    )
    assert iou(small_again, results[0].mask) > 0.85
