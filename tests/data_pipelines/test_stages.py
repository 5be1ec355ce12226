"""Every stage eagerly and inside Dataset.map: the two differ (static shapes, Python vs graph)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_pipelines import stages
from tests.data_pipelines.makers import write_cmyk_jpeg

MODES = ("eager", "map")


def run(mode, fn, *args):
    """fn(*args) called eagerly, or as the map function of a one-element dataset."""
    if mode == "eager":
        return tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    dataset = tf.data.Dataset.from_tensors(tuple(args)).map(fn)
    return next(iter(dataset.as_numpy_iterator()))


def pil_pixels(path, mode):
    return np.asarray(Image.open(path).convert(mode))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kind, channels", [("jpeg", 3), ("png", 1), ("png16", 1), ("rgba", 4), ("bmp", 3), ("dicom", 1)]
)
def test_decode_keeps_the_file_channels(image_files, mode, kind, channels):
    decode = stages.get_decode()
    image = run(mode, lambda c: decode(c), tf.io.read_file(str(image_files[kind])))
    assert image.dtype == np.uint8
    assert image.shape == (24, 32, channels)


@pytest.mark.parametrize("mode", MODES)
def test_decode_png16_scales_to_8_bit(image_files, mode):
    image = run(mode, stages.get_decode(), tf.io.read_file(str(image_files["png16"])))
    expected = pil_pixels(image_files["png"], "L")  # the 8-bit image it was made from (x * 257)
    np.testing.assert_array_equal(image[..., 0], expected)


@pytest.mark.parametrize("mode", MODES)
def test_decode_matches_pil_for_lossless_files(image_files, mode):
    for kind, pil_mode in (("png", "L"), ("bmp", "RGB"), ("rgba", "RGBA")):
        image = run(mode, stages.get_decode(), tf.io.read_file(str(image_files[kind])))
        np.testing.assert_array_equal(
            image.reshape(pil_pixels(image_files[kind], pil_mode).shape),
            pil_pixels(image_files[kind], pil_mode),
        )


@pytest.mark.parametrize("mode", MODES)
def test_decode_dicom_applies_the_window(image_files, mode):
    image = run(mode, stages.get_decode(), tf.io.read_file(str(image_files["dicom"])))
    assert image.min() == 0 and image.max() == 255
    assert np.all(np.diff(image[..., 0].ravel().astype(int)) >= 0)  # the ramp stays a ramp


@pytest.mark.parametrize("mode", MODES)
def test_is_dicom_reads_magic_bytes_even_of_tiny_files(image_files, mode):
    assert run(mode, stages.is_dicom, tf.io.read_file(str(image_files["dicom"])))
    assert not run(mode, stages.is_dicom, tf.io.read_file(str(image_files["png"])))
    assert not run(mode, stages.is_dicom, tf.constant(b"short"))
    any_preamble = bytes(range(128)) + b"DICM" + b"\xff" * 10  # not valid UTF-8
    assert run(mode, stages.is_dicom, tf.constant(any_preamble))


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
    decode, resize = stages.get_decode(), stages.get_resize((16, 16))

    def chain(path):
        return stages.to_float(resize(stages.to_rgb(decode(stages.read_file(path)))))

    for path in image_files.values():
        out = run(mode, chain, str(path))
        assert out.shape == (16, 16, 3) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 255.0


@pytest.mark.parametrize("mode", MODES)
def test_decode_cmyk_jpeg_gives_its_rgb(tmp_path, mode):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[:8, :, 2] = 200, 50, 120
    path = write_cmyk_jpeg(tmp_path / "cmyk.jpeg", rgb)
    image = run(mode, stages.get_decode(), tf.io.read_file(str(path)))
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image, pil_pixels(path, "RGB"), atol=2)
    np.testing.assert_allclose(image, rgb, atol=6)  # JPEG loses a little, not the colours
