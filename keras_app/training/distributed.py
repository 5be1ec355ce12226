"""Training across processes: the train loop for `--strategy multiworker`.

Keras 3.15's `fit()` cannot train under `MultiWorkerMirroredStrategy` with two
or more workers (keras-team/keras#20585). `fit` here is the loop of
TensorFlow's "Custom training loop with MultiWorkerMirroredStrategy" tutorial,
called like `model.fit`: `strategy.run` over a `GradientTape`, the loss
averaged over the global batch, metrics reduced across workers, and the
phase's Keras callbacks driven through `keras.callbacks.CallbackList`, so the
run folder, checkpoint, early stopping, logs and resume behave as in `fit()`.

The chief's run folder is the truth: before training the workers check that
they were started alike (`check_workers_agree`), take the chief's progress
(`chief_progress`) and, at each phase start, the chief's weights and epoch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from keras_app.artifacts.runs import comparable
from keras_app.core.errors import UsageError, WorkerLostError

TIMEOUT_ENV = "KERAS_APP_COLLECTIVE_TIMEOUT_S"
# A live worker may wait this long for a slower one: the thermal guard pauses a hot GPU
# for up to 900 s by default. A dead worker is found sooner, by the coordination
# service's missed heartbeats (see docs/DISTRIBUTED.md).
DEFAULT_TIMEOUT_S = 1200.0
# Room for a progress record (two phases take ~400 bytes) in one fixed-size broadcast.
_BROADCAST_BYTES = 8192
_FIELD_SLOTS = 64


def make_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy of `TF_CONFIG`'s cluster, with a bound on every collective's wait.

    Raises:
        UsageError: the timeout in `KERAS_APP_COLLECTIVE_TIMEOUT_S` is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if timeout <= 0:
        raise UsageError(f"{TIMEOUT_ENV} must be a positive number of seconds. Received {raw!r}")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


# What a collective raises when a peer died (missed heartbeats) or never answered (timeout).
_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


@contextlib.contextmanager
def peers_answering():
    """Turns a lost peer's multi-page TensorFlow error into one line that says what to do.

    Raises:
        WorkerLostError: a collective failed because another worker died or hung.
    """
    try:
        yield
    except _PEER_ERRORS as err:
        reason = " ".join(str(err.message).split())[:300]
        raise WorkerLostError(
            f"another worker stopped answering ({type(err).__name__}: {reason}); "
            "rerun the same command on every worker to resume from the last finished epoch"
        ) from None


def lost_peers_reported(runtime):
    """`peers_answering()` for a multi-worker run, nothing otherwise: wraps a whole run.

    A peer's death surfaces in whichever collective runs next, and TensorFlow creates
    mirrored variables (compile, a new phase) through collectives too.
    """
    if runtime.strategy_name != "multiworker":
        return contextlib.nullcontext()
    return peers_answering()


# --- agreement between workers -------------------------------------------------------------------


@functools.cache
def _gather_function(strategy: tf.distribute.Strategy):
    """One traced all-gather per strategy and row length (a new tf.function would retrace)."""
    replicas = strategy.num_replicas_in_sync

    def step(row):
        ctx = tf.distribute.get_replica_context()
        # A sum of one-hot placed rows: collectives all-reduce, they do not concatenate.
        slot = tf.one_hot(ctx.replica_id_in_sync_group, replicas, dtype=tf.int64)
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, slot[:, None] * row[None])

    return tf.function(lambda row: strategy.run(step, args=(row,)))


def _all_gather(strategy: tf.distribute.Strategy, row: np.ndarray) -> np.ndarray:
    """Every replica's `row` (int64), stacked in replica order, on every worker."""
    with peers_answering():
        gathered = _gather_function(strategy)(tf.constant(row, tf.int64))
        return strategy.experimental_local_results(gathered)[0].numpy()


def _field_hash(name: str, value) -> int:
    text = f"{name}={json.dumps(value, sort_keys=True, default=str)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")


def worker_fields(config, data) -> dict:
    """What must be equal on every worker: the configuration (run folder aside) and the data."""
    fields = dict(sorted(comparable(config.to_dict()).items()))
    fields["data fingerprint"] = data.fingerprint
    return fields


def fields_row(fields: dict) -> np.ndarray:
    """A fixed-length row of hashes: the field names first, then each field's value."""
    if len(fields) >= _FIELD_SLOTS:
        raise ValueError(f"at most {_FIELD_SLOTS - 1} fields. Received {len(fields)}")
    row = np.zeros(_FIELD_SLOTS, np.int64)
    row[0] = _field_hash("names", list(fields))
    row[1 : len(fields) + 1] = [_field_hash(k, v) for k, v in fields.items()]
    return row


