"""EnsembleCombine: the Keras layer that turns member probabilities into one prediction."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

MODES = ("mean", "weighted", "learned")


@keras.saving.register_keras_serializable(package="keras_app")
class EnsembleCombine(keras.layers.Layer):
    """Combines the class probabilities of ensemble members into one distribution.

    Modes:
        mean: the plain average of the members.
        weighted: a fixed average with `member_weights` (non-negative, normalised
            to sum to 1 here, so any positive scale works).
        learned: a trainable average: weights are a softmax over one logit per
            member, initialised from `member_weights` (uniform if None). Only the
            logits train; freeze the member models themselves.

    With `logit_average=True` the layer averages log-probabilities and applies a
    softmax (a normalised weighted geometric mean) instead of averaging the
    probabilities; confident members then count for more.

    The layer computes in float32 whatever the global dtype policy: under
    mixed precision its float16 inputs are cast up before the average.

    Example:
        >>> combine = EnsembleCombine("weighted", member_weights=[3, 1])
        >>> probs = combine([np.array([[0.8, 0.2]]), np.array([[0.4, 0.6]])])
        >>> np.round(keras.ops.convert_to_numpy(probs), 3)
        array([[0.7, 0.3]], dtype=float32)

    Args:
        mode: one of "mean", "weighted", "learned".
        member_weights: one non-negative weight per member, not all zero;
            required for "weighted", optional for "learned", not taken by "mean".
        logit_average: average log-probabilities then softmax.
        epsilon: floor on probabilities before the log (logit averaging only).

    Raises:
        ValueError: an unknown mode, negative, non-finite or all-zero weights,
            weights a mode does not take, and (on build) fewer than two inputs,
            inputs of different shapes or a weight count unlike the input count.
    """

    def __init__(
        self,
        mode: str = "mean",
        member_weights: Sequence[float] | None = None,
        logit_average: bool = False,
        epsilon: float = 1e-7,
        **kwargs,
    ):
        # float32: averaging float16 probabilities (and their logs) loses the tails.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"EnsembleCombine mode must be one of {MODES}. Received mode={mode!r}")
        if mode == "mean" and member_weights is not None:
            raise ValueError(
                "EnsembleCombine mode='mean' weighs members equally and takes no member_weights; "
                f"use mode='weighted'. Received member_weights={list(member_weights)}"
            )
        if mode == "weighted" and member_weights is None:
            raise ValueError(
                "EnsembleCombine mode='weighted' needs member_weights. Received member_weights=None"
            )
        if not 0 < epsilon < 1:
            raise ValueError(
                f"EnsembleCombine epsilon must be in (0, 1). Received epsilon={epsilon}"
            )
        self.mode = mode
        self.member_weights = None if member_weights is None else _check_weights(member_weights)
        self.logit_average = bool(logit_average)
        self.epsilon = float(epsilon)
        self.logits = None

    def build(self, input_shape):
        shapes = _as_shape_list(input_shape)
        if len(shapes) < 2:
            raise ValueError(
                "EnsembleCombine needs a list of at least 2 member outputs. "
                f"Received {len(shapes)} input(s) of shape {shapes}"
            )
        if any(not _compatible(shapes[0], s) for s in shapes[1:]):
            raise ValueError(
                f"EnsembleCombine needs member outputs of one shape. Received shapes {shapes}"
            )
        if self.member_weights is not None and len(self.member_weights) != len(shapes):
            raise ValueError(
                f"EnsembleCombine needs one weight per member: {len(shapes)} members. Received "
                f"{len(self.member_weights)} member_weights={self.member_weights}"
            )
        self.num_members = len(shapes)
        if self.mode == "learned":
            start = self.member_weights or [1.0] * self.num_members
            total = sum(start)
            # log(0) is -inf; a floor keeps a zero-weight member able to come back.
            init = [math.log(max(w / total, 1e-6)) for w in start]
            self.logits = self.add_weight(
                name="logits",
                shape=(self.num_members,),
                initializer=keras.initializers.Constant(init),
                trainable=True,
            )

    def call(self, inputs):
        inputs = [ops.cast(x, "float32") for x in inputs]
        weights = self._weight_tensor()
        if self.logit_average:
            logs = [ops.log(ops.clip(x, self.epsilon, 1.0)) for x in inputs]
            return ops.softmax(_weighted_sum(weights, logs), axis=-1)
        return _weighted_sum(weights, inputs)

    def _weight_tensor(self):
        if self.mode == "learned":
            return ops.softmax(self.logits)
        return ops.convert_to_tensor(self.normalized_weights(), dtype="float32")

    def normalized_weights(self) -> np.ndarray:
        """The weight each member gets now, summing to 1 (learned: the current softmax).

        Needs the layer built, except in "weighted" mode.
        """
        if self.mode == "weighted":
            w = np.asarray(self.member_weights, dtype=np.float64)
            return w / w.sum()
        if not self.built:
            raise ValueError(f"EnsembleCombine mode={self.mode!r} knows its members once built")
        if self.mode == "mean":
            return np.full(self.num_members, 1.0 / self.num_members)
        logits = np.asarray(keras.ops.convert_to_numpy(self.logits), dtype=np.float64)
        e = np.exp(logits - logits.max())
        return e / e.sum()

    def compute_output_shape(self, input_shape):
        return tuple(_as_shape_list(input_shape)[0])

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "member_weights": self.member_weights,
            "logit_average": self.logit_average,
            "epsilon": self.epsilon,
        }


def _weighted_sum(weights, tensors):
    total = weights[0] * tensors[0]
    for i in range(1, len(tensors)):
        total = total + weights[i] * tensors[i]
    return total


def _check_weights(member_weights: Sequence[float]) -> list[float]:
    try:
        weights = [float(w) for w in member_weights]
    except (TypeError, ValueError):
        raise ValueError(
            f"EnsembleCombine member_weights must be a list of numbers. "
            f"Received member_weights={member_weights!r}"
        ) from None
    if any(not math.isfinite(w) for w in weights):
        raise ValueError(f"EnsembleCombine member_weights must be finite. Received {weights}")
    if any(w < 0 for w in weights):
        raise ValueError(f"EnsembleCombine member_weights must be non-negative. Received {weights}")
    if sum(weights) <= 0:
        raise ValueError(f"EnsembleCombine member_weights must not all be zero. Received {weights}")
    return weights


def _as_shape_list(input_shape) -> list[tuple]:
    """The shapes of a list of inputs; a single shape (a tuple of ints) is one input."""
    if (
        isinstance(input_shape, (list, tuple))
        and input_shape
        and all(isinstance(s, (list, tuple)) or hasattr(s, "as_list") for s in input_shape)
    ):
        return [tuple(s.as_list() if hasattr(s, "as_list") else s) for s in input_shape]
    return [tuple(input_shape)]


def _compatible(a: tuple, b: tuple) -> bool:
    """Same rank, and the same size on every axis both know (the batch may differ as None)."""
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b, strict=True)
    )
