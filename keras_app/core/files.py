"""Files and folders written so that a reader never sees them half-written.

Every writer of the product goes through here: a file through a temporary beside
it and a rename, a folder through a temporary folder and a rename, and a shared
folder (TF Serving's models.config) under an exclusive lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from keras_app.core.errors import UsageError


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes a file through a temporary beside it and a rename: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, overwrite: bool = False):
    """Yields a temporary folder beside `final`, renamed to `final` on success.

    A reader polling the parent (TF Serving, a resumed run) never sees a
    half-written folder; on error the temporary folder is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise UsageError(f"{final} already exists")
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(folder: Path):
    """An exclusive lock on a folder itself: no lock file left behind for git or the server."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
