"""The image guard inside the saved model: a score of how unlike the training images an image is.

A guarded model answers two things for each image: `probabilities` (the classifier's,
calibrated) and `ood_score`, the guard's score on the classifier's own features (see
`keras_app.decision.guard`: Mahalanobis distances at several depths of the backbone,
Lee et al., NeurIPS 2018). The limit that turns a score into "not analysed" is part of
the operating point, beside the decision threshold; the model only scores.

The guarded model taps the backbone once, at every depth the guard reads: no layer runs
twice. `classifier_of` rebuilds the plain classifier (input -> preprocess -> backbone ->
head) from the same layers, for what needs one output (Grad-CAM, ensembles, recalibration).

Example:
    >>> guarded = with_guard(classifier, guard)       # guard: a fitted FeatureGuard
    >>> out = guarded(images)                          # {"probabilities", "ood_score"}
    >>> classifier_of(guarded)(images)                 # the probabilities alone
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_app.model.calibration import CALIBRATION_LAYER
from keras_app.model.classifier import BACKBONE_LAYER, preprocessed

PROBABILITIES = "probabilities"
OOD_SCORE = "ood_score"
TAPS = "backbone_taps"  # the backbone, answering at every depth the guard reads
POOL = "pool"  # the classifier's pooled features: the guard's last block
HEAD = ("pool", "dropout", "predictions", CALIBRATION_LAYER)


@keras.saving.register_keras_serializable(package="keras_app")
class ImageGuard(keras.layers.Layer):
    """The guard's score from its blocks of features, in float32.

    Each block (a mean-pooled feature map, or the pooled features) has Gaussians fitted on
    the training images: `means` `[k, d]` and a shared `precision` `[d, d]` (the inverse of
    a shrunk covariance). A block's score is its squared Mahalanobis distance to the nearest
    mean, divided by its `scale`; the image's score is the largest block score. Fitted
    values arrive as weights (`set_guard_weights`), so the layer saves with the model.

    Args:
        dims: each block's width, in the order the blocks are passed.
        means_per_block: k, the number of means of each block (1: one Gaussian).
        layers: the name of the layer each block is read from (the last: "pool").
    """

    def __init__(
        self,
        dims: Sequence[int],
        means_per_block: int = 1,
        layers: Sequence[str] = (),
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.dims = [int(d) for d in dims]
        self.layers_read = [str(name) for name in layers]
        self.means_per_block = int(means_per_block)
        if not self.dims or min(self.dims) < 1 or self.means_per_block < 1:
            raise ValueError(
                "ImageGuard needs positive block widths and means per block. "
                f"Received dims={dims}, means_per_block={means_per_block}"
            )
        self.block_means, self.block_precisions = [], []
        for i, d in enumerate(self.dims):
            self.block_means.append(
                self.add_weight(
                    name=f"mean_{i}",
                    shape=(self.means_per_block, d),
                    initializer="zeros",
                    trainable=False,
                )
            )
            self.block_precisions.append(
                self.add_weight(
                    name=f"precision_{i}", shape=(d, d), initializer="identity", trainable=False
                )
            )
        self.scales = self.add_weight(
            name="scales", shape=(len(self.dims),), initializer="ones", trainable=False
        )

    def call(self, blocks):
        scores = []
        for x, mean, precision in zip(blocks, self.block_means, self.block_precisions, strict=True):
            x = ops.cast(x, "float32")
            deltas = ops.expand_dims(x, 1) - ops.expand_dims(mean, 0)  # [n, k, d]
            q = ops.sum(ops.matmul(deltas, precision) * deltas, axis=-1)  # [n, k]
            scores.append(ops.min(q, axis=-1))
        return ops.max(ops.stack(scores, axis=-1) / self.scales, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0],)

    def get_config(self):
        return {
            **super().get_config(),
            "dims": self.dims,
            "means_per_block": self.means_per_block,
            "layers": self.layers_read,
        }


def set_guard_weights(layer: ImageGuard, guard) -> None:
    """Loads a fitted guard (`keras_app.decision.guard.FeatureGuard`) into the layer."""
    values = []
    for mean, precision in zip(guard.means, guard.precisions, strict=True):
        values += [np.asarray(mean, np.float32), np.asarray(precision, np.float32)]
    values.append(np.asarray(guard.scales, np.float32))
    layer.set_weights(values)


def probability_width(model: keras.Model) -> int:
    """How many class probabilities a model (guarded or not) answers."""
    output = model.output
    return int((output[PROBABILITIES] if isinstance(output, dict) else output).shape[-1])


def is_guarded(model: keras.Model) -> bool:
    return isinstance(model.output, dict) and OOD_SCORE in model.output


def tapped_backbone(classifier: keras.Model, layers: Sequence[str]) -> keras.Model:
    """The classifier's backbone answering at `layers` (inner feature maps) and at its end."""
    backbone = classifier.get_layer(BACKBONE_LAYER)
    inner = [backbone.get_layer(name).output for name in layers]
    return keras.Model(backbone.inputs, [*inner, backbone.output], name=TAPS)


