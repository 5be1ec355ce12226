"""Where training runs: devices, distribution strategy, precision, XLA, and a record of it."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

import keras
import tensorflow as tf

from keras_app import distributed
from keras_app.errors import UsageError

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

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync


def _make_strategy(name: str, gpus: list) -> tuple[tf.distribute.Strategy, str]:
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


def setup_runtime(strategy: str, precision: str, jit: str, seed: int) -> Runtime:
    """Creates the strategy first (multi-worker needs that), then sets precision and seeds."""
    gpus = tf.config.list_physical_devices("GPU")
    dist, strategy_name = _make_strategy(strategy, gpus)
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    # XLA fuses well on GPUs but is several times slower than plain kernels on a CPU.
    use_jit = bool(gpus) if jit == "auto" else jit == "on"
    is_chief, index = _chief(dist)
    return Runtime(
        dist, strategy_name, precision, use_jit, tuple(g.name for g in gpus), is_chief, index
    )


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info(runtime: Runtime) -> dict:
    """Package versions, hardware and execution settings, for environment.json."""
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
        "jit_compile": runtime.jit,
    }
