"""A hospital's own operating point: the temperature and threshold refitted on its labelled images.

A model trained on one hospital's films keeps much of its ranking at another (AUC) but
not its stored threshold: another scanner, look-up table or population moves every
score. `refit` fits a new version of the operating point on the site's labelled local
images with the one calibration procedure (`calibrate_and_choose`), from training's
model (training's weights, never a previous refit's), and writes it into the run's
history (`keras_app.artifacts.op_history`), training's version kept.

Steps: load the local images (patient-grouped holdout on request); say what the target
needs (`SampleSize`) and refuse below the floor; optionally re-estimate BatchNorm
statistics on them (AdaBN: `auto` adopts it where it measurably lowers the local
log-loss, each way after its own temperature); fit; judge the new point beside the
current one, on the fitting part and on the holdout; write the version; make it current
where its figures clear the stated levels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

import data_pipelines
from data_pipelines.splits import carve
from keras_app.artifacts import runs
from keras_app.artifacts.loader import load_model
from keras_app.artifacts.op_history import OperatingPointHistory
from keras_app.core.errors import UsageError
from keras_app.decision.metrics import (
    decision_metrics,
    expected_calibration_error,
    positive_index,
)
from keras_app.decision.operating_point import OperatingPoint, fit_temperature, scale
from keras_app.decision.resampling import auc_gain, auc_with_ci, mean_with_ci
from keras_app.decision.sample_size import SampleSize
from keras_app.evaluation.evaluate import align_classes
from keras_app.inference.calibrate import calibrate_and_choose
from keras_app.inference.image_guard import limit_guard_on
from keras_app.inference.predictor import KerasPredictor, open_run
from keras_app.model.adabn import adapt_batchnorm
from keras_app.model.calibration import uncalibrated_model
from keras_app.model.guard import classifier_of
from keras_app.recipe.config import manifest_options

ADABN_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class LocalConfig:
    """What `refit` is asked (the calibrate command's flags)."""

    run: str
    data: str
    target_sensitivity: float | None = None  # None: the current point's target
    holdout_fraction: float = 0.0
    seed: int = 42
    adabn: str = "auto"
    min_sensitivity: float = 0.90
    min_specificity: float = 0.70
    force: bool = False
    batch_size: int = 32
    refer_band: float | None = None  # the share; None: the current point's; 0.0: no band
    manifest: dict = field(default_factory=dict)  # a manifest's columns and task (--label)


@dataclass(frozen=True)
class Refit:
    """What `refit` did.

    Attributes:
        version: the new version's number.
        current: whether it was made current (its figures cleared the levels, or --force).
        operating_point: the new point.
        figures: {"fit": {"before", "after"}, "holdout": {"before", "after"} or None}.
        adabn: what AdaBN measured and whether it was adopted.
        passed: whether the judged figures cleared the stated levels.
        judged_on: "holdout" or "fit".
    """

    version: int
    current: bool
    operating_point: OperatingPoint
    figures: dict
    adabn: dict
    passed: bool
    judged_on: str


@dataclass(frozen=True)
class LocalData:
    spec: str
    name: str
    fingerprint: str
    fit: object  # data_pipelines Split
    holdout: object | None
    grouped: bool


def refit(config: LocalConfig, say=print) -> Refit:
    """Fits, judges and writes a new version of the run's operating point (see the module)."""
    run = runs.load_run(config.run)
    history = OperatingPointHistory(run.path)
    check_history(history)
    current = open_run(run.path)
    if len(run.class_names) != 2:
        raise UsageError(f"{run.path}: a local operating point needs two classes")
    target = config.target_sensitivity or current.operating_point.target_sensitivity or 0.97
    try:
        size = SampleSize(target, config.min_sensitivity, config.min_specificity)
    except ValueError as err:
        raise UsageError(str(err)) from None
    local = load_local(config, run)
    pos = positive_index(run.class_names, current.operating_point.positive_class)
    n_pos, n_neg = int((local.fit.labels == pos).sum()), int((local.fit.labels != pos).sum())
    say(size.statement(n_pos, n_neg))
    refused = size.shortfall(n_pos, n_neg)
    if refused:
        raise UsageError(refused)
    if warning := size.below_need(n_pos, n_neg):
        say(warning)
    if local.holdout is not None:  # the levels are judged there: its counts matter as much
        h_pos = int((local.holdout.labels == pos).sum())
        h_neg = len(local.holdout.labels) - h_pos
        say(f"holdout to judge on: {h_pos} positives, {h_neg} negatives")
        if size.below_need(h_pos, h_neg):
            say(
                "warning: the holdout holds fewer cases than the levels need: its Wilson "
                "lower bounds may fall below them even where the point is good (exit 1)"
            )
    # Decoded once, as the model sees them: every prediction below reuses them.
    pixels = {
        part: None if split is None else current.split_images(split, config.batch_size)
        for part, split in (("fit", local.fit), ("holdout", local.holdout))
    }
    model, adabn = training_model(history, run, local.fit, pixels["fit"], pos, config, say)
    share = config.refer_band
    if share is None:  # keep the current point's band, refitted around the new threshold
        share = current.operating_point.refer_band.get("share")
    fitted = fit(model, run, local.fit.labels, pixels["fit"], target, config.batch_size, share)
    # The site's films, not the training site's, are what the guard must let through.
    guard = limit_guard_on(
        fitted.model, pixels["fit"], split=f"local:{local.name}", batch_size=config.batch_size
    )
    if guard is not None:
        say(f"image guard, limit chosen again on the local images: {guard.describe()}")
    figures = judge(current, fitted, run, local, pixels, config.batch_size)
    judged_on = "holdout" if local.holdout is not None else "fit"
    passed = clears(figures[judged_on]["after"], config)
    op = dataclasses.replace(
        fitted.operating_point,
        chosen_on=f"local:{local.name}",
        provenance=provenance(config, local, run, history, target, adabn, figures, size),
        guard=site_guard(current.operating_point.guard, guard),
    )
    with history.lock():
        version = history.add(op.to_dict(), save_model=lambda path: fitted.model.save(path))
        history.write_reference(version, reference(fitted.probabilities, local.fit, pos, op))
        make_current = passed or config.force
        if make_current:
            history.make_current(version, why="calibrate")
    op = dataclasses.replace(op, version=version)
    return Refit(version, make_current, op, figures, adabn, passed, judged_on)


def site_guard(trained: dict, limited) -> dict:
    """The operating point's guard record after `limit_guard_on`: training's record (method,
    layers, what the Gaussians were fitted on) with the site's limit and pass rate."""
    if limited is None:
        return {}
    return {
        **trained,
        "limit": limited.limit,
        "pass_rate": limited.pass_rate,
        "chosen_on": limited.chosen_on,
        "validation": limited.validation,
        "scales": list(limited.scales),
    }


def check_history(history: OperatingPointHistory) -> None:
    if not history.consistent():
        raise UsageError(
            f"{history.folder.best} is not the model of the current operating point "
            f"(version {history.current_version()}): a switch was interrupted; make a version "
            "current again with --use-version N"
        )


# --- the data ------------------------------------------------------------------------------------


def load_local(config: LocalConfig, run: runs.Run) -> LocalData:
    """Every readable image of the local data, classes matched to the model's by name; a
    patient-grouped holdout carved from it on request."""
    data = data_pipelines.load_dataset(
        config.data, whole=True, manifest=manifest_options(config.manifest)
    )
    split = data.splits["all"]
    labels, _ = align_classes(data.class_names, run.class_names, split.labels)
    split = dataclasses.replace(split, labels=np.asarray(labels), class_names=run.class_names)
    holdout = None
    if config.holdout_fraction:
        kept, carved = carve(split.labels, split.groups, config.holdout_fraction, config.seed)
        split, holdout = split.subset(kept, "fit"), split.subset(carved, "holdout")
    return LocalData(
        config.data, data.name, data.fingerprint, split, holdout, split.groups is not None
    )


# --- the model and the fit -----------------------------------------------------------------------


def training_model(history, run, fit_split, images, pos: int, config: LocalConfig, say):
    """Training's model (version 1's), adapted to the site's BatchNorm statistics where
    AdaBN is on, or where `auto` finds it measurably better on the local images: the
    paired bootstrap 95% interval of the per-image log-loss change (each model after a
    temperature fitted on these images) lies below zero."""
    source = history.model_path(1) if history.model_path(1).is_file() else run.model_path
    model = load_model(source)
    if config.adabn == "off":
        return model, {"mode": "off", "adopted": False}
    adapted = load_model(source)
    try:
        layers = adapt_batchnorm(adapted, images, seed=config.seed)
    except UsageError as err:
        if config.adabn == "on":
            raise
        say(f"AdaBN (auto): not applicable ({err})")
        return model, {"mode": "auto", "adopted": False, "note": str(err)}
    record = {"mode": config.adabn, "images": len(images), "layers": layers}
    if config.adabn == "on":
        say(f"AdaBN: {layers} BatchNorm layers re-estimated on {len(images)} local images")
        return adapted, {**record, "adopted": True}
    y = fit_split.labels
    before = raw_scores(model, run, images, config.batch_size)
    after = raw_scores(adapted, run, images, config.batch_size)
    loss = mean_with_ci(calibrated_nll(y, after) - calibrated_nll(y, before), seed=config.seed)
    gain = auc_gain(y == pos, before[:, pos], after[:, pos], seed=config.seed)
    adopted = loss["high"] < 0
    say(
        f"AdaBN (auto): with the site's BatchNorm statistics the local log-loss, each way "
        f"after its own temperature, moves by {loss['value']:+.4f} "
        f"[{loss['low']:+.4f}, {loss['high']:+.4f}] per image and the ROC AUC by "
        f"{gain['value']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}]: "
        + ("adopted" if adopted else "not adopted (no measurable gain)")
    )
    record = {**record, "log_loss_change": loss, "auc_gain": gain, "adopted": adopted}
    return (adapted if adopted else model), record


def calibrated_nll(labels, raw) -> np.ndarray:
    """Each image's negative log-likelihood after a temperature fitted on these images."""
    probs = scale(raw, fit_temperature(labels, raw))
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))


