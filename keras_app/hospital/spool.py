"""The DICOM node's spool: received instances on disk until their results are stored.

A C-STORE is acknowledged only after its instance is in `incoming/`, so a crash
loses nothing the PACS believes delivered. Files are keyed by SOP Instance UID:
the same instance received twice is one item, and `done/` remembers instances
already answered so a late duplicate is not answered again.

    spool/
    ├── tmp/        half-written files (renamed into incoming/ when complete)
    ├── incoming/   UID.dcm: received, not yet answered
    ├── done/       UID: answered (empty marker files)
    └── failed/     UID.dcm: could not be read or analysed (kept for a human)
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

# A UID is digits and dots; anything else in a file name would be a path trick.
_UID = re.compile(r"^[0-9.]{1,64}$")


class Spool:
    """Received DICOM instances, written atomically, one file per SOP Instance UID.

    Args:
        root: the spool folder (created if missing).

    Example:
        >>> spool = Spool("/var/spool/kerasapp")
        >>> spool.put("1.2.3", lambda f: f.write(encoded))
        True
        >>> [p.name for p in spool.pending()]
        ['1.2.3.dcm']
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for name in ("tmp", "incoming", "done", "failed"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def put(self, sop_instance_uid: str, write: Callable[[BinaryIO], object]) -> bool:
        """Stores one instance durably; False when it is already pending or answered.

        Raises:
            ValueError: `sop_instance_uid` is not a DICOM UID.
            OSError: the file could not be written (the caller must not acknowledge).
        """
        uid = check_uid(sop_instance_uid)
        target = self.incoming(uid)
        if target.exists() or self.is_done(uid):
            return False
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
        return True

    def pending(self) -> list[Path]:
        """Instances received and not yet answered, oldest first."""
        files = [p for p in (self.root / "incoming").glob("*.dcm") if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def finish(self, path: Path) -> None:
        """Marks an instance answered: the marker first, so a crash between leaves it done."""
        uid = path.name.removesuffix(".dcm")
        (self.root / "done" / uid).touch()
        _fsync_dir(self.root / "done")
        path.unlink(missing_ok=True)

    def fail(self, path: Path) -> None:
        """Moves an instance that cannot be analysed out of the way, kept for inspection."""
        os.replace(path, self.root / "failed" / path.name)

    def is_done(self, sop_instance_uid: str) -> bool:
        return (self.root / "done" / sop_instance_uid).exists()

    def incoming(self, sop_instance_uid: str) -> Path:
        return self.root / "incoming" / f"{sop_instance_uid}.dcm"


def check_uid(uid: str) -> str:
    """`uid` stripped of DICOM's padding, or a ValueError saying what was received."""
    uid = str(uid).strip().rstrip("\0")
    if not _UID.match(uid):
        raise ValueError(f"not a DICOM UID. Received {uid!r}")
    return uid


def _fsync_dir(folder: Path) -> None:
    """Makes a rename durable: the new directory entry is on disk, not only in cache."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
