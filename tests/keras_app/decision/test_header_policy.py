"""The header policy: what the chest X-ray model reads, as data, with each refusal's reason."""

from __future__ import annotations

import json
import re
import time

import pydicom
import pytest

from keras_app.core.errors import UsageError
from keras_app.decision.header_policy import HeaderPolicy
from keras_app.hospital import reading
from tests.keras_app.hospital import xray_dicom

CR, DX, SC, CT = xray_dicom.CR, xray_dicom.DX, xray_dicom.SC, xray_dicom.CT


def header(**values) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.Modality = CR, "CR"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.Rows = ds.Columns = 2048
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    "values, reason",
    [
        ({}, None),
        ({"SOPClassUID": DX, "Modality": "DX", "ViewPosition": "AP"}, None),
        ({"SOPClassUID": SC, "Modality": "CR"}, None),  # a Secondary Capture of a CR
        ({"BodyPartExamined": None, "ViewPosition": None}, None),  # absent: not checked
        (
            {"SOPClassUID": DX, "Modality": "DX", "ViewPosition": "LL"},
            "view position LL is not PA or AP",
        ),
        ({"SOPClassUID": SC, "Modality": "CT"}, "modality CT is not CR or DX"),
        (
            {"SOPClassUID": CT, "Modality": "CT"},
            f"SOP class CT Image Storage ({CT}) is not one the model reads",
        ),
        ({"BodyPartExamined": "ABDOMEN"}, "body part ABDOMEN is not CHEST"),
        ({"NumberOfFrames": 3}, "3 frames: the model reads 1"),
        (
            {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB"},
            "not a grey image (RGB, 3 samples per pixel)",
        ),
        (
            {"PhotometricInterpretation": "PALETTE COLOR"},
            "not a grey image (PALETTE COLOR, 1 samples per pixel)",
        ),
        (
            {"Rows": 65535, "Columns": 65535},
            "image 65535 x 65535 is larger than 8192 pixels a side (refused before decoding)",
        ),
        ({"Rows": 16}, "image 16 x 2048 is smaller than 32 pixels a side"),
    ],
)
def test_default_policy(values, reason):
    assert HeaderPolicy().refusal(header(**values)) == reason


def test_a_policy_file_names_only_what_differs(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(
        json.dumps(
            {
                "sop_classes": ["DigitalXRayImageStorageForPresentation"],
                "modalities": ["DX"],
                "require_view_position": True,
                "max_side": 4096,
            }
        )
    )
    policy = HeaderPolicy.from_file(path)
    assert policy.sop_classes == (DX,) and policy.body_parts == ("CHEST",)  # default kept
    assert "SOP class Computed Radiography" in policy.refusal(header())
    dx = {"SOPClassUID": DX, "Modality": "DX"}
    assert policy.refusal(header(**dx, ViewPosition=None)) == (
        "no view position in the header (ViewPosition is required)"
    )
    assert "larger than 4096" in policy.refusal(header(**dx, Rows=5000))
    assert HeaderPolicy.from_dict(policy.to_dict()) == policy


@pytest.mark.parametrize(
    "values, words",
    [
        ({"modality": ["CR"]}, "unknown field(s) ['modality']"),
        ({"modalities": "CR"}, "modalities must be a list of strings"),
        ({"max_side": "8192"}, "max_side must be a int"),
        ({"sop_classes": ["NoSuchStorage"]}, "neither a SOP Class UID nor a pydicom keyword"),
        ({"min_side": 0}, "need 1 <= min_side <= max_side"),
    ],
)
def test_a_bad_policy_says_what_is_wrong(values, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        HeaderPolicy.from_dict(values)


def test_an_oversized_header_is_refused_before_its_pixels_are_decoded():
    """65535 x 65535 at 16 bits would be 8 GB: the header alone decides, at once."""
    data = xray_dicom.make_refused(xray_dicom.xray_files(1)[0], "oversized", accession="BIG")
    start = time.perf_counter()
    with pytest.raises(reading.NotAnalysed, match="65535 x 65535 is larger"):
        reading.read_image(data)
    assert time.perf_counter() - start < 1.0
