"""What the DICOM node receives, read: the header, the grey pixels, or why it is skipped."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom

from data_pipelines.dicom import read_dicom
from keras_app.hospital.results import MANUFACTURER

CR = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IMAGE_CLASSES = {
    CR: "CR",
    DX_PRESENTATION: "DX",
    DX_PROCESSING: "DX",
    SECONDARY_CAPTURE: "SC",
    "1.2.840.10008.5.1.4.1.1.7.2": "SC (multi-frame grey, byte)",
    "1.2.840.10008.5.1.4.1.1.7.3": "SC (multi-frame grey, word)",
}


class Skipped(Exception):
    """An instance the node does not answer: not an image, no pixels, our own result."""

    def __init__(self, reason: str, *, quiet: bool = False):
        super().__init__(reason)
        self.quiet = quiet  # our own results coming back: expected, not worth a warning


@dataclass(frozen=True)
class Image:
    """One received image ready to predict: its header, its grey pixels and their PNG."""

    header: pydicom.Dataset
    grey: np.ndarray  # uint8 [h, w, 1] as the model's training data looks
    png: bytes


def read_image(data: bytes) -> Image:
    """A received instance as an `Image`.

    Pixels go through `data_pipelines.dicom.read_dicom`: the modality and VOI LUTs,
    MONOCHROME1 inverted; compressed transfer syntaxes decode through the pydicom
    pixel plugins (pylibjpeg and its JPEG, JPEG 2000 and RLE decoders).

    Raises:
        Skipped: not an image, no pixel data, undecodable, or a keras-app result.
    """
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 (any parse failure means: not readable DICOM)
        raise Skipped(f"not readable DICOM ({first_line(err)})") from None
    if str(header.get("Manufacturer", "")) == MANUFACTURER:
        raise Skipped("a keras-app result", quiet=True)
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class not in IMAGE_CLASSES:
        raise Skipped(f"not a CR, DX or Secondary Capture image (SOP class {sop_class})")
    try:
        grey = read_dicom(data)
    except Exception as err:  # noqa: BLE001 (no pixels, unsupported syntax, corrupt data)
        raise Skipped(f"pixels not readable ({first_line(err)})") from None
    if grey.shape[-1] != 1:
        raise Skipped(f"not a grey image ({grey.shape[-1]} samples per pixel)")
    return Image(header, grey, _png(grey))


def _png(grey: np.ndarray) -> bytes:
    from PIL import Image as PilImage

    buffer = io.BytesIO()
    PilImage.fromarray(grey[..., 0]).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
