"""A fixed crop to the thorax inside the model: what lies at the film's borders never reaches it.

Markers ("R", "L"), collimation edges, text and the edges of the cassette sit in
the outer bands of a frontal film; a network that sees them can learn them
(issue 27). `ThoraxCrop` cuts a fixed box, where the thorax lies on a typical
frontal film, and resizes it back to the input size, as the model's first layer:
the export, TF Serving and the DICOM node then crop exactly as training did. A
fixed box, not a per-image estimate: the lung estimate is NumPy and cannot run
inside a SavedModel.
"""

from __future__ import annotations

import keras
import numpy as np

# (top, left, bottom, right), fractions of the image: the film less the outer 10% bands
# the shortcut audit calls the borders (keras_app.evaluation.audit.BORDER_WIDTH), where
# markers and collimation edges sit. On the chest X-rays the lung region (lungs and heart,
# dilated 3%) reaches above 0.1 on about half the films and below 0.9 on a third (its
# median top and bottom: 0.107, 0.924): the crop costs them their apices or bases
# (docs/RECIPES.md, issue 27).
THORAX_BOX = (0.1, 0.1, 0.9, 0.9)


def box_pixels(box, height: int, width: int) -> tuple[int, int, int, int]:
    """`box` (fractions) as `(top, left, bottom, right)` pixels of an image of that size."""
    top, left, bottom, right = box
    return (
        int(round(top * height)),
        int(round(left * width)),
        max(int(round(bottom * height)), int(round(top * height)) + 1),
        max(int(round(right * width)), int(round(left * width)) + 1),
    )


@keras.saving.register_keras_serializable(package="keras_app")
class ThoraxCrop(keras.layers.Layer):
    """Crops images to a fixed box and resizes the crop back to the input size (bilinear).

    Args:
        box: `(top, left, bottom, right)` as fractions of the image, top < bottom and
            left < right, all in [0, 1].

    Example:
        >>> ThoraxCrop()(np.zeros((1, 64, 64, 3), "float32")).shape
        TensorShape([1, 64, 64, 3])
    """

    def __init__(self, box=THORAX_BOX, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        box = tuple(float(v) for v in box)
        if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
            raise ValueError(
                "box must be (top, left, bottom, right) fractions with top < bottom and "
                f"left < right in [0, 1]. Received box={box}"
            )
        self.box = box

    def call(self, images):
        height, width = images.shape[1], images.shape[2]
        top, left, bottom, right = box_pixels(self.box, height, width)
        crop = images[:, top:bottom, left:right, :]
        return keras.ops.image.resize(crop, (height, width), interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "box": list(self.box)}

    def uncrop(self, maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Maps `[n, h, w]` over the model's (cropped) view, placed on the full image of
        `size` (h, w): resized into the box, zero outside it (the model saw nothing there)."""
        from PIL import Image

        top, left, bottom, right = box_pixels(self.box, *size)
        out = np.zeros((len(maps), *size), np.float32)
        for i, m in enumerate(np.asarray(maps, np.float32)):
            resized = Image.fromarray(m).resize((right - left, bottom - top), Image.BILINEAR)
            out[i, top:bottom, left:right] = np.asarray(resized)
        return out
