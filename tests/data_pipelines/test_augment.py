"""AugmentConfig and the Keras-layer augmentation, eagerly and inside Dataset.map."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import (
    AUGMENT_LEVELS,
    AugmentConfig,
    DataError,
    augment_preview,
    load_dataset,
    make_dataset,
)
from data_pipelines.augment import build_augment_layers, get_augment, resolve_augment

MODES = ("eager", "map")


def ramp_batch(n=4, size=24):
    """Images whose columns differ, so a flip shows; strictly inside 0-255."""
    row = np.linspace(20, 230, size, dtype=np.float32)
    return np.broadcast_to(row[None, None, :, None], (n, size, size, 3)).copy()


def augment(mode, config, images, seed=0):
    draw, apply = get_augment(config, seed)
    if mode == "eager":
        return apply(tf.constant(images), draw(tf.constant(images))).numpy()
    dataset = tf.data.Dataset.from_tensors(images).map(lambda x: (x, draw(x)))
    dataset = dataset.map(lambda x, p: apply(x, p))
    return next(iter(dataset)).numpy()


def test_levels():
    assert set(AUGMENT_LEVELS) == {"none", "light", "standard"}
    assert not AugmentConfig.from_level("none").enabled
    standard = AugmentConfig.from_level("standard")
    assert standard.rotation_degrees == 15 and standard.shear_degrees == 10
    assert standard.horizontal_flip and standard.brightness and standard.contrast
    light = AugmentConfig.from_level("light")
    assert light.rotation_degrees < standard.rotation_degrees
    assert resolve_augment("light") is light and resolve_augment(standard) is standard


def test_config_is_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AugmentConfig().rotation_degrees = 3
    with pytest.raises(DataError, match="rotation_degrees"):
        AugmentConfig(rotation_degrees=-1)
    with pytest.raises(DataError, match="contrast"):
        AugmentConfig(contrast=2)
    with pytest.raises(DataError, match="augment level"):
        AugmentConfig.from_level("heavy")
    with pytest.raises(DataError, match="AugmentConfig or a level"):
        resolve_augment(3)


def test_layers_follow_the_config():
    layers = build_augment_layers(AugmentConfig(), seed=0)
    kinds = [type(layer) for layer in layers]
    assert kinds == [
        keras.layers.RandomRotation,
        keras.layers.RandomShear,
        keras.layers.RandomFlip,
        keras.layers.RandomBrightness,
        keras.layers.RandomContrast,
    ]
    assert layers[3].value_range == (0, 255) or list(layers[3].value_range) == [0, 255]
    only_flip = AugmentConfig(0, 0, True, 0, 0)
    assert [type(x) for x in build_augment_layers(only_flip, 0)] == [keras.layers.RandomFlip]


@pytest.mark.parametrize("mode", MODES)
def test_standard_keeps_shape_and_range_and_changes_images(mode):
    images = ramp_batch()
    out = augment(mode, AugmentConfig(), images)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert not np.allclose(out, images)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("mode", MODES)
def test_augmentation_stays_float32_under_a_mixed_precision_policy(mode, policy):
    """train sets the global policy before it builds the pipeline (--precision auto)."""
    images = ramp_batch()
    keras.mixed_precision.set_global_policy(policy)
    try:
        out = augment(mode, AugmentConfig(), images)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == np.float32 and not np.allclose(out, images)


@pytest.mark.parametrize("mode", MODES)
def test_flip_mirrors_or_keeps_each_image(mode):
    images = ramp_batch(n=16)
    out = augment(mode, AugmentConfig(0, 0, True, 0, 0), images)
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


@pytest.mark.parametrize("mode", MODES)
def test_brightness_and_contrast_only_shift_values(mode):
    images = ramp_batch()
    out = augment(mode, AugmentConfig(0, 0, False, 0.1, 0.2), images)
    # Colour ops keep the ordering of pixel values within each image.
    for o, i in zip(out, images, strict=True):
        assert np.all(np.diff(o[0, :, 0]) >= 0)
        assert not np.allclose(o, i)


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_augmentation(mode):
    images = ramp_batch()
    a = augment(mode, AugmentConfig(), images, seed=3)
    b = augment(mode, AugmentConfig(), images, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, augment(mode, AugmentConfig(), images, seed=4))


@pytest.fixture(scope="module")
def digits_train():
    return load_dataset("digits").splits["train"].subset(np.arange(64))


def test_preview_from_a_split(digits_train):
    grid = augment_preview(digits_train, n=8, image_size=(32, 32))
    assert grid.shape == (8, 32, 32, 3) and grid.dtype == np.uint8
    again = augment_preview(digits_train, n=8, image_size=(32, 32))
    np.testing.assert_array_equal(grid, again)


def test_preview_from_a_dataset(digits_train):
    dataset = make_dataset(
        digits_train,
        image_size=(24, 24),
        batch_size=5,
        training=True,
        augment="light",
        num_classes=10,
    )
    grid = augment_preview(dataset, n=12)
    assert grid.shape == (12, 24, 24, 3) and grid.dtype == np.uint8


def test_preview_bad_arguments(digits_train):
    with pytest.raises(DataError, match="image_size"):
        augment_preview(digits_train)
    with pytest.raises(DataError, match="n must be"):
        augment_preview(digits_train, n=0, image_size=(8, 8))


def smooth_batch(n=6, size=32):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = 127.5 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    return np.repeat(np.stack([image] * 3, -1)[None], n, axis=0)


def apply_one_by_one(config, images, seed):
    """What the Keras layers do when each is applied on its own, with the same draws."""
    images = tf.constant(images)
    for layer in build_augment_layers(config, seed):
        images = layer.transform_images(images, layer.get_random_transformation(images))
    return images.numpy()


def test_one_warp_equals_rotate_then_flip():
    config = AugmentConfig(15, 0, True, 0, 0)
    images = smooth_batch()
    fused = augment("eager", config, images, seed=2)
    np.testing.assert_allclose(fused, apply_one_by_one(config, images, 2), atol=0.05)


def test_one_warp_close_to_three_warps_inside_the_image():
    config = AugmentConfig(15, 10, True, 0, 0)
    images = smooth_batch()
    fused = augment("eager", config, images, seed=3)
    one_by_one = apply_one_by_one(config, images, 3)
    # Apart from the borders (where the fill differs by a pixel), the two agree to
    # within the extra blur of interpolating twice.
    inner = np.abs(fused - one_by_one)[:, 10:-10, 10:-10]
    assert inner.mean() < 2.0
