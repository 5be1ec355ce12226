"""Scanning class folders: which files are images that the pipeline can decode.

Every image file is opened once here, at load time, so that a corrupt,
truncated or zero-byte one is skipped with a line naming it instead of stopping
training mid-epoch. Files that are not meant to be images (`.DS_Store`,
`Thumbs.db`, `notes.txt`) are left out quietly and only counted. The scan also
records each image's size from its header, for callers that need a minimum
input size.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from data_pipelines.dicom import DICOM_MAGIC_AT, has_dicom_magic, read_dicom
from data_pipelines.errors import DataError

# What tf.io.decode_image reads; DICOM goes through pydicom instead.
TF_FORMATS = ("JPEG", "PNG", "BMP")
# PIL modes of BMP files that tf.io.decode_bmp decodes (it has no 1- or 4-bit reader).
_TF_BMP_MODES = ("L", "RGB", "RGBA")
# PIL modes with one grey channel (and maybe alpha).
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# An RGB image whose channels differ by no more than this is grey content (JPEG's
# colour conversion leaves +-1 on grey pixels stored as RGB).
GREY_TOLERANCE = 2
# Names that mean "meant to be an image": such a file that does not read is reported.
# Formats tf.io cannot decode are listed too, so that they are reported, not hidden.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom"}
)


class UnreadableImage(Exception):
    """Raised by `probe_image` with the reason a file cannot be used."""


class ImageInfo(NamedTuple):
    """What the scan learns of one image: its size, and whether its content is grey."""

    height: int
    width: int
    grey: bool


@dataclass(frozen=True)
class FolderScan:
    """The readable images under class folders, in sorted order.

    Attributes:
        class_names: the class folder names, sorted.
        files: absolute paths of readable images.
        labels: class index of each file.
        sizes: `(h, w)` of each file, int array `[n, 2]`.
        grey: whether each file's content is grey (stored as grey, or RGB with equal
            channels, as X-rays often are), bool `[n]`.
        skipped: `(file, reason)` for each image file that cannot be read.
        ignored: files that are not images (see `is_image_file`), left out.
    """

    class_names: tuple[str, ...]
    files: list[str]
    labels: np.ndarray
    sizes: np.ndarray
    grey: np.ndarray
    skipped: list[tuple[str, str]]
    ignored: list[str]


def is_image_file(path: str | Path) -> bool:
    """Whether a file is meant to be an image, from its name (or DICOM's magic bytes).

    Hidden files (`.DS_Store`, AppleDouble `._x.jpeg`) and names without an image
    extension (`Thumbs.db`, `desktop.ini`, `notes.txt`) are not, except DICOM
    files, which often have no extension or a UID's digits for one.
    """
    path = Path(path)
    if path.name.startswith("."):
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES or _has_dicom_magic(path)


def jpeg_problem(content: bytes) -> str | None:
    """What libjpeg says is wrong with a JPEG codestream, or None when it decodes cleanly.

    Decodes in strict mode at 1/8 scale (simplejpeg, libjpeg-turbo): every warning is
    an error, and the entropy-coded data is still read whole. A cut file ("Premature end
    of JPEG file") and zeroed or overwritten data ("Corrupt JPEG data: ...") are caught;
    a few flipped bits that still form valid codes are not (no decoder can tell them).
    """
    try:
        header = simplejpeg.decode_jpeg_header(content)
        height, width = header[0], header[1]
        simplejpeg.decode_jpeg(
            content,
            colorspace="GRAY",
            strict=True,
            min_height=max(1, height // 8),
            min_width=max(1, width // 8),
        )
    except ValueError as err:
        return str(err).strip() or "undecodable"
    return None


def probe_image(path: str | Path) -> ImageInfo:
    """Checks that a file decodes as an image and returns its size and greyness.

    JPEGs are decoded at 1/8 scale (PIL `draft`): that still reads every byte of
    the compressed data, so truncation shows, at a fraction of the cost. A JPEG is
    also decoded by libjpeg-turbo in strict mode (`jpeg_problem`): libjpeg only *warns*
    about a damaged codestream ("Corrupt JPEG data: premature end of data segment"),
    and TensorFlow and Pillow then decode the damaged image without a word.

    Raises:
        UnreadableImage: with the reason (zero bytes, not an image, truncated, ...).
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnreadableImage("zero-byte file")
    if _is_dicom(path):
        try:
            pixels = read_dicom(path)
        except Exception as e:  # pydicom raises many types for bad files
            raise UnreadableImage(f"unreadable DICOM ({type(e).__name__}: {e})") from e
        return ImageInfo(int(pixels.shape[0]), int(pixels.shape[1]), pixels.shape[-1] == 1)
    try:
        with Image.open(path) as image:
            width, height = image.size
            kind, mode = image.format, image.mode
            if kind not in TF_FORMATS:
                raise UnreadableImage(
                    f"unsupported format {kind} (supported: JPEG, PNG, BMP, DICOM)"
                )
            if kind == "BMP" and mode not in _TF_BMP_MODES:
                raise UnreadableImage(f"BMP of mode {mode} is not supported by tf.io")
            if kind == "JPEG":
                problem = jpeg_problem(path.read_bytes())
                if problem:
                    raise UnreadableImage(f"corrupt or truncated JPEG data (libjpeg: {problem})")
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
            grey = _is_grey(image)
    except UnidentifiedImageError as e:
        raise UnreadableImage("not an image") from e
    except Image.DecompressionBombError as e:
        raise UnreadableImage(f"too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying truncated or corrupt
        raise UnreadableImage(f"corrupt or truncated ({e})") from e
    return ImageInfo(height, width, grey)


def _is_grey(image: Image.Image) -> bool:
    if image.mode in _GREY_MODES:
        return True
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    spread = np.abs(pixels[..., 1:] - pixels[..., :1]).max(initial=0)
    return bool(spread <= GREY_TOLERANCE)


def _is_dicom(path: Path) -> bool:
    return path.suffix.lower() == ".dcm" or _has_dicom_magic(path)


def _has_dicom_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return has_dicom_magic(f.read(DICOM_MAGIC_AT + 4))


def scan_class_folders(root: str | Path, *, workers: int | None = None) -> FolderScan:
    """Finds and checks the images in `root/<class>/**`.

    Nothing is printed here: the caller reports `skipped` and `ignored` once for
    all the folders it scans (see `report_left_out`).

    Args:
        root: a folder holding one sub-folder per class.
        workers: threads for checking files (PIL releases the GIL while decoding).

    Returns:
        A `FolderScan`.

    Raises:
        DataError: `root` has no class folders, or a class folder has no readable image.
    """
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"expected one sub-folder per class in {root}, found none")
    candidates, ignored = [], []
    for label, class_dir in enumerate(class_dirs):
        for f in sorted(class_dir.rglob("*")):
            if not f.is_file():
                continue
            hidden = any(part.startswith(".") for part in f.relative_to(class_dir).parts)
            if hidden or not is_image_file(f):
                ignored.append(str(f))
            else:
                candidates.append((str(f), label))
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_probe_or_reason, (f for f, _ in candidates)))
    files, labels, infos, skipped = [], [], [], []
    for (path, label), (info, reason) in zip(candidates, results, strict=True):
        if reason is not None:
            skipped.append((path, reason))
            continue
        files.append(path)
        labels.append(label)
        infos.append(info)
    labels = np.asarray(labels, dtype=np.int64)
    for label, class_dir in enumerate(class_dirs):
        if not np.any(labels == label):
            raise DataError(_no_image_message(class_dir, skipped))
    return FolderScan(
        class_names=tuple(p.name for p in class_dirs),
        files=files,
        labels=labels,
        sizes=np.asarray([i[:2] for i in infos], dtype=np.int64).reshape(-1, 2),
        grey=np.asarray([i.grey for i in infos], dtype=bool),
        skipped=skipped,
        ignored=ignored,
    )


