"""Training-time metrics for one column of a softmax (Keras' AUC flattens all columns)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_app")
class ClassAUC(keras.metrics.AUC):
    """ROC AUC of one class's probability against one-hot labels (binary: the positive class).

    Args:
        class_index: the column of labels and probabilities to score.
    """

    def __init__(self, class_index: int = 1, name: str = "auc", **kwargs):
        super().__init__(name=name, **kwargs)
        if class_index < 0:
            raise ValueError(f"class_index must be >= 0. Received class_index={class_index}")
        self.class_index = class_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(
            y_true[:, self.class_index], y_pred[:, self.class_index], sample_weight
        )

    def get_config(self):
        return {**super().get_config(), "class_index": self.class_index}


def training_metrics(num_classes: int, positive: int | None) -> list:
    """Accuracy always; for two classes also AUC, sensitivity and specificity of `positive`."""
    found = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes == 2 and positive is not None:
        found += [
            ClassAUC(positive, name="auc"),
            keras.metrics.Recall(class_id=positive, name="sensitivity"),
            keras.metrics.Recall(class_id=1 - positive, name="specificity"),
        ]
    return found
