"""BestCheckpoint and EpochTimer, driven through their hooks with a fake clock."""

import keras
import numpy as np

from keras_app.training.callbacks import BestCheckpoint, EpochTimer, best_logged, phase_callbacks


def tiny_model():
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))


def test_best_checkpoint_saves_only_improvements_and_leaves_no_temp(tmp_path):
    path = tmp_path / "best.keras"
    cb = BestCheckpoint(path, "val_auc", "max")
    cb.set_model(tiny_model())
    cb.on_epoch_end(0, {"val_auc": 0.6})
    first = path.stat().st_mtime_ns
    cb.on_epoch_end(1, {"val_auc": 0.5})
    assert path.stat().st_mtime_ns == first and cb.best == 0.6
    cb.on_epoch_end(2, {"val_auc": float("nan")})
    cb.on_epoch_end(3, {"val_auc": 0.7})
    assert cb.best == 0.7 and path.stat().st_mtime_ns != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]
    keras.models.load_model(path, safe_mode=True)


def test_a_resumed_checkpoint_must_beat_the_logged_best(tmp_path):
    log = tmp_path / "training.csv"
    log.write_text("epoch,loss,val_auc\n0,1.0,0.8\n1,0.9,nan\n2,0.8,0.75\n")
    assert best_logged(log, "val_auc", "max") == 0.8
    assert best_logged(log, "loss", "min") == 0.8
    assert best_logged(tmp_path / "absent.csv", "val_auc", "max") is None
    cb = BestCheckpoint(tmp_path / "best.keras", "val_auc", "max", best=0.8)
    cb.set_model(tiny_model())
    cb.on_epoch_end(3, {"val_auc": 0.79})
    assert not (tmp_path / "best.keras").exists()


def test_epoch_timer_adds_seconds_from_its_clock():
    ticks = iter([10.0, 12.5])
    timer = EpochTimer(clock=lambda: next(ticks))
    logs = {}
    timer.on_epoch_begin(0)
    timer.on_epoch_end(0, logs)
    assert logs["epoch_seconds"] == 2.5
    assert np.isfinite(logs["epoch_seconds"])


def test_val_loss_is_minimised_by_every_callback_of_a_phase(tmp_path):
    """--monitor val_loss: the checkpoint keeps the lowest loss and early stopping waits for
    a lower one (they once all maximised whatever they monitored)."""
    from keras_app.recipe.config import MONITOR_MODES
    from keras_app.training.callbacks import phase_callbacks

    callbacks = phase_callbacks(
        tmp_path,
        "head",
        monitor="val_loss",
        mode=MONITOR_MODES["val_loss"],
        patience=2,
        is_chief=True,
    )
    model = tiny_model()
    for cb in callbacks:
        cb.set_model(model)
    checkpoint = next(cb for cb in callbacks if isinstance(cb, BestCheckpoint))
    stopper = next(cb for cb in callbacks if isinstance(cb, keras.callbacks.EarlyStopping))
    stopper.on_train_begin()
    for epoch, loss in enumerate([0.9, 0.5, 0.7]):
        checkpoint.on_epoch_end(epoch, {"val_loss": loss})
        stopper.on_epoch_end(epoch, {"val_loss": loss})
    assert checkpoint.best == 0.5 and stopper.best == 0.5 and stopper.wait == 1


def test_best_epoch_follows_the_monitor_direction(tmp_path):
    from keras_app.artifacts.runs import RunFolder
    from keras_app.training.engine import best_epoch

    folder = RunFolder(tmp_path)
    # As Keras' CSVLogger writes it: epochs from 0.
    folder.training_csv.write_text("epoch,val_auc,val_loss\n0,0.6,0.9\n1,0.7,0.4\n2,0.8,0.6\n")
    assert [h["epoch"] for h in folder.history()] == [1, 2, 3]
    assert best_epoch(folder, "val_loss") == {"best_epoch": 2, "best_value": 0.4}
    assert best_epoch(folder, "val_auc") == {"best_epoch": 3, "best_value": 0.8}


def test_a_scheduled_lr_gets_no_reduce_on_plateau(tmp_path):
    def kinds(reduce_lr):
        callbacks = phase_callbacks(
            tmp_path,
            "fine_tune",
            monitor="val_auc",
            mode="max",
            patience=2,
            is_chief=False,
            reduce_lr=reduce_lr,
        )
        return {type(c).__name__ for c in callbacks}

    assert "ReduceLROnPlateau" in kinds(True)
    assert "ReduceLROnPlateau" not in kinds(False)
