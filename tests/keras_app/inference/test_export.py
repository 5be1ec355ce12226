"""keras_app.export: SavedModel versions that TF Serving loads as they are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipelines.decode import get_decode_batch
from keras_app import export as export_cli
from keras_app.artifacts.loader import load_model
from keras_app.core.cli import run_cli
from keras_app.inference import export
from keras_app.inference import predictor as inference
from keras_app.inference.serving_client import CLASSES, LABELS, PREDICT_IMAGE_BYTES, PROBABILITIES
from keras_app.model.classifier import build_classifier

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
VENV_BIN = Path(sys.executable).parent


def write_run(path: Path, model: str = "simple_cnn", size: int = 32, seed: int = 0) -> Path:
    """A run folder as keras_app.train leaves it (untrained), module-scoped unlike make_run."""
    keras.utils.set_random_seed(seed)
    path.mkdir(parents=True)
    build_classifier(model, len(CLASS_NAMES), (size, size)).save(path / "best.keras")
    (path / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (path / "config.json").write_text(json.dumps({"model": model, "image_size": [size, size]}))
    return path


def write_ensemble(path: Path) -> Path:
    """An ensemble folder as keras_app.ensemble leaves it: members of 24 and 32 px, one graph."""
    from keras_app.model.ensemble import EnsembleCombine, build_ensemble, stack_members

    keras.utils.set_random_seed(1)
    members = [build_classifier("simple_cnn", 2, (s, s)) for s in (24, 32)]
    ensemble = build_ensemble(stack_members(members), EnsembleCombine("mean"))
    path.mkdir(parents=True)
    ensemble.save(path / "best.keras")
    (path / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (path / "config.json").write_text(json.dumps({"model": "ensemble", "image_size": [32, 32]}))
    return path


def sample_images(n: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def png_bytes(images: np.ndarray) -> list[bytes]:
    return [tf.io.encode_png(image).numpy() for image in images]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run folder, base folder, version folder) of one export."""
    root = tmp_path_factory.mktemp("export")
    run = write_run(root / "run")
    version_dir = export.export_model(run, "pneumonia", base=root / "saved_models")
    return run, root / "saved_models", version_dir


