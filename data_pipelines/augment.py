"""Training-time augmentation with Keras 3 preprocessing layers, in the tf.data graph.

Each Keras layer is used through its two halves: `get_random_transformation`
(draws the random parameters, from a stateful seed generator) and applying
them. `get_augment` returns both halves as separate batch functions, so the
pipeline can draw in a sequential map (a deterministic order of draws) and
apply in a parallel map (using both cores). Calling the layers whole inside a
parallel map would race on the seed generators and make a seeded run
unrepeatable.

Rotation, shear and flip are each an affine map of pixel coordinates, so their
drawn parameters are composed into one matrix and applied in one warp, the op
each of those layers would call (`affine_transform`, bilinear, constant fill).
Three warps cost twice the CPU of one, and blur twice; brightness and contrast
then run through the layers' own `transform_images`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import keras
import tensorflow as tf

from data_pipelines.errors import DataError

VALUE_RANGE = (0, 255)


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; 0 (or False) turns one off.

    Attributes:
        rotation_degrees: rotation up to +-this many degrees.
        shear_degrees: horizontal shear up to +-this angle (as torchvision's
            `RandomAffine(shear=...)`), about the top-left corner as Keras does it.
        horizontal_flip: mirror left-right half the time. On chest X-rays this puts
            the heart on the right; the issue asks for it, and `AugmentConfig(...,
            horizontal_flip=False)` turns it off.
        brightness: add up to +-this fraction of the 0-255 range.
        contrast: scale deviations from each image's mean by 1 +- this.

    Example:
        >>> AugmentConfig.from_level("light").rotation_degrees
        5.0
    """

    rotation_degrees: float = 15.0
    shear_degrees: float = 10.0
    horizontal_flip: bool = True
    brightness: float = 0.1
    contrast: float = 0.2

    def __post_init__(self):
        for name, limit in (
            ("rotation_degrees", 180.0),
            ("shear_degrees", 45.0),
            ("brightness", 1.0),
            ("contrast", 1.0),
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= limit:
                raise DataError(
                    f"AugmentConfig.{name} must be in [0, {limit}]. Received {name}={value}"
                )

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    @classmethod
    def from_level(cls, level: str) -> AugmentConfig:
        """The config of a named level: none, light or standard."""
        if level not in AUGMENT_LEVELS:
            raise DataError(
                f"augment level must be one of {sorted(AUGMENT_LEVELS)}. Received augment={level!r}"
            )
        return AUGMENT_LEVELS[level]


AUGMENT_LEVELS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(0.0, 0.0, False, 0.0, 0.0),
    # Small pose and exposure changes, for data that is already well aligned.
    "light": AugmentConfig(5.0, 0.0, True, 0.05, 0.1),
    "standard": AugmentConfig(),
}


def resolve_augment(augment: AugmentConfig | str) -> AugmentConfig:
    """An AugmentConfig from a config or a level name."""
    if isinstance(augment, AugmentConfig):
        return augment
    if isinstance(augment, str):
        return AugmentConfig.from_level(augment)
    raise DataError(f"augment must be an AugmentConfig or a level name. Received {augment!r}")


# The pipeline works in float32 whatever the model's dtype policy: under a global
# mixed_bfloat16 policy these layers would otherwise draw bfloat16 factors and fail
# to multiply them with the float32 images.
FLOAT32 = {"dtype": "float32"}


def build_augment_layers(config: AugmentConfig, seed: int | None) -> list[keras.layers.Layer]:
    """The Keras layers for `config`, in the order they are applied.

    Geometry first, then colour: contrast uses each image's mean, which should
    be that of what the network sees, and the constant fill (black, like an X-ray
    background) then gets the same colour shift as the image.
    """
    seeds = iter(range(seed, seed + 5)) if seed is not None else iter([None] * 5)
    layers = []
    if config.rotation_degrees:
        layers.append(
            keras.layers.RandomRotation(
                config.rotation_degrees / 360.0, fill_mode="constant", seed=next(seeds), **FLOAT32
            )
        )
    if config.shear_degrees:
        layers.append(
            keras.layers.RandomShear(
                x_factor=math.tan(math.radians(config.shear_degrees)),
                y_factor=0.0,
                fill_mode="constant",
                seed=next(seeds),
                **FLOAT32,
            )
        )
    if config.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=next(seeds), **FLOAT32))
    if config.brightness:
        layers.append(
            keras.layers.RandomBrightness(
                config.brightness, value_range=VALUE_RANGE, seed=next(seeds), **FLOAT32
            )
        )
    if config.contrast:
        layers.append(
            keras.layers.RandomContrast(
                config.contrast, value_range=VALUE_RANGE, seed=next(seeds), **FLOAT32
            )
        )
    return layers


