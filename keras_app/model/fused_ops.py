"""TensorFlow's fused kernels for two Keras 3 hot spots: training BatchNorm and Adam.

Keras 3 computes a training BatchNormalization as separate ops (moments, then the
normalisation) and Adam's update as several elementwise ops per variable; tf.keras
ran both as one TensorFlow kernel each (FusedBatchNormV3 and its gradient,
ResourceApplyAdam). The train-step profile in docs/BENCHMARKS.md put that
elementwise work at 15 to 18% of op time on a CPU. These subclasses take the fused
kernel where it applies and Keras' own code everywhere else, with Keras' weights,
configs and results (tests/keras_app/test_fused_ops.py holds them to Keras' numbers).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

PACKAGE = "keras_app"


def _tensorflow_backend() -> bool:
    return keras.backend.backend() == "tensorflow"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization whose training step runs TensorFlow's FusedBatchNormV3.

    Used for a 4-D channels-last input in training mode without mask, renorm or
    cross-replica statistics; anything else (inference included, where Keras'
    two elementwise ops are already cheap) goes to Keras' own `call`.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        axis = self.axis if isinstance(self.axis, int) else None
        return (
            bool(training)
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and _tensorflow_backend()
            and len(inputs.shape) == 4
            and axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # float32 statistics, as Keras' own call computes them under mixed precision.
        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )[:3]
        # The kernel returns the batch variance with Bessel's correction; Keras keeps
        # the biased one in its moving average.
        count = tf.cast(tf.size(x) // channels, "float32")
        variance = variance * ((count - 1.0) / count)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)


# A Keras 3 weights file keys each layer by its class name ("batch_normalization_3"), so
# the fused class carries Keras' class name: weights saved from a model with either kind
# of BatchNorm load into the other. Configs name it by its registered name,
# "keras_app>FusedBatchNormalization".
FusedBatchNormalization.__name__ = FusedBatchNormalization.__qualname__ = "BatchNormalization"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedAdam(keras.optimizers.Adam):
    """Adam whose per-variable update is TensorFlow's ResourceApplyAdam kernel.

    Same update as Keras' Adam (bias-corrected step size, epsilon outside the
    square root). AMSGrad, sparse gradients and training under a tf.distribute
    strategy go to Keras' own `update_step`.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (
            self.amsgrad
            or not _tensorflow_backend()
            or tf.distribute.has_strategy()
            or isinstance(gradient, tf.IndexedSlices)
        ):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def with_fused_batchnorm(model: keras.Model) -> keras.Model:
    """`model` with its BatchNormalization layers turned into fused ones, in place.

    Same layers, names, configs, weights and graph; only plain `BatchNormalization`
    layers change class, and the model is returned for chaining.
    """
    # The fused class adds no state, only another `call`, so each built layer can
    # change class where it is. Rebuilding the model with clone_model instead cost 1
    # to 2.5 s per backbone and drew new initializer seeds from Python's `random`.
    for layer in model.layers:
        if type(layer) is layers.BatchNormalization:
            layer.__class__ = FusedBatchNormalization
        elif isinstance(layer, keras.Model):
            with_fused_batchnorm(layer)
    return model
