"""Real chest X-rays (../shared/data/chest_xray_224) as the DICOM a modality sends.

`make_xray(jpeg, variant)` returns (DICOM file bytes, the grey pixels a reader must
recover as an encoded image), so a test can predict the same pixels directly.
`make_refused(jpeg, kind)` makes the images the node must not analyse.

Every file carries the same made-up patient (`PATIENT_WORDS`), so a test can check
that no log line names the patient.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "chest_xray_224"
CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
CT = "1.2.840.10008.5.1.4.1.1.2"
VARIANTS = ("cr", "monochrome1", "dx16", "jpeg")
PATIENT_NAME, BIRTH_DATE = "Privatus^Patiens", "19310411"
# What must never be in a log line: the name's parts, the birth date, the IDs' prefix.
PATIENT_WORDS = ("Privatus", "Patiens", BIRTH_DATE, "PID-")
# kind -> (header changes, the reason the node gives, in part)
REFUSED = {
    "lateral": ({"ViewPosition": "LL"}, "view position LL is not PA or AP"),
    "sc_ct": ({"SOPClassUID": SC, "Modality": "CT"}, "modality CT is not CR or DX"),
    "ct": ({"SOPClassUID": CT, "Modality": "CT"}, "SOP class CT Image Storage"),
    "multiframe": ({"NumberOfFrames": 2}, "2 frames: the model reads 1"),
    "rgb": ({"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"}, "not a grey image"),
    "oversized": ({"Rows": 65535, "Columns": 65535}, "larger than 8192 pixels a side"),
    "cut_jpeg": ({}, "JPEG codestream cut short"),
}


def xray_files(n: int) -> list[Path]:
    """`n` test-split X-rays, alternating NORMAL and PNEUMONIA."""
    normal = sorted((DATA / "test" / "NORMAL").glob("*.jpeg"))
    pneumonia = sorted((DATA / "test" / "PNEUMONIA").glob("*.jpeg"))
    pairs = [f for pair in zip(normal, pneumonia, strict=False) for f in pair]
    return pairs[:n]


def make_xray(jpeg: Path, variant: str, *, accession: str) -> tuple[bytes, bytes]:
    """One X-ray as a one-image study.

    Args:
        jpeg: a chest X-ray JPEG.
        variant: "cr" (CR, MONOCHROME2, 8 bits), "monochrome1" (CR, inverted storage),
            "dx16" (DX, 16 bits with a VOI window), "jpeg" (CR, JPEG baseline).
        accession: the study's accession number.

    Returns:
        (the DICOM file, the pixels it holds as PNG or JPEG bytes, as displayed).
    """
    grey = np.asarray(Image.open(jpeg).convert("L"))
    ds = _header(CR if variant != "dx16" else DX, accession, grey.shape)
    shown = _png(grey)
    if variant == "cr":
        ds.PixelData = grey.tobytes()
    elif variant == "monochrome1":
        ds.PhotometricInterpretation = "MONOCHROME1"  # high values dark: stored inverted
        ds.PixelData = (255 - grey).tobytes()
    elif variant == "dx16":
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.WindowCenter, ds.WindowWidth = 32767.5, 65536  # the full range, linear
        ds.PixelData = (grey.astype(np.uint16) * 257).tobytes()
    elif variant == "jpeg":
        shown = _jpeg(grey)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([shown])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        raise ValueError(f"variant must be one of {VARIANTS}. Received variant={variant!r}")
    return _encode(ds), shown


def make_refused(jpeg: Path, kind: str, *, accession: str) -> bytes:
    """An image the node must answer "not analysed" (`REFUSED[kind]` says how and why)."""
    import pydicom

    changes, _ = REFUSED[kind]
    data, _ = make_xray(jpeg, "jpeg" if kind == "cut_jpeg" else "cr", accession=accession)
    ds = pydicom.dcmread(io.BytesIO(data))
    if kind == "cut_jpeg":  # the codestream cut at 40%: decoders fill in the rest silently
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        frame = frame[: int(len(frame) * 0.4)]
        ds.PixelData = encapsulate([frame])
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if "SOPClassUID" in changes:
        ds.file_meta.MediaStorageSOPClassUID = changes["SOPClassUID"]
    if kind == "multiframe":
        ds.PixelData = ds.PixelData * 2
    elif kind == "rgb":
        grey = np.frombuffer(ds.PixelData, np.uint8)
        ds.PixelData = np.repeat(grey, 3).tobytes()
        ds.PlanarConfiguration = 0
    return _encode(ds)


def make_non_image(study_of: bytes | None = None, *, accession: str) -> bytes:
    """A Basic Text SR (not an image) from another vendor."""
    ds = _header(BASIC_TEXT_SR, accession, None)
    ds.Modality = "SR"
    ds.Manufacturer = "another vendor"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    _same_study(ds, study_of)
    return _encode(ds)


def make_no_pixels(study_of: bytes | None = None, *, accession: str) -> bytes:
    """A Secondary Capture header without pixel data."""
    ds = _header(SC, accession, (8, 8))
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    _same_study(ds, study_of)
    return _encode(ds)


def _header(sop_class: str, accession: str, shape) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = PATIENT_NAME, f"PID-{accession}"
    ds.PatientBirthDate, ds.PatientSex = BIRTH_DATE, "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20261125", "120000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = accession, ""
    ds.Modality = "CR" if sop_class == CR else "DX"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.PatientOrientation = ["L", "F"]
    if shape is not None:
        ds.Rows, ds.Columns = shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
    if sop_class == DX:
        ds.PresentationIntentType, ds.ImageType = "FOR PRESENTATION", ["ORIGINAL", "PRIMARY"]
    return ds


def _same_study(ds: Dataset, other: bytes | None) -> None:
    if other is None:
        return
    import pydicom

    source = pydicom.dcmread(io.BytesIO(other), stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "AccessionNumber"):
        setattr(ds, keyword, source.get(keyword))


def _png(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=95)  # baseline, one component
    return buffer.getvalue()


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