def report_to_stderr(line: str) -> None:
    """Writes one plain line to stderr: the default reporter of `load_dataset`."""
    print(line, file=sys.stderr, flush=True)


def report_left_out(
    skipped: Sequence[tuple[str, str]],
    ignored: Sequence[str],
    where: str | Path,
    report: Callable[[str], None] = report_to_stderr,
) -> None:
    """Reports one line per skipped image file, then the totals.

    Example output:
        skipped data/b/zero.png: zero-byte file
        skipped 1 unreadable image file under data
        ignored 3 non-image files under data

    Args:
        skipped: `(file, reason)` pairs, as `FolderScan.skipped`.
        ignored: non-image files, as `FolderScan.ignored`; only counted.
        where: the folder named in the totals.
        report: called with each line (no newline); replace it to log or collect.
    """
    for path, reason in skipped:
        report(f"skipped {path}: {reason}")
    if skipped:
        report(f"skipped {_count(len(skipped), 'unreadable image file')} under {where}")
    if ignored:
        report(f"ignored {_count(len(ignored), 'non-image file')} under {where}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _no_image_message(class_dir: Path, skipped: Sequence[tuple[str, str]]) -> str:
    # The error stops the load before the skipped files are reported: say why here.
    here = [(p, r) for p, r in skipped if Path(p).is_relative_to(class_dir)]
    message = f"class folder {class_dir} has no readable image"
    if here:
        path, reason = here[0]
        message += f" ({len(here)} unreadable, e.g. {Path(path).name}: {reason})"
    return message


def _probe_or_reason(path: str) -> tuple[ImageInfo | None, str | None]:
    try:
        return probe_image(path), None
    except UnreadableImage as e:
        return None, str(e)
