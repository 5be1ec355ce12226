"""Scanning class folders: which files are images that the pipeline can decode.

Every image file is checked once here, at load time, so that a corrupt,
truncated or zero-byte one is skipped with a line naming it instead of stopping
training mid-epoch. Files that are not meant to be images (`.DS_Store`,
`Thumbs.db`, `notes.txt`) are left out quietly and only counted. The check also
records each image's size from its header (for callers that need a minimum
input size), whether it is grey, and its content hash (see `identity`), from
one read of the file.

What a check found is kept in the file index (`file_index`): a later scan of
the same root checks only new and changed files.
"""

from __future__ import annotations

import hashlib
import io
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

from data_pipelines import file_index
from data_pipelines.dicom import DICOM_MAGIC_AT, has_dicom_magic, read_dicom
from data_pipelines.errors import DataError
from data_pipelines.file_index import FileFacts
from data_pipelines.identity import HASH_CHARS

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
# Files named one per line in a report of what was left out; the rest are counted.
MAX_NAMED = 100
# Above this many files to check, say so first: a first scan of 200,000 takes minutes.
ANNOUNCE_CHECKS = 5000


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
        hashes: content hash of each file (see `identity.file_hash`), str `[n]`.
        byte_sizes: bytes of each file, int `[n]`.
    """

    class_names: tuple[str, ...]
    files: list[str]
    labels: np.ndarray
    sizes: np.ndarray
    grey: np.ndarray
    skipped: list[tuple[str, str]]
    ignored: list[str]
    hashes: np.ndarray | None = None
    byte_sizes: np.ndarray | None = None


def is_image_file(path: str | Path) -> bool:
    """Whether a file is meant to be an image, from its name (or DICOM's magic bytes).

    Hidden files (`.DS_Store`, AppleDouble `._x.jpeg`) and names without an image
    extension (`Thumbs.db`, `desktop.ini`, `notes.txt`) are not, except DICOM
    files, which often have no extension or a UID's digits for one.
    """
    return _is_image_name(os.path.basename(os.fspath(path)), path)


def _is_image_name(name: str, path: str | Path) -> bool:
    """`is_image_file` with the name already split off (string ops: called for every file)."""
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES or _has_dicom_magic(path)


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

    Raises:
        UnreadableImage: with the reason (zero bytes, not an image, truncated, ...).
    """
    return probe_contents(Path(path).read_bytes(), path)


def probe_contents(contents: bytes, path: str | Path) -> ImageInfo:
    """`probe_image` on a file's bytes; `path` says what it was called (for DICOM).

    JPEGs are decoded at 1/8 scale (PIL `draft`): that still reads every byte of
    the compressed data, so truncation shows, at a fraction of the cost. A JPEG is
    also decoded by libjpeg-turbo in strict mode (`jpeg_problem`): libjpeg only *warns*
    about a damaged codestream ("Corrupt JPEG data: premature end of data segment"),
    and TensorFlow and Pillow then decode the damaged image without a word.

    Raises:
        UnreadableImage: with the reason (zero bytes, not an image, truncated, ...).
    """
    if not contents:
        raise UnreadableImage("zero-byte file")
    if Path(path).suffix.lower() == ".dcm" or has_dicom_magic(contents[: DICOM_MAGIC_AT + 4]):
        try:
            pixels = read_dicom(contents)
        except Exception as e:  # pydicom raises many types for bad files
            raise UnreadableImage(f"unreadable DICOM ({type(e).__name__}: {e})") from e
        return ImageInfo(int(pixels.shape[0]), int(pixels.shape[1]), pixels.shape[-1] == 1)
    try:
        with Image.open(io.BytesIO(contents)) as image:
            width, height = image.size
            kind, mode = image.format, image.mode
            if kind not in TF_FORMATS:
                raise UnreadableImage(
                    f"unsupported format {kind} (supported: JPEG, PNG, BMP, DICOM)"
                )
            if kind == "BMP" and mode not in _TF_BMP_MODES:
                raise UnreadableImage(f"BMP of mode {mode} is not supported by tf.io")
            if kind == "JPEG":
                problem = jpeg_problem(contents)
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


def _has_dicom_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        return has_dicom_magic(f.read(DICOM_MAGIC_AT + 4))


def scan_class_folders(
    root: str | Path,
    *,
    workers: int | None = None,
    index_key: str | None = None,
    report: Callable[[str], None] | None = None,
) -> FolderScan:
    """Finds and checks the images in `root/<class>/**`.

    Nothing about left-out files is printed here: the caller reports `skipped`
    and `ignored` once for all the folders it scans (see `report_left_out`).

    Args:
        root: a folder holding one sub-folder per class.
        workers: threads for checking files (PIL and hashlib release the GIL).
        index_key: the file index to reuse and update (see `file_index`); None
            checks every file and keeps nothing.
        report: told once, before a long first check, how many files it covers.

    Returns:
        A `FolderScan`.

    Raises:
        DataError: `root` has no class folders, or a class folder has no readable image.
    """
    return scan_split_folders({"": root}, workers=workers, index_key=index_key, report=report)[""]


def scan_split_folders(
    roots: dict[str, str | Path],
    *,
    workers: int | None = None,
    index_key: str | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, FolderScan]:
    """`scan_class_folders` of several folders (a source's splits) under one file index."""
    listings = {name: list_class_folders(Path(root)) for name, root in roots.items()}
    paths = [path for listing in listings.values() for path in listing.files]
    stats = np.concatenate([listing.stats for listing in listings.values()])
    facts = check_files(
        paths, stats[:, 0], stats[:, 1], workers=workers, index_key=index_key, report=report
    )
    scans, start = {}, 0
    for name, listing in listings.items():
        end = start + len(listing.files)
        scans[name] = _folder_scan(listing, facts.take(np.arange(start, end)))
        start = end
    return scans


@dataclass(frozen=True)
class ClassListing:
    """The candidate image files under class folders, before any is read.

    Attributes:
        class_dirs: the class folders, sorted by name.
        files: image files (by name), sorted as paths within each class.
        labels: class index of each file.
        stats: `(bytes, mtime_ns)` of each file, int `[n, 2]`.
        ignored: files that are not images.
    """

    class_dirs: list[Path]
    files: list[str]
    labels: np.ndarray
    stats: np.ndarray
    ignored: list[str]


def list_class_folders(root: Path) -> ClassListing:
    """The files under `root/<class>/`, by name and directory entry only (os.scandir).

    Raises:
        DataError: `root` has no class folders.
    """
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"expected one sub-folder per class in {root}, found none")
    files, labels, stats, ignored = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        # Sorted by path parts, the order pathlib sorts paths in: the order (and so the
        # carved splits) of earlier versions, which listed with sorted(rglob("*")).
        for parts, entry in sorted(_walk(str(class_dir), ()), key=lambda item: item[0]):
            hidden = len(parts) > 1 and any(part.startswith(".") for part in parts)
            if hidden or not _is_image_name(entry.name, entry.path):
                ignored.append(entry.path)
                continue
            info = entry.stat()
            files.append(entry.path)
            labels.append(label)
            stats.append((info.st_size, info.st_mtime_ns))
    return ClassListing(
        class_dirs,
        files,
        np.asarray(labels, dtype=np.int64),
        np.asarray(stats, dtype=np.int64).reshape(-1, 2),
        ignored,
    )


