"""Where training runs: devices, distribution strategy, precision, XLA, and a record of it.

This module's top level imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_app.core.cli import import_tensorflow
from keras_app.core.errors import UsageError
from keras_app.training.precision import choose_precision, cpu_flags

if TYPE_CHECKING:
    import tensorflow as tf

    from keras_app.recipe.config import TrainConfig

RECORDED_PACKAGES = (
    "tensorflow",
    "keras",
    "numpy",
    "scikit-learn",
    "tensorflow-datasets",
    "nvidia-ml-py",
    "pydicom",
    "keras-app",
)


@dataclass(frozen=True)
class Runtime:
    """The resolved execution settings of one run."""

    strategy: tf.distribute.Strategy
    strategy_name: str
    precision: str
    jit: bool
    gpus: tuple[str, ...]
    is_chief: bool
    worker_index: int
    precision_reason: str = "asked for on the command line"

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def _make_strategy(name: str, gpus: list) -> tuple[tf.distribute.Strategy, str]:
    tf = import_tensorflow()
    tf_config = os.environ.get("TF_CONFIG")
    if name == "auto":
        name = "multiworker" if tf_config else ("mirrored" if len(gpus) > 1 else "none")
    if name == "none":
        return tf.distribute.get_strategy(), "none"
    if name == "mirrored":
        # Every GPU; without GPUs, every logical CPU device (how tests run it on one host).
        devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
        return tf.distribute.MirroredStrategy(devices=devices), "mirrored"
    if not tf_config:
        raise UsageError(
            "--strategy multiworker needs TF_CONFIG (cluster and task) in the environment"
        )
    try:
        json.loads(tf_config)["task"]
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"TF_CONFIG is not JSON with a 'task' entry: {err}") from None
    from keras_app.training import distributed  # TensorFlow at import: only once it is needed

    return distributed.make_strategy(), "multiworker"


def _chief(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    index = resolver.task_id or 0
    if resolver.task_type == "chief":
        return True, index
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and index == 0 and not has_chief, index


def setup_runtime(config: TrainConfig, reuse: Runtime | None = None) -> Runtime:
    """The runtime one run trains under: the strategy, then the precision, XLA and seeds.

    Every run in a process shares one strategy (TensorFlow allows one multi-worker
    strategy per process, and a series of runs builds its data under it), so a later
    run passes the runtime of an earlier one as `reuse`. The precision is the run's own:
    `--precision auto` picks it for the run's backbone (`keras_app.training.precision`),
    as `python -m keras_app.train` would for that run alone.
    """
    tf = import_tensorflow()
    import keras

    gpus = tf.config.list_physical_devices("GPU")
    if reuse is None:
        dist, strategy_name = _make_strategy(config.strategy, gpus)
        is_chief, index = _chief(dist)
    else:
        dist, strategy_name = reuse.strategy, reuse.strategy_name
        is_chief, index = reuse.is_chief, reuse.worker_index
    precision, reason = config.precision, "asked for on the command line"
    if precision == "auto":
        precision, reason = choose_precision(config.model, len(gpus), cpu_flags())
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(config.seed)  # each run starts as a fresh process would
    # XLA fuses well on GPUs but is several times slower than plain kernels on a CPU.
    use_jit = bool(gpus) if config.jit == "auto" else config.jit == "on"
    return Runtime(
        dist,
        strategy_name,
        precision,
        use_jit,
        tuple(g.name for g in gpus),
        is_chief,
        index,
        reason,
    )


def _version(package: str) -> str | None:
    from importlib import metadata  # here: it costs `--help` a few tenths of a second

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info(runtime: Runtime) -> dict:
    """Package versions, hardware and execution settings, for environment.json."""
    tf = import_tensorflow()
    gpu_details = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpu_details.append({"name": gpu.name, **{k: str(v) for k, v in details.items()}})
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in RECORDED_PACKAGES},
        "gpus": gpu_details,
        "strategy": runtime.strategy_name,
        "replicas": runtime.replicas,
        "precision": runtime.precision,
        "precision_reason": runtime.precision_reason,
        "jit_compile": runtime.jit,
        # Read back from TensorFlow: oneDNN kernels on or off in this process.
        "onednn": _onednn_enabled(),
    }


def _onednn_enabled() -> bool | None:
    """Whether this process's TensorFlow runs oneDNN's CPU kernels (None: cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a private module: it may move
        return None