def predictor_of(model, run) -> KerasPredictor:
    return KerasPredictor(model, run.class_names, image_size=run.image_size, config=run.config)


def raw_scores(model, run, images, batch_size: int) -> np.ndarray:
    return predictor_of(uncalibrated_model(classifier_of(model)), run).predict(images, batch_size)


def fit(model, run, labels, images, target: float, batch_size: int, refer_share=None):
    def predict(m):
        return predictor_of(m, run).predict(images, batch_size)

    return calibrate_and_choose(
        model,
        predict,
        labels,
        run.class_names,
        target,
        split="local",
        refer_share=refer_share or None,  # 0.0: no band
    )


# --- judging -------------------------------------------------------------------------------------


def figures_of(labels, probs, class_names, op: OperatingPoint) -> dict:
    """Sensitivity and specificity (Wilson 95%), ROC AUC (bootstrap 95%), ECE, at `op`."""
    pos = op.positive_index(class_names)
    y = np.asarray(labels) == pos
    out = {"n": int(len(y)), "positives": int(y.sum()), "ece": None, "auc": None}
    if len(y) == 0:
        return out
    out.update(decision_metrics(labels, probs, class_names, op))
    out["ece"] = expected_calibration_error(labels, probs)
    if 0 < y.sum() < len(y):
        out["auc"] = auc_with_ci(y, np.asarray(probs)[:, pos])
    return out