def get_augment(
    config: AugmentConfig, seed: int | None
) -> tuple[Callable[[tf.Tensor], tuple], Callable[[tf.Tensor, tuple], tf.Tensor]]:
    """Returns `(draw, apply)` batch functions for `config`.

    `draw(images) -> params` draws one set of random parameters per image;
    `apply(images, params) -> images` applies them. Images are float32
    `[B, h, w, 3]` in 0-255, and stay in 0-255.
    """
    layers = build_augment_layers(config, seed)

    def draw(images):
        with _tensorflow_backend(layers):
            return tuple(layer.get_random_transformation(images, training=True) for layer in layers)

    def apply(images, params):
        with _tensorflow_backend(layers):
            pairs = list(zip(layers, params, strict=True))
            geometric = [(layer, t) for layer, t in pairs if isinstance(layer, GEOMETRIC_LAYERS)]
            if geometric:
                images = _warp(images, geometric)
            for layer, transformation in pairs:
                if not isinstance(layer, GEOMETRIC_LAYERS):
                    images = layer.transform_images(images, transformation, training=True)
        return images

    return draw, apply


GEOMETRIC_LAYERS = (keras.layers.RandomRotation, keras.layers.RandomShear, keras.layers.RandomFlip)


def _warp(images: tf.Tensor, geometric: list) -> tf.Tensor:
    """Applies the drawn rotation, shear and flip as one bilinear warp.

    Each layer's transformation maps output pixel coordinates to input ones; for
    layers applied in the order A, B, C the composed map is `A @ B @ C`.
    """
    width = tf.cast(tf.shape(images)[2], tf.float32)
    matrix = None
    for layer, transformation in geometric:
        step = _coordinate_map(layer, transformation, width)
        matrix = step if matrix is None else tf.matmul(matrix, step)
    flat = tf.reshape(matrix, (-1, 9))[:, :8]
    first = geometric[0][0]
    return first.backend.image.affine_transform(
        images, flat, interpolation="bilinear", fill_mode="constant", fill_value=0.0
    )


def _coordinate_map(layer, transformation, width) -> tf.Tensor:
    """`[B, 3, 3]`: output pixel (x, y, 1) -> input pixel, for one geometric layer."""
    if isinstance(layer, keras.layers.RandomRotation):
        rows = tf.cast(transformation["rotation_matrix"], tf.float32)
    elif isinstance(layer, keras.layers.RandomShear):
        shear = tf.cast(transformation["shear_factor"], tf.float32)
        one, zero = tf.ones_like(shear[:, 0]), tf.zeros_like(shear[:, 0])
        rows = tf.stack([one, shear[:, 0], zero, shear[:, 1], one, zero, zero, zero], axis=1)
    else:  # RandomFlip("horizontal"): x -> width - 1 - x where flipped
        flip = tf.cast(tf.reshape(transformation["flips"], [-1]), tf.float32)
        one, zero = tf.ones_like(flip), tf.zeros_like(flip)
        rows = tf.stack([one - 2 * flip, zero, flip * (width - 1), zero, one, zero, zero, zero], 1)
    return tf.reshape(tf.concat([rows, tf.ones_like(rows[:, :1])], axis=1), (-1, 3, 3))


class _tensorflow_backend:
    """Runs the layers on TF ops whatever KERAS_BACKEND is, as their __call__ does in tf.data."""

    def __init__(self, layers):
        self.layers = layers

    def __enter__(self):
        for layer in self.layers:
            layer.backend.set_backend("tensorflow")

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.backend.reset()
