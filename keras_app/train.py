"""python -m keras_app.train: fine-tune one backbone on tf.data pipelines, write a run folder.

The recipe: frozen backbone and a new head first, then the top layers
unfrozen at a lower learning rate. A backbone without pretrained weights
trains end to end in one phase instead (a frozen random backbone teaches
nothing). Rerunning the same command after a crash resumes the unfinished run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import data_pipelines
from keras_app import report, runs
from keras_app.backbones import BACKBONES
from keras_app.config import TrainConfig, parse_config
from keras_app.errors import UsageError, run_cli
from keras_app.keras_metrics import training_metrics
from keras_app.metrics import classification_metrics, positive_index
from keras_app.model import build_classifier, set_backbone_trainable
from keras_app.runtime import Runtime, environment_info, setup_runtime
from keras_app.training_callbacks import phase_callbacks

PROGRESS = "progress.json"


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    lr: float
    unfreeze: int | str  # 0: backbone frozen
    train_bn: bool = False  # a random backbone's BatchNorm must learn its statistics


def main(argv=None) -> None:
    config = parse_config(argv)
    runtime = setup_runtime(config.strategy, config.precision, config.jit, config.seed)
    data = load_data(config)
    run(config, data, runtime)


def run(config: TrainConfig, data, runtime: Runtime) -> Path:
    """The recipe on loaded data: every step of main after --data is read.

    keras_app.cv calls it with a fold's view of the data, which no --data spec names.
    """
    config = resolve_config(config, data)
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
    print(f"run folder: {run_dir}", flush=True)
    return run_dir


# --- data --------------------------------------------------------------------------------------


def load_data(config: TrainConfig):
    """Loads the source, prints its split table, and checks it can train this backbone."""
    data = data_pipelines.load_dataset(
        config.data, val_fraction=config.val_fraction, seed=config.seed
    )
    print(data.summary(), flush=True)
    if data.skipped:
        print(f"skipped {len(data.skipped)} unreadable file(s); see environment.json", flush=True)
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
    run_dir = config.run_dir or str(
        find_unfinished(config, size, monitor, alpha)
        or Path("runs") / f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    return dataclasses.replace(
        config, image_size=size, monitor=monitor, alpha=alpha, run_dir=run_dir
    )


def build_datasets(config: TrainConfig, data, replicas: int = 1) -> dict[str, tf.data.Dataset]:
    """train (shuffled, augmented), val and test (deterministic) pipelines."""
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
                frozen_bn=path is not None,
            )
        except ValueError as err:
            raise UsageError(f"cannot build {config.model} with weights {path}: {err}") from None
    return model, path or "none"


def keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def compile_model(model: keras.Model, config: TrainConfig, data, runtime: Runtime, lr: float):
    with runtime.strategy.scope():
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=training_metrics(len(data.class_names), positive_index(data.class_names)),
            jit_compile=runtime.jit,
        )


# --- run folder ----------------------------------------------------------------------------------


def comparable(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k != "run_dir"}


def find_unfinished(config: TrainConfig, size: int, monitor: str, alpha) -> Path | None:
    """The newest unfinished run of the same configuration, so rerunning a command resumes it."""
    want = comparable(
        dataclasses.replace(
            config, image_size=size, monitor=monitor, alpha=alpha, run_dir=None
        ).to_dict()
    )
    for candidate in sorted(Path("runs").glob(f"{config.model}-*"), reverse=True):
        saved = candidate / runs.CONFIG
        if (
            (candidate / PROGRESS).exists()
            and saved.exists()
            and not (candidate / runs.METRICS).exists()
        ):
            if comparable(json.loads(saved.read_text())) == want:
                return candidate
    return None


def prepare_run_dir(config: TrainConfig, runtime: Runtime) -> Path:
    """Creates (or reopens, to resume) the run folder; non-chief workers get a scratch one."""
    run_dir = Path(config.run_dir)
    if not runtime.is_chief:
        run_dir = run_dir / f".worker-{runtime.worker_index}"
    saved = run_dir / runs.CONFIG
    if saved.exists() and runtime.is_chief:
        if comparable(json.loads(saved.read_text())) != comparable(config.to_dict()):
            raise UsageError(
                f"{run_dir} holds a run with another configuration; choose another --run-dir"
            )
        if (run_dir / runs.METRICS).exists():
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
        runs.write_json_atomic(run_dir / runs.CONFIG, config.to_dict())
        runs.write_text_atomic(run_dir / runs.LABELS, "\n".join(data.class_names) + "\n")
        runs.write_json_atomic(run_dir / runs.ENVIRONMENT, env)
    return env


def data_record(config: TrainConfig, data) -> dict:
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
        "class_weight": {data.class_names[i]: round(w, 4) for i, w in weights.items()}
        if weights
        else None,
        "skipped": len(data.skipped),
        "skipped_files": [list(s) for s in data.skipped],
    }


def log_augmented_grid(run_dir: Path, config: TrainConfig, train: tf.data.Dataset, is_chief: bool):
    """A grid of the training images as the model sees them (augmented), in TensorBoard."""
    if not is_chief:
        return
    images = data_pipelines.augment_preview(train, n=16)
    n, h, w, c = images.shape
    side = int(np.ceil(np.sqrt(n)))
    grid = np.zeros((side * h, side * w, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, side)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    with tf.summary.create_file_writer(str(run_dir / "logs" / "images")).as_default():
        tf.summary.image("augmented_training_images", grid[None], step=0)


# --- training ------------------------------------------------------------------------------------


def plan_phases(config: TrainConfig, weights: str) -> list[Phase]:
    if weights == "none":
        # A random backbone must learn its features: one end-to-end phase, whole budget.
        epochs = config.head_epochs + config.fine_tune_epochs
        return [Phase("end_to_end", epochs, config.lr, "all", train_bn=True)]
    phases = [
        Phase("head", config.head_epochs, config.lr, 0),
        Phase(
            "fine_tune",
            config.fine_tune_epochs,
            config.fine_tune_lr,
            config.unfreeze if config.unfreeze == "all" else int(config.unfreeze),
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
    progress_path = run_dir / PROGRESS
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {"phases": []}
    done = {p["name"]: p for p in progress["phases"]}
    class_weight = (
        data_pipelines.balanced_class_weights(data.splits["train"].labels, len(data.class_names))
        if config.class_weight == "auto"
        else None
    )
    epoch = 0
    for phase in plan_phases(config, weights):
        if phase.name in done:
            model.load_weights(run_dir / f"phase-{phase.name}.weights.h5")
            epoch = done[phase.name]["end_epoch"]
            print(
                f"phase {phase.name}: finished in an earlier attempt, weights restored", flush=True
            )
            continue
        trainable_layers = set_backbone_trainable(model, phase.unfreeze, phase.train_bn)
        compile_model(model, config, data, runtime, phase.lr)
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
            mode="max",
            patience=config.patience,
            is_chief=runtime.is_chief,
            extra=thermal,
        )
        start = time.perf_counter()
        history = model.fit(
            datasets["train"],
            validation_data=datasets.get("fit_val", datasets["val"]),
            epochs=epoch + phase.epochs,
            initial_epoch=epoch,
            steps_per_epoch=config.steps_per_epoch,
            class_weight=class_weight,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles, seeded
            verbose=1 if sys.stdout.isatty() else 2,
        )
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
        best = max(
            (v for v in history.history.get(config.monitor, []) if not np.isnan(v)), default=None
        )
        print(
            f"phase {phase.name} done: {record['epochs_run']} epoch(s) in {record['seconds']} s, "
            f"best {config.monitor} {best if best is None else round(best, 4)}",
            flush=True,
        )
        save_phase(model, run_dir, phase.name, progress, record, runtime.is_chief)
        done[phase.name] = record
        epoch = end_epoch
    return progress["phases"]


def save_phase(model, run_dir: Path, name: str, progress: dict, record: dict, is_chief: bool):
    """Marks a phase finished with its weights, atomically, so a rerun skips it."""
    if not is_chief:
        return
    tmp = run_dir / f".phase-{name}.tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, run_dir / f"phase-{name}.weights.h5")
    progress["phases"].append(record)
    runs.write_json_atomic(run_dir / PROGRESS, progress)


# --- evaluation and report ----------------------------------------------------------------------


def predict_split(model, dataset, split) -> np.ndarray:
    probs = model.predict(dataset.map(lambda x, y: x), verbose=0)
    if len(probs) != len(split.labels):
        raise RuntimeError(f"predicted {len(probs)} rows for {len(split.labels)} labels")
    return probs


def evaluate_best(model, config: TrainConfig, data, datasets, run_dir: Path) -> dict:
    """Metrics of the best checkpoint on val and test (the final weights if none was saved)."""
    best_path = run_dir / runs.BEST
    if best_path.exists():
        model = keras.models.load_model(best_path, safe_mode=True, compile=False)
    else:
        print(
            f"no epoch improved {config.monitor}; saving the final weights as best.keras",
            flush=True,
        )
        model.save(run_dir / ".best.tmp.keras")
        os.replace(run_dir / ".best.tmp.keras", best_path)
    history = read_history(run_dir, config.monitor)
    values = [h.get(config.monitor, float("nan")) for h in history]
    best_epoch = int(np.nanargmax(values)) if values and not np.all(np.isnan(values)) else None
    metrics = {
        "monitor": config.monitor,
        "best_epoch": history[best_epoch]["epoch"] if best_epoch is not None else None,
        "best_value": values[best_epoch] if best_epoch is not None else None,
    }
    for split in ("val", "test"):
        probs = predict_split(model, datasets[split], data.splits[split])
        metrics[split] = classification_metrics(data.splits[split].labels, probs, data.class_names)
    runs.write_json_atomic(run_dir / runs.METRICS, metrics)
    return metrics


def read_history(run_dir: Path, monitor: str) -> list[dict]:
    """Every epoch of every phase and attempt, from the CSV log, labelled with its phase."""
    path = run_dir / "training.csv"
    if not path.exists():
        return []
    phases = (
        json.loads((run_dir / PROGRESS).read_text())["phases"]
        if (run_dir / PROGRESS).exists()
        else []
    )
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            record = {k: float(v) for k, v in row.items() if v not in ("", None) and k != "epoch"}
            record["epoch"] = int(row["epoch"])
            record["phase"] = next(
                (p["name"] for p in phases if p["start_epoch"] <= record["epoch"] < p["end_epoch"]),
                "",
            )
            rows.append(record)
    return rows


def write_report(run_dir: Path, config: TrainConfig, env: dict, data, phases, metrics, thermal):
    history = read_history(run_dir, config.monitor)
    runs.write_json_atomic(run_dir / runs.HISTORY, history)
    report.plot_curves(history, config.monitor, run_dir / "curves.png")
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
    runs.write_text_atomic(run_dir / "train.md", text)
    test = metrics["test"]
    shown = ", ".join(
        f"{k} {test[k]:.4f}"
        for k in ("accuracy", "roc_auc", "sensitivity", "specificity")
        if k in test
    )
    print(f"test: {shown}", flush=True)


def finish(run_dir: Path, runtime: Runtime) -> None:
    """Removes resume state once the run is complete (the phase weights live on in best.keras)."""
    if not runtime.is_chief:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    for path in run_dir.glob("phase-*.weights.h5"):
        path.unlink()


if __name__ == "__main__":
    sys.exit(run_cli(main))