def _head(model: keras.Model, features):
    """The classifier's head (pool, dropout, predictions, calibration where present)."""
    names = {layer.name for layer in model.layers}
    pooled = model.get_layer(POOL)(features)
    x = pooled
    for name in HEAD[1:]:
        if name in names:
            x = model.get_layer(name)(x)
    return pooled, x


def guard_features_model(classifier: keras.Model, layers: Sequence[str]) -> keras.Model:
    """image -> the guard's blocks concatenated `[n, sum(dims)]`: for fitting the guard."""
    image = classifier.inputs[0]
    *inner, final = tapped_backbone(classifier, layers)(preprocessed(classifier, image))
    pooled, _ = _head(classifier, final)
    blocks = [keras.layers.GlobalAveragePooling2D()(t) for t in inner] + [pooled]
    joined = keras.layers.Concatenate()(blocks) if len(blocks) > 1 else blocks[0]
    return keras.Model(image, joined, name="guard_features")


def with_guard(classifier: keras.Model, guard) -> keras.Model:
    """`classifier` (plain, calibrated or not) answering `probabilities` and `ood_score`.

    Args:
        classifier: from `build_classifier` (optionally with its calibration layer).
        guard: a fitted `FeatureGuard` whose `layers` are backbone layer names, then "pool".
    """
    layer = ImageGuard(
        guard.dims, int(guard.means[0].shape[0]), layers=guard.layers, name="image_guard"
    )
    model = _guarded(classifier, layer)
    set_guard_weights(layer, guard)
    return model


def guarded_like(classifier: keras.Model, source: keras.Model) -> keras.Model:
    """`classifier` with `source`'s guard (the same layer and weights), e.g. after it was
    calibrated again; `classifier` itself where `source` has no guard."""
    layer = guard_of(source)
    return classifier if layer is None else _guarded(classifier, layer)


def _guarded(classifier: keras.Model, layer: ImageGuard) -> keras.Model:
    classifier = classifier_of(classifier)
    inner_layers = [name for name in layer.layers_read if name != POOL]
    image = classifier.inputs[0]
    x = preprocessed(classifier, image)
    *inner, final = tapped_backbone(classifier, inner_layers)(x)
    pooled, probabilities = _head(classifier, final)
    blocks = [
        keras.layers.GlobalAveragePooling2D(name=f"guard_pool_{i}")(t) for i, t in enumerate(inner)
    ] + [pooled]
    score = layer(blocks)
    return keras.Model(
        image, {PROBABILITIES: probabilities, OOD_SCORE: score}, name=classifier.name
    )


def classifier_of(model: keras.Model) -> keras.Model:
    """The plain classifier of a guarded model (the same layers), or the model itself."""
    if not is_guarded(model):
        return model
    taps = model.get_layer(TAPS)
    backbone = keras.Model(taps.inputs, taps.outputs[-1], name=BACKBONE_LAYER)
    image = model.inputs[0]
    _, probabilities = _head(model, backbone(preprocessed(model, image)))
    return keras.Model(image, probabilities, name=model.name)


def guard_of(model: keras.Model) -> ImageGuard | None:
    """A guarded model's `ImageGuard` layer, else None."""
    return model.get_layer("image_guard") if is_guarded(model) else None
