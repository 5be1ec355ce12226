"""Shared fixtures: the real data beside the checkout, and tiny run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _keras_home(tmp_path_factory):
    """Keras' cache root (kept features, downloads) in a temporary folder, never the user's.

    Tests that need a weights file set KERAS_HOME themselves.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
        yield


def shared_data(name: str) -> Path:
    """A path under ../shared/data, or a pytest skip that says why it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def chest_xray_dir() -> Path:
    return shared_data("chest_xray_224")


@pytest.fixture
def pneumoniamnist_npz() -> Path:
    return shared_data("pneumoniamnist.npz")


@pytest.fixture
def make_run(tmp_path):
    """Builds a run folder as keras_app.train leaves it, with an untrained model.

    Returns a function `(name="run", model="simple_cnn", image_size=(32, 32),
    class_names=("NORMAL", "PNEUMONIA"), val_auc=0.5, data=None, seed=0) -> Path`.
    """

    def make(
        name="run",
        model="simple_cnn",
        image_size=(32, 32),
        class_names=("NORMAL", "PNEUMONIA"),
        val_auc=0.5,
        data=None,
        seed=0,
    ):
        import keras

        from keras_app.model.classifier import build_classifier

        keras.utils.set_random_seed(seed)
        path = tmp_path / name
        path.mkdir()
        net = build_classifier(model, len(class_names), tuple(image_size))
        net.save(path / "best.keras")
        (path / "labels.txt").write_text("\n".join(class_names) + "\n")
        config = {
            "model": model,
            "image_size": list(image_size),
            "data": data,
            "seed": seed,
            "val_fraction": 0.1,
        }
        (path / "config.json").write_text(json.dumps(config))
        metric = "auc" if len(class_names) == 2 else "accuracy"
        metrics = {"val": {"roc_auc": val_auc, "accuracy": val_auc}, "test": {}, "monitor": metric}
        (path / "metrics.json").write_text(json.dumps(metrics))
        return path

    return make