def judge(current, fitted, run, local: LocalData, pixels: dict, batch_size: int) -> dict:
    """The current point (before) and the new one (after), on the fitting part and the holdout."""
    new = predictor_of(fitted.model, run)
    names, out = run.class_names, {}
    for part, split in (("fit", local.fit), ("holdout", local.holdout)):
        if split is None:
            out[part] = None
            continue
        images = pixels[part]
        after = fitted.probabilities if part == "fit" else new.predict(images, batch_size)
        out[part] = {
            "before": figures_of(
                split.labels,
                current.predict(images, batch_size),
                names,
                current.operating_point,
            ),
            "after": figures_of(split.labels, after, names, fitted.operating_point),
        }
    return out


def clears(figures: dict, config: LocalConfig) -> bool:
    """Whether the Wilson lower bounds clear --min-sensitivity and --min-specificity."""
    sens, spec = figures.get("sensitivity") or {}, figures.get("specificity") or {}
    return (sens.get("low") or 0) >= config.min_sensitivity and (
        spec.get("low") or 0
    ) >= config.min_specificity


# --- what is recorded ----------------------------------------------------------------------------


def counts(split, class_names) -> dict:
    return {str(n): int((split.labels == i).sum()) for i, n in enumerate(class_names)}


def provenance(config, local, run, history, target, adabn, figures, size) -> dict:
    return {
        "command": "keras_app.calibrate",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {
            "spec": local.spec,
            "name": local.name,
            "fingerprint": local.fingerprint,
            "fit": counts(local.fit, run.class_names),
            "holdout": counts(local.holdout, run.class_names) if local.holdout else None,
            "holdout_fraction": config.holdout_fraction,
            "grouped_by_patient": local.grouped,
            "seed": config.seed,
        },
        "target_sensitivity": target,
        "levels": {
            "min_sensitivity": size.min_sensitivity,
            "min_specificity": size.min_specificity,
            "positives_needed": size.positives_needed,
            "negatives_needed": size.negatives_needed,
        },
        "refit_from": "version 1 (training's weights, untouched)",
        "replaced_version": history.current_version(),
        "adabn": adabn,
        "figures": figures,
    }


def reference(probabilities, split, pos: int, op: OperatingPoint) -> dict:
    """What the monitor compares a site's use with: the calibrated scores fitted on."""
    scores = np.asarray(probabilities)[:, pos]
    called = op.decide(probabilities, split.class_names) == pos
    return {
        "split": "local",
        "scores": [round(float(s), 6) for s in scores],
        "prevalence": float(np.mean(split.labels == pos)),
        "positive_rate": float(np.mean(called)),
        "n": int(len(scores)),
    }


def describe(figures: dict) -> str:
    """One line: sensitivity and specificity with their intervals, AUC, ECE."""

    def rate(r):
        if not r or r.get("value") is None:
            return "n/a"
        return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"

    auc = figures.get("auc")
    auc_text = f"{auc['value']:.4f} [{auc['low']:.4f}, {auc['high']:.4f}]" if auc else "n/a"
    ece = figures.get("ece")
    return (
        f"n {figures['n']}: sensitivity {rate(figures.get('sensitivity'))}, specificity "
        f"{rate(figures.get('specificity'))}, ROC AUC {auc_text}, ECE "
        + (f"{ece:.3f}" if ece is not None else "n/a")
    )
