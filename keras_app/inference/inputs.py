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
    """One image input: `error` says why it cannot be read (None: it can); `refused` why a
    readable image is not analysed (a DICOM header the header policy refuses)."""

    path: Path
    error: str | None = None
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def to_predict(self) -> bool:
        return self.error is None and self.refused is None


def collect_inputs(items: Sequence[str], policy=None) -> list[Input]:
    """Expands files, folders (recursively) and quoted globs into inputs.

    A named file, a missing path, a glob matching nothing and a folder with no
    image each become an `Input` with its error. In a folder or a glob, files
    that are not images (notes, `.DS_Store`, `Thumbs.db`) are left out quietly. A DICOM
    file whose header `policy` (a `HeaderPolicy`; None: its defaults) refuses, say a lateral
    view or a CT, is kept with the reason it is not analysed.
    """
    from keras_app.decision.header_policy import HeaderPolicy

    policy = policy or HeaderPolicy()
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
    unique = {i.path: _checked(i, policy) for i in found}  # a file named twice: once
    return list(unique.values())


def _checked(item: Input, policy) -> Input:
    """The input with the header policy's refusal, for a readable DICOM file."""
    import pydicom

    from data_pipelines.dicom import DICOM_MAGIC_AT, has_dicom_magic

    if not item.ok:
        return item
    with open(item.path, "rb") as f:
        if not has_dicom_magic(f.read(DICOM_MAGIC_AT + 4)):
            return item
    header = pydicom.dcmread(item.path, stop_before_pixels=True)
    return Input(item.path, refused=policy.refusal(header))


def _expand(paths: Sequence[Path], what: str) -> list[Input]:
    """The images among `paths`: readable ones, and damaged ones named as images are (a cut
    JPEG gets its row); files that are not meant to be images are left out quietly."""
    from data_pipelines.scan import IMAGE_SUFFIXES

    files = [f for p in paths for f in (_folder_files(p) if p.is_dir() else [p])]
    probed = list(map(_probe, files))
    kept = [i for i in probed if i.ok or i.path.suffix.lower() in IMAGE_SUFFIXES]
    if not any(i.ok for i in kept):
        return [Input(Path(what.removeprefix("folder ")), _nothing_in(what, len(files)))]
    return kept


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