def test_layout_assets_warmup_and_models_config(exported):
    from google.protobuf import text_format
    from tensorflow_serving.apis import prediction_log_pb2
    from tensorflow_serving.config import model_server_config_pb2

    _, base, version_dir = exported
    assert version_dir == base / "pneumonia" / "1"
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    assert (version_dir / "assets" / "labels.txt").read_text().split() == list(CLASS_NAMES)
    assert not [p for p in (base / "pneumonia").iterdir() if p.name.startswith(".")]

    records = tf.data.TFRecordDataset(str(version_dir / "assets.extra" / export.WARMUP_FILE))
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == {
        "serving_default",
        PREDICT_IMAGE_BYTES,
    }
    assert {log.predict_log.request.model_spec.name for log in logs} == {"pneumonia"}

    config = text_format.Parse(
        (base / "models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    [entry] = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "pneumonia",
        "/models/pneumonia",
        "tensorflow",
    )


def test_loads_with_tensorflow_alone_and_matches_keras(exported, tmp_path):
    """A fresh interpreter that cannot import keras_app or data_pipelines serves the export."""
    run, _, version_dir = exported
    images = sample_images()
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("keras_app", "data_pipelines"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(version_dir)!r})
        images = np.load({str(tmp_path / "images.npy")!r})
        by_array = loaded.signatures["serving_default"](images=tf.constant(images, tf.float32))
        encoded = [tf.io.encode_png(i).numpy() for i in images]
        by_bytes = loaded.signatures["predict_image_bytes"](image_bytes=tf.constant(encoded))
        out = {{}}
        for prefix, outputs in (("array", by_array), ("bytes", by_bytes)):
            for key, value in outputs.items():
                out[prefix + "_" + key] = value.numpy()
        np.savez({str(tmp_path / "out.npz")!r}, **out)
        assert not [m for m in sys.modules if m.startswith(("keras_app", "data_pipelines"))]
    """)
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    out = np.load(tmp_path / "out.npz", allow_pickle=True)
    expected = load_model(run)(images.astype(np.float32), training=False).numpy()
    names = np.array(CLASS_NAMES)[expected.argmax(-1)]
    for prefix in ("array", "bytes"):
        np.testing.assert_allclose(out[f"{prefix}_{PROBABILITIES}"], expected, atol=1e-5)
        assert [c.decode() for c in out[f"{prefix}_{CLASSES}"]] == list(names)
        assert out[f"{prefix}_{LABELS}"].shape == (len(images), 2)
        assert [c.decode() for c in out[f"{prefix}_{LABELS}"][0]] == list(CLASS_NAMES)


def test_saved_model_cli_lists_both_signatures(exported):
    _, _, version_dir = exported
    shown = subprocess.run(
        [str(VENV_BIN / "saved_model_cli"), "show", "--dir", str(version_dir), "--all"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout
    assert "signature_def['serving_default']" in shown
    assert "signature_def['predict_image_bytes']" in shown
    assert "inputs['image_bytes']" in shown and "inputs['images']" in shown
    assert "outputs['probabilities']" in shown and "outputs['classes']" in shown


def test_next_version_no_overwrite_without_force(exported, capsys):
    run, base, _ = exported
    argv = [str(run), "--name", "pneumonia", "--base", str(base)]
    assert run_cli(export_cli.main, argv) == 0
    assert inference.list_versions(base / "pneumonia")[-1] >= 2
    before = (base / "pneumonia" / "1" / "saved_model.pb").stat().st_mtime_ns
    assert run_cli(export_cli.main, [*argv, "--version", "1"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (base / "pneumonia" / "1" / "saved_model.pb").stat().st_mtime_ns == before
    assert run_cli(export_cli.main, [*argv, "--version", "1", "--force"]) == 0
    assert inference.list_versions(base / "pneumonia")[0] == 1
    assert not [p for p in (base / "pneumonia").iterdir() if p.name.startswith(".")]


def test_failed_export_leaves_no_version(tmp_path, monkeypatch):
    """The version appears only once complete: a crash midway leaves nothing a server would load."""
    run = write_run(tmp_path / "run")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_model(run, "pneumonia", base=tmp_path / "saved_models")
    assert list((tmp_path / "saved_models" / "pneumonia").iterdir()) == []


def test_models_config_lists_every_model(tmp_path):
    base = tmp_path / "saved_models"
    run = write_run(tmp_path / "run")
    export.export_model(run, "pneumonia", base=base)
    export.export_model(run, "pneumonia-small", base=base, version=7, serving_root="/srv/models")
    (base / "not_a_model").mkdir()  # no version inside: not listed
    text = (base / "models.config").read_text()
    assert 'name: "pneumonia"' in text and 'name: "pneumonia-small"' in text
    assert 'base_path: "/srv/models/pneumonia-small"' in text and "not_a_model" not in text
    assert inference.resolve_version(base / "pneumonia-small") == base / "pneumonia-small" / "7"


def test_exported_ensemble_matches_its_keras_model(tmp_path):
    folder = write_ensemble(tmp_path / "ensemble")
    version_dir = export.export_model(folder, "pneumonia-ensemble", base=tmp_path / "sm")
    loaded = tf.saved_model.load(str(version_dir))
    images = sample_images()
    expected = load_model(folder)(images.astype(np.float32), training=False).numpy()
    by_array = loaded.signatures["serving_default"](images=tf.constant(images, tf.float32))
    by_bytes = loaded.signatures[PREDICT_IMAGE_BYTES](image_bytes=tf.constant(png_bytes(images)))
    np.testing.assert_allclose(by_array[PROBABILITIES].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(by_bytes[PROBABILITIES].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{tmp}/nowhere"], "run folder not found"),
        (["{run}", "--name", "../escape"], "--name must be a folder name"),
        (["{run}", "--version", "0"], "--version must be a positive integer"),
        (["{tmp}"], "not a finished run folder"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    run = write_run(tmp_path / "run") if "{run}" in argv else None
    argv = [a.format(tmp=tmp_path, run=run) for a in argv] + ["--base", str(tmp_path / "sm")]
    (tmp_path / "config.json").write_text("{}")
    assert run_cli(export_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_resolve_version_errors(tmp_path):
    with pytest.raises(ValueError, match="no exported model"):
        inference.resolve_version(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no exported version"):
        inference.resolve_version(tmp_path / "empty")


# --- the in-graph decode: eager, in tf.function and in tf.data.Dataset.map ------------------------


def encoded_samples() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (48, 40, 3)).astype(np.uint8)
    grey = rng.integers(0, 256, (32, 32, 1)).astype(np.uint8)
    rgba = np.concatenate([rgb[:32, :32], np.full((32, 32, 1), 255, np.uint8)], axis=-1)
    deep = grey.astype(np.uint16) * 257  # 16-bit PNG of the same grey levels
    return {
        "rgb_png_48x40": tf.io.encode_png(rgb).numpy(),
        "grey_png": tf.io.encode_png(grey).numpy(),
        "rgba_png": tf.io.encode_png(rgba).numpy(),
        "png16": tf.io.encode_png(tf.constant(deep, tf.uint16)).numpy(),
        "grey_jpeg": tf.io.encode_jpeg(grey, quality=100).numpy(),
    }


def test_decode_batch_same_eager_in_function_and_in_dataset_map():
    samples = encoded_samples()
    decode = get_decode_batch((32, 32))
    batch = tf.constant(list(samples.values()))
    eager = decode(batch).numpy()
    traced = tf.function(decode)(batch).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(batch).map(decode))).numpy()
    assert eager.shape == (len(samples), 32, 32, 3) and eager.dtype == np.float32
    np.testing.assert_array_equal(eager, traced)
    np.testing.assert_array_equal(eager, mapped)
    names = list(samples)
    grey = eager[names.index("grey_png")]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])  # grey to three equal channels
    np.testing.assert_array_equal(eager[names.index("png16")], grey)  # 16-bit scaled, not cut
    assert 0.0 <= eager.min() and eager.max() <= 255.0


def test_decode_batch_pads_to_aspect_when_asked():
    wide = tf.io.encode_png(np.full((16, 32, 3), 200, np.uint8)).numpy()
    padded = get_decode_batch((32, 32), pad_to_aspect=True)(tf.constant([wide])).numpy()
    assert padded[0, 0].max() == 0 and padded[0, 16].min() == 200  # black bars above and below


def test_both_signatures_decide_at_the_stored_threshold(tmp_path):
    """The export carries the run's operating point: `decision` is the positive class
    exactly where P(positive) >= the threshold chosen on validation."""
    from keras_app.inference.serving_client import DECISION, THRESHOLD

    run = write_run(tmp_path / "run", seed=3)
    images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    p_pos = np.asarray(load_model(run)(images.astype("float32")))[:, 1]
    threshold = float(np.median(p_pos))  # half the images on each side
    op = {"positive_class": CLASS_NAMES[1], "threshold": threshold, "chosen_on": "val"}
    (run / "operating_point.json").write_text(json.dumps(op))
    version_dir = export.export_model(run, "pneumonia", base=tmp_path / "saved_models")
    stored = json.loads((version_dir / "assets" / "operating_point.json").read_text())
    assert stored["threshold"] == threshold
    loaded = tf.saved_model.load(str(version_dir))
    outputs = [
        loaded.signatures["serving_default"](images=tf.constant(images, tf.float32)),
        loaded.signatures[PREDICT_IMAGE_BYTES](image_bytes=tf.constant(png_bytes(images))),
    ]
    for out in outputs:
        probs = out[PROBABILITIES].numpy()
        decisions = [d.decode() for d in out[DECISION].numpy().reshape(-1)]
        expected = np.where(probs[:, 1] >= threshold, CLASS_NAMES[1], CLASS_NAMES[0])
        assert decisions == expected.tolist()
        assert 0 < (expected == CLASS_NAMES[1]).sum() < len(expected)
        assert float(np.asarray(out[THRESHOLD]).reshape(-1)[0]) == pytest.approx(threshold)
