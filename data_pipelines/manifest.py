"""Manifests: a CSV table of image files, labels and patients (`--data csv:PATH`).

Formats, recognised from the header row:

    generic       a path column, a label column (its values are the classes),
                  optionally a patient column and a split column (train/val/test)
    rsna          RSNA Pneumonia Detection `stage_2_train_labels.csv`: patientId,
                  Target (0/1), one row per box; the images are `<patientId>.dcm`
    chestx-ray14  NIH `Data_Entry_2017.csv`: Image Index, Finding Labels
                  ("Effusion|Pneumonia", "No Finding"), Patient ID
    chexpert      CheXpert `train.csv` / `valid.csv`: Path, Sex, Age,
                  Frontal/Lateral, AP/PA, then one column per finding

ChestX-ray14 and CheXpert hold many findings: `label` chooses one, a binary task
with the classes `("no <finding>", "<finding>")`. CheXpert's finding columns hold
1.0 (positive), 0.0 (negative), -1.0 (uncertain) or nothing (not mentioned in the
report, read as negative, as the CheXpert labeler means it); `uncertain` says
what -1.0 becomes (the policies of Irvin et al. 2019): "ignore" leaves those rows
out (U-Ignore, the default: no guessed labels), "zeros" reads them as negative
(U-Zeros), "ones" as positive (U-Ones).

Paths: absolute, or relative to the manifest's folder, or to the folder above it
(CheXpert's `CheXpert-v1.0-small/train/...` beside `CheXpert-v1.0-small/train.csv`);
the first rows decide which. Bare file names (ChestX-ray14's `00000001_000.png`,
RSNA's patient ids) are looked up by name in the folders below the manifest
(`images_001/images/`, `stage_2_train_images/`).

Bad rows (an empty path or label, a label not in the task, a file named twice
with two labels, an unknown split) are collected with the reason, never fatal by
themselves; `sources.load_dataset` adds missing and unreadable files and fails
only where nothing usable is left.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_pipelines.errors import DataError
from data_pipelines.manifest_formats import FORMATS, SPLIT_NAMES, Format, recognise
from data_pipelines.splits import patient_groups

UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")
# Rows sampled to decide what relative paths are relative to.
PATH_SAMPLE = 50


@dataclass(frozen=True)
class ManifestOptions:
    """How to read a manifest: the task and the columns, where the header does not say.

    Attributes:
        label: the label column of a generic manifest; for ChestX-ray14 and
            CheXpert, the finding of the binary task (e.g. "Pneumonia"); for RSNA,
            None (its one task, Target).
        path_column: the column of image paths (then the file is read as generic).
        patient_column: the column of patient ids (else the format's, else patient
            ids from file names where they have some).
        uncertain: CheXpert's -1.0 labels: "ignore", "zeros" or "ones".

    Example:
        >>> ManifestOptions(label="Pneumonia", uncertain="zeros").uncertain
        'zeros'
    """

    label: str | None = None
    path_column: str | None = None
    patient_column: str | None = None
    uncertain: str = "ignore"

    def __post_init__(self):
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise DataError(
                f"uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}. "
                f"Received uncertain={self.uncertain!r}"
            )

    @property
    def is_default(self) -> bool:
        return self == ManifestOptions()


@dataclass(frozen=True)
class Manifest:
    """What a manifest says, each row resolved to a file, before any file is read.

    Attributes:
        name: a short name for the data (file names may use it).
        format: "generic", "rsna", "chestx-ray14" or "chexpert".
        class_names: class index -> name.
        files: the image file of each usable row (each file once).
        labels: class index per file.
        groups: patient id per file, or None where none is known.
        splits: "train", "val" or "test" per file where the manifest has a split
            column, else None.
        rows: the manifest line of each file (1 is the header).
        bad: `(what, why)` for each row left out.
        notes: lines for the user (rows left out by policy, duplicates merged).
    """

    name: str
    format: str
    class_names: tuple[str, ...]
    files: list[str]
    labels: np.ndarray
    groups: np.ndarray | None
    splits: np.ndarray | None
    rows: np.ndarray
    bad: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Columns:
    """The raw cells a format needs, one list per column, one entry per data row."""

    paths: list[str]
    labels: list[str]
    patients: list[str] | None
    splits: list[str] | None
    rows: list[int]


def read_manifest(path: str | Path, options: ManifestOptions = ManifestOptions()) -> Manifest:
    """Reads a manifest (see the module docstring) into files, labels and patients.

    Args:
        path: the CSV file.
        options: the task and columns.

    Returns:
        A `Manifest`; its files are not checked here (see `sources.load_dataset`).

    Raises:
        DataError: not a CSV with a header, columns that cannot be told, a task the
            format does not have.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"no manifest file at {path}. Received data='csv:{path}'")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            raise DataError(f"{path} is empty: a manifest needs a header row and a row per image")
        kind = recognise(header, options)
        reading = FORMATS[kind]
        columns, task = reading.columns(header, options, path)
        cells = _read_columns(reader, header, columns)
    labels, class_names, bad, notes = reading.labels(cells.labels, task, options)
    manifest = _resolve(path, kind, cells, labels, class_names, reading, task)
    bad = [(f"{path}:{cells.rows[i]}", why) for i, why in bad] + manifest.bad
    return dataclasses.replace(manifest, bad=bad, notes=notes + manifest.notes)


# --- rows to files -------------------------------------------------------------------------------


