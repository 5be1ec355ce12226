"""`make_dataset`: a Split to a batched tf.data.Dataset of (images, one-hot labels)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_pipelines import decode, records, stages
from data_pipelines.augment import AugmentConfig, get_augment, resolve_augment
from data_pipelines.data import Split
from data_pipelines.errors import DataError
from data_pipelines.outside import OUTSIDE_MODES, get_outside_lungs

AUTOTUNE = tf.data.AUTOTUNE
# Images held by the per-epoch shuffle. The source order is already a random
# permutation, so this only has to reshuffle between epochs; a buffer of the
# whole split would decode every image before the first batch could leave.
SHUFFLE_BUFFER = 2048


def make_dataset(
    split: Split,
    *,
    image_size: tuple[int, int],
    batch_size: int,
    training: bool,
    augment: AugmentConfig | str = "none",
    seed: int | None = 42,
    cache: bool | str = True,
    num_classes: int,
    pad_to_aspect: bool = False,
    shuffle: bool | None = None,
    repeat: bool = False,
    regions: np.ndarray | None = None,
    outside_lungs: str = "none",
    outside_p: float = 1.0,
) -> tf.data.Dataset:
    """Builds the input pipeline for one split.

    Yields `(images, labels)`: images float32 `[B, h, w, 3]` in 0-255, labels
    float32 one-hot `[B, num_classes]`. Shuffles and augments only when
    `training`; evaluation is deterministic. With a seed, the same seed gives the
    same order and the same augmentations; each epoch reshuffles.

    Args:
        split: from `load_dataset(...).splits[...]`.
        image_size: `(h, w)` of the output images.
        batch_size: images per batch (the last batch may be smaller).
        training: shuffle and augment.
        augment: an AugmentConfig or a level (none, light, standard); training only.
        seed: seeds shuffling and augmentation; None for a different run each time.
        cache: True caches decoded, resized images in memory, a path caches them in
            that file (name it after the image size: an existing cache file is read
            back as it is), False decodes every epoch.
        num_classes: length of the one-hot labels.
        pad_to_aspect: keep the aspect ratio and pad with black instead of stretching.
        shuffle: override the shuffling that `training` implies.
        repeat: repeat forever (then pass steps_per_epoch to fit).
        regions: bool `[n, h, w]` at `image_size`, each image's lung region in the
            split's order (`region_cache.split_regions`); needed by `outside_lungs`.
        outside_lungs: training only: "swap" or "erase" what lies outside the lung
            region (`data_pipelines.outside`), "none" to leave images whole.
        outside_p: the share of training images whose outside is changed.

    Raises:
        DataError: a bad argument.
    """
    image_size = _check_args(split, image_size, batch_size, num_classes, pad_to_aspect)
    augment = resolve_augment(augment)
    shuffle = training if shuffle is None else shuffle
    outside = _check_outside(outside_lungs, regions, split, image_size) if training else None
    resize = (stages.get_resize_with_pad if pad_to_aspect else stages.get_resize)(image_size)

    # The order, and why:
    # 1. decode, to RGB, resize, per image, in parallel: the expensive work, done once.
    #    Where every image is grey (X-rays, even when stored as RGB), keep one
    #    channel until after augmentation: a third of the cache, warps and colour
    #    ops, for the same output.
    # 2. cache the uint8 result (a quarter of float32's memory), so later epochs
    #    skip 1 entirely.
    # 3. shuffle: the files once, in random order, before 1 (cheap, and batches mix
    #    classes from the first one; TFRecord shards: their order, records within
    #    are in random order already); then after the cache, each epoch anew, or
    #    every epoch would replay the first one's order.
    # 4. batch before augmenting: a few large ops per batch, not many small ones per
    #    image, and nothing augmented is ever cached.
    # 5. outside the lungs (--outside-lungs): the region rides along as one more
    #    channel from 1 to here, so that shuffling keeps it with its image; swapped or
    #    erased in a sequential map (its draws, as 6's, in a repeatable order), before
    #    the geometry, which then moves the composite as one film.
    # 6. augment: draw the random parameters in a sequential map (a repeatable order
    #    of draws), then to float, apply, back to RGB and one-hot in a parallel one.
    # 7. prefetch, so the model never waits for step 6.
    if shuffle and split.records is None:  # records: shards in random order (read_records)
        order = np.random.default_rng(seed).permutation(len(split))
        split = split.subset(order)
        regions = regions[order] if outside is not None else regions
    grey = split.all_grey
    dataset = _images_and_labels(
        split, resize, grey, regions if outside is not None else None, shuffle=shuffle, seed=seed
    )
    if cache:
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        buffer = min(len(split), SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size)
    if outside is not None:
        stage = get_outside_lungs(outside, outside_p, seed)
        dataset = dataset.map(lambda x, y: (stage(x[..., :-1], x[..., -1:]), y))
    one_hot = stages.get_one_hot(num_classes)
    finish_pixels = stages.to_rgb if grey else tf.identity
    if training and augment.enabled:
        draw, apply = get_augment(augment, seed)
        dataset = dataset.map(lambda x, y: (x, y, draw(x)))
        dataset = dataset.map(
            lambda x, y, params: (finish_pixels(apply(stages.to_float(x), params)), one_hot(y)),
            num_parallel_calls=AUTOTUNE,
        )
    else:
        dataset = dataset.map(
            lambda x, y: (finish_pixels(stages.to_float(x)), one_hot(y)),
            num_parallel_calls=AUTOTUNE,
        )
    return dataset.prefetch(AUTOTUNE)


def decoded_images(
    split: Split, *, image_size: tuple[int, int], pad_to_aspect: bool = False, grey: bool
) -> tf.data.Dataset:
    """`(uint8 image, int32 label)` of each item, in the split's order, decoded and resized
    as `make_dataset` does before its cache: what TFRecord shards store.

    Args:
        split: any split.
        image_size: `(h, w)` of the output images.
        pad_to_aspect: keep the aspect ratio and pad with black instead of stretching.
        grey: one channel (luma of colour images) instead of three.
    """
    resize = (stages.get_resize_with_pad if pad_to_aspect else stages.get_resize)(image_size)
    return _images_and_labels(split, resize, grey, None, shuffle=False, seed=None)


def _images_and_labels(
    split: Split, resize, grey: bool, regions: np.ndarray | None, *, shuffle: bool, seed
) -> tf.data.Dataset:
    """uint8 `[h, w, 3]` (or `[h, w, 1]` if grey) images at the output size, int labels;
    with `regions`, each image's region (0 or 1) as one more channel."""
    channels = stages.to_grey if grey else stages.to_rgb
    labels = split.labels.astype("int32")
    if split.files is not None:
        decode_file = decode.get_decode()

        def pixels(path):
            return resize(channels(decode_file(stages.read_file(path))))

        items = list(split.files)
    elif split.records is not None:
        # Shards arrive in their own shuffled order, so no region can ride along
        # (_check_outside refuses the pairing).
        source = records.read_records(split, shuffle=shuffle, seed=seed)
        return source.map(
            lambda image, label: (resize(channels(image)), label), num_parallel_calls=AUTOTUNE
        )
    else:
        images = split.images if split.images.ndim == 4 else split.images[..., None]

        def pixels(image):
            return resize(channels(image))

        items = images
    if regions is None:
        source = tf.data.Dataset.from_tensor_slices((items, labels))
        return source.map(lambda item, label: (pixels(item), label), num_parallel_calls=AUTOTUNE)

    def load(item, label, region):
        return tf.concat([pixels(item), region[..., None]], axis=-1), label

    source = tf.data.Dataset.from_tensor_slices((items, labels, regions.astype(np.uint8)))
    return source.map(load, num_parallel_calls=AUTOTUNE)


