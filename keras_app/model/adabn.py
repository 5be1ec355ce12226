"""AdaBN: BatchNorm statistics re-estimated on a new site's unlabelled images.

Li et al., "Revisiting Batch Normalization For Practical Domain Adaptation" (ICLR
workshop 2017, arXiv:1603.04779): a network's BatchNorm layers hold the mean and
variance of their inputs on the training images; another scanner, look-up table or
collimation moves those inputs, and replacing the statistics with the new site's adapts
the network with no label and no change to a trained weight.

The statistics are the population mean and variance over every image given, each
layer's measured with the layers below it already adapted (the order a forward pass in
training mode gives): batches of `BATCH` images, each batch's statistics averaged into
the moving ones with momentum seen / (seen + batch), so every image weighs the same (the
variance is the mean within-batch variance: the spread between batch means, small for
batches of a shuffled stream, is left out).

What the images must be: a fair sample of the site's stream. BatchNorm statistics
absorb the class mix too: adapted on normal films only, a model reads every film as
more abnormal (measured in docs/SITES.md).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_app.core.errors import UsageError

# Images per forward pass: the statistics are a mean over batches, so memory, not the
# result, sets it (64 images of 224 px through MobileNet: ~0.5 GB of activations).
BATCH = 64
# Fewer images than this give each channel's variance from too few samples to trust.
MIN_IMAGES = 16


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models included, in order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def adapt_batchnorm(
    model: keras.Model, images: np.ndarray, batch_size: int = BATCH, seed: int = 0
) -> int:
    """Replaces the moving statistics of `model`'s BatchNorm layers with those of `images`.

    The model is changed in place; nothing trainable moves. A classifier from
    `build_classifier` calls its backbone with `training=False` fixed in the graph, so
    the backbone is run here on the preprocessed images directly.

    Args:
        model: a classifier from `keras_app.model.build_classifier` (calibrated or not).
        images: float images `[n, h, w, 3]`, 0-255, at the model's input size. They are
            shuffled (with `seed`) before batching: batches of one class would leave the
            difference between the classes out of the variance.

    Returns:
        The number of BatchNorm layers adapted.

    Raises:
        UsageError: the model has no backbone with BatchNorm layers, or too few images.
    """
    from keras_app.model.classifier import BACKBONE_LAYER, preprocessed
    from keras_app.model.guard import classifier_of

    model = classifier_of(model)  # a guarded model: its classifier shares every BatchNorm
    if len(images) < MIN_IMAGES:
        raise UsageError(
            f"AdaBN needs at least {MIN_IMAGES} images to estimate BatchNorm statistics. "
            f"Received {len(images)}"
        )
    try:
        model.get_layer("preprocess")
        backbone = model.get_layer(BACKBONE_LAYER)
    except ValueError:
        raise UsageError(
            f"AdaBN applies to a single classifier from keras_app.train; {model.name} has no "
            f"'preprocess' and '{BACKBONE_LAYER}' layers (an ensemble?)"
        ) from None
    layers = batchnorm_layers(backbone)
    if not layers:
        raise UsageError(f"{model.name} has no BatchNorm layer to adapt")
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    order = np.random.default_rng(seed).permutation(len(images))
    try:
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[order[start : start + batch_size]], np.float32)
            for layer in layers:
                # Keras updates the moving statistics only for a trainable layer in training
                # mode; this momentum makes them the mean over every image so far.
                layer.trainable = True
                layer.momentum = start / (start + len(batch))
            backbone(preprocessed(model, batch), training=True)
    finally:
        for layer, (trainable, momentum) in zip(layers, saved, strict=True):
            layer.trainable, layer.momentum = trainable, momentum
    return len(layers)
