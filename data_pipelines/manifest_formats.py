"""The manifest formats: how each label table names its paths, labels and patients.

RSNA Pneumonia Detection (stage_2_train_labels.csv), NIH ChestX-ray14
(Data_Entry_2017.csv), CheXpert (train.csv) are recognised from their headers; any
other table is read as the generic format, its columns named by flags or found among
the usual names. `data_pipelines.manifest` reads the rows these formats describe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from data_pipelines.errors import DataError

if TYPE_CHECKING:
    from data_pipelines.manifest import ManifestOptions

# Column names the generic format recognises, compared lower-case with spaces and
# dashes as underscores; a flag names any other.
PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "file_path", "image")
PATH_COLUMNS += ("image_path", "image_file", "image_index")
LABEL_COLUMNS = ("label", "class", "class_name", "target", "diagnosis", "finding", "findings")
PATIENT_COLUMNS = ("patient", "patient_id", "patientid", "subject", "subject_id", "mrn")
SPLIT_COLUMNS = ("split", "partition")
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")


@dataclass(frozen=True)
class Format:
    """How one manifest format is read.

    columns(header, options, path) -> ({role: column index}, task): the roles are
        path, label, patient, split; the task is the label column or finding.
    labels(cells, task, options) -> (class per row or -1, class names, bad rows
        [(row index, why)], notes).
    path_of(cell) -> the file name or relative path a path cell stands for.
    patient_of(cell, path_cell) -> the patient id of a row.
    """

    columns: Callable
    labels: Callable
    path_of: Callable[[str], str] = str
    patient_of: Callable | None = None


def recognise(header: Sequence[str], options: ManifestOptions) -> str:
    names = set(header)
    if options.path_column is not None:
        return "generic"
    if {"patientId", "Target"} <= names:
        return "rsna"
    if {"Image Index", "Finding Labels", "Patient ID"} <= names:
        return "chestx-ray14"
    if {"Path", "Frontal/Lateral"} <= names:
        return "chexpert"
    return "generic"


def _normal(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


def _find(header, wanted: str | None, known: Sequence[str], role: str, path, flag: str):
    """The index of the column named `wanted` (exactly, or in normal form), else of the first
    column with a known name; None where `wanted` is None and none is known."""
    normal = [_normal(h) for h in header]
    if wanted is not None:
        for i, (h, n) in enumerate(zip(header, normal, strict=True)):
            if wanted == h or _normal(wanted) == n:
                return i
        raise DataError(
            f"{path} has no {role} column {wanted!r}; its columns: {', '.join(header)}. "
            f"Received {flag}={wanted!r}"
        )
    return next((normal.index(k) for k in known if k in normal), None)


def _patient_column(header, options, path, default: str | None):
    wanted = options.patient_column or default
    return _find(header, wanted, PATIENT_COLUMNS, "patient", path, "patient_column")


def _generic_columns(header, options, path):
    found = {
        "path": _find(header, options.path_column, PATH_COLUMNS, "path", path, "path_column"),
        "label": _find(header, options.label, LABEL_COLUMNS, "label", path, "label"),
        "patient": _patient_column(header, options, path, None),
        "split": _find(header, None, SPLIT_COLUMNS, "split", path, "split"),
    }
    for role, flag in (("path", "path_column"), ("label", "label")):
        if found[role] is None:
            raise DataError(
                f"cannot tell which column of {path} holds the {role}s (columns: "
                f"{', '.join(header)}); name it with {flag}=COLUMN (--{flag.replace('_', '-')})"
            )
    return found, header[found["label"]]


def _generic_labels(cells, task, options):
    bad = [(i, f"empty label in column {task!r}") for i, c in enumerate(cells) if not c.strip()]
    values = sorted({c.strip() for c in cells if c.strip()}, key=_class_order)
    index = {v: i for i, v in enumerate(values)}
    labels = np.asarray([index.get(c.strip(), -1) for c in cells], dtype=np.int64)
    return labels, tuple(values), bad, []


def _class_order(value: str):
    """Numbers in numeric order (2 before 10), then names in text order."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _rsna_columns(header, options, path):
    if options.label not in (None, "Target", "Pneumonia"):
        raise DataError(
            f"{path} (RSNA pneumonia) has one task, Target (pneumonia); leave out label. "
            f"Received label={options.label!r}"
        )
    found = {
        "path": header.index("patientId"),
        "label": header.index("Target"),
        "patient": _patient_column(header, options, path, "patientId"),
    }
    return found, "Pneumonia"


