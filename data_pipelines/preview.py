"""One batch of augmented training images as uint8, for a TensorBoard image grid."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_pipelines.augment import AugmentConfig
from data_pipelines.data import Split
from data_pipelines.errors import DataError
from data_pipelines.pipeline import make_dataset


def augment_preview(
    source: Split | tf.data.Dataset,
    *,
    n: int = 16,
    image_size: tuple[int, int] | None = None,
    augment: AugmentConfig | str = "standard",
    seed: int | None = 0,
) -> np.ndarray:
    """Up to `n` augmented training images, uint8 `[n, h, w, 3]`.

    Args:
        source: a training Split (augmented here with `augment` at `image_size`),
            or a batched dataset from `make_dataset(..., training=True)` (its
            first images are taken as they are).
        n: how many images.
        image_size: `(h, w)`; needed with a Split.
        augment: the augmentation to show, with a Split.
        seed: with a Split, the same seed shows the same images.

    Raises:
        DataError: n < 1, or a Split without image_size.
    """
    if not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive int. Received n={n!r}")
    if isinstance(source, Split):
        if image_size is None:
            raise DataError("augment_preview of a Split needs image_size")
        source = make_dataset(
            source,
            image_size=image_size,
            batch_size=n,
            training=True,
            augment=augment,
            seed=seed,
            cache=False,
            num_classes=len(source.class_names),
        )
    images = []
    for batch, _ in source:
        images.append(batch.numpy())
        if sum(len(b) for b in images) >= n:
            break
    pixels = np.concatenate(images)[:n]
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)
