"""DICOM to 8-bit pixels: the one place that knows DICOM's pixel conventions.

The order follows the DICOM grayscale pipeline (PS3.3 C.11): stored values, then
the modality LUT (RescaleSlope/RescaleIntercept), then the VOI window
(WindowCenter/WindowWidth), then the presentation (MONOCHROME1 shows high values
dark, so it is inverted to the MONOCHROME2 convention the networks were trained on).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut


def read_dicom(source: str | Path | bytes) -> np.ndarray:
    """Reads one DICOM image as uint8 pixels.

    Args:
        source: a file path, or the file's bytes.

    Returns:
        uint8 array `[h, w, 1]` for grey images, `[h, w, 3]` for colour ones.

    Raises:
        ValueError: the file has no pixel data, or more than one frame.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    ds = pydicom.dcmread(source)
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"multi-frame DICOM ({ds.NumberOfFrames} frames) is not supported")
    pixels = ds.pixel_array
    if pixels.ndim == 3:  # colour (pydicom already converted YBR to RGB)
        if pixels.dtype == np.uint8:
            return pixels
        return _scale_to_uint8(pixels.astype(np.float64), None)
    values = apply_modality_lut(pixels, ds)
    window = _window(ds)
    if window is None and values.dtype == np.uint8:
        grey = values  # 8-bit with no rescale and no window: shown as stored
    else:
        grey = _scale_to_uint8(values.astype(np.float64), window)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        grey = 255 - grey
    return grey[..., np.newaxis]


def _window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """The first stored (center, width) VOI window, or None where there is none."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    # Several windows may be stored (e.g. lung and bone); the first is the default one.
    center = float(center[0] if isinstance(center, MultiValue) else center)
    width = float(width[0] if isinstance(width, MultiValue) else width)
    return (center, width) if width >= 1 else None


def _scale_to_uint8(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Maps values to 0-255: through the window where one is given, else min to max.

    Without a stored window, min to max is the one mapping that shows a 12-bit image
    stored in 16 bits (or a CT in Hounsfield units) with visible contrast.
    """
    if window is not None:
        center, width = window
        # PS3.3 C.11.2.1.2.1, the "LINEAR" VOI function.
        scaled = (values - (center - 0.5)) / (width - 1) + 0.5
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
