"""Every stage eagerly and inside Dataset.map: the two differ (static shapes, Python vs graph)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import stages
from data_pipelines.decode import get_decode
from tests.makers import MODES, run


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_to_rgb(mode, channels):
    image = np.arange(4 * 5 * channels, dtype=np.uint8).reshape(4, 5, channels)
    rgb = run(mode, stages.to_rgb, image)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    if channels < 3:
        for c in range(3):
            np.testing.assert_array_equal(rgb[..., c], image[..., 0])
    else:
        np.testing.assert_array_equal(rgb, image[..., :3])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_to_grey(mode, channels):
    base = np.arange(20, dtype=np.uint8).reshape(4, 5, 1)
    image = np.concatenate([base] * channels, axis=-1)
    grey = run(mode, stages.to_grey, image)
    assert grey.shape == (4, 5, 1) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey, base)  # equal channels: that channel


def test_to_grey_of_colour_is_luma():
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert stages.to_grey(red).numpy().item() == 76  # 0.299 * 255


def test_to_grey_with_unknown_channels_in_graph():
    dataset = tf.data.Dataset.from_tensors(tf.io.read_file(__file__)).map(
        lambda _: stages.to_grey(tf.zeros(tf.stack([2, 2, tf.constant(3)]), tf.uint8))
    )
    assert next(iter(dataset)).shape == (2, 2, 1)


def test_to_rgb_static_shape_in_graph():
    dataset = tf.data.Dataset.from_tensors(np.zeros((4, 5, 1), np.uint8)).map(stages.to_rgb)
    assert dataset.element_spec.shape.as_list() == [4, 5, 3]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", [(8, 8), (64, 48), (32, 32)])
def test_resize(mode, source):
    image = np.full((*source, 3), 200, np.uint8)
    out = run(mode, stages.get_resize((32, 32)), image)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, 200)  # a flat image stays flat, rounded back to uint8


@pytest.mark.parametrize("mode", MODES)
def test_resize_same_size_is_identity(mode):
    image = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(run(mode, stages.get_resize((16, 20)), image), image)


def test_resize_static_shape_in_graph():
    dataset = tf.data.Dataset.from_tensors(np.zeros((7, 9, 3), np.uint8))
    dataset = dataset.map(stages.get_resize((16, 12)))
    assert dataset.element_spec.shape.as_list() == [16, 12, 3]


@pytest.mark.parametrize("mode", MODES)
def test_resize_with_pad_keeps_aspect(mode):
    image = np.full((10, 20, 3), 255, np.uint8)  # wide: bars top and bottom
    out = run(mode, stages.get_resize_with_pad((20, 20)), image)
    assert out.shape == (20, 20, 3)
    assert out[0].max() == 0 and out[-1].max() == 0  # black bars
    assert out[10].min() == 255  # image in the middle
    assert out[:, 0].max() == 255  # full width used


@pytest.mark.parametrize("mode", MODES)
def test_to_float_keeps_0_255(mode):
    out = run(mode, stages.to_float, np.array([[[0, 128, 255]]], np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[[0.0, 128.0, 255.0]]])


@pytest.mark.parametrize("mode", MODES)
def test_one_hot(mode):
    out = run(mode, stages.get_one_hot(3), np.array([2, 0], np.int32))
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0]])
    assert out.dtype == np.float32


@pytest.mark.parametrize("mode", MODES)
def test_full_file_chain(image_files, mode):
    decode, resize = get_decode(), stages.get_resize((16, 16))

    def chain(path):
        return stages.to_float(resize(stages.to_rgb(decode(stages.read_file(path)))))

    for path in image_files.values():
        out = run(mode, chain, str(path))
        assert out.shape == (16, 16, 3) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 255.0
