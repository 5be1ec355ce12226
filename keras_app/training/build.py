"""The classifier a run trains, with the weights `--weights` asks for."""

from __future__ import annotations

from pathlib import Path

import keras

from data_pipelines.medmnist import keras_home
from keras_app.core.errors import UsageError
from keras_app.model.classifier import build_classifier
from keras_app.recipe.backbones import BACKBONES
from keras_app.recipe.config import TrainConfig
from keras_app.training.runtime import Runtime


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
                    frozen_bn=config.fine_tune_bn == "frozen",
                    crop=thorax_box(config),
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
                crop=thorax_box(config),
            )
        except ValueError as err:
            raise UsageError(f"cannot build {config.model} with weights {path}: {err}") from None
    return model, path or "none"


def thorax_box(config: TrainConfig) -> tuple[float, float, float, float] | None:
    """The box the model crops its input to (`--thorax-crop`), or None."""
    from keras_app.model.thorax_crop import THORAX_BOX

    return THORAX_BOX if config.thorax_crop else None


def keras_cache() -> Path:
    """Where Keras looks for cached weights files ($KERAS_HOME/models)."""
    return keras_home() / "models"
