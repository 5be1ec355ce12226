"""What the DICOM node answers: a Comprehensive SR and a Grad-CAM Secondary Capture, or
for an image it does not analyse, a Comprehensive SR that says so and why.

Both go into the source image's study, in one new series per study and model.
Their UIDs are derived from the source instance and the model, so answering the
same image twice (a duplicate send, a crash after storing but before the spool
knew) stores the same instances again instead of new ones: the PACS keeps one.

The SR's content tree (read back by `read_sr`):

    Diagnostic imaging report (LN 18748-4)
    ├── Pneumonia (SCT 233604007) = Present (SCT 52101004) | Absent (SCT 2667000)
    ├── Probability of pneumonia (99KERASAPP KA001) = p, unit UCUM "1"
    ├── Decision threshold (99KERASAPP KA002) = t            (when the model stores one)
    ├── Algorithm Name (DCM 111001), Algorithm Version (DCM 111003)
    ├── Comment (DCM 121106) = the not-for-diagnostic-use statement
    └── Source of Measurement (DCM 121112) = IMAGE reference to the source instance

An image inside the operating point's refer band is analysed but not decided: its SR
states the probability and the threshold, and in place of Present or Absent

    ├── Pneumonia (SCT 233604007) = Indeterminate (SCT 82334004)
    ├── Refer for reading (99KERASAPP KA007) = e.g. "P(PNEUMONIA) 0.31 within the refer
    │   band [0.18, 0.42): a reader decides"

The "not analysed" SR (`build_not_analysed_sr`) has the same UID the result SR would
have, so an image has one answer whatever it was; no finding, no probability:

    Diagnostic imaging report (LN 18748-4)
    ├── Image analysis (99KERASAPP KA004) = Not analysed (99KERASAPP KA005)
    ├── Reason not analysed (99KERASAPP KA006) = the reason, e.g. "view position LL is
    │   not PA or AP"
    ├── Algorithm Name, Algorithm Version, Comment, Source of Measurement (as above)
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr import CodedConcept
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MANUFACTURER = "keras-app"
SERIES_DESCRIPTION = "keras-app AI result, not for diagnostic use"
NOT_FOR_DIAGNOSTIC_USE = (
    "Not for diagnostic use. Produced by a machine-learning model for research and "
    "workflow triage; a qualified reader must interpret the images."
)
LOCAL = "99KERASAPP"  # a private coding scheme (PS3.16 8.2: designators starting 99)

TITLE = CodedConcept("18748-4", "LN", "Diagnostic imaging report")
PNEUMONIA = CodedConcept("233604007", "SCT", "Pneumonia")
PRESENT = CodedConcept("52101004", "SCT", "Present")
ABSENT = CodedConcept("2667000", "SCT", "Absent")
INDETERMINATE = CodedConcept("82334004", "SCT", "Indeterminate")
PROBABILITY = CodedConcept("KA001", LOCAL, "Probability of pneumonia")
THRESHOLD = CodedConcept("KA002", LOCAL, "Decision threshold")
OPERATING_POINT_VERSION = CodedConcept("KA003", LOCAL, "Operating point version")
ANALYSIS = CodedConcept("KA004", LOCAL, "Image analysis")
NOT_ANALYSED = CodedConcept("KA005", LOCAL, "Not analysed")
REASON = CodedConcept("KA006", LOCAL, "Reason not analysed")
REFER = CodedConcept("KA007", LOCAL, "Refer for reading")
ALGORITHM_NAME = CodedConcept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = CodedConcept("111003", "DCM", "Algorithm Version")
COMMENT = CodedConcept("121106", "DCM", "Comment")
SOURCE = CodedConcept("121112", "DCM", "Source of Measurement")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
SERIES_NUMBER = 9901  # high, so the result series sorts after the acquired ones


@dataclass(frozen=True)
class Finding:
    """The model's answer for one image.

    Attributes:
        present: pneumonia called at the model's operating point.
        probability: the calibrated P(pneumonia).
        threshold: the operating point's threshold; None where the model decides by
            the most probable class.
        model_name: the model's name (run folder, export or served model).
        model_version: the export version, or a digest of the weights file.
        operating_point_version: the version of the operating point that decided
            (1: the one training chose; later: a local recalibration).
        refer: why the image is referred to a reader (inside the refer band), None when
            the model decided it; a referred image has no finding, Present or Absent.
    """

    present: bool
    probability: float
    threshold: float | None
    model_name: str
    model_version: str
    operating_point_version: int | None = None
    refer: str | None = None

    @property
    def model_key(self) -> str:
        return f"{self.model_name}:{self.model_version}"

    @property
    def verdict(self) -> str:
        """ "present", "absent", or "refer" (a reader decides)."""
        return "refer" if self.refer else "present" if self.present else "absent"


@dataclass(frozen=True)
class ResultUids:
    """The result series and instances for one source image, the same on every run."""

    series: str
    sr: str
    overlay: str

    @classmethod
    def for_source(cls, source: pydicom.Dataset, model_key: str) -> ResultUids:
        study, sop = str(source.StudyInstanceUID), str(source.SOPInstanceUID)
        return cls(
            series=generate_uid(entropy_srcs=[study, model_key, "series"]),
            sr=generate_uid(entropy_srcs=[sop, model_key, "sr"]),
            overlay=generate_uid(entropy_srcs=[sop, model_key, "overlay"]),
        )


def build_sr(source: pydicom.Dataset, finding: Finding, uids: ResultUids) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR answering `source`, in its study and the result series."""
    return _sr(source, _content(source, finding), uids)


