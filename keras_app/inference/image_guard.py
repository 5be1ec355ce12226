"""Fitting the image guard of a trained classifier, on its own features (issue 26).

The guard reads the classifier's features at three depths: the backbone's last layer at
1/8 and at 1/16 of the input size (mean-pooled) and the pooled features the head reads.
One Gaussian per depth is fitted on the training split (its images as they are, and once
more as the run's augmentation shows them), and the limit is chosen on the validation
split so that about 99% of its images pass (`keras_app.decision.guard`). benchmarks/
ood_study.py measured this form against 12 others; docs/GUARD.md has the figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

import data_pipelines
from keras_app.decision.guard import DEFAULT_PASS_RATE, FeatureGuard, fit_guard
from keras_app.model.classifier import BACKBONE_LAYER
from keras_app.model.guard import POOL, classifier_of, guard_features_model, guard_of

# The depths the guard reads, as strides of the input: the end of each backbone stage
# whose maps are input / 8 and input / 16 (MobileNet v1 at 224: conv_pw_5_relu, 64
# channels, and conv_pw_11_relu, 128). Lee et al. (NeurIPS 2018) score several depths.
STAGE_STRIDES = (8, 16)


def guard_layers(classifier: keras.Model, strides: Sequence[int] = STAGE_STRIDES) -> list[str]:
    """The backbone layers the guard taps: the last one at each stride (none too small)."""
    backbone = classifier_of(classifier).get_layer(BACKBONE_LAYER)
    size = classifier.input_shape[1:3]
    found = []
    for stride in strides:
        want = (size[0] // stride, size[1] // stride)
        names = [layer.name for layer in backbone.layers if _spatial(layer) == want]
        if names and want[0] >= 1 and names[-1] not in found:
            found.append(names[-1])
    return found


def _spatial(layer) -> tuple[int, int] | None:
    shape = getattr(getattr(layer, "output", None), "shape", None)
    return tuple(shape[1:3]) if shape is not None and len(shape) == 4 else None


def split_features(
    features: keras.Model,
    split,
    image_size: tuple[int, int],
    *,
    batch_size: int,
    pad_to_aspect: bool = False,
    augment: str | None = None,
    seed: int = 42,
) -> np.ndarray:
    """The guard's features `[n, d]` of every image of a split (under `augment` if given)."""
    dataset = data_pipelines.make_dataset(
        split,
        image_size=image_size,
        batch_size=batch_size,
        training=augment is not None,
        augment=augment or "none",
        num_classes=len(split.class_names),
        cache=False,
        pad_to_aspect=pad_to_aspect,
        seed=seed,
    ).map(lambda x, y: x)
    rows = [np.asarray(features(batch, training=False), np.float32) for batch in dataset]
    return np.concatenate(rows) if rows else np.zeros((0, features.output_shape[-1]), np.float32)


def fit_image_guard(
    classifier: keras.Model,
    data,
    *,
    batch_size: int,
    augment: str = "standard",
    pad_to_aspect: bool = False,
    seed: int = 42,
    pass_rate: float = DEFAULT_PASS_RATE,
) -> FeatureGuard:
    """The guard of `classifier`, fitted on `data`'s training split, limited on its val.

    Args:
        classifier: the trained (calibrated or not) classifier; its features only are read.
        data: a `data_pipelines.ImageData` with "train" and "val" splits.
        augment: the run's training augmentation, for the augmented view of train ("none":
            the plain images only).
        pass_rate: the share of validation images the limit lets through.
    """
    classifier = classifier_of(classifier)
    layers = guard_layers(classifier)
    features = guard_features_model(classifier, layers)
    size = tuple(int(s) for s in classifier.input_shape[1:3])
    common = dict(batch_size=batch_size, pad_to_aspect=pad_to_aspect, seed=seed)
    train = [split_features(features, data.splits["train"], size, **common)]
    if augment != "none":
        train.append(
            split_features(features, data.splits["train"], size, augment=augment, **common)
        )
    dims = [int(d) for d in _block_dims(classifier, layers)]
    guard = fit_guard(np.concatenate(train), layers=[*layers, POOL], dims=dims)
    val = split_features(features, data.splits["val"], size, **common)
    return guard.with_limit(val, pass_rate=pass_rate)


def _block_dims(classifier: keras.Model, layers: Sequence[str]) -> list[int]:
    backbone = classifier.get_layer(BACKBONE_LAYER)
    inner = [int(backbone.get_layer(name).output.shape[-1]) for name in layers]
    return [*inner, int(backbone.output.shape[-1])]


def guard_in(model: keras.Model) -> FeatureGuard | None:
    """The fitted guard a guarded model carries (its layer's weights), None without one."""
    layer = guard_of(model)
    if layer is None:
        return None
    means, precisions = layer.block_means, layer.block_precisions
    return FeatureGuard(
        means=tuple(np.asarray(m.numpy(), np.float64) for m in means),
        precisions=tuple(np.asarray(p.numpy(), np.float64) for p in precisions),
        scales=tuple(float(s) for s in layer.scales.numpy()),
        layers=tuple(layer.layers_read),
        dims=tuple(layer.dims),
    )


def limit_guard_on(
    model: keras.Model,
    images: np.ndarray,
    *,
    split: str,
    pass_rate: float = DEFAULT_PASS_RATE,
    batch_size: int = 32,
) -> FeatureGuard | None:
    """Chooses a guarded model's scales and limit again on `images` (a site's own, float
    0-255 at the model's size), so that `pass_rate` of them pass; the Gaussians fitted on
    the training images stay. The model's guard layer takes the new scales (in place).

    A new site's films are a shift the guard sees (another scanner, look-up table,
    collimation): without this the guard would refuse them all. Images of another kind
    (photographs, noise, other modalities) stay far above the new limit (docs/SITES.md).

    Returns:
        The guard with its new scales and limit; None for a model without a guard.
    """
    guard = guard_in(model)
    if guard is None:
        return None
    classifier = classifier_of(model)
    inner = [name for name in guard.layers if name != POOL]
    features = guard_features_model(classifier, inner)
    rows = np.concatenate(
        [
            np.asarray(features(np.asarray(images[i : i + batch_size], np.float32)), np.float32)
            for i in range(0, len(images), batch_size)
        ]
    )
    unscaled = dataclasses.replace(guard, scales=(1.0,) * len(guard.dims))
    limited = unscaled.with_limit(rows, pass_rate=pass_rate, split=split)
    guard_of(model).scales.assign(np.asarray(limited.scales, np.float32))
    return limited


def guard_record(guard: FeatureGuard) -> dict:
    """What the operating point keeps of the guard: its limit and how it was chosen."""
    return {
        "method": guard.method,
        "limit": guard.limit,
        "pass_rate": guard.pass_rate,
        "chosen_on": guard.chosen_on,
        "validation": guard.validation,
        "layers": list(guard.layers),
        "dims": list(guard.dims),
        "n_fit": guard.n_fit,
        "citation": guard.citation,
    }
