"""Damaged DICOM pixel data is refused with its reason, never decoded into an image.

Each compressed transfer syntax the node reads, encoded from a synthetic radiograph-like
image, then damaged three ways: cut at 40%, 64 bytes overwritten mid-codestream, and a
quarter of the codestream zeroed. The table in docs/DICOM_NODE.md says what each
decoder does on its own; these tests pin what `read_dicom` does with the checks.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames

from data_pipelines.dicom import read_dicom
from data_pipelines.dicom_integrity import PixelDataError

SIZE = 96


def _image(bits: int) -> np.ndarray:
    """A smooth body-like blob with texture: compresses like a radiograph, not like noise."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    blob = np.exp(-((x - 0.5) ** 2 + (y - 0.55) ** 2) * 6)
    texture = 0.1 * np.sin(x * 40) * np.cos(y * 33)
    top = 2**bits - 1
    return np.clip((blob + texture) * 0.8 * top, 0, top).astype(
        np.uint8 if bits <= 8 else np.uint16
    )


def _dataset(pixels: np.ndarray, bits: int) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid.generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    return ds


def _encoded(syntax: str) -> Dataset:
    """The image in `syntax`: JPEG variants by imagecodecs (libjpeg-turbo), the rest by
    pydicom's own encoders."""
    import imagecodecs

    bits = {"JPEGExtended12Bit": 12, "JPEGLosslessSV1-16": 16}.get(syntax, 8)
    pixels = _image(bits)
    ds = _dataset(pixels, bits)
    if syntax in ("JPEG2000Lossless", "JPEG2000", "RLELossless"):
        options = {"j2k_cr": [20]} if syntax == "JPEG2000" else {}
        ds.compress(getattr(uid, syntax), **options)
        return ds
    if syntax.startswith("JPEGLosslessSV1"):
        frame = imagecodecs.jpeg8_encode(pixels, lossless=True, predictor=1, bitspersample=bits)
        ds.file_meta.TransferSyntaxUID = uid.JPEGLosslessSV1
    else:  # baseline (8-bit) or extended (12-bit), both DCT
        frame = imagecodecs.jpeg8_encode(pixels, level=90, bitspersample=bits)
        ds.file_meta.TransferSyntaxUID = getattr(uid, syntax)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def _damaged(ds: Dataset, how: str) -> bytes:
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    middle, quarter = len(frame) // 2, len(frame) // 4
    if how == "cut":
        frame = frame[: int(len(frame) * 0.4)]
    elif how == "overwritten":
        frame[middle : middle + 64] = (
            np.random.default_rng(0).integers(0, 256, 64, np.uint8).tobytes()
        )
    elif how == "zeroed":
        frame[middle : middle + quarter] = bytes(quarter)
    copy = pydicom.dcmread(io.BytesIO(_file(ds)))
    copy.PixelData = encapsulate([bytes(frame)])
    return _file(copy)


def _file(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


SYNTAXES = (
    "JPEGBaseline8Bit",
    "JPEGExtended12Bit",
    "JPEGLosslessSV1",
    "JPEGLosslessSV1-16",
    "JPEG2000Lossless",
    "JPEG2000",
    "RLELossless",
)
# Always caught: every cut codestream (its end marker or its length is missing), and
# damage inside an 8-bit JPEG (libjpeg-turbo in strict mode). Elsewhere damage is caught
# only when it breaks the codestream's structure, which depends on the bytes: 12/16-bit
# JPEG, JPEG 2000 and RLE have no checksum, and their decoders fill in what they cannot
# read without a word (measured on chest X-rays: docs/DICOM_NODE.md).
ALWAYS_CAUGHT = {("cut", s) for s in SYNTAXES} | {
    (how, s) for how in ("overwritten", "zeroed") for s in ("JPEGBaseline8Bit", "JPEGLosslessSV1")
}


@pytest.fixture(scope="module")
def encoded():
    pytest.importorskip("imagecodecs")
    return {syntax: _encoded(syntax) for syntax in SYNTAXES}


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_whole_codestreams_decode(encoded, syntax):
    grey = read_dicom(_file(encoded[syntax]))
    assert grey.shape == (SIZE, SIZE, 1) and grey.std() > 10


@pytest.mark.parametrize("how", ["cut", "overwritten", "zeroed"])
@pytest.mark.parametrize("syntax", SYNTAXES)
def test_damaged_codestreams_are_refused_where_they_can_be_told(encoded, syntax, how):
    damaged = _damaged(encoded[syntax], how)
    if (how, syntax) in ALWAYS_CAUGHT:
        with pytest.raises(PixelDataError) as refused:
            read_dicom(damaged)
        assert "pixel data" in str(refused.value)
        return
    try:  # refused with a reason, or decoded: never another error type
        assert read_dicom(damaged).shape == (SIZE, SIZE, 1)
    except PixelDataError as refused:
        assert "pixel data" in str(refused)


def test_a_cut_jpeg_says_its_marker_is_missing(encoded):
    with pytest.raises(PixelDataError, match="JPEG codestream cut short: no end-of-image"):
        read_dicom(_damaged(encoded["JPEGBaseline8Bit"], "cut"))


def test_overwritten_8_bit_jpeg_is_refused_in_libjpeg_turbo_words(encoded):
    with pytest.raises(PixelDataError, match="libjpeg-turbo: Corrupt JPEG data"):
        read_dicom(_damaged(encoded["JPEGBaseline8Bit"], "overwritten"))


def test_native_pixel_data_too_short_is_refused():
    ds = _dataset(_image(8), 8)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    with pytest.raises(PixelDataError, match="less than expected"):
        read_dicom(_file(ds))
