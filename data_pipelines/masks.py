"""Binary-mask helpers of the lung region estimate: morphology, hulls, boxes, resizing."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError


def close(mask: np.ndarray, radius: int) -> np.ndarray:
    """Closed (padded, so that the image edge does not erode it) and hole-filled."""
    pad = radius + 1
    closed = ndi.binary_closing(np.pad(mask, pad), disk(radius))[pad:-pad, pad:-pad]
    return ndi.binary_fill_holes(closed)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A mask at `shape`, smooth-edged (bilinear, cut at one half)."""
    scaled = Image.fromarray(mask.astype(np.float32)).resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(scaled) >= 0.5


def pixel_box(fractions: tuple[float, float, float, float], shape) -> tuple[int, int, int, int]:
    top, left, bottom, right = fractions
    h, w = shape
    return round(top * h), round(left * w), round(bottom * h), round(right * w)


def box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """bool mask of the convex hull of `mask`'s pixels (the pixels themselves if degenerate)."""
    mask = np.asarray(mask, bool)
    edge = mask & ~ndi.binary_erosion(mask)
    points = np.argwhere(edge)[:, ::-1].astype(float)  # (x, y)
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # under 3 points, or all on a line
        return mask.copy()
    canvas = Image.new("1", (mask.shape[1], mask.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points[hull.vertices]], fill=1, outline=1)
    return np.asarray(canvas, bool) | mask
