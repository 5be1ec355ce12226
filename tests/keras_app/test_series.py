"""keras_app.series: TensorFlow's retracing warning about per-model step functions, said once
in our words; every other retracing warning still shows."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from keras_app import series


@pytest.fixture
def tf_records(caplog, monkeypatch):
    """TensorFlow's log records, with its frequent-tracing counts fresh for this test.

    TensorFlow warns at most twice per traced code object per process, so an
    earlier test could have used up the warnings this test looks for.
    """
    from tensorflow.python.eager.polymorphic_function import polymorphic_function as pf

    monkeypatch.setattr(
        pf, "_frequent_tracing_detector_manager", pf._FrequentTracingDetectorManager()
    )
    logger = logging.getLogger("tensorflow")
    logger.addHandler(caplog.handler)  # TensorFlow's logger may not propagate to the root
    caplog.set_level(logging.WARNING, logger="tensorflow")
    yield caplog
    logger.removeHandler(caplog.handler)


def retracing(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if series.RETRACING in r.getMessage()]


def predict_with_new_models(n: int = 6) -> None:
    """What a series of runs does: a new Keras model per run, each predicting once."""
    import keras

    for _ in range(n):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.predict(np.zeros((3, 4), np.float32), verbose=0)


@pytest.fixture
def installed():
    said = []
    found = series.PerModelRetracingFilter(said.append)
    logging.getLogger("tensorflow").addFilter(found)
    yield found, said
    logging.getLogger("tensorflow").removeFilter(found)


def test_new_models_make_tensorflow_warn_about_retracing_without_the_filter(tf_records):
    predict_with_new_models()
    messages = retracing(tf_records)
    assert messages and "TensorFlowTrainer.make_predict_function" in messages[0]


def test_the_per_model_warning_is_said_once_in_our_words_and_tensorflows_line_is_kept_off(
    tf_records, installed
):
    found, said = installed
    predict_with_new_models()
    predict_with_new_models()
    assert retracing(tf_records) == []
    assert said == [series.RETRACING_NOTE] and found.dropped >= 1


def test_any_other_retracing_warning_still_shows(tf_records, installed):
    import tensorflow as tf

    found, said = installed

    def ours(x):
        return x + 1

    for size in range(1, 8):  # a new shape each call: the retracing a user should hear of
        tf.function(ours)(tf.zeros([size]))
    messages = retracing(tf_records)
    assert messages and "ours" in messages[0]
    assert said == [] and found.dropped == 0


def test_the_filter_is_installed_once_per_process():
    logger = logging.getLogger("tensorflow")
    first = series.quiet_per_model_retracing()
    try:
        assert series.quiet_per_model_retracing() is first
        assert sum(isinstance(f, series.PerModelRetracingFilter) for f in logger.filters) == 1
    finally:
        logger.removeFilter(first)
