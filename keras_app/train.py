"""python -m keras_app.train: fine-tune one backbone on tf.data pipelines, write a run folder.

The recipe: frozen backbone and a new head first, then the top layers
unfrozen at a lower learning rate. A backbone without pretrained weights
trains end to end in one phase instead (a frozen random backbone teaches
nothing). Rerunning the same command after a crash resumes the unfinished run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# TensorFlow, Keras, data_pipelines and the modules built on them are imported in the
# functions that use them, after the flags are parsed: `--help` answers at once.
from keras_app import runs
from keras_app.backbones import BACKBONES
from keras_app.config import (
    MONITOR_MODES,
    TrainConfig,
    manifest_options,
    parse_config,
    parse_unfreeze,
)
from keras_app.errors import UsageError, run_cli
from keras_app.inference import KerasPredictor
from keras_app.operating_point import fit_operating_point, fit_temperature
from keras_app.runs import RunFolder
from keras_app.runtime import Runtime, environment_info, import_tensorflow, setup_runtime

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    lr: float
    unfreeze: int | float | str  # 0: backbone frozen; see config.parse_unfreeze
    train_bn: bool = False  # a random backbone's BatchNorm must learn its statistics


def main(argv=None) -> None:
    config = parse_config(argv)
    import_tensorflow()
    runtime = setup_runtime(
        config.strategy, config.precision, config.jit, config.seed, config.model
    )
    data = load_data(config)
    from keras_app import distributed

    with distributed.lost_peers_reported(runtime):  # a dead worker: one line, not pages
        run(config, data, runtime)


def run(config: TrainConfig, data, runtime: Runtime) -> Path:
    """The recipe on loaded data: every step of main after --data is read.

    keras_app.cv calls it with a fold's view of the data, which no --data spec names.
    """
    from keras_app import distributed

    config = resolve_config(config, data)
    if runtime.strategy_name == "multiworker":
        distributed.check_workers_agree(config, data, runtime)  # before any variable is mirrored
    run_dir = prepare_run_dir(config, runtime)
    print(f"run folder: {run_dir}", flush=True)
    datasets = build_datasets(config, data, runtime.replicas)
    model, weights_used = build_model(config, data, runtime)
    env = write_start_files(run_dir, config, runtime, data, weights_used, runtime.is_chief)
    log_augmented_grid(run_dir, config, datasets["train"], runtime.is_chief)
    thermal = thermal_callbacks(config, runtime, run_dir)
    phases = fit_phases(model, config, data, datasets, run_dir, runtime, weights_used, thermal)
    if runtime.is_chief:
        metrics = evaluate_best(model, config, data, datasets, run_dir)
        write_report(run_dir, config, env, data, phases, metrics, thermal)
    finish(run_dir, runtime)
    if runtime.is_chief:
        from keras_app.model_card import write_model_card

        write_model_card(run_dir)
    print(f"run folder: {run_dir}", flush=True)
    return run_dir


# --- data --------------------------------------------------------------------------------------


def load_data(config: TrainConfig):
    """Loads the source, prints its split table, and checks it can train this backbone."""
    import data_pipelines

    data = data_pipelines.load_dataset(
        config.data,
        val_fraction=config.val_fraction,
        seed=config.seed,
        manifest=manifest_options(config.to_dict()),
    )
    print(data.summary(), flush=True)
    return data


def resolve_config(config: TrainConfig, data) -> TrainConfig:
    """Fills the automatic values (image size, monitor, run folder): a derived frozen config."""
    spec = BACKBONES[config.model]
    size = config.image_size
    if size is None:
        # Upsampling past the data's own resolution adds compute, not information.
        native = max(data.native_size) if data.native_size else spec.default_size
        size = max(spec.min_size, min(spec.default_size, native))
    monitor = config.monitor or ("val_auc" if len(data.class_names) == 2 else "val_accuracy")
    alpha = config.alpha if config.alpha is not None else spec.default_alpha
    resolved = dataclasses.replace(config, image_size=size, monitor=monitor, alpha=alpha)
    if config.run_dir is None:
        unfinished = runs.find_unfinished("runs", config.model, resolved.to_dict())
        run_dir = (
            unfinished.path
            if unfinished
            else Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        resolved = dataclasses.replace(resolved, run_dir=str(run_dir))
    return resolved


def build_datasets(config: TrainConfig, data, replicas: int = 1) -> dict[str, tf.data.Dataset]:
    """train (shuffled, augmented), val and test (deterministic) pipelines."""
    import data_pipelines

    common = dict(
        image_size=(config.image_size,) * 2,
        batch_size=config.batch_size,
        num_classes=len(data.class_names),
        pad_to_aspect=config.pad_to_aspect,
        seed=config.seed,
    )
    cache = {"memory": True, "none": False}.get(config.cache, config.cache)
    datasets = {}
    for split in ("train", "val", "test"):
        training = split == "train"
        datasets[split] = data_pipelines.make_dataset(
            data.splits[split],
            training=training,
            augment=config.augment if training else "none",
            cache=cache if training else (cache is not False),
            repeat=training and config.steps_per_epoch is not None,
            **common,
        )
    if replicas > 1:
        datasets["fit_val"] = even_replica_batches(
            datasets["val"], len(data.splits["val"]), config.batch_size, replicas
        )
    return datasets


def even_replica_batches(dataset: tf.data.Dataset, size: int, batch_size: int, replicas: int):
    """Pads the last batch to a multiple of the replicas with zero-weight rows.

    Keras 3 evaluation under a multi-replica strategy fails when the last batch
    splits unevenly across replicas (keras-team/keras#19246); zero sample
    weights keep the padding out of the validation metrics.
    """
    import tensorflow as tf

    pad = (-(size % batch_size)) % replicas
    rows = dataset.unbatch().map(lambda x, y: (x, y, tf.constant(1.0)))
    if pad:
        rows = rows.concatenate(rows.take(1).map(lambda x, y, w: (x, y, w * 0.0)).repeat(pad))
    return rows.batch(batch_size)


# --- model ---------------------------------------------------------------------------------------


def build_model(config: TrainConfig, data, runtime: Runtime) -> tuple[keras.Model, str]:
    """The classifier under the strategy's scope, with the weights `--weights` asks for.

    Returns:
        The model and a description of its weights: "imagenet", a path, or "none".
    """
    from keras_app.model import build_classifier

    spec = BACKBONES[config.model]
    size = (config.image_size, config.image_size)
    n = len(data.class_names)
    wanted = config.weights
    if wanted in ("auto", "imagenet") and not spec.imagenet:
        wanted = "none"
    with runtime.strategy.scope():
        if wanted in ("auto", "imagenet"):
            try:
                model = build_classifier(
                    config.model,
                    n,
                    size,
                    weights="imagenet",
                    alpha=config.alpha,
                    dropout=config.dropout,
                    frozen_bn=config.fine_tune_bn == "frozen",
                )
                return model, "imagenet"
            except Exception as err:  # noqa: BLE001  (Keras raises bare Exception on fetch failure)
                reason = str(err).splitlines()[0][:300]
                if wanted == "imagenet":
                    raise UsageError(
                        f"ImageNet weights for {config.model} could not be loaded ({reason}). "
                        f"Put the file in {keras_cache()} or run online, or use --weights none"
                    ) from None
                print(
                    f"ImageNet weights for {config.model} unavailable ({reason}): "
                    "training from random initialisation, end to end",
                    flush=True,
                )
        path = None if wanted in ("auto", "none") else wanted
        if path is not None and not Path(path).is_file():
            raise UsageError(f"--weights file not found: {path}")
        try:
            model = build_classifier(
                config.model,
                n,
                size,
                weights=path,
                alpha=config.alpha,
                dropout=config.dropout,
                frozen_bn=path is not None and config.fine_tune_bn == "frozen",
            )
        except ValueError as err:
            raise UsageError(f"cannot build {config.model} with weights {path}: {err}") from None
    return model, path or "none"


def keras_cache() -> Path:
    from data_pipelines.medmnist import keras_home

    return keras_home() / "models"


# Warm-up share of a cosine phase: a few dozen steps at a rising lr let Adam's moment
# estimates settle before full-size steps move the pretrained weights.
WARMUP_FRACTION = 0.05


def learning_rate(config: TrainConfig, lr: float, steps: int):
    """The phase's learning rate: `lr` (plateau), or warm-up then cosine decay over `steps`."""
    import keras

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
    import keras

    from keras_app.fused_ops import FusedAdam
    from keras_app.keras_metrics import training_metrics
    from keras_app.metrics import positive_index

    rate = learning_rate(config, lr, epochs * steps_per_epoch(config, data))
    with runtime.strategy.scope():
        model.compile(
            optimizer=FusedAdam(rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=training_metrics(len(data.class_names), positive_index(data.class_names)),
            jit_compile=runtime.jit,
            steps_per_execution=steps_per_execution,
        )


# --- run folder ----------------------------------------------------------------------------------


def prepare_run_dir(config: TrainConfig, runtime: Runtime) -> Path:
    """Creates (or reopens, to resume) the run folder; non-chief workers get a scratch one."""
    run_dir = Path(config.run_dir)
    if not runtime.is_chief:
        run_dir = run_dir / f".worker-{runtime.worker_index}"
    folder = RunFolder(run_dir)
    if folder.config_path.exists() and runtime.is_chief:
        if runs.comparable(folder.config()) != runs.comparable(config.to_dict()):
            raise UsageError(
                f"{run_dir} holds a run with another configuration; choose another --run-dir"
            )
        if folder.metrics_path.exists():
            raise UsageError(f"{run_dir} holds a finished run; choose another --run-dir")
        print(f"resuming the unfinished run in {run_dir}", flush=True)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"cannot write the run folder {run_dir}: {err.strerror}") from None
    return run_dir


def write_start_files(
    run_dir: Path, config: TrainConfig, runtime: Runtime, data, weights: str, is_chief: bool
) -> dict:
    """config.json, labels.txt and environment.json, before the first epoch."""
    env = {
        **environment_info(runtime),
        "weights": weights,
        "weights_requested": config.weights,
        "image_size": [config.image_size, config.image_size],
        "class_names": list(data.class_names),
        "data": data_record(config, data),
    }
    if is_chief:
        folder = RunFolder(run_dir)
        folder.write_json(runs.CONFIG, config.to_dict())
        folder.write_text(runs.LABELS, "\n".join(data.class_names) + "\n")
        folder.write_json(runs.ENVIRONMENT, env)
        seen = [h for k in ("train", "val") for h in data.splits[k].content_hashes()]
        folder.write_text(runs.TRAINING_IMAGES, "\n".join(seen) + "\n")
    return env


def data_record(config: TrainConfig, data) -> dict:
    import data_pipelines

    weights = (
        data_pipelines.balanced_class_weights(data.splits["train"].labels, len(data.class_names))
        if config.class_weight == "auto"
        else None
    )
    return {
        "spec": config.data or "digits",
        "name": data.name,
        "fingerprint": data.fingerprint,
        "class_names": list(data.class_names),
        "splits": {name: split.counts() for name, split in data.splits.items()},
        "split_notes": {
            name: data.split_note(name, config.val_fraction, config.seed) for name in data.splits
        },
        "class_weight": {data.class_names[i]: round(w, 4) for i, w in weights.items()}
        if weights
        else None,
        "skipped": len(data.skipped),
        "skipped_files": [list(s) for s in data.skipped],
    }


def log_augmented_grid(run_dir: Path, config: TrainConfig, train: tf.data.Dataset, is_chief: bool):
    """A grid of the training images as the model sees them (augmented), in TensorBoard."""
    import tensorflow as tf

    import data_pipelines

    if not is_chief:
        return
    images = data_pipelines.augment_preview(train, n=16)
    n, h, w, c = images.shape
    side = int(np.ceil(np.sqrt(n)))
    grid = np.zeros((side * h, side * w, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, side)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    with tf.summary.create_file_writer(str(RunFolder(run_dir).logs / "images")).as_default():
        tf.summary.image("augmented_training_images", grid[None], step=0)


# --- training ------------------------------------------------------------------------------------


def scratch_epochs(config: TrainConfig) -> int:
    """Epochs of a random backbone's one phase: --scratch-epochs, else SCRATCH_EPOCHS when
    the epochs are the transfer recipe's defaults, else the head and fine-tune epochs given."""
    from keras_app.config import SCRATCH_EPOCHS

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
    from callbacks import GpuTelemetry, ThermalGuard, auto_sensor

    sensor = (sensor_factory or auto_sensor)()
    if sensor is None:
        print("thermal guard: no NVIDIA driver readable through NVML; guard off", flush=True)
        return []
    log_dir = str(run_dir / "logs" / "gpu")
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
    import data_pipelines
    from keras_app import distributed, feature_cache
    from keras_app.model import set_backbone_trainable
    from keras_app.training_callbacks import phase_callbacks

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
        callbacks = phase_callbacks(
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
            fit = distributed.fit_function(model, runtime)  # model.fit unless multiworker
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
    from keras_app.feature_cache import wins

    frozen = phase.unfreeze == 0
    return (
        config.feature_cache
        and frozen
        and wins(phase.epochs, config.feature_cache_views, runtime.replicas)
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


# --- evaluation and report ----------------------------------------------------------------------


def evaluate_best(model, config: TrainConfig, data, datasets, run_dir: Path) -> dict:
    """Calibrates the best checkpoint on val, fixes its operating point there, judges val and test.

    The temperature and the threshold come from the validation split only; the
    calibrated model replaces best.keras (atomically) and operating_point.json
    records both, so every later predictor decides the same way.
    """
    import keras

    import keras_app.custom_objects  # noqa: F401  (loads what it saves)
    from keras_app.calibration import calibrated_model
    from keras_app.metrics import classification_metrics

    folder = RunFolder(run_dir)
    if folder.best.exists():
        model = keras.models.load_model(folder.best, safe_mode=True, compile=False)
    else:
        print(
            f"no epoch improved {config.monitor}; keeping the final weights as best.keras",
            flush=True,
        )
    names, val = data.class_names, data.splits["val"]
    raw = KerasPredictor(model, names).predict_split(val, config.batch_size)
    save_model_atomic(calibrated_model(model, fit_temperature(val.labels, raw)), folder.best)
    predictor = KerasPredictor(
        keras.models.load_model(folder.best, safe_mode=True, compile=False), names
    )
    # The threshold on the saved model's own outputs: what every predictor will compare.
    calibrated = predictor.predict_split(val, config.batch_size)
    op = fit_operating_point(
        val.labels, raw, names, config.target_sensitivity, calibrated=calibrated
    )
    folder.write_json(runs.OPERATING_POINT, op.to_dict())
    print(operating_point_line(op), flush=True)
    metrics = {"monitor": config.monitor, **best_epoch(folder, config.monitor)}
    metrics["operating_point"] = op.to_dict()
    for split in ("val", "test"):
        probs = (
            calibrated
            if split == "val"
            else predictor.predict_split(data.splits[split], config.batch_size)
        )
        metrics[split] = classification_metrics(
            data.splits[split].labels, probs, names, threshold=op.threshold
        )
    folder.write_json(runs.METRICS, metrics)
    return metrics


def save_model_atomic(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def best_epoch(folder: RunFolder, monitor: str) -> dict:
    """The 1-based epoch (as Keras' log counts) of the best `monitor` value, and the value."""
    history = folder.history()
    values = np.array([h.get(monitor, np.nan) for h in history], dtype=float)
    if not len(values) or np.all(np.isnan(values)):
        return {"best_epoch": None, "best_value": None}
    i = int(np.nanargmax(values) if MONITOR_MODES[monitor] == "max" else np.nanargmin(values))
    return {"best_epoch": history[i]["epoch"], "best_value": float(values[i])}


def operating_point_line(op) -> str:
    line = f"calibration: temperature {op.temperature:.3f} fitted on val"
    if op.threshold is None:
        return line
    v = op.validation
    return (
        f"{line}; operating point: P({op.positive_class}) >= {op.threshold:.4f} "
        f"for sensitivity >= {op.target_sensitivity} on val "
        f"(val sensitivity {v['sensitivity']['value']:.4f}, "
        f"specificity {v['specificity']['value']:.4f})"
    )


def write_report(run_dir: Path, config: TrainConfig, env: dict, data, phases, metrics, thermal):
    from keras_app import report

    folder = RunFolder(run_dir)
    history = folder.history()
    folder.write_json(runs.HISTORY, history)
    report.plot_curves(history, config.monitor, folder.curves)
    thermal_lines = [
        line for cb in thermal if hasattr(cb, "report_lines") for line in cb.report_lines()
    ]
    if not thermal:
        thermal_lines = ["off (no GPU)" if not env["gpus"] else "off (--no-thermal)"]
    text = report.train_markdown(
        config=config.to_dict(),
        env=env,
        data=env["data"],
        phases=phases,
        history=history,
        metrics=metrics,
        thermal=thermal_lines,
    )
    folder.write_text(runs.TRAIN_MD, text)
    for split in ("val", "test"):
        m = metrics[split]
        shown = ", ".join(
            f"{k} {m[k]:.4f}"
            for k in ("accuracy", "roc_auc", "sensitivity", "specificity")
            if k in m
        )
        print(
            f"{split} (best checkpoint, scikit-learn, at the operating point): {shown}", flush=True
        )


def finish(run_dir: Path, runtime: Runtime) -> None:
    """Removes resume state once the run is complete (the phase weights live on in best.keras)."""
    if not runtime.is_chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    folder = RunFolder(run_dir)
    shutil.rmtree(folder.backup, ignore_errors=True)
    for path in run_dir.glob(folder.phase_weights("*").name):
        path.unlink()


if __name__ == "__main__":
    sys.exit(run_cli(main))