def differences(rows: np.ndarray, fields: dict, replicas_per_worker: int = 1) -> str | None:
    """Which workers' rows differ from the chief's (row 0), and in which fields; None if none.

    Args:
        rows: `fields_row` of every replica, in replica order.
        fields: this worker's fields, for their names.
        replicas_per_worker: local replicas (devices) per worker.
    """
    names = ["the field list (another keras-app version)", *fields]
    found = {}
    for replica, row in enumerate(rows):
        bad = np.flatnonzero(row[: len(names)] != rows[0][: len(names)])
        if len(bad):
            found.setdefault(replica // replicas_per_worker, [names[i] for i in bad])
    if not found:
        return None
    return "; ".join(f"worker {w}: {', '.join(bad)}" for w, bad in found.items())


def check_workers_agree(config, data, runtime) -> None:
    """Refuses to train when the workers were started with different settings or data.

    Runs before the model is built: mirrored variables of different shapes would
    fail later with an error that names nothing. Nothing to check in one process.

    Raises:
        UsageError: one line naming the worker and the fields that differ from the chief's.
    """
    if runtime.strategy_name != "multiworker":
        return
    fields = worker_fields(config, data)
    strategy = runtime.strategy
    rows = _all_gather(strategy, fields_row(fields))
    differs = differences(rows, fields, max(1, len(strategy.extended.worker_devices)))
    if differs:
        raise UsageError(
            "workers were started with different settings than the chief (worker 0): "
            f"{differs}; start every worker with the same command and data"
        )


def _broadcast_json(strategy: tf.distribute.Strategy, obj, is_chief: bool):
    """The chief's `obj`, on every worker (through a fixed-size byte buffer)."""
    data = json.dumps(obj).encode() if is_chief else b""
    if len(data) > _BROADCAST_BYTES:
        raise ValueError(f"at most {_BROADCAST_BYTES} bytes. Received {len(data)}")
    row = np.zeros(_BROADCAST_BYTES, np.int64)
    row[: len(data)] = np.frombuffer(data, np.uint8)
    chief_row = _all_gather(strategy, row)[0]
    return json.loads(bytes(chief_row[chief_row > 0].astype(np.uint8)).decode())


def chief_progress(progress: dict, runtime) -> dict:
    """The chief's record of finished phases: every worker skips the phases the chief skips."""
    return _broadcast_json(runtime.strategy, progress, runtime.is_chief)


def _reduce_into(strategy: tf.distribute.Strategy, variables: list, *, chief_only: bool) -> None:
    """Overwrites every worker's copy with the chief's values, or with the replicas' mean.

    Args:
        variables: mirrored variables; with `chief_only=False`, floating-point ones.
        chief_only: take replica 0's (the chief's) values instead of the mean.
    """
    groups = {}
    for variable in variables:
        # One all-reduce per dtype: it packs its list into one buffer.
        groups.setdefault(variable.dtype, []).append(variable)
    for group in groups.values():
        reduced = _reduce_group(strategy, group, chief_only)
        for variable, value in zip(group, reduced, strict=True):
            variable.assign(strategy.experimental_local_results(value)[0])


# Traced reductions by (strategy, variables, mode): a new tf.function per epoch would retrace.
_REDUCERS: dict[tuple, tf.types.experimental.GenericFunction] = {}


def _reduce_group(strategy: tf.distribute.Strategy, group: list, chief_only: bool):
    key = (id(strategy), tuple(id(v) for v in group), chief_only)
    if key not in _REDUCERS:
        _REDUCERS[key] = _reducer(strategy, group, chief_only)
    return _REDUCERS[key]()


def _reducer(strategy: tf.distribute.Strategy, group: list, chief_only: bool):
    replicas = strategy.num_replicas_in_sync

    def step():
        ctx = tf.distribute.get_replica_context()
        first = tf.equal(ctx.replica_id_in_sync_group, 0)
        values = [v.value for v in group]  # this replica's copies
        if chief_only:
            values = [tf.where(first, x, tf.zeros_like(x)) for x in values]
        else:
            values = [x / replicas for x in values]
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)

    return tf.function(lambda: strategy.run(step))


def _average_statistics(model: keras.Model, strategy) -> None:
    """Averages BatchNorm's moving statistics over the replicas.

    Keras updates them from each replica's own batch and keeps the first local
    replica's result, so without this each worker would hold its own.
    """
    layers = [x for x in _all_layers(model) if isinstance(x, keras.layers.BatchNormalization)]
    moving = [v for layer in layers for v in layer.non_trainable_variables]
    if moving:
        _reduce_into(strategy, moving, chief_only=False)


