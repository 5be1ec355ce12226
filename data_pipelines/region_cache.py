"""The lung region of every image of a split, as the pipeline sizes it, computed once and cached.

The estimate (`data_pipelines.lung_region`) costs 15-30 ms an image; a training run
that randomises the outside of the lungs, or an audit, needs it for thousands of
images each time. `split_regions` estimates it on the images exactly as
`make_dataset` decodes and resizes them (so a mask lies on its pixels), and keeps
the result per image, by its content hash, in one file per size and region definition:
an image seen by one split, fold or command is not estimated again by the next,
whatever its path.

    regions = split_regions(data.splits["train"], (224, 224))
    regions.region        # bool [n, 224, 224]: lungs and heart, dilated 3%
    regions.fell_back     # bool [n]: the estimate fell back to the box prior
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipelines.data import Split
from data_pipelines.errors import DataError
from data_pipelines.lung_region import estimate_lung_mask
from data_pipelines.medmnist import keras_home
from data_pipelines.regions import lung_region

# Bump when the estimate or the region changes: old cache files are then not read.
ESTIMATE_VERSION = 1
# The region a caller gets unless it asks otherwise: lungs and the heart between
# them, dilated by 3% of the shorter side (`lung_region`'s own defaults).
DILATE = 0.03


@dataclass(frozen=True, eq=False)
class SplitRegions:
    """The lung region of each image of a split, in the split's order.

    Attributes:
        region: bool `[n, h, w]`, `lung_region` (lungs, heart, dilated).
        lungs: bool `[n, h, w]`, the lung fields alone.
        fell_back: bool `[n]`, the estimate was implausible and the box prior was used.
        joined: bool `[n]`, a lung stayed in pieces and was joined (a coarser estimate).
    """

    region: np.ndarray
    lungs: np.ndarray
    fell_back: np.ndarray
    joined: np.ndarray

    def __len__(self) -> int:
        return len(self.fell_back)

    def subset(self, indices) -> SplitRegions:
        indices = np.asarray(indices)
        return SplitRegions(
            self.region[indices], self.lungs[indices], self.fell_back[indices], self.joined[indices]
        )

    @property
    def fallback_rate(self) -> float:
        return float(self.fell_back.mean()) if len(self) else 0.0


def cache_dir() -> Path:
    """Where region files are kept: `$KERAS_HOME/lung_regions` (the project's cache root)."""
    return keras_home() / "lung_regions"


def estimate_regions(images: np.ndarray, dilate: float = DILATE) -> SplitRegions:
    """The regions of images `[n, h, w]` or `[n, h, w, c]`, estimated one by one (no cache)."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or len(images) == 0:
        raise DataError(f"images must be a non-empty [n, h, w(, c)]. Received {images.shape}")
    n, h, w = images.shape[:3]
    region, lungs = np.zeros((n, h, w), bool), np.zeros((n, h, w), bool)
    fell_back, joined = np.zeros(n, bool), np.zeros(n, bool)
    for i, image in enumerate(images):
        found = estimate_lung_mask(image)
        region[i] = lung_region(found, dilate=dilate)
        lungs[i] = found.mask
        fell_back[i] = found.fell_back
        joined[i] = any(found.joined)
    return SplitRegions(region, lungs, fell_back, joined)


def split_regions(
    split: Split,
    image_size: tuple[int, int],
    *,
    pad_to_aspect: bool = False,
    dilate: float = DILATE,
    cache: bool | str | os.PathLike = True,
) -> SplitRegions:
    """The lung region of every image of `split` at `image_size`, as `make_dataset` sizes it.

    Args:
        split: a split of files or arrays.
        image_size: `(h, w)`, the size the model sees.
        pad_to_aspect: as `make_dataset`'s (the region then lies on the padded image).
        dilate: `lung_region`'s dilation.
        cache: True for `cache_dir()`, a folder, or False to estimate every time.

    Returns:
        A `SplitRegions` in the split's order.
    """
    folder = cache_dir() if cache is True else Path(cache) if cache else None
    if folder is None:
        return estimate_regions(pipeline_images(split, image_size, pad_to_aspect), dilate)
    path = folder / _store_name(image_size, pad_to_aspect, dilate)
    hashes, stored = _read(path, image_size)
    index = {h: i for i, h in enumerate(hashes)}
    wanted = split.content_hashes()
    first = {}  # each missing content once, at its first place in the split
    for i, h in enumerate(wanted):
        if h not in index:
            first.setdefault(h, i)
    missing = list(first.values())
    if missing:
        found = estimate_regions(
            pipeline_images(split.subset(missing), image_size, pad_to_aspect), dilate
        )
        new_hashes = [wanted[i] for i in missing]
        stored = found if stored is None else _concatenate(stored, found)
        hashes = [*hashes, *new_hashes]
        _write(path, hashes, stored)
        index = {h: i for i, h in enumerate(hashes)}
    return stored.subset([index[h] for h in wanted])


def sample_fallback_rate(
    split: Split, image_size: tuple[int, int], *, pad_to_aspect: bool = False, n: int = 32
) -> float:
    """The share of the first `n` images of `split` on which the estimate falls back: a
    cheap check that the images are frontal chest films (about 4% on chest films)."""
    sample = split.subset(np.arange(min(len(split), n)))
    return estimate_regions(pipeline_images(sample, image_size, pad_to_aspect)).fallback_rate


def _store_name(image_size, pad_to_aspect: bool, dilate: float) -> str:
    h, w = (int(v) for v in image_size)
    fit = "pad" if pad_to_aspect else "stretch"
    return f"regions-v{ESTIMATE_VERSION}-{h}x{w}-{fit}-dilate{dilate:g}.npz"


def _concatenate(a: SplitRegions, b: SplitRegions) -> SplitRegions:
    return SplitRegions(
        *(np.concatenate([getattr(a, k), getattr(b, k)]) for k in SplitRegions.__annotations__)
    )


def pipeline_images(split: Split, image_size, pad_to_aspect: bool) -> np.ndarray:
    """uint8 `[n, h, w, 3]`: the split's images as the model's input pipeline makes them."""
    from data_pipelines.pipeline import make_dataset

    dataset = make_dataset(
        split,
        image_size=tuple(image_size),
        batch_size=64,
        training=False,
        num_classes=int(split.labels.max()) + 1,
        cache=False,
        pad_to_aspect=pad_to_aspect,
    )
    return np.concatenate([np.clip(x.numpy(), 0, 255).astype(np.uint8) for x, _ in dataset])


def _write(path: Path, hashes: list[str], found: SplitRegions) -> None:
    """Replaces the store at `path` atomically (a writer racing another loses its new
    entries, which the next call estimates again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(
        tmp,
        hashes=np.asarray(hashes, dtype=str),
        region=np.packbits(found.region, axis=-1),
        lungs=np.packbits(found.lungs, axis=-1),
        fell_back=found.fell_back,
        joined=found.joined,
    )
    os.replace(tmp, path)


def _read(path: Path, image_size) -> tuple[list[str], SplitRegions | None]:
    """The store's hashes and regions; ([], None) where there is none yet."""
    if not path.is_file():
        return [], None
    w = int(image_size[1])
    try:
        with np.load(path) as f:
            hashes = [str(h) for h in f["hashes"]]
            region = np.unpackbits(f["region"], axis=-1, count=w).astype(bool)
            lungs = np.unpackbits(f["lungs"], axis=-1, count=w).astype(bool)
            found = SplitRegions(region, lungs, f["fell_back"], f["joined"])
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"cannot read the region cache {path} ({err}): delete it") from None
    if len(found) != len(hashes) or found.region.shape[1:] != tuple(int(v) for v in image_size):
        raise DataError(f"{path} does not hold regions of {tuple(image_size)}: delete it")
    return hashes, found
