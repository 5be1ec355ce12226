"""The DICOM node's spool: received instances on disk until their results are stored.

A C-STORE is acknowledged (and a pulled change passed) only after its instance is in
`incoming/`, so a crash loses nothing the PACS believes delivered. Files are keyed by
SOP Instance UID, checked to be one before it becomes a file name: the same instance
received twice is one item, and `done/` remembers instances already answered so a late
duplicate is not answered again.

    spool/
    ├── tmp/        half-written files (renamed into incoming/ when complete)
    ├── incoming/   UID.dcm: received, not yet answered
    ├── done/       UID: answered (empty marker files)
    ├── failed/     UID.dcm and UID.txt (why): every image not analysed (the policy
    │               refused it, its pixel data is damaged) or that could not be answered
    │               at all (not readable DICOM, no SR can be built from its header),
    │               kept for a human
    └── cursor.json where the pull intake is in the PACS's change log (node.follow)

`max_bytes` bounds what incoming/ and failed/ hold together: past it, `put` raises
`SpoolFull` (the C-STORE is refused as out of resources, so the PACS retries later).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# A UID is digits and dots; anything else in a file name would be a path trick.
_UID = re.compile(r"^[0-9.]{1,64}$")


class SpoolFull(Exception):
    """The spool holds `max_bytes` already: refuse until answers free some."""


class Spool:
    """Received DICOM instances, written atomically, one file per SOP Instance UID.

    Args:
        root: the spool folder (created if missing).
        max_bytes: the most incoming/ and failed/ may hold together (None: no limit).

    Example:
        >>> spool = Spool("/var/spool/kerasapp")
        >>> spool.put("1.2.3", lambda f: f.write(encoded))
        True
        >>> [p.name for p in spool.pending()]
        ['1.2.3.dcm']
    """

    def __init__(self, root: str | Path, *, max_bytes: int | None = None):
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive. Received max_bytes={max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        for name in ("tmp", "incoming", "done", "failed"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for part in (self.root / "tmp").glob("*.part"):  # left by a crash mid-write
            part.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._used = sum(
            p.stat().st_size
            for name in ("incoming", "failed")
            for p in (self.root / name).iterdir()
        )

    @property
    def used_bytes(self) -> int:
        """What incoming/ and failed/ hold."""
        return self._used

    def put(self, sop_instance_uid: str, write: Callable[[BinaryIO], object]) -> bool:
        """Stores one instance durably; False when it is already pending or answered.

        Raises:
            ValueError: `sop_instance_uid` is not a DICOM UID.
            SpoolFull: the spool holds `max_bytes` already.
            OSError: the file could not be written (the caller must not acknowledge).
        """
        uid = check_uid(sop_instance_uid)
        target = self.incoming(uid)
        if target.exists() or self.is_done(uid):
            return False
        if self.max_bytes is not None and self._used >= self.max_bytes:
            raise SpoolFull(
                f"spool full: it holds {self._used / 1e6:.1f} MB of its {self.max_bytes / 1e6:.1f}"
                f" MB (--spool-max-mb); answers and a clean failed/ free it"
            )
        tmp = self.root / "tmp" / f"{uid}.{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)  # atomic: a reader sees the whole file or none
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        self._count(target.stat().st_size)
        return True

    def _count(self, size: int) -> None:
        with self._lock:
            self._used = max(0, self._used + size)

    def pending(self) -> list[Path]:
        """Instances received and not yet answered, oldest first."""
        files = [p for p in (self.root / "incoming").glob("*.dcm") if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def finish(self, path: Path) -> None:
        """Marks an instance answered: the marker first, so a crash between leaves it done."""
        self._mark_done(path)
        size = _size(path)
        path.unlink(missing_ok=True)
        self._count(-size)

    def set_aside(self, path: Path, reason: str) -> Path:
        """Keeps an instance that was not analysed in failed/, with `reason` beside it.

        It is marked done too: a resend is not answered a second time.

        Returns:
            The kept file.
        """
        uid = path.name.removesuffix(".dcm")
        kept = self.root / "failed" / path.name
        note = f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {reason}\n"
        (self.root / "failed" / f"{uid}.txt").write_text(note)
        self._mark_done(path)
        os.replace(path, kept)
        self._count(len(note))
        return kept

    def _mark_done(self, path: Path) -> None:
        (self.root / "done" / path.name.removesuffix(".dcm")).touch()
        _fsync_dir(self.root / "done")

    def is_done(self, sop_instance_uid: str) -> bool:
        return (self.root / "done" / check_uid(sop_instance_uid)).exists()

    def incoming(self, sop_instance_uid: str) -> Path:
        return self.root / "incoming" / f"{check_uid(sop_instance_uid)}.dcm"


def check_uid(uid: str) -> str:
    """`uid` stripped of DICOM's padding, or a ValueError saying what was received."""
    uid = str(uid).strip().rstrip("\0")
    if not _UID.match(uid):
        raise ValueError(f"not a DICOM UID. Received {uid!r}")
    return uid


def write_durably(path: Path, data: bytes) -> None:
    """Replaces `path` with `data`, on disk before it returns (a power cut keeps the old
    file or the new one, never an empty one)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fsync_dir(folder: Path) -> None:
    """Makes a rename durable: the new directory entry is on disk, not only in cache."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