def _check_outside(mode: str, regions, split: Split, image_size) -> str | None:
    """The outside-the-lungs mode to apply (None for "none"); DataError for a bad pairing."""
    if mode not in OUTSIDE_MODES:
        raise DataError(f"outside_lungs must be one of {OUTSIDE_MODES}. Received {mode!r}")
    if mode == "none":
        return None
    if split.records is not None:
        raise DataError(
            f"outside_lungs={mode!r} needs the images themselves (files or arrays), not "
            "TFRecord shards: train from the manifest or folder instead"
        )
    want = (len(split), *image_size)
    if regions is None or tuple(np.shape(regions)) != want:
        raise DataError(
            f"outside_lungs={mode!r} needs regions of shape {want} (one per image at the "
            f"output size). Received {None if regions is None else np.shape(regions)}"
        )
    return mode


def _check_args(
    split: Split, image_size, batch_size, num_classes, pad_to_aspect
) -> tuple[int, int]:
    """Raises DataError for a bad argument; returns image_size as two ints."""
    if len(split) == 0:
        raise DataError(f"split {split.name!r} is empty")
    if split.records is not None and split.records.pad_to_aspect != pad_to_aspect:
        how = "padded to their aspect" if split.records.pad_to_aspect else "stretched"
        raise DataError(
            f"the shards in {split.records.root} hold images {how}; write them again with the "
            f"resize wanted. Received pad_to_aspect={pad_to_aspect}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive int. Received batch_size={batch_size!r}")
    labels_max = int(split.labels.max())
    if not isinstance(num_classes, int) or num_classes <= labels_max:
        raise DataError(
            f"num_classes must exceed the largest label {labels_max}. "
            f"Received num_classes={num_classes!r}"
        )
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        height = width = 0
    if height < 1 or width < 1:
        raise DataError(
            f"image_size must be (height, width), positive ints. Received image_size={image_size!r}"
        )
    return height, width
