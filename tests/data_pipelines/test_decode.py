"""Every decode, eagerly and inside Dataset.map where it is a graph op."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_pipelines import decode
from data_pipelines.dicom import read_dicom
from tests.makers import (
    MODES,
    pil_pixels,
    ramp12,
    run,
    write_cmyk_jpeg,
    write_dicom,
    write_image,
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kind, channels", [("jpeg", 3), ("png", 1), ("png16", 1), ("rgba", 4), ("bmp", 3), ("dicom", 1)]
)
def test_decode_keeps_the_file_channels(image_files, mode, kind, channels):
    decode_file = decode.get_decode()
    image = run(mode, lambda c: decode_file(c), tf.io.read_file(str(image_files[kind])))
    assert image.dtype == np.uint8
    assert image.shape == (24, 32, channels)


@pytest.mark.parametrize("mode", MODES)
def test_decode_png16_scales_to_8_bit(image_files, mode):
    image = run(mode, decode.get_decode(), tf.io.read_file(str(image_files["png16"])))
    expected = pil_pixels(image_files["png"], "L")  # the 8-bit image it was made from (x * 257)
    np.testing.assert_array_equal(image[..., 0], expected)


@pytest.mark.parametrize("mode", MODES)
def test_decode_matches_pil_for_lossless_files(image_files, mode):
    for kind, pil_mode in (("png", "L"), ("bmp", "RGB"), ("rgba", "RGBA")):
        image = run(mode, decode.get_decode(), tf.io.read_file(str(image_files[kind])))
        np.testing.assert_array_equal(
            image.reshape(pil_pixels(image_files[kind], pil_mode).shape),
            pil_pixels(image_files[kind], pil_mode),
        )


@pytest.mark.parametrize("mode", MODES)
def test_decode_dicom_applies_the_window(image_files, mode):
    image = run(mode, decode.get_decode(), tf.io.read_file(str(image_files["dicom"])))
    assert image.min() == 0 and image.max() == 255
    assert np.all(np.diff(image[..., 0].ravel().astype(int)) >= 0)  # the ramp stays a ramp


@pytest.mark.parametrize("mode", MODES)
def test_is_dicom_reads_magic_bytes_even_of_tiny_files(image_files, mode):
    assert run(mode, decode.is_dicom, tf.io.read_file(str(image_files["dicom"])))
    assert not run(mode, decode.is_dicom, tf.io.read_file(str(image_files["png"])))
    assert not run(mode, decode.is_dicom, tf.constant(b"short"))
    any_preamble = bytes(range(128)) + b"DICM" + b"\xff" * 10  # not valid UTF-8
    assert run(mode, decode.is_dicom, tf.constant(any_preamble))


@pytest.mark.parametrize("mode", MODES)
def test_decode_cmyk_jpeg_gives_its_rgb(tmp_path, mode):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[:8, :, 2] = 200, 50, 120
    path = write_cmyk_jpeg(tmp_path / "cmyk.jpeg", rgb)
    image = run(mode, decode.get_decode(), tf.io.read_file(str(path)))
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image, pil_pixels(path, "RGB"), atol=2)
    np.testing.assert_allclose(image, rgb, atol=6)  # JPEG loses a little, not the colours


@pytest.mark.parametrize("mode", MODES)
def test_decode_batch_gives_float_rgb_at_the_size(image_files, mode):
    kinds = ("jpeg", "png", "png16", "rgba", "bmp")
    contents = tf.constant([image_files[k].read_bytes() for k in kinds])
    out = run(mode, decode.get_decode_batch((16, 20)), contents)
    assert out.shape == (5, 16, 20, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 255.0
    grey = out[1]  # a grey PNG: three equal channels
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


@pytest.mark.parametrize("mode", MODES)
def test_decode_batch_matches_the_training_decode(image_files, mode):
    from data_pipelines import stages

    path = image_files["bmp"]
    resize = stages.get_resize((16, 16))
    trained = run(
        mode,
        lambda c: stages.to_float(resize(stages.to_rgb(decode.get_decode()(c)))),
        path.read_bytes(),
    )
    served = run(mode, decode.get_decode_batch((16, 16)), tf.constant([path.read_bytes()]))
    np.testing.assert_array_equal(served[0], trained)


def test_decode_batch_of_cmyk_jpeg_is_rgb(tmp_path):
    rgb = np.full((8, 8, 3), (200, 50, 120), np.uint8)
    path = write_cmyk_jpeg(tmp_path / "c.jpeg", rgb)
    out = decode.get_decode_batch((8, 8))(tf.constant([path.read_bytes()])).numpy()
    np.testing.assert_allclose(out[0], rgb, atol=6)


def test_decode_rgb_of_grey_png_colour_jpeg_and_dicom(image_files):
    grey = decode.decode_rgb(image_files["png"].read_bytes())
    assert grey.shape == (24, 32, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 1], pil_pixels(image_files["png"], "L"))
    rgb = decode.decode_rgb(image_files["rgba"].read_bytes())
    np.testing.assert_array_equal(rgb, pil_pixels(image_files["rgba"], "RGB"))
    dicom = decode.decode_rgb(image_files["dicom"].read_bytes())
    np.testing.assert_array_equal(dicom[..., 0], read_dicom(image_files["dicom"])[..., 0])


def test_dicom_to_png_keeps_the_displayed_pixels(tmp_path):
    path = write_dicom(
        tmp_path / "m1.dcm", ramp12(), photometric="MONOCHROME1", window=(2048, 4096)
    )
    png = decode.dicom_to_png(path.read_bytes())
    assert png.startswith(b"\x89PNG")
    with Image.open(__import__("io").BytesIO(png)) as image:
        np.testing.assert_array_equal(np.asarray(image), read_dicom(path)[..., 0])


def test_servable_bytes_converts_dicom_only(image_files, tmp_path):
    jpeg = image_files["jpeg"].read_bytes()
    assert decode.servable_bytes(jpeg) is jpeg
    dicom = image_files["dicom"].read_bytes()
    assert decode.servable_bytes(dicom) == decode.dicom_to_png(dicom)
    png = write_image(tmp_path / "p.png", read_dicom(dicom)[..., 0]).read_bytes()
    served = decode.servable_bytes(dicom)
    np.testing.assert_array_equal(decode.decode_rgb(served), decode.decode_rgb(png))