def _read_columns(reader, header, columns: dict[str, int | None]) -> _Columns:
    """The needed cells of every data row (not whole rows: CheXpert has 19 columns)."""
    width = len(header)
    wanted = {role: i for role, i in columns.items() if i is not None}
    cells = {role: [] for role in wanted}
    rows = []
    for line, row in enumerate(reader, start=2):
        if not any(row):
            continue  # blank lines, trailing newlines, rows of empty cells
        row = row + [""] * (width - len(row)) if len(row) < width else row
        for role, i in wanted.items():
            cells[role].append(row[i])
        rows.append(line)
    return _Columns(cells["path"], cells["label"], cells.get("patient"), cells.get("split"), rows)


def _resolve(path: Path, kind, cells: _Columns, labels, class_names, reading, task) -> Manifest:
    """Rows with a label to files (each once), patients and splits; the rest as bad rows."""
    names = [reading.path_of(c).strip() for c in cells.paths]
    locate = _locator(path.parent, names)
    split_of = _splits(cells.splits)
    bad, first_row, merged = [], {}, 0
    for i, (name, label) in enumerate(zip(names, labels.tolist(), strict=True)):
        if label < 0:
            continue  # a bad label (listed by the format) or a row left out by policy
        where = f"{path}:{cells.rows[i]}"
        if split_of is not None and split_of[i] is None:
            bad.append((where, f"unknown split {cells.splits[i]!r} (train, val or test)"))
        elif not name:
            bad.append((where, "empty path"))
        elif (file := locate(name))[0] is None:
            bad.append((name, f"{file[1]} (row {cells.rows[i]})"))
        elif file[0] not in first_row:
            first_row[file[0]] = i
        elif labels[first_row[file[0]]] == label:
            merged += 1
        else:
            rows = f"rows {cells.rows[first_row[file[0]]]} and {cells.rows[i]}"
            bad.append(
                (
                    file[0],
                    f"two labels, {class_names[labels[first_row[file[0]]]]} and "
                    f"{class_names[label]} ({rows})",
                )
            )
            first_row[file[0]] = -1
    files = [f for f, i in first_row.items() if i >= 0]
    chosen = [i for i in first_row.values() if i >= 0]
    notes = [f"{merged} rows name a file an earlier row names: read once"] if merged else []
    return Manifest(
        name=_data_name(path, kind, task),
        format=kind,
        class_names=class_names,
        files=files,
        labels=labels[chosen] if chosen else np.zeros(0, np.int64),
        groups=_groups(cells, reading, chosen, files),
        splits=None if split_of is None else np.asarray([split_of[i] for i in chosen], dtype=str),
        rows=np.asarray([cells.rows[i] for i in chosen], dtype=np.int64),
        bad=bad,
        notes=notes,
    )


def _splits(cells: list[str] | None) -> list[str | None] | None:
    if cells is None:
        return None
    return [SPLIT_NAMES.get(c.strip().lower()) for c in cells]


def _groups(cells: _Columns, reading: Format, chosen: list[int], files: list[str]):
    """Patient per file: the patient column, the format's rule, else from file names."""
    if cells.patients is None and reading.patient_of is None:
        return patient_groups(files)
    ids = []
    for i, file in zip(chosen, files, strict=True):
        cell = cells.patients[i].strip() if cells.patients is not None else ""
        if reading.patient_of is not None and cells.patients is None:
            cell = reading.patient_of(cell, cells.paths[i])
        ids.append(cell or f"file:{file}")
    return np.asarray(ids, dtype=str)


def _data_name(path: Path, kind: str, task: str | None) -> str:
    name = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    if kind != "generic" and task:
        name += f"-{task}"
    return re.sub(r"[^\w.-]+", "_", name)


def _locator(folder: Path, names: list[str]) -> Callable[[str], tuple[str | None, str]]:
    """`locate(name) -> (file, "")` or `(None, why)` for the path cells of a manifest.

    Decides once, from the first rows, what relative paths are relative to: the
    manifest's folder or the one above. A path with a folder in it is taken as it
    is (a missing file is found when it is read). Bare names are looked for in the
    manifest's folder, and after the first miss in all the folders below it (one
    walk, then lookups by name).
    """
    relative = [n for n in names[:PATH_SAMPLE] if n and not os.path.isabs(n)]
    bases = (str(folder), str(folder.parent))
    base = max(bases, key=lambda b: sum(os.path.exists(os.path.join(b, n)) for n in relative))
    prefix = base.rstrip("/") + "/"
    by_name: dict[str, list[str]] | None = None

    def locate(name: str) -> tuple[str | None, str]:
        nonlocal by_name
        if name.startswith("/"):
            return name, ""
        if "/" in name:  # string ops, not os.path: once per row of 200,000
            return prefix + name, ""
        if by_name is None:
            if os.path.exists(os.path.join(base, name)):
                return os.path.join(base, name), ""
            by_name = _files_by_name(str(folder))
        found = by_name.get(name, [])
        if len(found) == 1:
            return found[0], ""
        if not found:
            return None, f"no file named {name} under {folder}"
        return None, f"{len(found)} files named {name} under {folder}: {', '.join(found[:3])}"

    return locate


def _files_by_name(folder: str) -> dict[str, list[str]]:
    """Every file below `folder` (hidden folders aside) by its name."""
    found: dict[str, list[str]] = {}
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    found.setdefault(entry.name, []).append(entry.path)
    return {name: sorted(paths) for name, paths in found.items()}
