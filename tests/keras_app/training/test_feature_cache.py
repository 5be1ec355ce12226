"""The head phase on cached features: same run folder, stale caches rebuilt, opt-out intact."""

from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from keras_app.model.guard import probability_width
from keras_app.recipe.config import TrainConfig
from keras_app.train import main
from keras_app.training import feature_cache
from tests.makers import write_folder

QUICK = ["--image-size", "32", "--batch-size", "8", "--patience", "3", "--augment", "light"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("xray"), n_per_class=12)


@pytest.fixture(scope="module")
def backbone_weights(tmp_path_factory):
    from keras_app.model.classifier import BACKBONE_LAYER, build_classifier

    path = tmp_path_factory.mktemp("w") / "backbone.weights.h5"
    build_classifier("mobilenet", 2, (32, 32)).get_layer(BACKBONE_LAYER).save_weights(path)
    return path


def train(folder, weights, run, *extra):
    main(
        [
            "--model",
            "mobilenet",
            "--weights",
            str(weights),
            "--data",
            str(folder),
            "--run-dir",
            str(run),
            "--head-epochs",
            "3",
            "--fine-tune-epochs",
            "1",
            "--unfreeze",
            "5",
            *QUICK,
            *extra,
        ]
    )


@pytest.mark.slow
@pytest.mark.parametrize("cached", [True, False])
def test_head_phase_leaves_the_same_run_folder_with_or_without_the_cache(
    cached, tiny_folder, backbone_weights, tmp_path, capsys
):
    run = tmp_path / "run"
    train(tiny_folder, backbone_weights, run, *([] if cached else ["--no-feature-cache"]))
    out = capsys.readouterr().out
    assert ("feature cache: 1 view(s)" in out) == cached
    history = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in history] == ["head"] * 3 + ["fine_tune"]
    assert {"val_auc", "auc", "loss", "epoch_seconds"} <= set(history[0])
    phases = json.loads((run / "progress.json").read_text())["phases"]
    assert [p["name"] for p in phases] == ["head", "fine_tune"]
    assert not list(run.rglob("*.npz"))  # features are kept in Keras' cache, not the run
    best = keras.models.load_model(run / "best.keras", safe_mode=True, compile=False)
    assert best.input_shape == (None, 32, 32, 3) and probability_width(best) == 2
    assert json.loads((run / "config.json").read_text())["feature_cache"] is cached


@pytest.mark.slow
def test_a_rerun_with_other_head_settings_reads_the_kept_features(
    tiny_folder, backbone_weights, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    head_only = ("--fine-tune-epochs", "0")  # the cache serves the head phase alone
    train(tiny_folder, backbone_weights, tmp_path / "a", *head_only)
    kept = list(feature_cache.cache_dir().glob("*.npz"))
    assert "feature cache: reusing" not in capsys.readouterr().out
    train(
        tiny_folder,
        backbone_weights,
        tmp_path / "b",
        *head_only,
        "--lr",
        "3e-3",
        "--dropout",
        "0.5",
    )
    out = capsys.readouterr().out
    assert f"feature cache: reusing {kept[0]}" in out  # the backbone did not run again
    assert list(feature_cache.cache_dir().glob("*.npz")) == kept
    train(tiny_folder, backbone_weights, tmp_path / "c", *head_only, "--augment", "none")
    assert "feature cache: reusing" not in capsys.readouterr().out  # other images: rebuilt
    assert len(list(feature_cache.cache_dir().glob("*.npz"))) == 2


def test_an_unreadable_cache_file_is_rebuilt(tmp_path):
    path = tmp_path / "cache.npz"
    path.write_bytes(b"half a file")
    built = feature_cache.load_or_build(path, "k", lambda: {"x": np.ones(2, "float32")})
    assert built["rebuilt"]
    assert not feature_cache.load_or_build(path, "k", lambda: {})["rebuilt"]


def test_prune_drops_the_least_recently_used_files_first(tmp_path):
    import os

    for age, name in enumerate(["new", "mid", "old"]):
        (tmp_path / f"{name}.npz").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"{name}.npz", (1e9 - age * 100, 1e9 - age * 100))
    feature_cache.prune(tmp_path, 250, keep=tmp_path / "new.npz")
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["mid.npz", "new.npz"]
    feature_cache.prune(tmp_path, 50, keep=tmp_path / "mid.npz")  # the file just written stays
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["mid.npz"]