def _rsna_labels(cells, task, options):
    values = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
    labels = np.asarray([values.get(c.strip(), -1) for c in cells], dtype=np.int64)
    bad = [
        (i, f"unknown label {c!r} in column 'Target' (0 or 1)") for i, c in _unknown(cells, labels)
    ]
    return labels, binary_classes(task), bad, []


def _nih_columns(header, options, path):
    found = {
        "path": header.index("Image Index"),
        "label": header.index("Finding Labels"),
        "patient": _patient_column(header, options, path, "Patient ID"),
    }
    return found, options.label


def _nih_labels(cells, task, options):
    findings = sorted(set().union(*map(_findings, set(cells))) - {""})
    finding = _choose_finding(task, findings, "ChestX-ray14 (Finding Labels)")
    labels = np.asarray(
        [-1 if not c.strip() else int(finding in _findings(c)) for c in cells], dtype=np.int64
    )
    bad = [(i, "empty label in column 'Finding Labels'") for i, c in _unknown(cells, labels)]
    return labels, binary_classes(finding), bad, []


def _findings(cell: str) -> set[str]:
    return {f.strip() for f in cell.split("|")}


def _chexpert_columns(header, options, path):
    findings = header[header.index("AP/PA") + 1 :] if "AP/PA" in header else header[5:]
    finding = _choose_finding(options.label, findings, "CheXpert (one column per finding)")
    found = {
        "path": header.index("Path"),
        "label": header.index(finding),
        "patient": _patient_column(header, options, path, None),
    }
    return found, finding


def _chexpert_labels(cells, task, options):
    values = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "": 0, "-1.0": -2, "-1": -2}
    raw = np.asarray([values.get(c.strip(), -1) for c in cells], dtype=np.int64)
    uncertain = raw == -2
    policy = {"ignore": -3, "zeros": 0, "ones": 1}[options.uncertain]
    labels = np.where(uncertain, policy, raw)
    bad = [
        (i, f"unknown label {c!r} in column {task!r} (1.0, 0.0, -1.0 or empty)")
        for i, c in _unknown(cells, labels)
    ]
    notes = []
    if uncertain.any():
        done = {
            "ignore": "left out (uncertain='zeros' or 'ones' keeps them)",
            "zeros": "read as negative (uncertain='zeros')",
            "ones": "read as positive (uncertain='ones')",
        }[options.uncertain]
        notes.append(f"{int(uncertain.sum())} rows with an uncertain {task} label (-1.0): {done}")
    return labels, binary_classes(task), bad, notes


def _chexpert_patient(cell: str, path_cell: str) -> str:
    match = _CHEXPERT_PATIENT.search(path_cell)
    return match.group(1) if match else cell


def _unknown(cells, labels):
    """`(row index, cell)` of the rows whose label is -1 (unknown)."""
    return [(i, cells[i]) for i in np.flatnonzero(labels == -1).tolist()]


def binary_classes(finding: str) -> tuple[str, str]:
    """The classes of a one-finding task: `("no Pneumonia", "Pneumonia")`."""
    return (f"no {finding}", finding)


def _choose_finding(label: str | None, findings: Sequence[str], what: str) -> str:
    """The finding `label` names (case and `_`/space aside), else a DataError listing them."""
    findings = [f for f in findings if f]
    if label is None:
        raise DataError(
            f"a {what} manifest holds {len(findings)} findings: choose the binary task with "
            f"label=FINDING (--label), one of: {', '.join(findings)}"
        )
    by_normal = {_normal(f): f for f in findings}
    if _normal(label) not in by_normal:
        raise DataError(
            f"{what} has no finding {label!r}; it has: {', '.join(findings)}. "
            f"Received label={label!r}"
        )
    return by_normal[_normal(label)]


FORMATS: dict[str, Format] = {
    "generic": Format(_generic_columns, _generic_labels),
    "rsna": Format(_rsna_columns, _rsna_labels, path_of=lambda cell: f"{cell.strip()}.dcm"),
    "chestx-ray14": Format(_nih_columns, _nih_labels),
    "chexpert": Format(_chexpert_columns, _chexpert_labels, patient_of=_chexpert_patient),
}
