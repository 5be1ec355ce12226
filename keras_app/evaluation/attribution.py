"""Where a classifier's evidence lies: the share of an attribution map inside a region.

Two methods, so that a finding does not rest on one:

- Grad-CAM (`keras_app.evaluation.gradcam`): the last feature map weighted by the
  gradient of the class's margin; needs the Keras model (an ensemble: each member).
- Occlusion sensitivity (Zeiler and Fergus, ECCV 2014): how much the class's
  log-odds fall when a square patch is replaced by the image's mean, spread over
  the patch's pixels. It needs nothing but predictions, so any predictor (a
  SavedModel, an ensemble, a server) can be audited with it.

`mass_inside` is the share of a map's positive mass that lies in a region; a map
spread evenly would score the region's area share, which every summary reports
beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# The occluding patch: a seventh of the image side (32 px at 224, about a rib space by
# a third of a lung's width), moved by half its side.
PATCH = 1 / 7
STRIDE = 1 / 14
# Probabilities are clipped here before their log-odds: a float32 probability has no
# resolution left beyond it.
EPS = 1e-7


def log_odds(probs: np.ndarray, class_index: np.ndarray) -> np.ndarray:
    """float64 `[n]`: log P(class) - log P(best other class), from probabilities `[n, k]`."""
    p = np.clip(np.asarray(probs, np.float64), EPS, 1.0)
    rows = np.arange(len(p))
    chosen = np.log(p[rows, class_index])
    others = np.log(p.copy())
    others[rows, class_index] = -np.inf
    return chosen - others.max(axis=1)


def patch_boxes(height: int, width: int, patch: float = PATCH, stride: float = STRIDE):
    """`(top, left, bottom, right)` of every patch position, covering the whole image."""
    ph, pw = max(1, round(patch * height)), max(1, round(patch * width))
    sh, sw = max(1, round(stride * height)), max(1, round(stride * width))
    rows = sorted({*range(0, height - ph + 1, sh), height - ph})
    cols = sorted({*range(0, width - pw + 1, sw), width - pw})
    return [(r, c, r + ph, c + pw) for r in rows for c in cols]


def occlusion_sensitivity(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    class_index: Sequence[int],
    *,
    patch: float = PATCH,
    stride: float = STRIDE,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion maps: per pixel, the mean fall in the class's log-odds when a patch over it
    is replaced by the image's mean (positive: evidence for the class).

    Args:
        predict: float images `[b, h, w, 3]` (0-255) -> probabilities `[b, k]`.
        images: `[n, h, w, 3]`, 0-255, at the model's input size.
        class_index: the class explained, one per image.

    Returns:
        float32 `[n, h, w]`, in log-odds (not clipped: negative where hiding the patch
        raised the class).
    """
    images = np.asarray(images, np.float32)
    n, h, w = images.shape[:3]
    chosen = np.broadcast_to(np.asarray(class_index, np.int64), (n,))
    boxes = patch_boxes(h, w, patch, stride)
    coverage = np.zeros((h, w), np.float32)
    for t, left, b, r in boxes:
        coverage[t:b, left:r] += 1
    maps = np.zeros((n, h, w), np.float32)
    for i in range(n):
        image, fill = images[i], images[i].mean(axis=(0, 1))
        base = log_odds(predict(image[None]), chosen[i : i + 1])[0]
        for start in range(0, len(boxes), batch_size):
            part = boxes[start : start + batch_size]
            batch = np.repeat(image[None], len(part), axis=0)
            for j, (t, left, b, r) in enumerate(part):
                batch[j, t:b, left:r] = fill
            drops = base - log_odds(predict(batch), np.full(len(part), chosen[i]))
            for drop, (t, left, b, r) in zip(drops, part, strict=True):
                maps[i, t:b, left:r] += drop
    return maps / coverage


def mass_inside(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """float64 `[n]`: the share of each map's positive mass inside its region; NaN for a
    map with no positive mass (nothing speaks for the class: no share to tell)."""
    positive = np.clip(np.asarray(maps, np.float64), 0.0, None)
    total = positive.sum(axis=(1, 2))
    inside = (positive * np.asarray(regions, bool)).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def share_summary(
    shares: np.ndarray, labels: np.ndarray, class_names: Sequence[str], regions: np.ndarray
) -> dict:
    """Per true class: how many maps, the mean, median and interquartile range of the
    share inside the region, and the region's own area share (what an even map scores)."""
    shares, labels = np.asarray(shares, np.float64), np.asarray(labels)
    area = np.asarray(regions, bool).mean(axis=(1, 2))
    out = {}
    for k, name in enumerate(class_names):
        rows = labels == k
        valid = rows & ~np.isnan(shares)
        values = shares[valid]
        out[str(name)] = {
            "n": int(rows.sum()),
            "blank": int((rows & np.isnan(shares)).sum()),
            "mean": float(values.mean()) if values.size else None,
            "median": float(np.median(values)) if values.size else None,
            "q25": float(np.percentile(values, 25)) if values.size else None,
            "q75": float(np.percentile(values, 75)) if values.size else None,
            "area": float(area[rows].mean()) if rows.any() else None,
        }
    return out


def sample_per_class(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of up to `n` images of each class, drawn at random (seeded)."""
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(rows, min(n, rows.size), replace=False)
        for k in np.unique(labels)
        if (rows := np.flatnonzero(labels == k)).size
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