def _walk(folder: str, parts: tuple[str, ...]):
    """`(parts, entry)` of every file below `folder`, as rglob("*") finds them: linked
    files are followed, linked folders are not entered."""
    with os.scandir(folder) as entries:
        for entry in entries:
            here = (*parts, entry.name)
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(entry.path, here)
            elif entry.is_file():
                yield here, entry


def _folder_scan(listing: ClassListing, facts: FileFacts) -> FolderScan:
    usable = np.ones(len(listing.files), dtype=bool)
    usable[list(facts.reasons)] = False
    skipped = [(listing.files[row], why) for row, why in sorted(facts.reasons.items())]
    labels = listing.labels[usable]
    for label, class_dir in enumerate(listing.class_dirs):
        if not np.any(labels == label):
            raise DataError(_no_image_message(class_dir, skipped))
    return FolderScan(
        class_names=tuple(p.name for p in listing.class_dirs),
        files=[f for f, ok in zip(listing.files, usable, strict=True) if ok],
        labels=labels,
        sizes=np.stack([facts.height, facts.width], axis=1)[usable].astype(np.int64),
        grey=facts.grey[usable],
        skipped=skipped,
        ignored=listing.ignored,
        hashes=facts.digest[usable],
        byte_sizes=listing.stats[usable, 0],
    )


