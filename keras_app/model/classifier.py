"""The classifier: raw 0-255 pixels -> backbone preprocessing -> backbone -> head.

The model is functional with the backbone nested as one sub-model named
"backbone", so freezing, unfreezing and Grad-CAM can address it by name.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_app.model.fused_ops import with_fused_batchnorm
from keras_app.model.thorax_crop import ThoraxCrop
from keras_app.recipe.backbones import BACKBONES

BACKBONE_LAYER = "backbone"


@keras.saving.register_keras_serializable(package="keras_app")
class BackbonePreprocess(layers.Layer):
    """Applies a registered backbone's own `preprocess_input` inside the model.

    A named layer rather than a `Lambda`, so the model reloads with
    `safe_mode=True` and a SavedModel export carries the preprocessing.

    Example:
        >>> layer = BackbonePreprocess("resnet50")
        >>> layer(np.zeros((1, 32, 32, 3), "float32")).shape
        TensorShape([1, 32, 32, 3])
    """

    def __init__(self, backbone: str, **kwargs):
        # float32: mean subtraction and scaling lose precision in float16.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(
                f"Unknown backbone for preprocessing. Received backbone={backbone!r}; "
                f"known: {', '.join(sorted(BACKBONES))}"
            )
        self.backbone = backbone

    def call(self, inputs):
        return BACKBONES[self.backbone].preprocess_input(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


# Keras' default 0.99 needs ~500 steps for the moving statistics to forget their
# initial (0, 1); before that a random backbone evaluates to one constant output
# (val AUC 0.5 for 4 of 6 epochs on chest X-rays). 0.9 needs ~50.
SCRATCH_BN_MOMENTUM = 0.9


def build_classifier(
    name: str,
    num_classes: int,
    image_size: tuple[int, int],
    *,
    weights: str | None = None,
    alpha: float | None = None,
    dropout: float = 0.2,
    frozen_bn: bool = True,
    fused_bn: bool = True,
    crop: tuple[float, float, float, float] | None = None,
) -> keras.Model:
    """Builds the classifier for backbone `name`.

    Args:
        name: a key of `BACKBONES`.
        num_classes: width of the softmax.
        image_size: (height, width) of the input.
        weights: None, "imagenet" or a path to a weights file of the backbone.
        alpha: width multiplier (MobileNets only); None for the registry default.
        dropout: dropout rate before the softmax.
        frozen_bn: call the backbone with `training=False`, so its BatchNorm
            layers stay in inference mode even when unfrozen (fine-tuning).
            False for end-to-end training from random initialisation; the
            BatchNorm momentum is then `SCRATCH_BN_MOMENTUM`.
        fused_bn: train the backbone's BatchNorm with TensorFlow's fused kernel
            (`keras_app.fused_ops`); False keeps Keras' own layers.
        crop: a `(top, left, bottom, right)` box (fractions) the model crops its
            input to first (`ThoraxCrop`, resized back to `image_size`); None: none.

    Returns:
        A functional model taking float images [batch, h, w, 3] in 0-255 and
        returning float32 class probabilities.
    """
    spec = BACKBONES[name]
    input_shape = (*image_size, 3)
    alpha = alpha if alpha is not None else spec.default_alpha
    backbone = spec.constructor(input_shape, weights, alpha)
    if fused_bn:
        backbone = with_fused_batchnorm(backbone)
    backbone.name = BACKBONE_LAYER
    if not frozen_bn:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = min(layer.momentum, SCRATCH_BN_MOMENTUM)
    inputs = keras.Input(shape=input_shape, name="image")
    x = ThoraxCrop(crop, name="thorax_crop")(inputs) if crop is not None else inputs
    x = BackbonePreprocess(name, name="preprocess")(x)
    x = backbone(x, training=False) if frozen_bn else backbone(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    # float32 softmax: under mixed precision a float16 softmax saturates.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name=f"{name}_classifier")


def preprocessed(model: keras.Model, images):
    """`images` through what `model` runs before its backbone: its `ThoraxCrop` where it
    has one, then its `preprocess` layer (for graphs that reuse the classifier's layers)."""
    names = {layer.name for layer in model.layers}
    x = model.get_layer("thorax_crop")(images) if "thorax_crop" in names else images
    return model.get_layer("preprocess")(x)


def set_backbone_trainable(
    model: keras.Model, unfreeze: int | float | str, train_bn: bool = False
) -> int:
    """Freezes the backbone (0), or unfreezes its top `unfreeze` layers: a count, a
    fraction of its layers (a float in (0, 1)), or "all".

    BatchNormalization layers stay frozen unless `train_bn`: their statistics
    from ImageNet are what the rest of a pretrained backbone was trained
    against. A random backbone trained end to end needs `train_bn=True`: a
    frozen Keras 3 BatchNormalization runs in inference mode, so it would
    never normalise anything.

    Returns:
        The number of backbone layers left trainable.
    """
    backbone = model.get_layer(BACKBONE_LAYER)
    if unfreeze == 0:
        backbone.trainable = False
        return 0
    backbone.trainable = True
    n = len(backbone.layers)
    if unfreeze == "all":
        cut = 0
    else:
        top = round(n * unfreeze) if isinstance(unfreeze, float) else int(unfreeze)
        cut = max(0, n - top)
    trainable = 0
    for i, layer in enumerate(backbone.layers):
        is_bn = isinstance(layer, layers.BatchNormalization)
        layer.trainable = i >= cut and (train_bn or not is_bn)
        trainable += layer.trainable
    return trainable
