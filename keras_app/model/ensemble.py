"""The ensemble model: one raw-image input, resized per member, members combined in one graph."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from keras_app.model.ensemble_layer import EnsembleCombine


def member_input_size(member: keras.Model) -> tuple[int, int]:
    """(height, width) of a member's image input."""
    if len(member.inputs) != 1 or len(member.inputs[0].shape) != 4:
        raise ValueError(
            f"An ensemble member must take one image input [batch, h, w, 3]. Received "
            f"{member.name} with inputs {[tuple(x.shape) for x in member.inputs]}"
        )
    return tuple(member.inputs[0].shape[1:3])


def stack_members(
    members: Sequence[keras.Model], image_size: tuple[int, int] | None = None
) -> keras.Model:
    """One model feeding every member from a single raw 0-255 image input.

    Each member gets the image resized to its own input size (bilinear and
    antialiased, as data_pipelines resizes training images); its preprocessing
    is inside it. The members are frozen and renamed in place to
    `member{i}_{name}`, as layer names in one model must be unique.

    Args:
        members: classifiers with one image input and one probability output,
            all over the same classes.
        image_size: (height, width) of the input; None for the largest member's.

    Returns:
        A functional model: images [batch, h, w, 3] in, a list of the members'
        probabilities out.

    Raises:
        ValueError: fewer than two members, a member that is not an image
            classifier, or members with different output shapes.
    """
    if len(members) < 2:
        raise ValueError(f"An ensemble needs at least 2 members. Received {len(members)}")
    sizes = [member_input_size(m) for m in members]
    outputs = [tuple(m.outputs[0].shape[1:]) if len(m.outputs) == 1 else None for m in members]
    if any(o is None or o != outputs[0] for o in outputs):
        raise ValueError(
            "Ensemble members must each return one probability tensor of one shape. Received "
            + ", ".join(f"{m.name}: {[tuple(o.shape) for o in m.outputs]}" for m in members)
        )
    if image_size is None:
        image_size = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    inputs = keras.Input(shape=(*image_size, 3), name="image")
    probs = []
    for i, (member, size) in enumerate(zip(members, sizes, strict=True)):
        member.name = f"member{i}_{member.name}"
        member.trainable = False
        x = inputs
        if size != tuple(image_size):
            # float32: resizing raw pixels in float16 rounds them to about 1/8 of a grey level.
            x = layers.Resizing(
                *size,
                interpolation="bilinear",
                # As data_pipelines shrinks images: without it thin structures alias.
                antialias=True,
                dtype="float32",
                name=f"resize{i}_{size[0]}x{size[1]}",
            )(x)
        probs.append(member(x, training=False))
    return keras.Model(inputs, probs, name="ensemble_members")


def build_ensemble(
    stacked: keras.Model, combiner: EnsembleCombine, name: str = "ensemble"
) -> keras.Model:
    """The ensemble: `stacked`'s members, combined by `combiner`, in one functional model.

    Example:
        >>> ensemble = build_ensemble(stack_members([resnet, densenet]), EnsembleCombine("mean"))
        >>> ensemble.predict(images)  # [batch, classes], float32

    Args:
        stacked: a model from `stack_members`.
        combiner: the layer that combines the member probabilities.

    Returns:
        A model from the raw image input to float32 class probabilities; it
        saves as `.keras` and reloads with `safe_mode=True` once
        `keras_app.ensemble` is imported.
    """
    # `input`, not `inputs`: a one-tensor structure, as callers pass it (no Keras warning).
    return keras.Model(stacked.input, combiner(list(stacked.outputs)), name=name)
