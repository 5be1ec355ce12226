"""keras_app.train end to end on tiny data: the run folder, the phases, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import keras
import pytest

from keras_app.core.cli import run_cli
from keras_app.model.guard import classifier_of
from keras_app.train import main
from tests.makers import write_folder

QUICK = ["--image-size", "32", "--batch-size", "8", "--patience", "3", "--augment", "light"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("xray"))


def test_simple_cnn_run_folder_is_complete(tiny_folder, tmp_path, capsys):
    run = tmp_path / "run"
    main(
        [
            "--model",
            "simple_cnn",
            "--data",
            str(tiny_folder),
            "--run-dir",
            str(run),
            "--head-epochs",
            "2",
            "--fine-tune-epochs",
            "2",
            "--lr",
            "3e-3",
            *QUICK,
        ]
    )
    out = capsys.readouterr().out
    assert out.count(f"run folder: {run}") == 2
    assert "phase end_to_end done" in out
    for name in (
        "config.json",
        "environment.json",
        "labels.txt",
        "best.keras",
        "history.json",
        "metrics.json",
        "curves.png",
        "train.md",
        "training.csv",
        "progress.json",
    ):
        assert (run / name).is_file(), name
    assert list((run / "logs").rglob("events.out.tfevents*"))
    assert not (run / "backup").exists()

    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == 32 and config["monitor"] == "val_auc"
    env = json.loads((run / "environment.json").read_text())
    assert env["weights"] == "none" and env["precision"] == "float32"
    splits = env["data"]["splits"]
    assert sum(sum(splits[s].values()) for s in splits) == 24 * 2 + 12 * 2 * 2
    assert len(env["data"]["fingerprint"]) >= 12
    notes = env["data"]["split_notes"]  # how each split was made, for the model card
    assert "carved from the source's training images" in notes["val"]
    assert notes["test"].startswith("the source's own test split")
    # write_folder reuses file names across splits: the same "patients" are said to be shared.
    assert "patients also appear in the other splits" in notes["test"]
    history = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in history] == ["end_to_end"] * len(history) and len(history) >= 1
    metrics = json.loads((run / "metrics.json").read_text())
    # Every test image, and the figures of those the image guard lets through.
    assert metrics["test_every_image"]["n"] == metrics["test_guard"]["n"] == 24
    assert metrics["test"]["n"] == metrics["test_guard"]["analysed"]["k"] > 0
    # The classes differ by brightness alone: a trained CNN separates them.
    assert metrics["test_every_image"]["roc_auc"] > 0.9
    model = keras.models.load_model(run / "best.keras", safe_mode=True)
    assert model.input_shape == (None, 32, 32, 3)
    assert set(model.output) == {"probabilities", "ood_score"}  # the image guard inside
    assert classifier_of(model).layers[-1].name == "calibration"  # temperature scaling
    assert "## Test split" in (run / "train.md").read_text()
    # The threshold was chosen on val, and gives on the saved model what it recorded there.
    op = json.loads((run / "operating_point.json").read_text())
    assert op["chosen_on"] == "val" and metrics["val"]["threshold"] == op["threshold"]
    assert metrics["val"]["sensitivity"] == op["validation"]["sensitivity"]["value"]
    assert metrics["val"]["sensitivity"] >= op["target_sensitivity"]
    assert (run / "training_images.sha256").read_text().count("\n") == sum(
        sum(splits[s].values()) for s in ("train", "val")
    )
    assert (run / "report.html").is_file()


def test_pretrained_weights_train_two_phases_with_a_frozen_backbone_first(
    tiny_folder, tmp_path, capsys
):
    weights = tmp_path / "backbone.weights.h5"
    from keras_app.model.classifier import BACKBONE_LAYER, build_classifier

    reference = build_classifier("mobilenet", 2, (32, 32))
    reference.get_layer(BACKBONE_LAYER).save_weights(weights)
    run = tmp_path / "run"
    main(
        [
            "--model",
            "mobilenet",
            "--weights",
            str(weights),
            "--data",
            str(tiny_folder),
            "--run-dir",
            str(run),
            "--head-epochs",
            "1",
            "--fine-tune-epochs",
            "1",
            "--unfreeze",
            "5",
            *QUICK,
        ]
    )
    out = capsys.readouterr().out
    assert "phase head: 1 epoch(s)" in out and "0 backbone layer(s) trainable" in out
    assert "phase fine_tune: 1 epoch(s)" in out
    phases = json.loads((run / "progress.json").read_text())["phases"]
    assert [p["name"] for p in phases] == ["head", "fine_tune"]
    assert phases[0]["trainable_params"] < phases[1]["trainable_params"]
    history = json.loads((run / "history.json").read_text())
    assert [h["phase"] for h in history] == ["head", "fine_tune"]
    env = json.loads((run / "environment.json").read_text())
    assert env["weights"] == str(weights)


@pytest.mark.needs_data
def test_auto_weights_use_the_keras_cache(tiny_folder, tmp_path):
    """Keras reads KERAS_HOME at import, so this runs as a user would: a fresh process."""
    from tests.conftest import shared_data

    cached = shared_data("keras_models/mobilenet_2_5_224_tf_no_top.h5")
    (tmp_path / "home" / "models").mkdir(parents=True)
    shutil.copy(cached, tmp_path / "home" / "models")
    run = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_app.train",
            "--model",
            "mobilenet",
            "--data",
            str(tiny_folder),
            "--run-dir",
            str(run),
            "--head-epochs",
            "1",
            "--fine-tune-epochs",
            "0",
            *QUICK,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_HOME": str(tmp_path / "home")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unavailable" not in done.stdout
    assert json.loads((run / "environment.json").read_text())["weights"] == "imagenet"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "/no/such/folder"], "/no/such/folder"),
        (["--model", "xception", "--image-size", "32"], "below xception's minimum of 71"),
        (["--weights", "/no/weights.h5", "--model", "mobilenet"], "weights file not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tiny_folder, tmp_path, capsys):
    argv = [*argv, "--run-dir", str(tmp_path / "r")]
    if "--data" not in argv:
        argv += (
            ["--data", str(tiny_folder), "--image-size", "32"]
            if "--image-size" not in argv
            else ["--data", str(tiny_folder)]
        )
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_single_class_and_unwritable_run_folder(tmp_path, tiny_folder, capsys):
    one = tmp_path / "one"
    for split in ("train", "val", "test"):
        shutil.copytree(tiny_folder / split / "NORMAL", one / split / "NORMAL")
    assert run_cli(main, ["--data", str(one), "--run-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert (
        run_cli(
            main,
            [
                "--model",
                "simple_cnn",
                "--data",
                str(tiny_folder),
                "--image-size",
                "32",
                "--run-dir",
                str(blocker / "run"),
            ],
        )
        == 2
    )
    assert "cannot write the run folder" in capsys.readouterr().err


def test_a_finished_run_folder_is_never_overwritten(tiny_folder, tmp_path, capsys):
    argv = [
        "--model",
        "simple_cnn",
        "--data",
        str(tiny_folder),
        "--run-dir",
        str(tmp_path / "run"),
        "--head-epochs",
        "1",
        "--fine-tune-epochs",
        "0",
        *QUICK,
    ]
    main(argv)
    assert run_cli(main, argv) == 2
    assert "holds a finished run" in capsys.readouterr().err


def test_thermal_guard_is_built_from_the_flags_when_a_gpu_is_present(tmp_path):
    """No GPU here: a runtime that reports one, and a scripted sensor in place of NVML."""
    import dataclasses

    from callbacks import GpuTelemetry, ScriptedSensor, ThermalGuard
    from keras_app.recipe.config import parse_config
    from keras_app.training.phases import thermal_callbacks
    from keras_app.training.runtime import setup_runtime

    config = parse_config(
        ["--thermal-limit", "70", "--thermal-resume", "60", "--thermal-max-pause", "30"]
    )
    cpu_only = setup_runtime(parse_config(["--strategy", "none", "--precision", "float32"]))
    assert thermal_callbacks(config, cpu_only, tmp_path) == []
    with_gpu = dataclasses.replace(cpu_only, gpus=("/physical_device:GPU:0",))
    guard, telemetry = thermal_callbacks(
        config, with_gpu, tmp_path, sensor_factory=lambda: ScriptedSensor([[50.0]])
    )
    assert isinstance(guard, ThermalGuard) and isinstance(telemetry, GpuTelemetry)
    assert (guard.limit_c, guard.resume_c, guard.max_pause_s) == (70.0, 60.0, 30.0)
    off = dataclasses.replace(config, thermal=False)
    assert thermal_callbacks(off, with_gpu, tmp_path) == []
    assert thermal_callbacks(config, with_gpu, tmp_path, sensor_factory=lambda: None) == []


def test_batchnorm_trains_end_to_end_and_in_fine_tuning_never_in_the_head_phase():
    from keras_app.recipe.config import parse_config
    from keras_app.training.phases import plan_phases

    config = parse_config(["--model", "mobilenet", "--head-epochs", "2", "--fine-tune-epochs", "3"])
    [scratch] = plan_phases(config, "none")
    assert (scratch.name, scratch.epochs, scratch.train_bn) == ("end_to_end", 5, True)
    pretrained = plan_phases(config, "imagenet")
    assert [(p.name, p.train_bn) for p in pretrained] == [("head", False), ("fine_tune", True)]
    # The fine-tune phase unfreezes the top half by default, every layer from scratch.
    assert [p.unfreeze for p in pretrained] == [0, 0.5] and scratch.unfreeze == "all"
    [fine_tune] = plan_phases(parse_config(["--unfreeze", "all"]), "imagenet")
    assert fine_tune.unfreeze == "all"


def test_fine_tune_bn_train_trains_batchnorm_in_the_fine_tune_phase_only():
    from keras_app.recipe.config import parse_config
    from keras_app.training.phases import plan_phases

    argv = ["--model", "mobilenet", "--head-epochs", "1"]
    head, fine_tune = plan_phases(parse_config([*argv, "--fine-tune-bn", "train"]), "imagenet")
    assert (head.train_bn, fine_tune.train_bn) == (False, True)
    _, fine_tune = plan_phases(parse_config([*argv, "--fine-tune-bn", "frozen"]), "imagenet")
    assert not fine_tune.train_bn


def test_fine_tune_bn_train_lets_pretrained_batchnorm_statistics_move(tmp_path):
    """A backbone built for `--fine-tune-bn train` is called in training mode when unfrozen."""
    import numpy as np

    from keras_app.model.classifier import build_classifier, set_backbone_trainable

    weights = tmp_path / "backbone.weights.h5"
    build_classifier("mobilenet", 2, (32, 32)).get_layer("backbone").save_weights(weights)
    moved = {}
    for mode in ("frozen", "train"):
        model = build_classifier("mobilenet", 2, (32, 32), frozen_bn=mode == "frozen")
        model.get_layer("backbone").load_weights(weights)
        set_backbone_trainable(model, "all", train_bn=mode == "train")
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        bn = next(
            layer
            for layer in model.get_layer("backbone").layers
            if isinstance(layer, keras.layers.BatchNormalization)
        )
        before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
        x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
        model.train_on_batch(x, np.eye(2)[[0, 1] * 4])
        moved[mode] = not np.allclose(before, keras.ops.convert_to_numpy(bn.moving_mean))
    assert moved == {"frozen": False, "train": True}


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from keras_app.recipe.config import parse_config
    from keras_app.training.phases import learning_rate

    assert learning_rate(parse_config(["--lr-schedule", "plateau"]), 1e-3, 100) == 1e-3
    schedule = learning_rate(parse_config(["--lr-schedule", "cosine"]), 1e-3, 100)
    lrs = [float(schedule(step)) for step in (0, 2, 5, 50, 100)]
    assert lrs[0] == 0.0 and lrs[1] < lrs[2]
    assert lrs[2] == pytest.approx(1e-3) and lrs[3] < 1e-3
    assert lrs[4] == pytest.approx(0.0, abs=1e-9)


def test_a_cosine_run_trains_and_records_its_schedule(tiny_folder, tmp_path):
    run = tmp_path / "run"
    argv = ["--model", "simple_cnn", "--data", str(tiny_folder), "--run-dir", str(run)]
    argv += ["--head-epochs", "1", "--fine-tune-epochs", "0", *QUICK]
    argv += ["--lr-schedule", "cosine"]
    main(argv)
    config = json.loads((run / "config.json").read_text())
    assert config["lr_schedule"] == "cosine"
    assert (run / "metrics.json").exists()


def test_a_random_backbone_trains_its_own_budget():
    from keras_app.recipe.config import SCRATCH_EPOCHS, TrainConfig
    from keras_app.training.phases import plan_phases

    def epochs(**kw):
        return [(p.name, p.epochs) for p in plan_phases(TrainConfig(**kw), "none")]

    assert epochs() == [("end_to_end", SCRATCH_EPOCHS)]  # not the transfer recipe's 12
    assert epochs(head_epochs=1, fine_tune_epochs=0) == [("end_to_end", 1)]
    assert epochs(scratch_epochs=4) == [("end_to_end", 4)]
    pretrained = [(p.name, p.epochs) for p in plan_phases(TrainConfig(), "imagenet")]
    assert pretrained == [("fine_tune", 12)]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_label_smoothing_reaches_the_loss(smoothing):
    from types import SimpleNamespace

    import numpy as np
    import tensorflow as tf

    from keras_app.model.classifier import build_classifier
    from keras_app.recipe.config import parse_config
    from keras_app.training.phases import compile_model

    config = parse_config(["--label-smoothing", str(smoothing), "--steps-per-epoch", "1"])
    runtime = SimpleNamespace(strategy=tf.distribute.get_strategy(), jit=False)
    data = SimpleNamespace(class_names=["NORMAL", "PNEUMONIA"])
    model = build_classifier("simple_cnn", 2, (32, 32))
    compile_model(model, config, data, runtime, 1e-3)
    # A confident right answer still costs something once the target is smoothed.
    loss = model.loss(np.array([[0.0, 1.0]]), np.array([[1e-7, 1 - 1e-7]]))
    assert (float(loss) > 0.1) == (smoothing > 0)
