"""keras_app.series: TensorFlow's retracing warning about per-model step functions, said once
in our words; every other retracing warning still shows."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from keras_app.experiments import series


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
    # A series trained by an earlier test installs the process-wide filter: set it aside.
    others = [f for f in logger.filters if not isinstance(f, series.PerModelRetracingFilter)]
    monkeypatch.setattr(logger, "filters", others)
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


def test_a_series_loads_each_data_spec_once_and_seeds_each_run_afresh(monkeypatch, tmp_path):
    import dataclasses

    import keras

    from keras_app.recipe.config import TrainConfig

    loads, seen = [], []

    def run(config, data, runtime):
        seen.append((config.model, data, runtime.precision))

    monkeypatch.setattr(keras.utils, "set_random_seed", lambda seed: seen.append(seed))
    monkeypatch.setattr(series, "quiet_per_model_retracing", lambda: None)
    base = TrainConfig(model="simple_cnn", data="digits", seed=3, precision="float32")
    runner = series.Series(load_data=lambda c: loads.append(c.data) or f"data of {c.data}", run=run)
    for model in ("simple_cnn", "mobilenet"):
        runner.train(dataclasses.replace(base, model=model))
    runner.train(dataclasses.replace(base, data="npz:other.npz"))
    assert loads == ["digits", "npz:other.npz"]
    assert seen == [
        3,  # the first setup, before the data is loaded under the strategy
        3,
        ("simple_cnn", "data of digits", "float32"),
        3,
        ("mobilenet", "data of digits", "float32"),
        3,
        ("simple_cnn", "data of npz:other.npz", "float32"),
    ]


class Recorded(BaseException):
    """Ends a command at its first run (a BaseException: sweep records an Exception)."""


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with bfloat16 arithmetic, as /proc/cpuinfo would say; the policy reset after."""
    import keras

    from keras_app.training import runtime

    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512_bf16", "avx2"}))
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    ("command", "argv", "model"),
    [
        ("compare", ["--models", "xception", "--modes", "scratch"], "xception"),
        ("cv", ["--model", "xception", "--folds", "2"], "xception"),
        ("train_many", ["--models", "xception"], "xception"),
        ("sweep", ["--model", "xception", "--grid", "lr=1e-3"], "xception"),
        ("train_many", ["--models", "mobilenet"], "mobilenet"),
    ],
)
def test_every_series_command_chooses_the_precision_train_would(
    command, argv, model, bf16_cpu, monkeypatch, tmp_path
):
    """compare, cv, train_many and sweep set each run up through the real runtime; only the
    training itself is stood in for, to record the precision the run got."""
    import importlib

    import keras

    from keras_app.recipe.config import parse_config
    from keras_app.training import engine
    from keras_app.training.runtime import setup_runtime

    got = []

    def run(config, data, runtime):
        got.append((config.model, runtime.precision, keras.mixed_precision.global_policy().name))
        raise Recorded

    monkeypatch.setattr(engine, "run", run)
    out = "--runs-root" if command == "train_many" else "--out"
    with pytest.raises(Recorded):
        importlib.import_module(f"keras_app.{command}").main(
            [*argv, out, str(tmp_path / command), "--data", "digits"]
        )
    alone = setup_runtime(parse_config(["--model", model, "--data", "digits"])).precision
    assert alone == ("mixed_bfloat16" if model == "xception" else "float32")
    assert got == [(model, alone, alone)]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "new"),
        ({"config.json": "{}"}, "unfinished"),
        ({"config.json": "{}", "best.keras": "", "metrics.json": "{}"}, "finished"),
    ],
)
def test_announce_says_what_happens_to_a_run_folder(tmp_path, capsys, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert series.announce("[1/2] resnet50", tmp_path, "weights none") == expected
    out = capsys.readouterr().out
    assert out.startswith("[1/2] resnet50: ")
    assert ("(weights none)" in out) == (expected != "finished")