def _all_layers(layer):
    """The layer and every layer nested in it (a backbone is a model inside the model)."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _all_layers(inner)


# --- the train loop ------------------------------------------------------------------------------


def fit_function(model: keras.Model, runtime, by_file: bool = False):
    """`model.fit`, or this module's `fit` with the same arguments under multiworker
    (`by_file`: each worker reads its own TFRecord shards)."""
    if runtime.strategy_name != "multiworker":
        return model.fit
    return functools.partial(fit, model, runtime.strategy, by_file=by_file)


def _unpack(batch):
    x, y, *rest = batch
    return x, y, (rest[0] if rest else None)


class _Steps:
    """The replica functions of one phase: a train step and a validation step."""

    def __init__(self, model: keras.Model, strategy, class_weight: dict | None, steps_per_epoch):
        self.model = model
        self.steps_per_epoch = steps_per_epoch
        self.strategy = strategy
        loss = model.loss
        self.loss = type(loss).from_config({**loss.get_config(), "reduction": None})
        self.class_weight = (
            None
            if class_weight is None
            else tf.constant([class_weight[i] for i in sorted(class_weight)], tf.float32)
        )
        metrics = model.get_compile_config()["metrics"] or []
        with strategy.scope():
            self.train_metrics = [keras.metrics.Mean(name="loss")]
            self.train_metrics += [keras.metrics.deserialize(m) for m in metrics]
            self.val_metrics = [keras.metrics.Mean(name="loss")]
            self.val_metrics += [keras.metrics.deserialize(m) for m in metrics]
        self.train = tf.function(lambda batch, stop: strategy.run(self._train, args=(batch, stop)))
        self.evaluate = tf.function(lambda batch: strategy.run(self._evaluate, args=(batch,)))

    def _weights(self, y, sample_weight):
        weight = tf.ones(tf.shape(y)[:1]) if sample_weight is None else sample_weight
        if self.class_weight is not None:
            # As fit() does: the class weight of each row's label scales its loss.
            weight *= tf.gather(self.class_weight, tf.argmax(y, axis=-1))
        return tf.cast(weight, tf.float32)

    def _train(self, batch, stop):
        """One step; returns how many replicas had been asked to stop (a callback's request)."""
        x, y, sample_weight = _unpack(batch)
        weight = self._weights(y, sample_weight)
        ctx = tf.distribute.get_replica_context()
        # The global batch of this step (the last one may be short, or empty on a replica).
        # One all-reduce carries both: the global batch of this step (the last may be short,
        # or empty on a replica) and the stop requests, so that all workers stop together.
        counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stack([tf.shape(y)[0], stop]))
        global_batch = counts[0]
        optimizer = self.model.optimizer
        with tf.GradientTape() as tape:
            pred = self.model(x, training=True)
            per_example = tf.cast(self.loss(y, pred), tf.float32)
            loss = tf.nn.compute_average_loss(
                per_example, sample_weight=weight, global_batch_size=global_batch
            )
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            scaled = optimizer.scale_loss(loss)  # mixed_float16's loss scale, else the loss
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        # apply_gradients sums the gradients of all replicas; each is already / global batch.
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        self._update(self.train_metrics, y, pred, per_example, weight)
        return counts[1]

    def _evaluate(self, batch):
        x, y, sample_weight = _unpack(batch)
        # Validation ignores class weights, as fit() does; sample weights mask padding rows.
        weight = tf.ones(tf.shape(y)[:1]) if sample_weight is None else sample_weight
        pred = self.model(x, training=False)
        self._update(self.val_metrics, y, pred, tf.cast(self.loss(y, pred), tf.float32), weight)

    @staticmethod
    def _update(metrics, y, pred, per_example, weight):
        metrics[0].update_state(per_example * weight)
        for metric in metrics[1:]:
            metric.update_state(y, pred, sample_weight=weight)


def _distribute(strategy, dataset: tf.data.Dataset, by_file: bool = False):
    """Each worker keeps its share of every global batch (DATA: every worker reads every
    item), or, `by_file`, reads only its own TFRecord shards (FILE; `sharding`)."""
    policies = tf.data.experimental.AutoShardPolicy
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policies.FILE if by_file else policies.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _results(metrics, prefix: str = "") -> dict:
    # Reading an on-read metric variable outside strategy.run sums it over all workers.
    return {prefix + m.name: float(m.result()) for m in metrics}


def _reset(metrics) -> None:
    for metric in metrics:
        metric.reset_state()


def _run_epoch(steps: _Steps, batches, callbacks, steps_per_epoch: int | None) -> None:
    """One epoch's steps; a stop asked on any worker (e.g. the thermal guard's) stops all.

    A request made after step k reaches the others with step k + 1: one step later
    than fit() would stop, but on every worker at the same step.
    """
    _reset(steps.train_metrics)
    model = steps.model
    for step, batch in enumerate(batches):
        callbacks.on_train_batch_begin(step)
        stops = steps.train(batch, tf.constant(int(model.stop_training), tf.int32))
        callbacks.on_train_batch_end(step, {})
        # Only the agreed request ends the epoch: a worker leaving alone would hang the others.
        if int(steps.strategy.experimental_local_results(stops)[0]):
            model.stop_training = True
            break
        if steps_per_epoch and step + 1 >= steps_per_epoch:
            break


