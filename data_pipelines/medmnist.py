"""The MedMNIST `.npz` files this project knows: where they are and their checksums.

Values are those the `medmnist` package (v3) records in its `INFO` table for the
MedMNIST+ files on zenodo record 10519652. Only single-label sets are listed
(ChestMNIST is multi-label, which the classifier does not handle).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_pipelines.errors import DataError

RECORD_URL = "https://zenodo.org/records/10519652/files/{file}?download=1"
SIZES = (28, 64, 128, 224)


@dataclass(frozen=True)
class MedMnistEntry:
    """One MedMNIST set: class names and the md5 of its file per image size.

    A size whose checksum is unknown maps to None: the file is then fetched
    unchecked rather than against an invented checksum.
    """

    class_names: tuple[str, ...]
    md5: dict[int, str | None]


MEDMNIST: dict[str, MedMnistEntry] = {
    "pneumoniamnist": MedMnistEntry(
        ("normal", "pneumonia"),
        {
            28: "28209eda62fecd6e6a2d98b1501bb15f",
            64: "8f4eceb4ccffa70c672198ea285246c6",
            128: "05b46931834c231683c68f40c47b2971",
            224: "d6a3c71de1b945ea11211b03746c1fe1",
        },
    ),
    "breastmnist": MedMnistEntry(
        ("malignant", "normal, benign"),
        {
            28: "750601b1f35ba3300ea97c75c52ff8f6",
            64: "742edef2a1fd1524b2efff4bd7ba9364",
            128: "363e4b3f8d712e9b5de15470a2aaadf1",
            224: "b56378a6eefa9fed602bb16d192d4c8b",
        },
    ),
}


def medmnist_file_name(name: str, size: int) -> str:
    """`pneumoniamnist.npz` at 28 px, `pneumoniamnist_224.npz` etc. otherwise."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def keras_home() -> Path:
    """Keras' cache root: `$KERAS_HOME`, else `~/.keras` (datasets/ and models/ below it).

    Read from the environment on each call, not from Keras, which reads it once at
    import: a caller (or a test) that sets KERAS_HOME later is still followed.
    """
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def keras_datasets_dir() -> Path:
    """Where keras.utils.get_file caches data: `keras_home() / "datasets"`."""
    return keras_home() / "datasets"


def parse_medmnist_spec(spec: str) -> tuple[str, int]:
    """`"pneumoniamnist@224"` -> `("pneumoniamnist", 224)`; the size defaults to 28."""
    name, _, size_text = spec.partition("@")
    name = name.strip().lower()
    if name not in MEDMNIST:
        raise DataError(
            f"unknown MedMNIST set {name!r} (known: {', '.join(sorted(MEDMNIST))}). "
            f"Received data='medmnist:{spec}'"
        )
    try:
        size = int(size_text) if size_text else 28
    except ValueError:
        size = -1
    if size not in SIZES:
        raise DataError(f"MedMNIST size must be one of {SIZES}. Received data='medmnist:{spec}'")
    return name, size


def fetch_medmnist(name: str, size: int, *, get_file: Callable | None = None) -> Path:
    """The local path of a MedMNIST file, downloaded once into the Keras cache.

    Args:
        name: a key of `MEDMNIST`.
        size: one of `SIZES`.
        get_file: `keras.utils.get_file` or a stand-in with its signature (tests).

    Raises:
        DataError: the file is not cached and cannot be downloaded (offline).
    """
    if get_file is None:
        import keras

        get_file = keras.utils.get_file
    file_name = medmnist_file_name(name, size)
    cache = keras_datasets_dir()
    url = RECORD_URL.format(file=file_name)
    try:
        path = get_file(
            fname=file_name,
            origin=url,
            file_hash=MEDMNIST[name].md5.get(size),
            cache_dir=str(cache.parent),
            cache_subdir=cache.name,
        )
    except Exception as e:  # get_file raises a bare Exception on URL failure
        raise DataError(
            f"could not get medmnist:{name}@{size}: {e}. Offline, put {file_name} "
            f"(from {url}) into {cache}/, or use npz:PATH"
        ) from e
    return Path(path)
