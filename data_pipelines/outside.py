"""Training images whose outside of the lungs carries nothing about their label.

A chest X-ray classifier can learn the hospital, the positioning, the age and the
markers instead of the disease (Zech et al., PLOS Medicine 2018; DeGrave et al.,
Nature Machine Intelligence 2021); on the pediatric films here, what lies outside
the lungs and the heart separates pneumonia from normal nearly as well as the
lungs do (issue 27). This batch stage takes each image's lung region
(`data_pipelines.region_cache`) and, with probability `p`, replaces what lies
outside it:

- "swap": by the outside of another image of the batch (the next one in the
  shuffled batch, so of either class), whose own lung region is blurred away. The
  outside then looks like a chest film's but says nothing about this image's
  label: the network cannot use it, and learns from the lungs.
- "erase": by the mean of the region kept (what `regions.keep_region(..., "mean")` does).

It runs before the geometric augmentation, so the composite is rotated and
flipped as one film.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from data_pipelines.errors import DataError

OUTSIDE_MODES = ("none", "erase", "swap")
# The donor's own lungs are replaced by its image shrunk to this many pixels a side
# and grown back (bilinear): its broad brightness stays, any lung detail (and with it
# any sign of the donor's label) goes. 8 px is a blur of about an eighth of the film.
DONOR_BLUR_SIDE = 8


def get_outside_lungs(
    mode: str, p: float = 1.0, seed: int | None = None
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Returns `_outside(images, regions) -> images`, a batch stage.

    Args:
        mode: "swap" or "erase" (see the module); "none" is refused here (skip the stage).
        p: the share of images changed; the others pass through.
        seed: seeds which images are changed; None for a different draw each run.

    The stage takes uint8 images `[B, h, w, c]` and their regions `[B, h, w, 1]`
    (nonzero inside the lung region) and returns uint8 images `[B, h, w, c]`. Its
    draws are stateful: run it in a sequential map for a repeatable order.
    """
    if mode not in OUTSIDE_MODES[1:]:
        raise DataError(f"mode must be one of {OUTSIDE_MODES[1:]}. Received mode={mode!r}")
    if not 0.0 <= p <= 1.0:
        raise DataError(f"p must be in [0, 1]. Received p={p}")
    generator = (
        tf.random.Generator.from_seed(seed)
        if seed is not None
        else tf.random.Generator.from_non_deterministic_state()
    )

    def _outside(images, regions):
        x = tf.cast(images, tf.float32)
        inside = tf.cast(regions > 0, tf.float32)
        if mode == "erase":  # the mean of what stays, as regions.keep_region(..., "mean")
            kept = tf.reduce_sum(x * inside, axis=(1, 2), keepdims=True)
            mean = tf.math.divide_no_nan(kept, tf.reduce_sum(inside, axis=(1, 2), keepdims=True))
            outside = tf.broadcast_to(mean, tf.shape(x))
        else:
            outside = donor_outside(x, inside)
        changed = generator.uniform(tf.shape(x)[:1]) < p
        mixed = inside * x + (1.0 - inside) * outside
        out = tf.where(changed[:, None, None, None], mixed, x)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), images.dtype)

    return _outside


def donor_outside(images: tf.Tensor, inside: tf.Tensor) -> tf.Tensor:
    """float32 `[B, h, w, c]`: each image's neighbour in the batch, its lung region blurred.

    The neighbour of image i is image i+1 (the last one's is the first): in a
    shuffled batch, an image of either class. A batch of one is its own neighbour.
    """
    donor = tf.roll(images, shift=-1, axis=0)
    donor_inside = tf.roll(inside, shift=-1, axis=0)
    size = tf.shape(images)[1:3]
    small = tf.image.resize(donor, (DONOR_BLUR_SIDE, DONOR_BLUR_SIDE), method="area")
    blurred = tf.image.resize(small, size, method="bilinear")
    return donor_inside * blurred + (1.0 - donor_inside) * donor