def build_not_analysed_sr(
    source: pydicom.Dataset, reason: str, model_name: str, model_version: str, uids: ResultUids
) -> hd.sr.ComprehensiveSR:
    """The SR saying `source` was not analysed and why: no finding, no probability."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items = [
        hd.sr.CodeContentItem(ANALYSIS, NOT_ANALYSED, relationship_type=contains),
        hd.sr.TextContentItem(REASON, reason[:1024], relationship_type=contains),
        *_provenance(source, model_name, model_version),
    ]
    root = hd.sr.ContainerContentItem(TITLE, template_id=None)
    root.ContentSequence = hd.sr.ContentSequence(items)
    return _sr(source, root, uids)


def _sr(source: pydicom.Dataset, content, uids: ResultUids) -> hd.sr.ComprehensiveSR:
    sr = hd.sr.ComprehensiveSR(
        evidence=[source],
        content=content,
        series_instance_uid=uids.series,
        series_number=SERIES_NUMBER,
        sop_instance_uid=uids.sr,
        instance_number=2 * _instance_number(source) - 1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=SERIES_DESCRIPTION,
    )
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return sr


def _content(source: pydicom.Dataset, finding: Finding) -> hd.sr.ContainerContentItem:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    value = INDETERMINATE if finding.refer else PRESENT if finding.present else ABSENT
    items = [
        hd.sr.CodeContentItem(PNEUMONIA, value, relationship_type=contains),
        hd.sr.NumContentItem(
            PROBABILITY, float(finding.probability), NO_UNITS, relationship_type=contains
        ),
    ]
    if finding.refer:
        items.append(hd.sr.TextContentItem(REFER, finding.refer[:1024], relationship_type=contains))
    if finding.threshold is not None:
        items.append(
            hd.sr.NumContentItem(
                THRESHOLD, float(finding.threshold), NO_UNITS, relationship_type=contains
            )
        )
    if finding.operating_point_version is not None:
        items.append(
            hd.sr.TextContentItem(
                OPERATING_POINT_VERSION,
                str(finding.operating_point_version),
                relationship_type=contains,
            )
        )
    items += _provenance(source, finding.model_name, finding.model_version)
    root = hd.sr.ContainerContentItem(TITLE, template_id=None)
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root


def _provenance(source: pydicom.Dataset, model_name: str, model_version: str) -> list:
    """The items every answer ends with: the algorithm, the statement, the source image."""
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    return [
        hd.sr.TextContentItem(ALGORITHM_NAME, model_name, relationship_type=contains),
        hd.sr.TextContentItem(ALGORITHM_VERSION, model_version, relationship_type=contains),
        hd.sr.TextContentItem(COMMENT, NOT_FOR_DIAGNOSTIC_USE, relationship_type=contains),
        hd.sr.ImageContentItem(
            SOURCE,
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            relationship_type=contains,
        ),
    ]


def build_overlay(source: pydicom.Dataset, rgb: np.ndarray, uids: ResultUids) -> hd.sc.SCImage:
    """The Grad-CAM overlay (uint8 RGB `[h, w, 3]`, its finding and colour bar drawn in) as a
    Secondary Capture in the result series."""
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(rgb, np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=uids.series,
        series_number=SERIES_NUMBER,
        sop_instance_uid=uids.overlay,
        instance_number=2 * _instance_number(source),
        manufacturer=MANUFACTURER,
        # The overlay is the source image's geometry; an unknown orientation stays unknown.
        patient_orientation=_orientation(source),
        series_description=SERIES_DESCRIPTION,
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sc.ImageComments = NOT_FOR_DIAGNOSTIC_USE
    sc.BurnedInAnnotation = "YES"  # the finding, P(pneumonia) and the colour bar are drawn in
    return sc


def _orientation(source: pydicom.Dataset) -> tuple[str, str]:
    value = source.get("PatientOrientation")
    if value and len(value) == 2 and all(str(v) for v in value):
        return (str(value[0]), str(value[1]))
    return ("L", "F")  # PA chest convention: rows run to the patient's left, columns to feet


def _instance_number(source: pydicom.Dataset) -> int:
    try:
        return max(1, int(source.get("InstanceNumber") or 1))
    except (TypeError, ValueError):
        return 1


def read_sr(ds: pydicom.Dataset) -> dict:
    """What a keras-app SR says, read with pydicom alone (as any PACS client would).

    Returns:
        {"analysed": True, "present": bool (None: referred), "probability": float,
        "threshold": float | None, "operating_point_version": int | None, "refer": str |
        None (why a reader decides), "model_name": str, "model_version": str, "statement":
        str, "source": UID}; for a "not analysed" SR
        {"analysed": False, "reason": str, "model_name", "model_version", "statement",
        "source"} (no finding, no probability).

    Raises:
        ValueError: `ds` is not a keras-app SR.
    """
    found: dict = {}
    for item in ds.get("ContentSequence", []):
        code = item.ConceptNameCodeSequence[0]
        key = (str(code.CodingSchemeDesignator), str(code.CodeValue))
        if key == (PNEUMONIA.scheme_designator, PNEUMONIA.value):
            value = item.ConceptCodeSequence[0].CodeValue
            found["present"] = None if value == INDETERMINATE.value else value == PRESENT.value
        elif key == (REFER.scheme_designator, REFER.value):
            found["refer"] = str(item.TextValue)
        elif key == (PROBABILITY.scheme_designator, PROBABILITY.value):
            found["probability"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif key == (THRESHOLD.scheme_designator, THRESHOLD.value):
            found["threshold"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif key == (OPERATING_POINT_VERSION.scheme_designator, OPERATING_POINT_VERSION.value):
            found["operating_point_version"] = int(str(item.TextValue))
        elif key == (ANALYSIS.scheme_designator, ANALYSIS.value):
            found["analysed"] = item.ConceptCodeSequence[0].CodeValue != NOT_ANALYSED.value
        elif key == (REASON.scheme_designator, REASON.value):
            found["reason"] = str(item.TextValue)
        elif key == (ALGORITHM_NAME.scheme_designator, ALGORITHM_NAME.value):
            found["model_name"] = str(item.TextValue)
        elif key == (ALGORITHM_VERSION.scheme_designator, ALGORITHM_VERSION.value):
            found["model_version"] = str(item.TextValue)
        elif key == (COMMENT.scheme_designator, COMMENT.value):
            found["statement"] = str(item.TextValue)
        elif key == (SOURCE.scheme_designator, SOURCE.value):
            found["source"] = str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    found.setdefault("analysed", "present" in found)
    needed = {"present", "probability"} if found["analysed"] else {"reason"}
    missing = (needed | {"model_name", "source"}) - set(found)
    if missing:
        raise ValueError(f"not a keras-app SR: it lacks {sorted(missing)}")
    if found["analysed"]:
        found.setdefault("threshold", None)
        found.setdefault("operating_point_version", None)
        found.setdefault("refer", None)
    return found
