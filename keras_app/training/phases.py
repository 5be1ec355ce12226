"""The phases of one training run: planned from the config, compiled, fitted, resumable.

A pretrained backbone trains in up to two phases: the head on the frozen backbone
(`--head-epochs`), then the top layers unfrozen (`--fine-tune-epochs`). A random
backbone trains end to end in one phase (a frozen random backbone teaches nothing).
A finished phase saves its weights and is recorded in progress.json, so a rerun
restores it instead of training it again.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np

import data_pipelines
from callbacks import GpuTelemetry, ThermalGuard, auto_sensor
from keras_app.artifacts.runs import RunFolder
from keras_app.decision.metrics import positive_index
from keras_app.model.classifier import set_backbone_trainable
from keras_app.model.fused_ops import FusedAdam
from keras_app.model.keras_metrics import training_metrics
from keras_app.recipe.config import MONITOR_MODES, SCRATCH_EPOCHS, TrainConfig, parse_unfreeze
from keras_app.training import callbacks as training_callbacks
from keras_app.training import distributed, feature_cache, sharding
from keras_app.training.runtime import Runtime


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    lr: float
    unfreeze: int | float | str  # 0: backbone frozen; see config.parse_unfreeze
    train_bn: bool = False  # a random backbone's BatchNorm must learn its statistics


# Warm-up share of a cosine phase: a few dozen steps at a rising lr let Adam's moment
# estimates settle before full-size steps move the pretrained weights.
WARMUP_FRACTION = 0.05


def learning_rate(config: TrainConfig, lr: float, steps: int):
    """The phase's learning rate: `lr` (plateau), or warm-up then cosine decay over `steps`."""
    if config.lr_schedule == "plateau":
        return lr
    warmup = int(steps * WARMUP_FRACTION)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=lr, warmup_steps=warmup
    )


