"""The head phase on cached backbone features.

While the backbone is frozen its output for an image does not change, so the
head phase need not run the backbone every epoch: run it once over a fixed
number of augmented passes of the training set (the "views") and once over val,
keep the pooled features, and train the head on them. The head model shares its
layers with the full model, so what it learns is the full model's head; the
checkpoint callback is pinned to the full model, so best.keras stays a whole
classifier that loads with `safe_mode=True`.

The features are kept between runs in Keras' cache folder
(`$KERAS_HOME/keras_app/features`, else `~/.keras/keras_app/features`), under a key
of everything they depend on: the data's fingerprint, the backbone's weights, the
image size, augmentation, seed, views, batch and precision. A resumed head phase,
a rerun, or a sweep over head settings reads them back and skips the backbone; a
file whose stored key differs, or that cannot be read, is rebuilt, never reused.
The oldest files go once the folder holds more than `MAX_CACHE_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

MAX_CACHE_BYTES = 2 * 1024**3
POOL_LAYER = "pool"
# The layers of build_classifier's head after the pooling, in call order.
HEAD_LAYERS = ("dropout", "predictions")


def wins(head_epochs: int, views: int, replicas: int) -> bool:
    """Whether caching saves time: more head epochs than backbone passes, one replica.

    Building the cache costs one backbone pass per view, as much as a plain epoch,
    so it wins only when the head trains for more epochs than there are views.
    A multi-replica strategy keeps the plain path (its padded val batches).
    """
    return replicas == 1 and head_epochs > views


def weights_digest(model: keras.Model) -> str:
    """sha256 of the values of every backbone weight: a changed backbone changes it."""
    from keras_app.model.classifier import BACKBONE_LAYER

    digest = hashlib.sha256()
    for weight in model.get_layer(BACKBONE_LAYER).weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()


def cache_key(model: keras.Model, config, fingerprint: str, precision: str) -> str:
    """The key of everything the cached features depend on.

    Args:
        model: the full classifier (its backbone's weights are hashed).
        config: the resolved TrainConfig.
        fingerprint: the data's fingerprint (`data.fingerprint`).
        precision: the Keras dtype policy the features are computed under.

    Returns:
        A hex digest; equal keys mean interchangeable features.
    """
    parts = {
        "fingerprint": fingerprint,
        "model": config.model,
        "alpha": config.alpha,
        "weights": weights_digest(model),
        "image_size": config.image_size,
        "pad_to_aspect": config.pad_to_aspect,
        "augment": config.augment,
        "seed": config.seed,
        "views": config.feature_cache_views,
        "batch_size": config.batch_size,
        "steps_per_epoch": config.steps_per_epoch,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def feature_extractor(model: keras.Model) -> keras.Model:
    """The full model up to its pooled backbone output (inference mode)."""
    return keras.Model(model.inputs[0], model.get_layer(POOL_LAYER).output)


def head_model(model: keras.Model) -> keras.Model:
    """A model of the full model's head layers on pooled features, sharing their weights."""
    width = model.get_layer(POOL_LAYER).output.shape[-1]
    features = keras.Input(shape=(width,), name="features")
    x = features
    for name in HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return keras.Model(features, x, name=f"{model.name}_head")


def extract(extractor: keras.Model, dataset: tf.data.Dataset, steps: int | None):
    """Features and labels of one pass over `dataset` (`steps` batches when it repeats)."""
    import tensorflow as tf

    call = tf.function(lambda x: extractor(x, training=False))
    features, labels = [], []
    for x, y in dataset.take(-1 if steps is None else steps):
        features.append(np.asarray(call(x), dtype=np.float32))
        labels.append(np.asarray(y, dtype=np.float32))
    return np.concatenate(features), np.concatenate(labels)


def build_cache(model: keras.Model, datasets: dict, views: int, steps: int | None) -> dict:
    """Runs the backbone over `views` augmented passes of train and one pass of val.

    Each pass over the training pipeline reshuffles and draws new augmentations,
    as an epoch of the plain head phase would.
    """
    extractor = feature_extractor(model)
    passes = [extract(extractor, datasets["train"], steps) for _ in range(views)]
    n = min(len(f) for f, _ in passes)  # equal rows so the views stack
    val_x, val_y = extract(extractor, datasets["val"], None)
    return {
        "train_x": np.stack([f[:n] for f, _ in passes]),
        "train_y": np.stack([y[:n] for _, y in passes]),
        "val_x": val_x,
        "val_y": val_y,
    }


def cache_dir() -> Path:
    """Where features are kept between runs: under Keras' cache root."""
    from data_pipelines.medmnist import keras_home

    return keras_home() / "keras_app" / "features"


def load_or_build(path: Path, key: str, build) -> dict:
    """The cached arrays at `path` when their key is `key`; else `build()`, saved there.

    Args:
        path: the `.npz` file.
        key: from `cache_key`; a file holding another key, or unreadable, is replaced.
        build: returns the dict of arrays.

    Returns:
        The arrays, and "rebuilt": whether `build` ran.
    """
    if path.exists():
        try:
            with np.load(path) as stored:
                if str(stored["key"]) == key:
                    arrays = {k: stored[k] for k in stored.files if k != "key"}
                    with contextlib.suppress(OSError):  # a read-only cache still serves
                        os.utime(path)  # recently used: pruned last
                    print(f"feature cache: reusing {path}", flush=True)
                    return {**arrays, "rebuilt": False}
            why = "stale (other data, backbone or settings)"
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            why = f"unreadable ({type(error).__name__})"
        print(f"feature cache: {path} is {why}; rebuilding", flush=True)
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, key=np.array(key), **arrays)
        os.replace(tmp, path)  # a reader never sees half a file
        prune(path.parent, MAX_CACHE_BYTES, keep=path)
    except OSError as error:
        print(f"feature cache: not kept for later runs ({error})", flush=True)
    return {**arrays, "rebuilt": True}


