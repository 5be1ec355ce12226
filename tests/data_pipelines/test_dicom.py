"""DICOM pixels: rescale, window, MONOCHROME1, bit depth."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines.dicom import read_dicom
from tests.makers import ramp12, write_dicom


def test_monochrome2_window_maps_to_0_255(tmp_path):
    pixels = np.array([[0, 1000], [2000, 4095]], np.uint16)
    path = write_dicom(tmp_path / "a.dcm", pixels, window=(1000, 1000))  # 500..1500
    out = read_dicom(path)
    assert out.shape == (2, 2, 1) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0  # below the window
    assert 120 <= out[0, 1, 0] <= 135  # the window's center is mid-grey
    assert out[1, 0, 0] == 255 and out[1, 1, 0] == 255  # above the window


def test_monochrome1_is_inverted(tmp_path):
    pixels = ramp12()
    mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels, window=(2048, 4096)))
    mono1 = read_dicom(
        write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", window=(2048, 4096))
    )
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert mono1[0, 0, 0] == 255  # lowest value shows white in MONOCHROME1


def test_rescale_applies_before_the_window(tmp_path):
    # Stored 0..1000 with slope 2, intercept -1000 -> -1000..1000; the window
    # (center 0, width 1000) shows -500..500, so stored 250 is black and 750 white.
    pixels = np.array([[0, 250, 500, 750, 1000]], np.uint16)
    out = read_dicom(
        write_dicom(tmp_path / "r.dcm", pixels, slope=2, intercept=-1000, window=(0, 1000))
    )[0, :, 0]
    assert out[0] == 0 and out[1] <= 1
    assert 120 <= out[2] <= 135
    assert out[3] >= 254 and out[4] == 255


def test_12_bit_without_window_spans_0_255(tmp_path):
    out = read_dicom(write_dicom(tmp_path / "n.dcm", ramp12() // 4))  # uses 0..1023 of 4095
    assert out.min() == 0 and out.max() == 255


def test_8_bit_without_window_is_kept(tmp_path):
    pixels = np.array([[3, 100], [200, 250]], np.uint8)
    out = read_dicom(write_dicom(tmp_path / "e.dcm", pixels, bits_stored=8))
    np.testing.assert_array_equal(out[..., 0], pixels)


def test_reads_bytes_like_a_path(tmp_path):
    path = write_dicom(tmp_path / "b.dcm", ramp12(), window=(2048, 4096))
    np.testing.assert_array_equal(read_dicom(path.read_bytes()), read_dicom(path))


def test_no_pixel_data_raises(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "x.dcm", ramp12())
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ValueError, match="no pixel data"):
        read_dicom(path)


def test_the_voi_lut_function_of_the_file_is_applied(tmp_path):
    # SIGMOID (PS3.3 C.11.2.1.3.1) reaches 1 / (1 + e^-2) = 88% at center + width / 2,
    # where LINEAR is already white.
    pixels = np.array([[2048, 3072]], np.uint16)
    path = write_dicom(tmp_path / "s.dcm", pixels, window=(2048, 2048), voi_function="SIGMOID")
    out = read_dicom(path)[0, :, 0]
    assert 126 <= out[0] <= 129
    assert 220 <= out[1] <= 230


def test_a_voi_lut_sequence_is_applied_over_its_bit_depth(tmp_path):
    table = 4095 - np.arange(4096)  # an inverting 12-bit LUT
    pixels = np.array([[0, 2048, 4095]], np.uint16)
    out = read_dicom(write_dicom(tmp_path / "l.dcm", pixels, voi_lut=(0, 12, table)))[0, :, 0]
    assert out.tolist() == [255, 127, 0]  # 2047 of 4095


def test_a_window_narrower_than_1_is_as_no_window(tmp_path):
    path = write_dicom(tmp_path / "w.dcm", ramp12() // 4, window=(100, 0.5))
    out = read_dicom(path)
    assert out.min() == 0 and out.max() == 255