def check_files(
    paths: list[str],
    byte_size: np.ndarray,
    mtime_ns: np.ndarray,
    *,
    workers: int | None = None,
    index_key: str | None = None,
    report: Callable[[str], None] | None = None,
) -> FileFacts:
    """Checks image files, reading only those the file index does not know as they are.

    Args:
        paths: the files.
        byte_size, mtime_ns: each file's size and modification time, from its stat.
        workers: threads reading files.
        index_key: the file index to reuse and update; None reads every file.
        report: told once, before checking many files, how many and why.

    Returns:
        The facts of `paths`, row for row; `reasons` names the unusable files.
    """
    byte_size, mtime_ns = np.asarray(byte_size), np.asarray(mtime_ns)
    index = file_index.load_index(index_key) if index_key else FileFacts.empty()
    rows = file_index.known_rows(index, paths, byte_size, mtime_ns)
    new = np.flatnonzero(rows < 0)
    if report is not None and len(new) >= ANNOUNCE_CHECKS:
        kept = " (kept in the file index: the next run reads only new or changed files)"
        report(f"checking {len(new)} new or changed image files{kept if index_key else ''}")
    fresh = _check_all([paths[i] for i in new], workers)
    facts = _merge(index, rows, new, fresh, paths, byte_size, mtime_ns)
    if index_key and (len(new) or len(index) != len(paths)):
        try:
            file_index.save_index(index_key, facts)
        except OSError as e:  # a read-only or full KERAS_HOME: this run is not hurt
            if report is not None:
                report(f"file index not kept ({e.strerror or e}): the next run reads every file")
    return facts


def _merge(index: FileFacts, rows, new, fresh, paths, byte_size, mtime_ns) -> FileFacts:
    """The index's rows where known, fresh checks at `new`, in the order of `paths`."""
    known = rows >= 0
    n = len(paths)
    height, width = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    grey = np.zeros(n, dtype=bool)
    digest = np.zeros(n, dtype=index.digest.dtype)
    height[known], width[known] = index.height[rows[known]], index.width[rows[known]]
    grey[known], digest[known] = index.grey[rows[known]], index.digest[rows[known]]
    reasons = {}
    if index.reasons:
        back = {int(r): i for i, r in enumerate(rows) if r >= 0 and int(r) in index.reasons}
        reasons = {i: index.reasons[r] for r, i in back.items()}
    for i, (info, hex_digest, reason) in zip(new.tolist(), fresh, strict=True):
        digest[i] = hex_digest
        if reason is not None:
            reasons[i] = reason
        else:
            height[i], width[i], grey[i] = info
    return FileFacts(list(paths), byte_size, mtime_ns, height, width, grey, digest, reasons)


def _check_all(paths: list[str], workers: int | None):
    if not paths:
        return []
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_check_one, paths, chunksize=64))


def _check_one(path: str) -> tuple[ImageInfo | None, str, str | None]:
    """`(info, content hash, None)` of a usable image, `(None, hash, reason)` otherwise."""
    try:
        contents = Path(path).read_bytes()
    except OSError as e:
        return None, "", f"cannot read ({e.strerror or e})"
    digest = hashlib.sha256(contents).hexdigest()[:HASH_CHARS]
    try:
        return probe_contents(contents, path), digest, None
    except UnreadableImage as e:
        return None, digest, str(e)


def report_to_stderr(line: str) -> None:
    """Writes one plain line to stderr: the default reporter of `load_dataset`."""
    print(line, file=sys.stderr, flush=True)


def report_left_out(
    skipped: Sequence[tuple[str, str]],
    ignored: Sequence[str],
    where: str | Path,
    report: Callable[[str], None] = report_to_stderr,
    noun: str = "unreadable image file",
) -> None:
    """Reports one line per skipped image file (the first `MAX_NAMED`), then the totals.

    Example output:
        skipped data/b/zero.png: zero-byte file
        skipped 1 unreadable image file under data
        ignored 3 non-image files under data

    Args:
        skipped: `(file, reason)` pairs, as `FolderScan.skipped`.
        ignored: non-image files, as `FolderScan.ignored`; only counted.
        where: the folder named in the totals.
        report: called with each line (no newline); replace it to log or collect.
        noun: what the total counts ("unreadable image file"; a manifest's "bad row").
    """
    for path, reason in skipped[:MAX_NAMED]:
        report(f"skipped {path}: {reason}")
    if len(skipped) > MAX_NAMED:
        report(f"... and {len(skipped) - MAX_NAMED} more (ImageData.skipped lists them all)")
    if skipped:
        report(f"skipped {_count(len(skipped), noun)} under {where}")
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