def steps_per_epoch(config: TrainConfig, data) -> int:
    if config.steps_per_epoch is not None:
        return config.steps_per_epoch
    return -(-len(data.splits["train"].labels) // config.batch_size)


def compile_model(
    model: keras.Model,
    config: TrainConfig,
    data,
    runtime: Runtime,
    lr: float,
    epochs: int = 1,
    steps_per_execution: int = 1,
):
    """Adam at the phase's learning rate (schedule over `epochs`), cross-entropy, the metrics.

    `steps_per_execution` runs that many steps per call into the graph: for a model
    whose steps are too small to hide Python's per-step cost (the head on cached features).
    """
    rate = learning_rate(config, lr, epochs * steps_per_epoch(config, data))
    with runtime.strategy.scope():
        model.compile(
            optimizer=FusedAdam(rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=training_metrics(len(data.class_names), positive_index(data.class_names)),
            jit_compile=runtime.jit,
            steps_per_execution=steps_per_execution,
        )


def scratch_epochs(config: TrainConfig) -> int:
    """Epochs of a random backbone's one phase: --scratch-epochs, else SCRATCH_EPOCHS when
    the epochs are the transfer recipe's defaults, else the head and fine-tune epochs given."""
    if config.scratch_epochs is not None:
        return config.scratch_epochs
    recipe = (TrainConfig.head_epochs, TrainConfig.fine_tune_epochs)
    if (config.head_epochs, config.fine_tune_epochs) == recipe:
        return SCRATCH_EPOCHS
    return config.head_epochs + config.fine_tune_epochs


def plan_phases(config: TrainConfig, weights: str) -> list[Phase]:
    if weights == "none":
        # A random backbone must learn its features: one end-to-end phase, whole budget.
        return [Phase("end_to_end", scratch_epochs(config), config.lr, "all", train_bn=True)]
    phases = [
        Phase("head", config.head_epochs, config.lr, 0),
        Phase(
            "fine_tune",
            config.fine_tune_epochs,
            config.fine_tune_lr,
            parse_unfreeze(config.unfreeze),
            train_bn=config.fine_tune_bn == "train",
        ),
    ]
    return [p for p in phases if p.epochs > 0]


def thermal_callbacks(
    config: TrainConfig, runtime: Runtime, run_dir: Path, sensor_factory=None
) -> list:
    """The GPU thermal guard and telemetry, when a GPU is present and the guard is wanted.

    Args:
        sensor_factory: returns a GPU sensor or None; default NVML (`callbacks.auto_sensor`).
    """
    if not runtime.gpus or not config.thermal:
        return []
    sensor = (sensor_factory or auto_sensor)()
    if sensor is None:
        print("thermal guard: no NVIDIA driver readable through NVML; guard off", flush=True)
        return []
    log_dir = str(RunFolder(run_dir).gpu_logs)
    print(f"thermal guard: pause above {config.thermal_limit} °C", flush=True)
    return [
        ThermalGuard(
            limit_c=config.thermal_limit,
            resume_c=config.thermal_resume,
            max_pause_s=config.thermal_max_pause,
            on_timeout="stop",
            sensor=sensor,
            log_dir=log_dir,
        ),
        GpuTelemetry(sensor=sensor, log_dir=log_dir),
    ]


def fit_phases(
    model,
    config: TrainConfig,
    data,
    datasets,
    run_dir: Path,
    runtime: Runtime,
    weights: str,
    thermal: list,
) -> list[dict]:
    """Runs each phase, skipping those a previous attempt finished (their weights are saved)."""
    folder = RunFolder(run_dir)
    progress = folder.progress()
    if runtime.strategy_name == "multiworker":
        progress = distributed.chief_progress(progress, runtime)  # the chief's folder decides
    done = {p["name"]: p for p in progress["phases"]}
    class_weight = (
        data_pipelines.balanced_class_weights(data.splits["train"].labels, len(data.class_names))
        if config.class_weight == "auto"
        else None
    )
    by_file = False
    if runtime.strategy_name == "multiworker":
        by_file, line = sharding.shard_by_file(
            data.splits["train"], config.steps_per_epoch, sharding.worker_count(runtime.strategy)
        )
        if line:
            print(line, flush=True)
    epoch = 0
    for phase in plan_phases(config, weights):
        if phase.name in done:
            if runtime.is_chief:  # other workers receive the chief's weights as training starts
                model.load_weights(folder.phase_weights(phase.name))
            epoch = done[phase.name]["end_epoch"]
            print(
                f"phase {phase.name}: finished in an earlier attempt, weights restored", flush=True
            )
            continue
        trainable_layers = set_backbone_trainable(model, phase.unfreeze, phase.train_bn)
        compile_model(model, config, data, runtime, phase.lr, phase.epochs)
        trainable = int(sum(np.prod(v.shape) for v in model.trainable_weights))
        print(
            f"phase {phase.name}: {phase.epochs} epoch(s) at lr {phase.lr}, "
            f"{trainable_layers} backbone layer(s) trainable, {trainable:,} trainable parameters",
            flush=True,
        )
        callbacks = training_callbacks.phase_callbacks(
            run_dir,
            phase.name,
            monitor=config.monitor,
            mode=MONITOR_MODES[config.monitor],
            patience=config.patience,
            is_chief=runtime.is_chief,
            extra=thermal,
            reduce_lr=config.lr_schedule == "plateau",
        )
        start = time.perf_counter()
        fit_kwargs = dict(
            validation_data=datasets.get("fit_val", datasets["val"]),
            epochs=epoch + phase.epochs,
            initial_epoch=epoch,
            steps_per_epoch=config.steps_per_epoch,
            class_weight=class_weight,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles, seeded
            verbose=1 if sys.stdout.isatty() else 2,
        )
        if uses_feature_cache(config, phase, runtime):
            history = feature_cache.fit_head(
                model,
                fit_kwargs,
                config,
                data,
                datasets,
                runtime,
                lambda m, spe, lr=phase.lr, n=phase.epochs: compile_model(
                    m, config, data, runtime, lr, n, spe
                ),
            )
        else:
            fit = distributed.fit_function(model, runtime, by_file)  # model.fit unless multiworker
            history = fit(datasets["train"], **fit_kwargs)
        end_epoch = history.epoch[-1] + 1 if history.epoch else epoch
        record = {
            "name": phase.name,
            "start_epoch": epoch,
            "end_epoch": end_epoch,
            "epochs_run": end_epoch - epoch,
            "lr": phase.lr,
            "trainable_params": trainable,
            "seconds": round(time.perf_counter() - start, 1),
        }
        values = [v for v in history.history.get(config.monitor, []) if not np.isnan(v)]
        pick = max if MONITOR_MODES[config.monitor] == "max" else min
        best = pick(values, default=None)
        print(
            f"phase {phase.name} done: {record['epochs_run']} epoch(s) in {record['seconds']} s, "
            f"best {config.monitor} {best if best is None else round(best, 4)}"
            + (
                " (Keras' streaming AUC: it picks the checkpoint)"
                if "auc" in config.monitor
                else ""
            ),
            flush=True,
        )
        save_phase(model, run_dir, phase.name, progress, record, runtime.is_chief)
        done[phase.name] = record
        epoch = end_epoch
    return progress["phases"]


def uses_feature_cache(config: TrainConfig, phase: Phase, runtime: Runtime) -> bool:
    """The head phase trains on cached backbone features when that saves time."""
    frozen = phase.unfreeze == 0
    return (
        config.feature_cache
        and frozen
        and feature_cache.wins(phase.epochs, config.feature_cache_views, runtime.replicas)
    )


def save_phase(model, run_dir: Path, name: str, progress: dict, record: dict, is_chief: bool):
    """Marks a phase finished with its weights, atomically, so a rerun skips it."""
    if not is_chief:
        return
    folder = RunFolder(run_dir)
    tmp = run_dir / f".phase-{name}.tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, folder.phase_weights(name))
    folder.record_phase(progress, record)
