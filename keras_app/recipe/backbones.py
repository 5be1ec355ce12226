"""The backbone registry: every model `--model` accepts, as plain data.

Each entry carries the Keras Applications constructor, the backbone's own
`preprocess_input` (built into the classifier, so saved models take raw 0-255
pixels), and its default and minimum input size.

Both callables look Keras up when called, not when this module is imported: the
command-line tools read the registry's names for `--model` choices before they
import TensorFlow, so `--help` answers at once.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and feed it.

    Attributes:
        constructor: `f(input_shape, weights, alpha) -> keras.Model` returning the
            backbone without its top (feature maps out).
        preprocess_input: the backbone's own pixel preprocessing, 0-255 RGB in.
        default_size: the input size the backbone was designed for.
        min_size: the smallest input size its constructor accepts.
        imagenet: whether ImageNet weights exist for it.
        default_alpha: width multiplier for the MobileNets, else None.
    """

    constructor: Callable[..., keras.Model]
    preprocess_input: Callable
    default_size: int
    min_size: int
    imagenet: bool = True
    default_alpha: float | None = None


def _application(name: str, *, takes_alpha: bool = False, **extra) -> Callable:
    """The constructor `keras.applications.<name>`, without its top."""

    def build(input_shape, weights, alpha=None):
        import keras

        kwargs = dict(include_top=False, weights=weights, input_shape=input_shape, **extra)
        if takes_alpha and alpha is not None:
            kwargs["alpha"] = alpha
        return call_quietly(getattr(keras.applications, name), **kwargs)

    return build


def call_quietly(constructor: Callable, **kwargs):
    """`constructor(**kwargs)`, its expected size warning turned into one note of ours."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = constructor(**kwargs)
    _pass_on(caught, constructor.__name__, kwargs["input_shape"])
    return model


def _preprocess(module: str) -> Callable:
    """`keras.applications.<module>.preprocess_input`."""

    def preprocess_input(x):
        import keras

        return getattr(keras.applications, module).preprocess_input(x)

    return preprocess_input


# The MobileNets' warning when ImageNet weights are asked for at a size they were not
# trained at. Without the top, the weights are convolutions that fit any input size, so
# Keras loads the 224 px ones, which is what we want: the warning is expected, and the
# note below says so once in our words.
KERAS_SIZE_WARNING = "`input_shape` is undefined or non-square"
_noted: set[tuple] = set()


def _pass_on(caught, name: str, input_shape) -> None:
    """Re-issues what a constructor warned, except the MobileNets' size warning, noted once."""
    for w in caught:
        if not str(w.message).startswith(KERAS_SIZE_WARNING):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        key = (name, tuple(input_shape[:2]))
        if key not in _noted:
            _noted.add(key)
            print(
                f"note: {name} at {input_shape[0]}x{input_shape[1]} px uses its 224x224 "
                "ImageNet weights, which fit any input size (the backbone is all "
                "convolutions): expected and harmless",
                file=sys.stderr,
                flush=True,
            )


def _simple_cnn(input_shape, weights=None, alpha=None):
    """A small from-scratch CNN: the baseline that transfer learning must beat."""
    import keras
    from keras import layers

    if weights is not None:
        raise ValueError(f"simple_cnn has no pretrained weights. Received weights={weights!r}")
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, x, name="simple_cnn")


def _unit_scale(x):
    """Pixels 0-255 to 0-1, the simple CNN's input range."""
    return x / 255.0


BACKBONES: dict[str, BackboneSpec] = {
    "xception": BackboneSpec(_application("Xception"), _preprocess("xception"), 299, 71),
    "mobilenetv3small": BackboneSpec(
        # include_preprocessing=True: MobileNetV3 rescales inside the model and its
        # preprocess_input is the identity.
        _application("MobileNetV3Small", takes_alpha=True, include_preprocessing=True),
        _preprocess("mobilenet_v3"),
        224,
        32,
        default_alpha=1.0,
    ),
    "mobilenetv3large": BackboneSpec(
        _application("MobileNetV3Large", takes_alpha=True, include_preprocessing=True),
        _preprocess("mobilenet_v3"),
        224,
        32,
        default_alpha=1.0,
    ),
    "resnet50": BackboneSpec(_application("ResNet50"), _preprocess("resnet50"), 224, 32),
    "densenet121": BackboneSpec(_application("DenseNet121"), _preprocess("densenet"), 224, 32),
    "vgg16": BackboneSpec(_application("VGG16"), _preprocess("vgg16"), 224, 32),
    "mobilenet": BackboneSpec(
        # alpha 0.25 by default: the smallest v1, and the one whose ImageNet weights
        # ship offline with this project's shared data.
        _application("MobileNet", takes_alpha=True),
        _preprocess("mobilenet"),
        224,
        32,
        default_alpha=0.25,
    ),
    "simple_cnn": BackboneSpec(_simple_cnn, _unit_scale, 128, 16, imagenet=False),
}
