"""Several training runs in one process: the one engine of train_many, compare, cv and sweep.

Each of them trains a series of configurations that differ in the model, its
weights, epochs or any other setting, or the fold, and share the data spec,
split and seed. So the data is loaded once per spec (one scan instead of one per
run) and the distribution strategy is made once; each run gets the precision and
seeds its own `python -m keras_app.train` process would give it. A run whose
folder holds a finished run is skipped; an unfinished one is resumed by
`keras_app.training.engine.run`, which reopens its folder.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from keras_app.artifacts.runs import RunFolder
from keras_app.recipe.config import TrainConfig

# TensorFlow's warning when a function traces often (tensorflow/python/eager/
# polymorphic_function/polymorphic_function.py, `_FrequentTracingDetector`).
RETRACING = "triggered tf.function retracing"
# The functions each new model traces afresh: Keras' train/test/predict steps
# (`TensorFlowTrainer._make_function.<locals>.one_step_on_data`,
# `TensorFlowTrainer.make_predict_function.<locals>...`) and our predictor's.
PER_MODEL_FUNCTIONS = ("TensorFlowTrainer.", "KerasPredictor._call")
RETRACING_NOTE = (
    "note: every run (and every reloaded best checkpoint) is a new Keras model with its own "
    "step functions, which TensorFlow traces once per model; TensorFlow's 'tf.function "
    "retracing' warnings about them are expected here, harmless, and not shown"
)


def _print(text: str) -> None:
    # stderr, with the warnings it is about: the filter stays installed for the process,
    # and a later command's stdout (predict's JSON) must not carry the note.
    print(text, file=sys.stderr, flush=True)


class PerModelRetracingFilter(logging.Filter):
    """Drops TensorFlow's frequent-retracing warning about per-model step functions only.

    TensorFlow counts traces per Python code object, across models: a series of
    runs, each building and reloading its own model, traces Keras'
    `one_step_on_data` once or twice per model and soon crosses TensorFlow's
    threshold (5 traces in the last 10 calls), though nothing retraces within a
    model. Any other retracing warning still shows.

    Args:
        say: called once with RETRACING_NOTE, the first time a warning is dropped.
    """

    def __init__(self, say: Callable[[str], None] = _print):
        super().__init__()
        self._say = say
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if RETRACING in message and any(f in message for f in PER_MODEL_FUNCTIONS):
            if not self.dropped:
                self._say(RETRACING_NOTE)
            self.dropped += 1
            return False
        return True


def quiet_per_model_retracing(say: Callable[[str], None] = _print) -> PerModelRetracingFilter:
    """Installs the filter on the `tensorflow` logger, once per process."""
    logger = logging.getLogger("tensorflow")
    for existing in logger.filters:
        if isinstance(existing, PerModelRetracingFilter):
            return existing
    found = PerModelRetracingFilter(say)
    logger.addFilter(found)
    return found


class Series:
    """Loads each data spec once and trains configurations one after another.

    Each run is set up as its own `python -m keras_app.train` process would be:
    the one strategy of the process, then the run's own precision (`--precision
    auto` chooses per backbone) and seeds (`keras_app.training.runtime.setup_runtime`);
    it trains through `keras_app.training.engine.run` and gets its model card.

    Example:
        >>> series = Series()
        >>> series.train(dataclasses.replace(base_config, model="resnet50", run_dir="runs/r"))
    """

    def __init__(self, load_data: Callable | None = None, run: Callable | None = None):
        """Nothing is set up until the first run trains (a rerun may have none to train).

        Args:
            load_data: `keras_app.training.datasets.load_data`, or a stand-in taking a
                TrainConfig.
            run: `keras_app.training.engine.run`, or a stand-in taking (config, data,
                runtime) and returning the run folder.
        """
        self._load = load_data
        self._run = run
        self._data = {}
        self.runtime = None  # the last run's; its strategy is every run's

    def setup(self, config: TrainConfig):
        """The runtime `config` trains under (the process's strategy, its own precision)."""
        from keras_app.training.runtime import setup_runtime

        if self.runtime is None:
            quiet_per_model_retracing()
        self.runtime = setup_runtime(config, reuse=self.runtime)
        return self.runtime

    def data(self, config: TrainConfig):
        """The loaded data of `config`'s spec, split and seed, loaded on first use."""
        key = (config.data, config.val_fraction, config.seed)
        if key not in self._data:
            from keras_app.training.datasets import load_data

            if self.runtime is None:  # the strategy must exist before any tensor is made
                self.setup(config)
            self._data[key] = (self._load or load_data)(config)
        return self._data[key]

    def train(self, config: TrainConfig, data=None) -> Path:
        """One run, as `python -m keras_app.train` would run it (resuming its unfinished
        folder), on `data` or else the data of its spec.

        Returns:
            The run folder.
        """
        import keras

        from keras_app.reports.model_card import write_model_card
        from keras_app.training import engine

        data = self.data(config) if data is None else data
        runtime = self.setup(config)
        try:
            run_dir = (self._run or engine.run)(config, data, runtime)
        finally:
            keras.backend.clear_session()  # the next run builds its model afresh
        if run_dir is not None:
            write_model_card(run_dir)
        return run_dir


def state(run_dir: str | Path) -> str:
    """ "finished", "unfinished" (to resume) or "new": what a series does with a run folder."""
    folder = RunFolder(run_dir)
    if folder.is_finished():
        return "finished"
    if folder.is_unfinished():
        return "unfinished"
    return "new"


def announce(step: str, run_dir: str | Path, detail: str = "") -> str:
    """Prints what happens to a run folder (skipped, resumed, trained); returns its state."""
    found = state(run_dir)
    action = {
        "finished": "finished run in {}, skipped",
        "unfinished": "resuming the unfinished run in {}",
        "new": "training in {}",
    }[found].format(run_dir)
    if detail and found != "finished":
        action += f" ({detail})"
    print(f"{step}: {action}", flush=True)
    return found
