"""DICOM to 8-bit pixels: the one place that knows DICOM's pixel conventions.

The order follows the DICOM grayscale pipeline (PS3.3 C.11): stored values, then
the modality LUT (RescaleSlope/RescaleIntercept), then the VOI LUT or window
(WindowCenter/WindowWidth), both by pydicom, then the presentation (MONOCHROME1 shows high values
dark, so it is inverted to the MONOCHROME2 convention the networks were trained on).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from data_pipelines.dicom_integrity import decode_checked

# Part 10 DICOM files carry "DICM" after a 128-byte preamble (of any bytes).
DICOM_MAGIC_AT = 128


def has_dicom_magic(head: bytes) -> bool:
    """Whether a file's first bytes (at least 132) are those of a DICOM file."""
    return head[DICOM_MAGIC_AT : DICOM_MAGIC_AT + 4] == b"DICM"


def read_dicom(source: str | Path | bytes) -> np.ndarray:
    """Reads one DICOM image as uint8 pixels.

    Args:
        source: a file path, or the file's bytes.

    Returns:
        uint8 array `[h, w, 1]` for grey images, `[h, w, 3]` for colour ones.

    Raises:
        ValueError: the file has no pixel data, or more than one frame.
        dicom_integrity.PixelDataError (a ValueError): the pixel data is cut short or
            damaged (`dicom_integrity.decode_checked`): never decoded into an image.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    ds = pydicom.dcmread(source)
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"multi-frame DICOM ({ds.NumberOfFrames} frames) is not supported")
    pixels = decode_checked(ds)
    if pixels.ndim == 3:  # colour (pydicom already converted YBR to RGB)
        if pixels.dtype == np.uint8:
            return pixels
        return _stretch_to_uint8(pixels.astype(np.float64))
    values = apply_modality_lut(pixels, ds)
    grey = _voi_to_uint8(values, ds)
    if grey is None and values.dtype == np.uint8:
        grey = values  # 8-bit with no rescale and no window: shown as stored
    elif grey is None:
        grey = _stretch_to_uint8(values.astype(np.float64))
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        grey = 255 - grey
    return grey[..., np.newaxis]


def _voi_to_uint8(values: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """The file's default VOI view (its VOI LUT, else its first window) as 0-255.

    pydicom applies the VOI; its output range, mapped to 0-255 here, is the LUT's
    nominal bit depth, or for a window the range pydicom clips to (read back by
    windowing the two infinities, so that no range rule is copied here).

    Returns:
        uint8 pixels, or None where the file has no usable VOI (none, or a window
        narrower than 1, which pydicom refuses).
    """
    try:
        shown = apply_voi_lut(values, ds)
        if shown is values:  # pydicom's way of saying "no VOI in this file"
            return None
        if np.issubdtype(shown.dtype, np.integer):  # a VOI LUT
            low, high = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        else:
            low, high = apply_voi_lut(np.array([-np.inf, np.inf]), ds)
    except ValueError:
        return None
    scaled = (np.asarray(shown, np.float64) - low) / (high - low)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps min to max onto 0-255.

    Without a stored window, min to max is the one mapping that shows a 12-bit image
    stored in 16 bits (or a CT in Hounsfield units) with visible contrast.
    """
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
