"""BestCheckpoint and EpochTimer, driven through their hooks with a fake clock."""

import keras
import numpy as np

from keras_app.training_callbacks import BestCheckpoint, EpochTimer, best_logged, phase_callbacks


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
