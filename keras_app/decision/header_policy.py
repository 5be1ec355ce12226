"""What the chest X-ray model accepts, read from the header before any pixel is decoded.

The policy is data: `HeaderPolicy()` holds the safe defaults, and a hospital changes
them with a JSON file (`--header-policy FILE`) naming only what differs:

    {
      "sop_classes": ["ComputedRadiographyImageStorage",
                      "DigitalXRayImageStorageForPresentation",
                      "DigitalXRayImageStorageForProcessing",
                      "SecondaryCaptureImageStorage"],
      "modalities": ["CR", "DX"],
      "body_parts": ["CHEST"],          "require_body_part": false,
      "view_positions": ["PA", "AP"],   "require_view_position": false,
      "photometric_interpretations": ["MONOCHROME1", "MONOCHROME2"],
      "max_frames": 1,
      "min_side": 32,
      "max_side": 8192
    }

Every image the policy refuses is answered with a "not analysed" SR carrying the reason
the policy gave (`HeaderPolicy.refusal`). The modality applies to every SOP class, so a
Secondary Capture is read only when its Modality is CR or DX.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID

from keras_app.core.errors import UsageError

CHEST_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
)


@dataclass(frozen=True)
class HeaderPolicy:
    """Which images the model reads; each field is one check with its own refusal reason.

    Attributes:
        sop_classes: SOP Class UIDs (or pydicom keywords in a file) of images read.
        modalities: Modality values read, whatever the SOP class (the model saw CR and DX).
        body_parts: BodyPartExamined values read, checked when the header has one.
        require_body_part: refuse an image without BodyPartExamined.
        view_positions: ViewPosition values read (frontal views: the model never saw a
            lateral), checked when the header has one.
        require_view_position: refuse an image without ViewPosition.
        photometric_interpretations: the grey ones; colour is refused.
        max_frames: frames per image (the model reads one radiograph).
        min_side: fewest rows or columns: an icon is no radiograph (32: the smallest
            image the project's tiny test models read).
        max_side: most rows or columns: larger is refused before decoding, so a
            header claiming 65535 x 65535 never allocates 8 GB. 8192 is about twice a
            43 cm detector at 100 um.
    """

    sop_classes: tuple[str, ...] = CHEST_CLASSES
    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = ("CHEST",)
    require_body_part: bool = False
    view_positions: tuple[str, ...] = ("PA", "AP")
    require_view_position: bool = False
    photometric_interpretations: tuple[str, ...] = ("MONOCHROME1", "MONOCHROME2")
    max_frames: int = 1
    min_side: int = 32
    max_side: int = 8192

    def __post_init__(self):
        if not 1 <= self.min_side <= self.max_side:
            raise UsageError(
                f"header policy: need 1 <= min_side <= max_side. Received "
                f"min_side={self.min_side}, max_side={self.max_side}"
            )
        if self.max_frames < 1:
            raise UsageError(f"header policy: max_frames must be >= 1. Received {self.max_frames}")

    @classmethod
    def from_dict(cls, values: dict, source: str = "header policy") -> HeaderPolicy:
        """The defaults, with `values` in place of those it names.

        Raises:
            UsageError: an unknown field, or a value of the wrong kind.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UsageError(
                f"{source}: unknown field(s) {unknown}; known: {', '.join(sorted(fields))}"
            )
        kwargs = {}
        for name, value in values.items():
            default = fields[name].default
            if isinstance(default, tuple):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise UsageError(
                        f"{source}: {name} must be a list of strings. Received {value!r}"
                    )
                value = tuple(_sop_class(v, source) if name == "sop_classes" else v for v in value)
            elif type(value) is not type(default):
                raise UsageError(
                    f"{source}: {name} must be a {type(default).__name__}. Received {value!r}"
                )
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> HeaderPolicy:
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"--header-policy {path}: cannot read it as JSON ({err})") from None
        if not isinstance(values, dict):
            raise UsageError(f"--header-policy {path}: expected a JSON object of fields")
        return cls.from_dict(values, f"--header-policy {path}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}

    def refusal(self, header: pydicom.Dataset) -> str | None:
        """Why the model must not read this image, or None when it may."""
        sop_class = str(header.get("SOPClassUID", ""))
        if sop_class not in self.sop_classes:
            return f"SOP class {_class_name(sop_class)} is not one the model reads"
        checks = (
            ("Modality", self.modalities, True, "modality"),
            ("BodyPartExamined", self.body_parts, self.require_body_part, "body part"),
            ("ViewPosition", self.view_positions, self.require_view_position, "view position"),
        )
        for keyword, allowed, required, words in checks:
            value = str(header.get(keyword, "") or "").strip().upper()
            if not value and required:
                return f"no {words} in the header ({keyword} is required)"
            if value and value not in allowed:
                return f"{words} {value} is not {_one_of(allowed)}"
        return self._pixel_refusal(header)

    def _pixel_refusal(self, header: pydicom.Dataset) -> str | None:
        frames = _int(header.get("NumberOfFrames"), 1)
        if frames > self.max_frames:
            return f"{frames} frames: the model reads {self.max_frames}"
        samples = _int(header.get("SamplesPerPixel"), 1)
        photometric = str(header.get("PhotometricInterpretation", "") or "").strip()
        if samples != 1 or photometric not in self.photometric_interpretations:
            shown = photometric or "no PhotometricInterpretation"
            return f"not a grey image ({shown}, {samples} samples per pixel)"
        rows, columns = _int(header.get("Rows"), 0), _int(header.get("Columns"), 0)
        if max(rows, columns) > self.max_side:
            return (
                f"image {rows} x {columns} is larger than {self.max_side} pixels a side "
                "(refused before decoding)"
            )
        if min(rows, columns) < self.min_side:
            return f"image {rows} x {columns} is smaller than {self.min_side} pixels a side"
        return None


def _sop_class(value: str, source: str) -> str:
    if value and all(c.isdigit() or c == "." for c in value):
        return value
    import pydicom.uid

    found = getattr(pydicom.uid, value, None)
    if not isinstance(found, str):
        raise UsageError(f"{source}: {value!r} is neither a SOP Class UID nor a pydicom keyword")
    return str(found)


def _class_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return f"{name} ({uid})" if name and name != uid else (uid or "(none)")


def _one_of(values: tuple[str, ...]) -> str:
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def _int(value, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default
