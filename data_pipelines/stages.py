"""tf.data stages: small pure functions, or factories returning them (big_vision style).

Each works eagerly and inside `tf.data.Dataset.map`, on one image at a time
unless its name says batch. Images stay uint8 until `to_float`, so that what is
cached is a quarter of the size of float32 pixels. Bytes to pixels is
`data_pipelines.decode`.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def read_file(path: tf.Tensor) -> tf.Tensor:
    """A file's bytes."""
    return tf.io.read_file(path)


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Grey, grey+alpha, RGB or RGBA `[..., h, w, c]` to RGB `[..., h, w, 3]`.

    Alpha is dropped, not composited: X-ray exports with alpha are opaque.
    """
    image = tf.convert_to_tensor(image)
    channels = tf.shape(image)[-1]
    rgb = tf.cond(
        channels < 3,
        lambda: tf.repeat(image[..., :1], 3, axis=-1),
        lambda: image[..., :3],
    )
    rgb.set_shape([*image.shape[:-1], 3])
    return rgb


def to_grey(image: tf.Tensor) -> tf.Tensor:
    """Grey, grey+alpha, RGB or RGBA `[..., c]` to one grey channel `[..., 1]`.

    For grey content stored as RGB (equal channels) this is that channel; for
    colour it is luma (ITU-R 601, as tf.image.rgb_to_grayscale).
    """
    image = tf.convert_to_tensor(image)
    known = image.shape[-1]
    if known is not None:  # the graph cannot even build the RGB branch for one channel
        return image[..., :1] if known < 3 else tf.image.rgb_to_grayscale(image[..., :3])
    grey = tf.cond(
        tf.shape(image)[-1] < 3,
        lambda: image[..., :1],
        lambda: tf.image.rgb_to_grayscale(image[..., :3]),
    )
    grey.set_shape([*image.shape[:-1], 1])
    return grey


def get_resize(size: tuple[int, int]) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns `_resize(image) -> uint8 [h, w, c]`, stretching to `size` (h, w).

    An image already at `size` is passed through (resizing to the same size still
    costs as much as a decode). Shrinking is antialiased: without it, thin
    structures alias; it runs once per image, before the cache.
    """
    height, width = size = (int(size[0]), int(size[1]))

    def _resize(image):
        image = tf.convert_to_tensor(image)
        shape = tf.shape(image)
        same = tf.logical_and(shape[0] == height, shape[1] == width)
        shrink = tf.logical_or(shape[0] > height, shape[1] > width)
        resized = tf.case(
            [
                (same, lambda: image),
                (shrink, lambda: _to_uint8(tf.image.resize(image, size, antialias=True))),
            ],
            default=lambda: _to_uint8(tf.image.resize(image, size)),
            exclusive=False,
        )
        resized.set_shape([height, width, image.shape[-1]])
        return resized

    return _resize


def get_resize_with_pad(size: tuple[int, int]) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns `_resize(image) -> uint8 [h, w, c]`: aspect kept, black bars to fill `size`."""
    height, width = size

    def _resize(image):
        image = tf.convert_to_tensor(image)
        shape = tf.shape(image)
        same = tf.logical_and(shape[0] == height, shape[1] == width)
        resized = tf.cond(
            same,
            lambda: image,
            lambda: _to_uint8(tf.image.resize_with_pad(image, height, width, antialias=True)),
        )
        resized.set_shape([height, width, image.shape[-1]])
        return resized

    return _resize


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 pixels to float32 in 0-255 (the range the models' preprocess_input expects)."""
    return tf.cast(image, tf.float32)


def get_one_hot(num_classes: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns `_one_hot(label) -> float32 [num_classes]` (or `[B, num_classes]` for a batch)."""

    def _one_hot(label):
        return tf.one_hot(tf.cast(label, tf.int32), num_classes, dtype=tf.float32)

    return _one_hot
