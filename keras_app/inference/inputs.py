"""What a user names on the command line, as image inputs: files, folders, globs.

Each input ends as an `Input`: a readable image, or the one-line reason it is
not one. Nothing here aborts a batch: `predict` classifies what it can and
reports the rest per line.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Input:
    """One image input: `error` is None when it can be predicted, else why not."""

    path: Path
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def collect_inputs(items: Sequence[str]) -> list[Input]:
    """Expands files, folders (recursively) and quoted globs into inputs.

    A named file, a missing path, a glob matching nothing and a folder with no
    image each become an `Input` with its error. In a folder or a glob, files
    that are not images (notes, `.DS_Store`, `Thumbs.db`) are left out quietly.
    """
    found: list[Input] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_file():
            found.append(_probe(path))
        elif path.is_dir():
            found += _expand([path], f"folder {item}")
        elif _GLOB_CHARS & set(item):
            found += _expand(sorted(Path(m) for m in glob.glob(str(path), recursive=True)), item)
        else:
            found.append(Input(path, "no such file or folder"))
    unique = {i.path: i for i in found}  # a file named twice is classified once
    return list(unique.values())


def _expand(paths: Sequence[Path], what: str) -> list[Input]:
    files = [f for p in paths for f in (_folder_files(p) if p.is_dir() else [p])]
    readable = [i for i in map(_probe, files) if i.ok]
    if not readable:
        return [Input(Path(what.removeprefix("folder ")), _nothing_in(what, len(files)))]
    return readable


def _nothing_in(what: str, n: int) -> str:
    if not n:
        return "empty folder" if what.startswith("folder ") else "no file matches"
    return f"no readable image among {n} file(s)"


def _folder_files(folder: Path) -> list[Path]:
    """Files under `folder`, sorted, leaving out hidden files and folders."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _probe(path: Path) -> Input:
    from data_pipelines.scan import UnreadableImage, probe_image

    try:
        probe_image(path)
    except UnreadableImage as err:
        return Input(path, str(err))
    return Input(path)


def read_images(files: Sequence[Path]) -> list[bytes]:
    """Each file's encoded bytes as a server takes them; DICOM becomes a lossless PNG."""
    from data_pipelines.decode import servable_bytes

    return [servable_bytes(Path(path).read_bytes()) for path in files]


def image_files(items: Sequence[str]) -> list[Path]:
    """The image files of `items`, for commands that need every input readable.

    Raises:
        UsageError: naming the first input that is not a readable image.
    """
    from keras_app.core.errors import UsageError

    inputs = collect_inputs(items)
    bad = [i for i in inputs if not i.ok]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UsageError(f"{bad[0].path}: {bad[0].error}{more}")
    return [i.path for i in inputs]
