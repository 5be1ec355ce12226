"""What the DICOM node receives, read: an image to analyse, one it must not, or neither.

Three outcomes, in this order (cheapest first, nothing decoded before the header passes):

- `Skipped`: not readable DICOM, not an image (a report, a key-object note), or a
  keras-app result coming back: no answer is stored for it.
- `NotAnalysed`: an image the header policy (`guard.HeaderPolicy`) refuses, or whose
  pixel data is damaged (`data_pipelines.dicom_integrity`): answered by a "not
  analysed" SR carrying the reason.
- `Image`: the header, the grey pixels and their PNG, ready to predict.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom

from data_pipelines.dicom import read_dicom
from keras_app.decision.header_policy import HeaderPolicy
from keras_app.hospital.results import MANUFACTURER

DEFAULT_POLICY = HeaderPolicy()
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs")


class Skipped(Exception):
    """An instance the node does not answer: unreadable, not an image, or our own result."""

    def __init__(self, reason: str, *, quiet: bool = False, keep: bool = False):
        super().__init__(reason)
        self.quiet = quiet  # our own results coming back: expected, not worth a warning
        self.keep = keep  # unreadable: kept in the spool's failed/ for a human


class NotAnalysed(Exception):
    """An image the model must not read: answered with a "not analysed" SR and `reason`."""

    def __init__(self, reason: str, header: pydicom.Dataset):
        super().__init__(reason)
        self.reason = reason
        self.header = header


@dataclass(frozen=True)
class Image:
    """One received image ready to predict: its header, its grey pixels and their PNG."""

    header: pydicom.Dataset
    grey: np.ndarray  # uint8 [h, w, 1] as the model's training data looks
    png: bytes


def read_image(data: bytes, policy: HeaderPolicy = DEFAULT_POLICY) -> Image:
    """A received instance as an `Image`.

    Pixels go through `data_pipelines.dicom.read_dicom`: integrity checks, the
    modality and VOI LUTs, MONOCHROME1 inverted; compressed transfer syntaxes decode
    through the pylibjpeg plugins (JPEG, JPEG 2000, RLE).

    Raises:
        Skipped: unreadable, not an image, or a keras-app result.
        NotAnalysed: an image the policy refuses, or with damaged pixel data.
    """
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 (any parse failure means: not readable DICOM)
        raise Skipped(f"not readable DICOM ({first_line(err)})", keep=True) from None
    if str(header.get("Manufacturer", "")) == MANUFACTURER:
        raise Skipped("a keras-app result", quiet=True)
    if "Rows" not in header:
        sop_class = pydicom.uid.UID(str(header.get("SOPClassUID", "")))
        raise Skipped(f"not an image ({sop_class.name or 'no SOP class'})")
    refusal = policy.refusal(header)
    if refusal:
        raise NotAnalysed(refusal, header)
    try:
        grey = read_dicom(data)
    except Exception as err:  # noqa: BLE001 (no pixels, unsupported syntax, damaged data)
        raise NotAnalysed(safe_reason(err, header, "pixel data not readable"), header) from None
    if grey.shape[-1] != 1:
        raise NotAnalysed(f"not a grey image ({grey.shape[-1]} samples per pixel)", header)
    return Image(header, grey, _png(grey))


def _png(grey: np.ndarray) -> bytes:
    from PIL import Image as PilImage

    buffer = io.BytesIO()
    PilImage.fromarray(grey[..., 0]).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def safe_reason(err: BaseException, header: pydicom.Dataset | None, what: str = "") -> str:
    """An error's first line for a log line or an SR, with the patient's identity removed.

    A library's message may quote a value it could not parse (a malformed name, an ID):
    every patient name, ID and birth date in `header` is replaced by `[patient data]`.
    """
    text = first_line(err)
    if text.startswith(("damaged pixel data", "pixel data not decodable")):
        return redact(text, header)
    return redact(f"{what} ({text})" if what else text, header)


def redact(text: str, header: pydicom.Dataset | None) -> str:
    """`text` without any patient name, ID or birth date that `header` holds."""
    if header is None:
        return text
    for value in patient_values(header):
        text = text.replace(value, "[patient data]")
    return text


def patient_values(header: pydicom.Dataset) -> list[str]:
    """The patient's identity as strings, longest first (a name and its parts)."""
    values = set()
    for keyword in PATIENT_KEYWORDS:
        raw = header.get(keyword)
        items = raw if isinstance(raw, pydicom.multival.MultiValue) else [raw]
        for item in items:
            text = str(item or "").strip()
            if len(text) >= 3:
                values.add(text)
                values.update(p for p in text.replace("^", " ").split() if len(p) >= 3)
    return sorted(values, key=len, reverse=True)
