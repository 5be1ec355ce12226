"""The Keras classifiers whose Grad-CAM the shortcut audit can take: a run's model, or each
member of an ensemble, with the member's weight."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from keras_app.evaluation.gradcam import explain
from keras_app.model.classifier import BACKBONE_LAYER
from keras_app.model.ensemble_layer import EnsembleCombine
from keras_app.model.guard import classifier_of

BATCH = 32


@dataclass(frozen=True)
class Member:
    """One classifier with a nested backbone, and its weight in the model audited."""

    name: str
    weight: float
    model: keras.Model

    @property
    def size(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.model.input_shape[1:3])

    def evidence(self, images: np.ndarray, regions: np.ndarray, class_index):
        """Grad-CAM evidence for `class_index` (one per image) at this member's input size,
        and the regions brought to that size (nearest).

        Args:
            images: uint8 `[n, h, w, 3]` at the audited model's input size.
            regions: bool `[n, h, w]`.
        """
        x = tf.constant(images, tf.float32)
        r = tf.constant(regions[..., None].astype(np.float32))
        if tuple(images.shape[1:3]) != self.size:
            # As the ensemble feeds its members: bilinear, antialiased.
            x = tf.image.resize(x, self.size, method="bilinear", antialias=True)
            r = tf.image.resize(r, self.size, method="nearest")
        chosen = np.broadcast_to(np.asarray(class_index), (len(images),))
        parts = [
            explain(self.model, x[i : i + BATCH], chosen[i : i + BATCH]).evidence
            for i in range(0, len(images), BATCH)
        ]
        return np.concatenate(parts), r.numpy()[..., 0] > 0.5


def explainable_members(predictor) -> tuple[list[Member], str]:
    """The classifiers to take Grad-CAM of, or none and why.

    A run's model is its own member (weight 1); an ensemble's are the classifiers
    inside it, weighted as its `EnsembleCombine` weighs them.
    """
    model = predictor.keras_model
    if model is None:
        return [], (
            f"{predictor.kind}: no layers to take gradients through (audit its run folder "
            "for Grad-CAM); occlusion sensitivity needs none"
        )
    model = classifier_of(model)  # a guarded model: Grad-CAM of its classifier
    if _has_backbone(model):
        return [Member(predictor.name, 1.0, model)], ""
    classifiers = [layer for layer in model.layers if _has_backbone(layer)]
    combine = next((layer for layer in model.layers if isinstance(layer, EnsembleCombine)), None)
    if not classifiers:
        return [], f"{model.name} holds no classifier with a nested {BACKBONE_LAYER!r}"
    weights = (
        np.asarray(combine.normalized_weights(), np.float64).reshape(-1)
        if combine is not None
        else np.full(len(classifiers), 1.0 / len(classifiers))
    )
    if len(weights) != len(classifiers):
        weights = np.full(len(classifiers), 1.0 / len(classifiers))
    return [Member(m.name, float(w), m) for m, w in zip(classifiers, weights, strict=True)], ""


def _has_backbone(layer) -> bool:
    return isinstance(layer, keras.Model) and any(
        sub.name == BACKBONE_LAYER for sub in getattr(layer, "layers", [])
    )
