"""Where training runs: devices, distribution strategy, precision, XLA, and a record of it.

Also the one door to TensorFlow for the command-line tools: `import_tensorflow()`
imports it after their flags are parsed, with its C++ start-up lines kept off the
terminal. This module's top level imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_app.errors import UsageError

if TYPE_CHECKING:
    import tensorflow as tf

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


def tensorflow_env_defaults() -> None:
    """TensorFlow's environment switches as the product wants them, unless the user chose.

    Must run before TensorFlow is first imported: it reads them once. A user's own
    setting of either variable wins.

    - `TF_CPP_MIN_LOG_LEVEL=2`: C++ logging says warnings and errors only (level 2
      hides the INFO lines: oneDNN, CPU features).
    - `TF_ENABLE_ONEDNN_OPTS=1`: oneDNN's CPU kernels. TensorFlow turns them on by
      itself only on CPUs with AVX-512 (VNNI, BF16) or AMX; on an AVX2-only AMD EPYC
      they took float32 matmul from 85 to 154 GFLOP/s and Xception's training step
      from 2.0 to 1.3 s (docs/BENCHMARKS.md). Where TensorFlow enables them anyway,
      this changes nothing.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextlib.contextmanager
def _stderr_fd_silenced(silence: bool):
    """Points file descriptor 2 at /dev/null, restoring it on the way out.

    Tried on TensorFlow 2.21: the absl "All log messages before absl::InitializeLog()"
    line and the cudart_stub "Could not find cuda drivers" line are written by C++
    before TF_CPP_MIN_LOG_LEVEL is read (they show at level 3 too), and the cuInit
    error yields only to level 3, which would hide every later C++ error as well.
    Python errors still surface as exceptions once the descriptor is back.
    """
    if not silence:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_tensorflow():
    """Imports TensorFlow and Keras once, without their start-up lines on the terminal.

    Every command calls it after parsing its flags (so `--help` stays fast) and before
    any other TensorFlow import. The device probe runs here too, as that is where CUDA
    reports a missing driver. `TF_CPP_MIN_LOG_LEVEL=0` shows everything.

    Returns:
        The `tensorflow` module.
    """
    if "tensorflow" not in sys.modules:
        tensorflow_env_defaults()
        with _stderr_fd_silenced(os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"):
            import keras  # noqa: F401  (Keras' own import of TensorFlow is as noisy)
            import tensorflow as tf

            tf.config.list_physical_devices()
    return sys.modules["tensorflow"]


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
    from keras_app import distributed  # TensorFlow at import: only once it is needed

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


def setup_runtime(
    strategy: str, precision: str, jit: str, seed: int, model: str | None = None
) -> Runtime:
    """Creates the strategy first (multi-worker needs that), then sets precision and seeds.

    Args:
        model: the backbone, for `--precision auto` (`keras_app.precision`); None
            picks as for an unmeasured backbone.
    """
    tf = import_tensorflow()
    import keras

    from keras_app.precision import choose_precision, cpu_flags

    gpus = tf.config.list_physical_devices("GPU")
    dist, strategy_name = _make_strategy(strategy, gpus)
    reason = "asked for on the command line"
    if precision == "auto":
        precision, reason = choose_precision(model or "", len(gpus), cpu_flags())
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    # XLA fuses well on GPUs but is several times slower than plain kernels on a CPU.
    use_jit = bool(gpus) if jit == "auto" else jit == "on"
    is_chief, index = _chief(dist)
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
