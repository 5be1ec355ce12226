"""Regions of a frontal chest film and neutral fills: what the shortcut audit erases or keeps.

`lung_region` turns a `LungMask` (data_pipelines.lung_region) into the region the
audit of issue 27 calls "the lung fields and the heart"; `border_strips` are the
outer bands where markers and collimation edges sit; `erase_region` and
`keep_region` replace one side of a region by `neutral_fill` (the image's mean, or
a blur); `keep_lungs` / `get_keep_lungs` do all of it per image, as a function
and as a tf.data stage.

    from data_pipelines.lung_region import estimate_lung_mask
    from data_pipelines.regions import erase_region, lung_region
    region = lung_region(estimate_lung_mask(image))  # bool [h, w]
    lungs_erased = erase_region(image, region, fill="mean")
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from data_pipelines.errors import DataError
from data_pipelines.lung_region import LungMask, convex_hull, estimate_lung_mask


def lung_region(
    lungs: LungMask | np.ndarray, *, with_mediastinum: bool = True, dilate: float = 0.03
) -> np.ndarray:
    """bool `[h, w]`: the lung fields, and by default the heart and mediastinum between them.

    Args:
        lungs: a `LungMask`, or a bool lung mask.
        with_mediastinum: take the convex hull of both lungs (lungs, heart,
            mediastinum, the hila: what issue 27 calls "the lung fields and the
            heart"); False keeps the two lung fields only.
        dilate: grow the region by this fraction of the image's shorter side, so
            that the lung edges (ribs, pleura, costophrenic angles) count as inside.
    """
    mask = lungs.mask if isinstance(lungs, LungMask) else np.asarray(lungs, bool)
    if mask.ndim != 2:
        raise DataError(f"lungs must be a LungMask or a [h, w] mask. Received {mask.shape}")
    if not 0.0 <= dilate <= 0.5:
        raise DataError(f"dilate must be in [0, 0.5]. Received dilate={dilate}")
    region = convex_hull(mask) if with_mediastinum and mask.any() else mask.copy()
    radius = dilate * min(mask.shape)
    if radius > 0 and region.any():
        region = ndi.distance_transform_edt(~region) <= radius
    return region


def border_strips(shape: tuple[int, ...], width: float = 0.1) -> np.ndarray:
    """bool `[h, w]`: the image's outer bands, `width` of the height (top, bottom) and of
    the width (left, right) deep: where markers, collimation edges and text sit.

    Args:
        shape: the image's shape; only `[h, w]` is used.
        width: the bands' depth as a fraction of each side, in (0, 0.5).
    """
    if not 0.0 < width < 0.5:
        raise DataError(f"width must be in (0, 0.5). Received width={width}")
    h, w = int(shape[0]), int(shape[1])
    dy, dx = max(1, round(width * h)), max(1, round(width * w))
    strips = np.ones((h, w), bool)
    strips[dy : h - dy, dx : w - dx] = False
    return strips


FILLS = ("mean", "blur", "constant")
# Sigma of the "blur" fill, as a fraction of the shorter side: the lungs and ribs
# are gone, only the film's broad brightness (body against air) is left.
BLUR_SIGMA = 0.1
# The "constant" fill: mid-grey of the 0-255 films the pipeline makes (and 0 after the
# backbones' own scaling to -1..1), the same for every film.
CONSTANT = 128.0


def neutral_fill(image: np.ndarray, fill: str = "mean", source=None) -> np.ndarray:
    """float32 of `image`'s shape: what an erased pixel becomes.

    Args:
        image: `[h, w]` or `[h, w, c]`, any numeric dtype.
        fill: "mean", each channel's mean (no structure left); "blur", a Gaussian
            blur with sigma `BLUR_SIGMA` of the shorter side (broad brightness
            kept, detail gone; its edges reflect the image); "constant", `CONSTANT`
            everywhere: made from no pixel, it carries nothing of any film.
        source: bool `[h, w]`, the pixels the fill is made from (None: all). The
            region functions pass the pixels they keep, so that the fill says
            nothing about the erased ones: a whole-image mean would carry the
            erased lungs' brightness (denser in pneumonia) into the fill, and a
            whole-image blur their opacity. The blur is then a normalised
            convolution (the blur of the kept pixels over the blur of their
            mask), the kept mean where no kept pixel is near.
    """
    if fill not in FILLS:
        raise DataError(f"fill must be one of {FILLS}. Received fill={fill!r}")
    values = np.asarray(image, np.float32)
    if values.ndim not in (2, 3):
        raise DataError(f"image must be [h, w] or [h, w, c]. Received {values.shape}")
    weight = np.ones(values.shape[:2], np.float32) if source is None else np.asarray(source)
    if weight.shape != values.shape[:2]:
        raise DataError(f"source must be the image's [h, w]. Received {weight.shape}")
    if fill == "constant":
        return np.full(values.shape, CONSTANT, np.float32)
    weight = weight.astype(np.float32)
    if not weight.any():  # nothing kept: the whole image's mean, which then shows nothing
        weight = np.ones_like(weight)
    w3 = weight[..., None] if values.ndim == 3 else weight
    mean = (values * w3).sum(axis=(0, 1), keepdims=True) / weight.sum()
    if fill == "mean":
        return np.broadcast_to(mean, values.shape).astype(np.float32)
    sigma = BLUR_SIGMA * min(values.shape[:2])
    sigmas = (sigma, sigma) + ((0,) if values.ndim == 3 else ())
    if source is None:
        return ndi.gaussian_filter(values, sigmas, mode="reflect")
    blurred = ndi.gaussian_filter(values * w3, sigmas, mode="reflect")
    norm = ndi.gaussian_filter(w3, sigmas, mode="reflect")
    near = norm > 1e-3
    out = np.where(near, blurred / np.where(near, norm, 1.0), mean)
    return out.astype(np.float32)


def erase_region(image: np.ndarray, region: np.ndarray, fill: str = "mean") -> np.ndarray:
    """`image` with the pixels of `region` replaced by `neutral_fill(image, fill,
    source=~region)`: a fill made from the pixels that stay.

    Returns the image's dtype (the fill rounded for integers); every channel of a
    region pixel is replaced.
    """
    return _replace(image, np.asarray(region, bool), fill)


def keep_region(image: np.ndarray, region: np.ndarray, fill: str = "mean") -> np.ndarray:
    """`image` with every pixel outside `region` replaced by `neutral_fill(image, fill,
    source=region)`: a fill made from the pixels that stay."""
    return _replace(image, ~np.asarray(region, bool), fill)


def _replace(image: np.ndarray, where: np.ndarray, fill: str) -> np.ndarray:
    image = np.asarray(image)
    if where.shape != image.shape[:2]:
        raise DataError(
            f"region must be the image's [h, w]. Received region {where.shape}, image {image.shape}"
        )
    filler = neutral_fill(image, fill, source=~where)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        filler = np.clip(np.round(filler), info.min, info.max)
    out = image.copy()
    out[where] = filler[where].astype(image.dtype)
    return out


def keep_lungs(image: np.ndarray, fill: str = "mean", dilate: float = 0.03) -> np.ndarray:
    """`image` with everything outside `lung_region(estimate_lung_mask(image))` filled.

    One image `[h, w, c]` (or `[h, w]`), its dtype kept. Where the estimate falls
    back, the prior's region is kept: the augmentation still hides the borders.
    """
    region = lung_region(estimate_lung_mask(image), dilate=dilate)
    return keep_region(image, region, fill)


def get_keep_lungs(fill: str = "mean", dilate: float = 0.03) -> Callable:
    """Returns `_keep_lungs(image [h, w, c]) -> image`, a tf.data stage of `keep_lungs`.

    Runs the NumPy estimate through `tf.numpy_function` (~30 ms an image on one
    core), so the stage cannot go into a SavedModel; shape and dtype are kept.
    """
    import tensorflow as tf

    if fill not in FILLS:
        raise DataError(f"fill must be one of {FILLS}. Received fill={fill!r}")

    def _apply(image):
        return keep_lungs(image, fill=fill, dilate=dilate)

    def _keep_lungs(image):
        out = tf.numpy_function(_apply, [image], image.dtype, stateful=False)
        out.set_shape(image.shape)
        return out

    return _keep_lungs