def prune(folder: Path, max_bytes: int, keep: Path) -> None:
    """Removes the least recently used `.npz` files until `folder` holds at most `max_bytes`."""
    files = sorted(folder.glob("*.npz"), key=lambda f: f.stat().st_mtime)
    total = sum(f.stat().st_size for f in files)
    for old in files:
        if total <= max_bytes:
            break
        if old != keep:
            total -= old.stat().st_size
            old.unlink(missing_ok=True)


def feature_datasets(cache: dict, batch_size: int, seed: int) -> tuple:
    """The head's train and val datasets on cached features.

    Epoch e trains on view e % N, in an order drawn from (seed, e): a fresh
    shuffle every epoch, repeatable from the seed.

    Returns:
        `(train, val, steps_per_epoch)`; train repeats forever.
    """
    import tensorflow as tf

    views, n = cache["train_x"].shape[:2]
    x = tf.constant(cache["train_x"])
    y = tf.constant(cache["train_y"])

    def epoch_rows(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        v = epoch % views
        rows = (tf.gather(x[v], order), tf.gather(y[v], order))
        return tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)

    train = tf.data.Dataset.range(2**62).flat_map(epoch_rows)
    val = tf.data.Dataset.from_tensor_slices((cache["val_x"], cache["val_y"])).batch(batch_size)
    return train.prefetch(2), val.prefetch(2), math.ceil(n / batch_size)


class PinnedModel(keras.callbacks.Callback):
    """Forwards the epoch hooks to `inner`, which always sees `model`, whatever fit() runs.

    The head phase fits the head model, but the best checkpoint must be the whole
    classifier: the checkpoint callback is pinned to the full model.

    Args:
        inner: the callback (epoch and train hooks only are forwarded).
        model: the model `inner` acts on.
    """

    def __init__(self, inner: keras.callbacks.Callback, model: keras.Model):
        super().__init__()
        self.inner = inner
        inner.set_model(model)

    def set_model(self, model):
        pass  # fit() hands over the head model; inner keeps the pinned one

    def set_params(self, params):
        self.inner.set_params(params)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)


def fit_head(model, fit_kwargs: dict, config, data, datasets, runtime, compile_fn):
    """The head phase on cached features: `model.fit(**fit_kwargs)`'s result, faster.

    Args:
        model: the full classifier, backbone frozen.
        fit_kwargs: what the plain head phase passes to `model.fit`; its datasets,
            steps and callbacks are replaced by their feature-space equivalents.
        config: the resolved TrainConfig.
        data: the loaded data (its fingerprint keys the cache).
        datasets: the image pipelines ("train", "val").
        runtime: the Runtime (its precision keys the cache).
        compile_fn: `compile_fn(model, steps_per_execution)` compiles a model as the
            plain phase would (optimizer, loss, metrics).

    Returns:
        The History of the head model's fit.
    """
    start = time.perf_counter()
    key = cache_key(model, config, data.fingerprint, runtime.precision)
    path = cache_dir() / f"{key[:32]}.npz"
    views = config.feature_cache_views
    cache = load_or_build(
        path, key, lambda: build_cache(model, datasets, views, config.steps_per_epoch)
    )
    train, val, steps = feature_datasets(cache, config.batch_size, config.seed)
    print(
        f"feature cache: {views} view(s) of {cache['train_x'].shape[1]} images, "
        f"{cache['train_x'].shape[2]} features, ready in "
        f"{time.perf_counter() - start:.1f} s",
        flush=True,
    )
    head = head_model(model)
    # A step of the head is little math and about 4 ms of Keras' per-step Python (an epoch
    # on the chest X-rays: 0.57 s against 0.14 s): one call into the graph per epoch.
    compile_fn(head, steps)
    callbacks = [
        PinnedModel(cb, model) if isinstance(cb, keras.callbacks.ModelCheckpoint) else cb
        for cb in fit_kwargs["callbacks"]
    ]
    kwargs = {**fit_kwargs, "validation_data": val, "steps_per_epoch": steps}
    return head.fit(train, **{**kwargs, "callbacks": callbacks})
