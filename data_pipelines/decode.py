"""Every image decode of the product, from encoded bytes to uint8 or float pixels.

- `get_decode`: the tf.data stage of training and evaluation, one file's bytes.
- `get_decode_batch`: the serving graph's decode of a batch of encoded images.
- `decode_rgb`: one encoded image to numpy RGB at its own size (figures, overlays).
- `servable_bytes` / `dicom_to_png`: what a server is sent for a file.

TensorFlow decodes JPEG (CMYK included: libjpeg converts it to RGB), PNG (8- and
16-bit), BMP and GIF. DICOM goes through pydicom (`dicom.read_dicom`), which
cannot run inside a SavedModel, so a server is sent DICOM as a lossless PNG of
the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from data_pipelines import stages
from data_pipelines.dicom import DICOM_MAGIC_AT, has_dicom_magic, read_dicom


def is_dicom(contents: tf.Tensor) -> tf.Tensor:
    """Whether file bytes are a DICOM file, from their magic bytes (a graph op)."""
    head = tf.strings.substr(contents, 0, DICOM_MAGIC_AT + 4)
    # Padded, so that a file shorter than 132 bytes reads as "not DICOM", not an error.
    padded = tf.strings.join([head, b"\0" * (DICOM_MAGIC_AT + 4)])
    return tf.equal(tf.strings.substr(padded, DICOM_MAGIC_AT, 4), b"DICM")


def decode_dicom(contents: tf.Tensor) -> tf.Tensor:
    """DICOM bytes to uint8 `[h, w, 1 or 3]`, through pydicom (see `dicom.read_dicom`)."""
    image = tf.numpy_function(_read_dicom_bytes, [contents], tf.uint8, stateful=False)
    image.set_shape([None, None, None])
    return image


def _read_dicom_bytes(contents) -> np.ndarray:
    if isinstance(contents, np.ndarray):  # eagerly, numpy_function passes a 0-d object array
        contents = contents.item()
    return read_dicom(contents)


def decode_encoded(contents: tf.Tensor) -> tf.Tensor:
    """JPEG, PNG, BMP or GIF bytes to uint8 `[h, w, c]`, TensorFlow ops only."""
    # dtype=uint8 makes tf.io scale 16-bit PNGs (x * 255 / 65535), not truncate them.
    return tf.io.decode_image(contents, dtype=tf.uint8, expand_animations=False)


def get_decode() -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns `_decode(contents) -> uint8 [h, w, c]` with c the file's own channels.

    JPEG, PNG (8- and 16-bit; 16-bit is scaled to 8), BMP through tf.io, DICOM
    through pydicom. The format is read from the bytes, not the file name.
    """

    def _decode(contents):
        return tf.cond(
            is_dicom(contents), lambda: decode_dicom(contents), lambda: decode_encoded(contents)
        )

    return _decode


def get_decode_batch(
    image_size: tuple[int, int], pad_to_aspect: bool = False
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns `_decode(image_bytes [b]) -> float32 [b, h, w, 3]` in 0-255, TensorFlow ops only.

    The same stages as the training pipeline (grey or RGBA to RGB, then the
    antialiased resize or the aspect-keeping pad), so served images are seen as
    training saw them. JPEG, PNG (8- or 16-bit), BMP and GIF (first frame);
    DICOM must be sent as `servable_bytes`, since pydicom cannot run inside a
    serving graph.
    """
    size = (int(image_size[0]), int(image_size[1]))
    resize = stages.get_resize_with_pad(size) if pad_to_aspect else stages.get_resize(size)

    def _one(contents):
        return stages.to_float(resize(stages.to_rgb(decode_encoded(contents))))

    def _decode(image_bytes):
        return tf.map_fn(
            _one, image_bytes, fn_output_signature=tf.TensorSpec([*size, 3], tf.float32)
        )

    return _decode


def decode_rgb(contents: bytes) -> np.ndarray:
    """Encoded image bytes (DICOM included) to uint8 RGB `[h, w, 3]` at the image's size."""
    return stages.to_rgb(get_decode()(tf.constant(contents))).numpy()


def dicom_to_png(contents: bytes) -> bytes:
    """A DICOM file's bytes to a lossless PNG of its displayed pixels (see `read_dicom`)."""
    return tf.io.encode_png(read_dicom(contents)).numpy()


def servable_bytes(contents: bytes) -> bytes:
    """A file's bytes as a server takes them: DICOM becomes a PNG, the rest stays as is.

    DICOM is told by its magic bytes, as `read_dicom` needs them to read the file.
    """
    return dicom_to_png(contents) if has_dicom_magic(contents) else contents
