"""Calibrating a model on one split and choosing its operating point there: one procedure.

Training (on its validation split), an ensemble (on the members' validation
split) and a hospital's local recalibration (on its own labelled images) all
call `calibrate_and_choose`, so the temperature and the threshold are always
fitted the same way: the threshold on what the calibrated model itself outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from keras_app.decision.operating_point import (
    OperatingPoint,
    fit_operating_point,
    fit_temperature,
)
from keras_app.model.calibration import calibrated_model, uncalibrated_model
from keras_app.model.guard import classifier_of, guarded_like


@dataclass(frozen=True)
class Calibrated:
    """What `calibrate_and_choose` returns.

    Attributes:
        model: the classifier with the fitted `TemperatureScaling` on its output.
        operating_point: the temperature and the threshold, with what they gave there.
        probabilities: the calibrated model's own outputs on the split (float32).
    """

    model: keras.Model
    operating_point: OperatingPoint
    probabilities: np.ndarray


def calibrate_and_choose(
    model: keras.Model,
    predict: Callable[[keras.Model], np.ndarray],
    labels,
    class_names: Sequence[str],
    target_sensitivity: float | None,
    *,
    split: str = "val",
    refer_share: float | None = None,
) -> Calibrated:
    """Fits the temperature on the split, then the threshold (and the refer band, for
    `refer_share`) on the calibrated outputs.

    Args:
        model: a classifier, calibrated or not (an existing calibration is replaced:
            the temperature is fitted on the uncalibrated outputs); a guarded model keeps
            its image guard.
        predict: `predict(classifier)` -> probabilities `[n, classes]` of the split's images,
            in the order of `labels` (e.g. `KerasPredictor(m, names).predict_split(val)`).
        labels: the split's integer labels.
        class_names: in output order.
        target_sensitivity: the sensitivity the threshold must reach there; None: argmax.
        split: the name recorded as `chosen_on`.
        refer_share: the share of the split the refer band holds; None: no band.
    """
    classifier = classifier_of(model)  # a guarded model is calibrated through its classifier
    raw = predict(uncalibrated_model(classifier))
    temperature = fit_temperature(labels, raw)
    calibrated = calibrated_model(classifier, temperature)
    probabilities = np.asarray(predict(calibrated), np.float32)
    op = fit_operating_point(
        labels,
        raw,
        class_names,
        target_sensitivity,
        split=split,
        temperature=temperature,
        calibrated=probabilities,
        refer_share=refer_share,
    )
    return Calibrated(guarded_like(calibrated, model), op, probabilities)
