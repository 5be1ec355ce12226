"""The lung region of every image of a split, as the pipeline sizes it, computed once and cached.

The estimate (`data_pipelines.lung_region`) costs 15-30 ms an image; a training run
that randomises the outside of the lungs, or an audit, needs it for thousands of
images each time. `split_regions` estimates it on the images exactly as
`make_dataset` decodes and resizes them (so a mask lies on its pixels), and keeps
the result in one file per split, size and region definition, named by a digest of
the images' contents: the same images give the same file, whatever their paths.

    regions = split_regions(data.splits["train"], (224, 224))
    regions.region        # bool [n, 224, 224]: lungs and heart, dilated 3%
    regions.fell_back     # bool [n]: the estimate fell back to the box prior
"""

from __future__ import annotations

import hashlib
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
    key = _key(split, image_size, pad_to_aspect, dilate)
    folder = cache_dir() if cache is True else Path(cache) if cache else None
    path = folder / f"regions-{key}.npz" if folder else None
    if path is not None and path.is_file():
        return _read(path, len(split), image_size)
    found = estimate_regions(pipeline_images(split, image_size, pad_to_aspect), dilate)
    if path is not None:
        _write(path, found)
    return found


def sample_fallback_rate(
    split: Split, image_size: tuple[int, int], *, pad_to_aspect: bool = False, n: int = 32
) -> float:
    """The share of the first `n` images of `split` on which the estimate falls back: a
    cheap check that the images are frontal chest films (about 4% on chest films)."""
    sample = split.subset(np.arange(min(len(split), n)))
    return estimate_regions(pipeline_images(sample, image_size, pad_to_aspect)).fallback_rate


def _key(split: Split, image_size, pad_to_aspect: bool, dilate: float) -> str:
    digest = hashlib.sha256()
    for part in (ESTIMATE_VERSION, tuple(image_size), pad_to_aspect, round(dilate, 6)):
        digest.update(repr(part).encode())
    for h in split.content_hashes():
        digest.update(h.encode())
    return digest.hexdigest()[:20]


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


def _write(path: Path, found: SplitRegions) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez_compressed(
        tmp,
        region=np.packbits(found.region, axis=-1),
        lungs=np.packbits(found.lungs, axis=-1),
        fell_back=found.fell_back,
        joined=found.joined,
    )
    os.replace(tmp, path)


def _read(path: Path, n: int, image_size) -> SplitRegions:
    with np.load(path) as f:
        w = int(image_size[1])
        region = np.unpackbits(f["region"], axis=-1, count=w).astype(bool)
        lungs = np.unpackbits(f["lungs"], axis=-1, count=w).astype(bool)
        found = SplitRegions(region, lungs, f["fell_back"], f["joined"])
    if len(found) != n or found.region.shape[1:] != tuple(image_size):
        raise DataError(f"{path} does not hold {n} regions of {tuple(image_size)}: delete it")
    return found
