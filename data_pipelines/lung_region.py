"""Where the lungs are on a frontal chest X-ray: a classical estimate, its prior, region masks.

No learned model: the estimate is image processing on a 128x128 copy of the film
(every film is squashed to that square, as the 224x224 training images are):

1. Stretch the grey levels (1st to 99th percentile to 0-1) and smooth lightly.
2. Outside air: the dark regions (below 0.12) connected to the image border.
3. Candidates: pixels darker than the local mean of the body (a wide Gaussian,
   the outside air counted as the body's median grey), at least 3.5% of the
   width inside the body outline (the soft tissue of the arms and the skin
   edge lies next to the outside air, the lungs behind the chest wall), less
   long bright lines low in the image (a diaphragm dome over stomach gas).
4. The midline: the brightest column band (spine and mediastinum) near the centre.
5. Per side of the midline: candidates eroded by 3 px (cutting thin bridges to
   the neck, the arms, the stomach gas) give fragments; those lying mostly
   inside a soft position prior for that lung are kept, less any fragment
   under the lowest reach of the main one (gas under the diaphragm) or high
   above its apex (the neck); the kept fragments grow back within the
   candidates, are closed and hole-filled. A side still in pieces
   (consolidation hides part of a lung) is closed wider, and replaced by its
   convex hull if that does not join it.
6. Sanity checks (both lungs found, area, height, position, left-right balance);
   an implausible estimate falls back to `PRIOR_BOXES`, and says why.

The audit of issue 27 counts the fallbacks (`LungMask.method == "prior"`); the
regions it erases or keeps (`lung_region`, the lungs and the heart between them;
`border_strips`) and the fills are in `data_pipelines.regions`.

    from data_pipelines.lung_region import estimate_lung_mask
    from data_pipelines.regions import keep_region, lung_region
    lungs = estimate_lung_mask(image)          # [h, w], [h, w, 1] or [h, w, 3]
    region = lung_region(lungs)                # bool [h, w]
    outside_erased = keep_region(image, region, fill="mean")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from data_pipelines.errors import DataError

# The estimate runs on this square whatever the film's size: 128 px keep the
# lung outlines (about 40 px wide) and the diaphragm line, at 15-30 ms an image.
WORK_SIZE = 128
# Below this many pixels on a side there is no anatomy left to find.
MIN_SIZE = 8
# After the 1-99th percentile stretch, outside air is near 0 and lungs 0.25-0.5
# on these films; 0.12 keeps the lungs out of "outside" on the darkest normals.
AIR_LEVEL = 0.12
# Chest wall: candidates this close (fraction of the width) to the outside air
# are the arms' soft tissue or the skin edge, not lung.
WALL_MARGIN = 0.035
# Gaussian sigma (working pixels) of the local mean a lung pixel must be darker
# than: ~10% of the width, wider than a rib, narrower than a lung.
LOCAL_SIGMA = 12.0
# Erosion radius that cuts thin bridges (neck, axilla, diaphragm line to the
# stomach gas) before fragments are chosen; they grow back by one more pixel.
BRIDGE_RADIUS = 3
# A diaphragm dome over stomach gas: a bright line this much (0-1 grey) above the
# pixels 3 px over and under it, at least this many px wide, below 55% of the
# height. Ribs reach that brightness in short runs only.
RIDGE_LEVEL, RIDGE_LENGTH = 0.07, 10
# Closing radius that joins the rib-striped fragments of one lung.
CLOSE_RADIUS = 5
# A lung still in pieces after that closing (consolidation hides part of it) is
# closed again with this radius, and taken as their convex hull if still apart.
# A wider closing first, because the hull of an upper lobe and the base beside
# the heart would take in the heart.
JOIN_RADIUS = 10
# Pieces smaller than this fraction of a lung's largest are dropped (specks the
# closing left), not joined.
MIN_PIECE = 0.1
# Lung boxes when the estimate is implausible, as (top, left, bottom, right)
# fractions of the image: the medians of the estimate's own lung boxes on the
# train split where it was plausible (`python -m benchmarks.lung_region_sheet prior`).
# "left" is the image's left, the patient's right on a standard frontal film.
PRIOR_BOXES = {
    "left": (0.16, 0.12, 0.85, 0.45),  # interquartile ranges 0.09, 0.04, 0.10, 0.03
    "right": (0.15, 0.55, 0.89, 0.88),  # 0.08, 0.04, 0.09, 0.05 (3,910 of 4,070 films)
}
METHODS = ("estimate", "prior")


@dataclass(frozen=True, eq=False)
class LungMask:
    """The lung fields of one frontal film, estimated or from the prior.

    Attributes:
        labels: uint8 `[h, w]`, 0 background, 1 the lung on the image's left
            (the patient's right on a standard film), 2 the lung on the image's right.
        method: "estimate" (image processing found two plausible lung fields) or
            "prior" (it did not: `labels` are `PRIOR_BOXES`).
        reason: why the estimate was rejected; "" when `method == "estimate"`.
        thorax_box: `(top, left, bottom, right)` pixel bounds of both lungs,
            bottom and right exclusive (numpy slicing order).
        midline: column of the mediastinum (the prior's centre when it fell back).
        joined: per lung (image left, image right), whether its dark fragments
            stayed in pieces (consolidation, effusion) and had to be joined (a
            wide closing, else their convex hull): an estimate, but a coarser
            one. (False, False) for the prior.

    Example:
        >>> lungs = estimate_lung_mask(np.zeros((64, 64), np.uint8))
        >>> lungs.method, lungs.reason
        ('prior', 'flat image')
    """

    labels: np.ndarray
    method: str
    reason: str
    thorax_box: tuple[int, int, int, int]
    midline: int
    joined: tuple[bool, bool] = (False, False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise DataError(f"LungMask.method must be one of {METHODS}. Received {self.method!r}")

    @property
    def mask(self) -> np.ndarray:
        """bool `[h, w]`: both lung fields."""
        return self.labels > 0

    @property
    def fell_back(self) -> bool:
        return self.method == "prior"

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape


def estimate_lung_mask(image: np.ndarray) -> LungMask:
    """The two lung fields of a frontal chest X-ray, or the box prior when not plausible.

    Args:
        image: `[h, w]`, `[h, w, 1]` or `[h, w, 3]` (channels averaged), uint8 or
            float in any range, any size from `MIN_SIZE` px up.

    Returns:
        A `LungMask` at the image's own `[h, w]`; `method` says whether it is the
        estimate or the prior, `reason` why an estimate was rejected.

    Raises:
        DataError: for another shape, a non-numeric or non-finite image.
    """
    grey = to_grey(image)
    shape = grey.shape
    work = _working_image(grey)
    if work is None:
        return prior_lung_mask(shape, reason="flat image")
    sides, joined, midline = _estimate_sides(work)
    reason = _implausible(sides)
    if reason:
        return prior_lung_mask(shape, reason=reason)
    labels = np.zeros(shape, np.uint8)
    for value, side in ((1, sides[0]), (2, sides[1])):
        labels[_resize_mask(side, shape)] = value
    if not (labels == 1).any() or not (labels == 2).any():
        return prior_lung_mask(shape, reason="a lung vanished at the image's size")
    midline = round(midline * shape[1] / WORK_SIZE)
    return LungMask(labels, "estimate", "", _box(labels > 0), midline, joined)


def prior_lung_mask(shape: tuple[int, int], reason: str = "") -> LungMask:
    """The anatomical box prior (`PRIOR_BOXES`) for a frontal film of `shape`, as a LungMask."""
    h, w = int(shape[0]), int(shape[1])
    labels = np.zeros((h, w), np.uint8)
    for value, side in ((1, "left"), (2, "right")):
        top, left, bottom, right = _pixel_box(PRIOR_BOXES[side], (h, w))
        labels[top:bottom, left:right] = value
    midline = round(w * (PRIOR_BOXES["left"][3] + PRIOR_BOXES["right"][1]) / 2)
    return LungMask(labels, "prior", reason or "prior asked for", _box(labels > 0), midline)


def to_grey(image: np.ndarray) -> np.ndarray:
    """float32 `[h, w]` from `[h, w]`, `[h, w, 1]` or `[h, w, 3]` (mean of the channels)."""
    image = np.asarray(image)
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise DataError(f"image must be numeric. Received dtype={image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 3):
        image = image.mean(axis=2, dtype=np.float32)
    if image.ndim != 2:
        raise DataError(f"image must be [h, w], [h, w, 1] or [h, w, 3]. Received {image.shape}")
    if min(image.shape) < MIN_SIZE:
        raise DataError(f"image must be at least {MIN_SIZE} px a side. Received {image.shape}")
    grey = image.astype(np.float32)
    if not np.isfinite(grey).all():
        raise DataError("image has NaN or infinite values")
    return grey


def _working_image(grey: np.ndarray) -> np.ndarray | None:
    """The film at WORK_SIZE, stretched to 0-1 and lightly smoothed; None if flat."""
    small = np.asarray(Image.fromarray(grey).resize((WORK_SIZE, WORK_SIZE), Image.BILINEAR))
    low, high = np.percentile(small, [1, 99])
    if high - low <= 1e-6 * max(1.0, abs(high)):
        return None
    stretched = np.clip((small - low) / (high - low), 0.0, 1.0)
    return ndi.gaussian_filter(stretched, 1.0)


def _estimate_sides(work: np.ndarray) -> tuple[list[np.ndarray], tuple[bool, bool], int]:
    """The two lung masks at WORK_SIZE (image left, image right), whether each was
    joined from pieces, and the midline column."""
    outside = _outside_air(work)
    candidates = _candidates(work, outside)
    midline = _midline(work)
    markers = ndi.binary_erosion(candidates, _disk(BRIDGE_RADIUS))
    labels, n = ndi.label(markers)
    sides, joined = [], []
    for side in (0, 1):
        kept = _keep_fragments(labels, n, side, midline)
        if kept.any():  # grow back what the erosion took, only through candidates
            kept = ndi.binary_dilation(kept, iterations=BRIDGE_RADIUS + 1, mask=candidates)
        lung, was_joined = _lung_shape(kept)
        sides.append(lung)
        joined.append(was_joined)
    return sides, (joined[0], joined[1]), midline


def _outside_air(work: np.ndarray) -> np.ndarray:
    """The dark regions that touch the image border: air around the body."""
    labels, _ = ndi.label(work < AIR_LEVEL)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def _candidates(work: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Pixels darker than the body's local mean, away from the outside air."""
    body = ~outside
    # The outside air counts as the body's median grey, so that it does not make
    # the soft tissue beside it look bright, nor lung beside the chest wall dark.
    neutral = float(np.median(work[body])) if body.any() else 0.5
    local_mean = ndi.gaussian_filter(np.where(outside, neutral, work), LOCAL_SIGMA)
    inside = ndi.distance_transform_edt(body) > WALL_MARGIN * WORK_SIZE
    return (work < local_mean) & inside & ~_diaphragm_lines(work)


def _diaphragm_lines(work: np.ndarray) -> np.ndarray:
    """Long bright horizontal lines in the lower part: a diaphragm dome over gas."""
    d = 3
    ridge = np.zeros_like(work)
    ridge[d:-d] = np.minimum(work[d:-d] - work[: -2 * d], work[d:-d] - work[2 * d :])
    lines = ridge > RIDGE_LEVEL
    lines[: int(0.55 * WORK_SIZE)] = False
    labels, n = ndi.label(lines, np.ones((3, 3)))
    if n == 0:
        return lines
    boxes = ndi.find_objects(labels)
    long = [i + 1 for i, b in enumerate(boxes) if b[1].stop - b[1].start >= RIDGE_LENGTH]
    return ndi.binary_dilation(np.isin(labels, long))


def _midline(work: np.ndarray) -> int:
    """Column of the spine and mediastinum: the brightest band in the middle 30%."""
    n = WORK_SIZE
    profile = ndi.uniform_filter1d(work[int(0.2 * n) : int(0.7 * n)].mean(axis=0), 5)
    start, stop = int(0.35 * n), int(0.65 * n)
    return start + int(np.argmax(profile[start:stop]))


# A lung's expected place, relative to the midline, as fractions of the image:
# rows from TOP to BOTTOM, centre and half-width growing from apex to base.
SOFT_PRIOR = {"top": 0.12, "bottom": 0.86, "offset": (0.15, 0.21), "half_width": (0.09, 0.19)}


def _soft_prior(side: int, midline: int, size: int = WORK_SIZE) -> np.ndarray:
    """float `[size, size]` in 0-1: where the lung of `side` (0 image left, 1 right) is expected.

    1 inside a trapezoid (narrow at the apex, wide at the base) beside the
    midline, falling to 0 over 30% of its half-width sideways and 10% of its
    half-height up and down. Used to choose fragments, never as the answer.
    """
    p = SOFT_PRIOR
    y, x = np.mgrid[0:size, 0:size] / size
    t = np.clip((y - p["top"]) / (p["bottom"] - p["top"]), 0, 1)
    sign = -1 if side == 0 else 1
    centre = midline / size + sign * (p["offset"][0] + (p["offset"][1] - p["offset"][0]) * t)
    half_width = p["half_width"][0] + (p["half_width"][1] - p["half_width"][0]) * t
    across = np.abs(x - centre) / half_width
    half_height = (p["bottom"] - p["top"]) / 2
    down = np.abs(y - (p["top"] + p["bottom"]) / 2) / half_height
    return np.clip((1.3 - across) / 0.3, 0, 1) * np.clip((1.1 - down) / 0.1, 0, 1)


# A fragment must lie this much (mean of the soft prior) where its lung is expected,
# and cover this fraction of the working image.
MIN_PRIOR, MIN_FRAGMENT = 0.5, 0.0015
# Gas under the diaphragm: a fragment below the main one is dropped only where the
# main one reaches this low (fraction of the height), the diaphragm's usual level.
DIAPHRAGM_LEVEL = 0.65
# The neck and the shoulders' soft tissue: a fragment centred above this level
# (fraction of the height), wholly above the main one's apex and under NECK_AREA
# of its area is dropped (an upper lobe above a consolidated lower one is not small).
NECK_LEVEL, NECK_AREA = 0.2, 0.3


def _keep_fragments(labels: np.ndarray, n: int, side: int, midline: int) -> np.ndarray:
    """The fragments of one side that lie where its lung is expected."""
    if n == 0:
        return np.zeros(labels.shape, bool)
    index = np.arange(1, n + 1)
    prior = _soft_prior(side, midline)
    area = ndi.sum_labels(np.ones(labels.shape), labels, index)
    rows, cols = np.array(ndi.center_of_mass(np.ones(labels.shape), labels, index)).T
    on_side = cols < midline if side == 0 else cols >= midline
    ok = on_side & (ndi.mean(prior, labels, index) >= MIN_PRIOR)
    ok &= area >= MIN_FRAGMENT * labels.size
    if not ok.any():
        return np.zeros(labels.shape, bool)
    main = index[ok][np.argmax((area * ndi.mean(prior, labels, index))[ok])]
    bottom = _lowest_row(labels == main)
    apex = np.flatnonzero((labels == main).any(axis=1))[0]
    for i in index[ok]:
        if i == main:
            continue
        fragment = labels == i
        if rows[i - 1] > 0.55 * WORK_SIZE and _under(fragment, bottom):
            ok[i - 1] = False
        elif (
            rows[i - 1] < NECK_LEVEL * WORK_SIZE
            and area[i - 1] < NECK_AREA * area[main - 1]
            and not fragment[apex:].any()
        ):
            ok[i - 1] = False
    return np.isin(labels, index[ok])


def _lowest_row(mask: np.ndarray) -> np.ndarray:
    """Per column, the lowest row of `mask`, -1 where the column is empty."""
    rows = np.arange(mask.shape[0])[:, None]
    return np.where(mask.any(axis=0), np.max(np.where(mask, rows, -1), axis=0), -1)


def _under(fragment: np.ndarray, bottom: np.ndarray) -> bool:
    """Whether `fragment` starts below `bottom` in most of the columns they share,
    where `bottom` is at the diaphragm's usual level."""
    cols = np.flatnonzero(fragment.any(axis=0) & (bottom >= 0))
    if cols.size == 0 or np.median(bottom[cols]) < DIAPHRAGM_LEVEL * WORK_SIZE:
        return False
    top = np.argmax(fragment[:, cols], axis=0)
    return bool(np.mean(top > bottom[cols]) > 0.6)


def _lung_shape(kept: np.ndarray) -> tuple[np.ndarray, bool]:
    """Closed, hole-filled fragments, and whether they stayed in pieces.

    Pieces under `MIN_PIECE` of the largest are dropped; pieces that a wider
    closing does not join are replaced by their convex hull.
    """
    if not kept.any():
        return kept, False
    shape = _major_pieces(_close(kept, CLOSE_RADIUS))
    if ndi.label(shape)[1] == 1:
        return shape, False
    joined = _major_pieces(_close(shape, JOIN_RADIUS))
    if ndi.label(joined)[1] == 1:
        return joined, True
    return convex_hull(joined), True


def _close(mask: np.ndarray, radius: int) -> np.ndarray:
    """Closed (padded, so that the image edge does not erode it) and hole-filled."""
    pad = radius + 1
    closed = ndi.binary_closing(np.pad(mask, pad), _disk(radius))[pad:-pad, pad:-pad]
    return ndi.binary_fill_holes(closed)


def _major_pieces(mask: np.ndarray) -> np.ndarray:
    """`mask` less its pieces smaller than MIN_PIECE of the largest."""
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = ndi.sum_labels(mask, labels, np.arange(1, n + 1))
    return np.isin(labels, 1 + np.flatnonzero(sizes >= MIN_PIECE * sizes.max()))


# Sanity bounds on the estimate at WORK_SIZE, as fractions of the image.
LUNG_AREA = (0.02, 0.35)  # one lung
BOTH_AREA = (0.08, 0.60)
MIN_HEIGHT = 0.25  # one lung's height
CENTRE_ROWS = (0.2, 0.75)  # each lung's centre of mass
MIN_BALANCE = 0.25  # smaller lung's area over the larger's
MIN_OVERLAP = 0.4  # shared rows over the shorter lung's rows


def _implausible(sides: list[np.ndarray]) -> str:
    """Why the two lung masks cannot be a frontal film's lungs; "" if they can."""
    n = WORK_SIZE * WORK_SIZE
    names = ("image-left", "image-right")
    areas = [float(side.sum()) / n for side in sides]
    for name, side, area in zip(names, sides, areas, strict=True):
        if area == 0:
            return f"no {name} lung found"
        if not LUNG_AREA[0] <= area <= LUNG_AREA[1]:
            low, high = LUNG_AREA
            return f"{name} lung covers {area:.1%} of the image, not {low:.0%}-{high:.0%}"
        rows = np.flatnonzero(side.any(axis=1))
        if (rows[-1] + 1 - rows[0]) / WORK_SIZE < MIN_HEIGHT:
            return f"{name} lung is under {MIN_HEIGHT:.0%} of the image high"
        centre = ndi.center_of_mass(side)[0] / WORK_SIZE
        if not CENTRE_ROWS[0] <= centre <= CENTRE_ROWS[1]:
            return f"{name} lung's centre is at {centre:.0%} of the height"
    if not BOTH_AREA[0] <= sum(areas) <= BOTH_AREA[1]:
        low, high = BOTH_AREA
        return f"the lungs cover {sum(areas):.1%} of the image, not {low:.0%}-{high:.0%}"
    if min(areas) / max(areas) < MIN_BALANCE:
        return f"one lung is {min(areas) / max(areas):.0%} of the other's area"
    rows = [set(np.flatnonzero(side.any(axis=1))) for side in sides]
    if len(rows[0] & rows[1]) < MIN_OVERLAP * min(len(r) for r in rows):
        return "the lungs barely share rows"
    return ""


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A WORK_SIZE mask at `shape`, smooth-edged (bilinear, cut at one half)."""
    scaled = Image.fromarray(mask.astype(np.float32)).resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(scaled) >= 0.5


def _pixel_box(fractions: tuple[float, float, float, float], shape) -> tuple[int, int, int, int]:
    top, left, bottom, right = fractions
    h, w = shape
    return round(top * h), round(left * w), round(bottom * h), round(right * w)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _disk(radius: int) -> np.ndarray:
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