def _anyone_stopped(model: keras.Model, strategy) -> bool:
    """Whether a callback on any worker asked to stop at the end of this epoch."""
    return bool(_all_gather(strategy, np.array([int(model.stop_training)], np.int64)).any())


def _validate(steps: _Steps, dataset) -> dict:
    _reset(steps.val_metrics)
    for batch in dataset:
        steps.evaluate(batch)
    return _results(steps.val_metrics, "val_")


def _sync_start(model: keras.Model, strategy, initial_epoch: int) -> int:
    """Gives every worker the chief's weights, optimizer state and first epoch.

    A worker started on a fresh machine (or with an older scratch backup than the
    chief's) would otherwise train from another state and never agree again.
    """
    _reduce_into(strategy, [*model.variables, *model.optimizer.variables], chief_only=True)
    start = model._initial_epoch or initial_epoch  # BackupAndRestore's epoch, as fit() reads it
    chief_start = _all_gather(strategy, np.array([start], np.int64))[0][0]
    model._initial_epoch = None
    return int(chief_start)


def fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    x: tf.data.Dataset,
    *,
    validation_data: tf.data.Dataset | None = None,
    epochs: int = 1,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    class_weight: dict | None = None,
    callbacks=(),
    verbose: int = 2,
    shuffle: bool = False,
    by_file: bool = False,
) -> keras.callbacks.History:
    """`model.fit` for a compiled model under `MultiWorkerMirroredStrategy`.

    Args:
        model: compiled under `strategy.scope()`.
        strategy: the strategy the model was built in.
        x: batches of the global batch size, `(images, labels[, weights])`.
        validation_data: batches like `x`, evaluated after every epoch.
        epochs: the epoch to stop before, counted from 0 as in `fit`.
        initial_epoch: the epoch to start at.
        steps_per_epoch: a cap on training batches per epoch (`x` repeats then).
        class_weight: `{class index: weight}`, scaling each row's loss by its label.
        callbacks: Keras callbacks, driven as `fit` drives them.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        shuffle: must be False: the pipeline shuffles, seeded, the same on every worker.
        by_file: each worker reads only its own TFRecord shards of `x` (`sharding.shard_by_file`);
            `x` repeats and `steps_per_epoch` is given.

    Returns:
        The History callback, as `fit` returns it.
    """
    if shuffle:
        raise ValueError("shuffle must be False (the tf.data pipeline shuffles). Received True")
    if not strategy.extended.should_checkpoint:
        # A non-chief worker takes the chief's state at start, so its own backup is unused,
        # and one half-written when the worker was killed would stop the rerun.
        callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.BackupAndRestore)]
    steps = _Steps(model, strategy, class_weight, steps_per_epoch)
    if by_file and not steps_per_epoch:
        raise ValueError("by_file needs steps_per_epoch (workers' shares differ)")
    train = _distribute(strategy, x, by_file)
    val = _distribute(strategy, validation_data) if validation_data is not None else None
    history = keras.callbacks.History()
    cardinality = int(x.cardinality())
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history],
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch or (cardinality if cardinality > 0 else None),
        model=model,
    )
    with strategy.scope():
        # Here, not lazily in the first step: BackupAndRestore loads into these variables.
        model.optimizer.build(model.trainable_variables)
    with peers_answering():
        _loop(model, strategy, steps, (train, val), callback_list, epochs, initial_epoch)
    return history


def _loop(model, strategy, steps, data, callback_list, epochs: int, initial_epoch: int):
    """fit()'s epochs: train, validate, let the callbacks act."""
    train, val = data
    steps_per_epoch = steps.steps_per_epoch
    model.stop_training = False
    callback_list.on_train_begin()
    start = _sync_start(model, strategy, initial_epoch)
    # A repeating pipeline continues across epochs, as fit() continues it.
    repeating = iter(train) if steps_per_epoch else None
    logs = None
    for epoch in range(start, epochs):
        callback_list.on_epoch_begin(epoch)
        _run_epoch(steps, repeating or train, callback_list, steps_per_epoch)
        _average_statistics(model, strategy)  # before validation: every worker judges one model
        logs = _results(steps.train_metrics)
        if val is not None:
            logs.update(_validate(steps, val))
        callback_list.on_epoch_end(epoch, logs)
        model.stop_training = _anyone_stopped(model, strategy)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_variables)
    callback_list.on_train_end(logs)