def test_head_model_shares_the_full_models_head_weights():
    from keras_app.model.classifier import build_classifier

    model = build_classifier("mobilenet", 3, (32, 32))
    head = feature_cache.head_model(model)
    features = feature_cache.feature_extractor(model)(np.zeros((2, 32, 32, 3), "float32"))
    model.get_layer("predictions").kernel.assign(np.ones_like(head.layers[-1].kernel))
    np.testing.assert_allclose(head(features), model(np.zeros((2, 32, 32, 3), "float32")), 1e-5)


def test_a_stale_cache_is_rebuilt_and_a_fresh_one_reused(tmp_path):
    path = tmp_path / "cache.npz"
    builds = []

    def build():
        builds.append(1)
        return {"train_x": np.full((1, 2, 3), len(builds), "float32")}

    assert feature_cache.load_or_build(path, "key-a", build)["rebuilt"]
    assert not feature_cache.load_or_build(path, "key-a", build)["rebuilt"]
    rebuilt = feature_cache.load_or_build(path, "key-b", build)
    assert rebuilt["rebuilt"] and rebuilt["train_x"][0, 0, 0] == 2 and len(builds) == 2


def test_the_key_changes_with_the_data_the_backbone_and_the_views():
    from keras_app.model.classifier import BACKBONE_LAYER, build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier("mobilenet", 2, (32, 32))
    config = TrainConfig(model="mobilenet", image_size=32)
    key = feature_cache.cache_key(model, config, "fp1", "float32")
    assert key == feature_cache.cache_key(model, config, "fp1", "float32")
    assert key != feature_cache.cache_key(model, config, "fp2", "float32")
    other = TrainConfig(model="mobilenet", image_size=32, feature_cache_views=2)
    assert key != feature_cache.cache_key(model, other, "fp1", "float32")
    assert key != feature_cache.cache_key(model, config, "fp1", "mixed_bfloat16")
    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.weights[0].assign(backbone.weights[0] + 1.0)
    assert key != feature_cache.cache_key(model, config, "fp1", "float32")


def test_cache_is_used_only_where_it_saves_backbone_passes():
    assert feature_cache.wins(head_epochs=5, views=1, replicas=1)
    assert not feature_cache.wins(head_epochs=2, views=2, replicas=1)
    assert not feature_cache.wins(head_epochs=5, views=1, replicas=2)


def test_feature_datasets_cycle_the_views_and_reshuffle_each_epoch():
    cache = {
        "train_x": np.arange(2 * 4, dtype="float32").reshape(2, 4, 1),
        "train_y": np.zeros((2, 4, 2), "float32"),
        "val_x": np.zeros((3, 1), "float32"),
        "val_y": np.zeros((3, 2), "float32"),
    }
    train, val, steps = feature_cache.feature_datasets(cache, batch_size=3, seed=0)
    assert steps == 2
    rows = np.concatenate([x.numpy()[:, 0] for x, _ in train.take(3 * steps)])
    epochs = [sorted(rows[i * 4 : i * 4 + 4]) for i in range(3)]
    assert epochs == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
    assert sum(len(x) for x, _ in val) == 3


def test_pinned_callback_acts_on_the_full_model():
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model)

    full, other = SimpleNamespace(name="full"), SimpleNamespace(name="head")
    pinned = feature_cache.PinnedModel(Spy(), full)
    pinned.set_model(other)
    pinned.on_epoch_end(0, {})
    assert seen == [full]
