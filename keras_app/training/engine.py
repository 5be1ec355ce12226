"""One training run, step by step: the recipe behind `python -m keras_app.train`.

`main` sets up the runtime and loads the data; `run` does the rest on loaded
data (keras_app.experiments gives it a fold's view or a shared load): resolve the
automatic settings, take the run folder (resuming an unfinished one), build the
datasets and the model, fit the phases, calibrate the best checkpoint and choose
its operating point on validation, judge val and test, write the report.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from keras_app.artifacts import runs
from keras_app.artifacts.folders import claim
from keras_app.artifacts.loader import load_model
from keras_app.artifacts.runs import RunFolder
from keras_app.core.errors import UsageError
from keras_app.decision.metrics import classification_metrics, guard_summary, refer_summary
from keras_app.inference.calibrate import calibrate_and_choose
from keras_app.inference.image_guard import fit_image_guard, guard_record
from keras_app.inference.predictor import KerasPredictor
from keras_app.model.guard import with_guard
from keras_app.recipe.backbones import BACKBONES
from keras_app.recipe.config import MONITOR_MODES, TrainConfig
from keras_app.training import distributed, report
from keras_app.training.build import build_model
from keras_app.training.datasets import (
    build_datasets,
    data_record,
    load_data,
    log_augmented_grid,
)
from keras_app.training.phases import fit_phases, thermal_callbacks
from keras_app.training.runtime import Runtime, environment_info, setup_runtime


def main(config: TrainConfig) -> Path | None:
    """`python -m keras_app.train` once its flags are parsed: one run, start to end."""
    runtime = setup_runtime(config)
    data = load_data(config)
    with distributed.lost_peers_reported(runtime):  # a dead worker: one line, not pages
        return run(config, data, runtime)


def run(config: TrainConfig, data, runtime: Runtime) -> Path | None:
    """The recipe on loaded data: every step of `main` after the data is read.

    In a multi-worker run every worker trains; the chief alone writes the run folder
    and judges the result (the others work in a scratch folder, removed at the end).

    Returns:
        The run folder; None on a worker other than the chief.
    """
    config = resolve_config(config, data)
    distributed.check_workers_agree(config, data, runtime)  # before any variable is mirrored
    run_dir = prepare_run_dir(config, runtime)
    print(f"run folder: {run_dir}", flush=True)
    datasets = build_datasets(config, data, runtime.replicas)
    model, weights_used = build_model(config, data, runtime)
    env = start_record(config, runtime, data, weights_used)
    if runtime.is_chief:
        write_start_files(run_dir, config, data, env)
        log_augmented_grid(run_dir, datasets["preview"])
    thermal = thermal_callbacks(config, runtime, run_dir)
    phases = fit_phases(model, config, data, datasets, run_dir, runtime, weights_used, thermal)
    if runtime.is_chief:
        metrics = evaluate_best(model, config, data, run_dir)
        write_report(run_dir, config, env, data, phases, metrics, thermal)
    finish(run_dir, runtime)
    if not runtime.is_chief:
        return None
    print(f"run folder: {run_dir}", flush=True)
    return run_dir


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


def prepare_run_dir(config: TrainConfig, runtime: Runtime) -> Path:
    """Takes the run folder (or reopens it, to resume); a finished or foreign one is refused.

    A non-chief worker of a multi-worker run gets a scratch folder inside it instead.
    """
    run_dir = Path(config.run_dir)
    if not runtime.is_chief:
        scratch = run_dir / f".worker-{runtime.worker_index}"
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch
    taken = claim(
        run_dir,
        config.to_dict(),
        kind="run",
        flag="--run-dir",
        same=lambda recorded, wanted: runs.comparable(recorded) == runs.comparable(wanted),
        write=False,  # config.json is written with the start files, once the model is built
    )
    if taken.state == "resume":
        if RunFolder(run_dir).metrics_path.exists():
            raise UsageError(f"{run_dir} holds a finished run; choose another --run-dir")
        print(f"resuming the unfinished run in {run_dir}", flush=True)
    return run_dir


def start_record(config: TrainConfig, runtime: Runtime, data, weights: str) -> dict:
    """environment.json: where and with what the run trains."""
    return {
        **environment_info(runtime),
        "weights": weights,
        "weights_requested": config.weights,
        "image_size": [config.image_size, config.image_size],
        "class_names": list(data.class_names),
        "data": data_record(config, data),
    }


def write_start_files(run_dir: Path, config: TrainConfig, data, env: dict) -> None:
    """config.json, labels.txt, environment.json and the images seen, before the first epoch."""
    folder = RunFolder(run_dir)
    folder.write_json(runs.CONFIG, config.to_dict())
    folder.write_text(runs.LABELS, "\n".join(data.class_names) + "\n")
    folder.write_json(runs.ENVIRONMENT, env)
    seen = [h for k in ("train", "val") for h in data.splits[k].content_hashes()]
    folder.write_text(runs.TRAINING_IMAGES, "\n".join(seen) + "\n")


def evaluate_best(model: keras.Model, config: TrainConfig, data, run_dir: Path) -> dict:
    """Calibrates the best checkpoint on val, fixes its operating point there, adds the image
    guard, judges val and test.

    The temperature, the threshold and the guard's limit come from the validation split
    only (`calibrate_and_choose`, `add_image_guard`); the calibrated, guarded model
    replaces best.keras (atomically) and operating_point.json records the threshold and
    the limit, so every later predictor decides alike.
    """
    folder = RunFolder(run_dir)
    if folder.best.exists():
        model = load_model(folder.best)
    else:
        print(
            f"no epoch improved {config.monitor}; keeping the final weights as best.keras",
            flush=True,
        )
    names, val = data.class_names, data.splits["val"]

    def predict(m):
        return KerasPredictor(m, names).predict_split(val, config.batch_size)

    chosen = calibrate_and_choose(
        model, predict, val.labels, names, config.target_sensitivity, refer_share=config.refer_band
    )
    model, op = chosen.model, chosen.operating_point
    print(f"calibration and operating point, fitted on val: {op.describe()}", flush=True)
    if config.image_guard:
        model, op = add_image_guard(model, op, config, data)
    save_model_atomic(model, folder.best)
    folder.write_operating_point(op)
    metrics = {"monitor": config.monitor, **best_epoch(folder, config.monitor)}
    metrics["operating_point"] = op.to_dict()
    predictor = KerasPredictor(model, names)
    for split in ("val", "test"):
        labels = data.splits[split].labels
        probs, ood = predictor.score_split(data.splits[split], config.batch_size)
        analysed = op.analysed(ood) if ood is not None else np.ones(len(labels), bool)
        # What the product answers: the images its guard lets through, as evaluate judges.
        metrics[split] = classification_metrics(
            labels[analysed], probs[analysed], names, operating_point=op
        )
        if ood is not None:
            metrics[f"{split}_guard"] = guard_summary(labels, probs, analysed, names, op)
            metrics[f"{split}_every_image"] = classification_metrics(
                labels, probs, names, operating_point=op
            )
        if op.refer_limits is not None:  # the analysed images the band refers to a reader
            metrics[f"{split}_refer"] = refer_summary(labels[analysed], probs[analysed], names, op)
    folder.write_json(runs.METRICS, metrics)
    return metrics


def add_image_guard(model: keras.Model, op, config: TrainConfig, data):
    """The model with its image guard, fitted on train and limited on val; the operating
    point with the guard's limit."""
    guard = fit_image_guard(
        model,
        data,
        batch_size=config.batch_size,
        augment=config.augment,
        pad_to_aspect=config.pad_to_aspect,
        seed=config.seed,
    )
    print(f"image guard, fitted on train, limit chosen on val: {guard.describe()}", flush=True)
    return with_guard(model, guard), dataclasses.replace(op, guard=guard_record(guard))


def save_model_atomic(model: keras.Model, path: Path) -> None:
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


def write_report(run_dir: Path, config: TrainConfig, env: dict, data, phases, metrics, thermal):
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
