"""python -m keras_app.ensemble end to end, on tiny run folders and a tiny chest X-ray folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from keras_app import ensemble as ensemble_cli
from keras_app.artifacts.loader import load_model
from keras_app.artifacts.runs import load_run
from keras_app.core.cli import run_cli
from keras_app.core.errors import UsageError
from keras_app.decision.operating_point import scale
from keras_app.experiments import ensemble as cli
from keras_app.inference import calibrate

CLASSES = ("NORMAL", "PNEUMONIA")
# Val at 25 a class: smaller, data_pipelines would merge it into train and carve a new one.
COUNTS = {"train": 6, "val": 25, "test": 10}


@pytest.fixture
def xray_folder(tmp_path):
    """train/val/test/NORMAL|PNEUMONIA of 32 px greyscale PNGs, brighter for PNEUMONIA."""
    rng = np.random.default_rng(0)
    root = tmp_path / "chest_xray"
    for split, n in COUNTS.items():
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 128, (32, 32)) + 100 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"person{i}_{split}.png")
    return root


@pytest.fixture
def two_runs(make_run, xray_folder):
    """Two members of different input sizes, trained (in name) on the folder."""
    return [
        make_run("small", image_size=(24, 24), data=str(xray_folder), val_auc=0.9, seed=0),
        make_run("large", image_size=(32, 32), data=str(xray_folder), val_auc=0.6, seed=0),
    ]


def test_optimized_ensemble_end_to_end(tmp_path, two_runs, monkeypatch):
    fitted_on = []
    real = cli.optimize_weights

    def spy(probs, y, **kwargs):
        fitted_on.append(len(y))
        return real(probs, y, **kwargs)

    monkeypatch.setattr(cli, "optimize_weights", spy)
    out = tmp_path / "ensemble"
    argv = [*map(str, two_runs), "--weights", "optimized", "--out", str(out), "--batch-size", "16"]
    assert run_cli(ensemble_cli.main, argv) == 0
    assert fitted_on == [2 * COUNTS["val"]]  # fitted on val, never on test

    run = load_run(out)
    assert run.model_name == "ensemble"
    assert run.image_size == (32, 32)
    assert run.class_names == CLASSES
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "weighted"
    assert [m["image_size"] for m in config["members"]] == [[24, 24], [32, 32]]
    assert sum(m["weight"] for m in config["members"]) == pytest.approx(1.0)

    model = load_model(run.path)  # safe_mode=True
    assert len(model.inputs) == 1 and model.input_shape == (None, 32, 32, 3)
    probs = model.predict(np.full((2, 32, 32, 3), 128.0, np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 2 * COUNTS["test"]
    assert metrics["val"]["n"] == 2 * COUNTS["val"]
    assert set(metrics["members"]) == {"small", "large"}
    assert metrics["weights_fitted_on"] == "val"
    with (out / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["small", "large", "ensemble", "gain over best member"]
    assert float(rows[2]["log_loss"]) == pytest.approx(metrics["test"]["log_loss"], abs=1e-4)
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity", "f1", "log_loss"):
        assert rows[2][key] != ""
    assert "gain over best member" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".ensemble.*"))  # the temporary folder is gone


def test_val_metric_weights_follow_the_members_val_auc(tmp_path, two_runs):
    out = tmp_path / "ensemble"
    argv = [
        *map(str, two_runs),
        "--weights",
        "val-metric",
        "--average",
        "logits",
        "--out",
        str(out),
    ]
    assert run_cli(ensemble_cli.main, argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert [m["weight"] for m in config["members"]] == pytest.approx([0.6, 0.4])  # 0.9 : 0.6
    layer = load_model(out).get_layer("combine")
    assert layer.logit_average and layer.member_weights == pytest.approx([0.9, 0.6])


def test_mean_ensemble_matches_its_members(tmp_path, two_runs):
    out = tmp_path / "ensemble"
    assert run_cli(ensemble_cli.main, [*map(str, two_runs), "--out", str(out)]) == 0
    ensemble = load_model(out)
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    members = [load_model(r) for r in two_runs]
    separate = [
        m.predict(keras.ops.image.resize(images, m.input_shape[1:3], antialias=True), verbose=0)
        for m in members
    ]
    # The mean, then the ensemble's own temperature (fitted on val) on top.
    temperature = json.loads((out / "operating_point.json").read_text())["temperature"]
    np.testing.assert_allclose(
        ensemble.predict(images, verbose=0),
        scale(np.mean(separate, axis=0), temperature),
        atol=1e-5,
    )


def test_overwrite_replaces_an_existing_folder(tmp_path, two_runs, capsys):
    out = tmp_path / "ensemble"
    out.mkdir()
    argv = [*map(str, two_runs), "--out", str(out)]
    assert run_cli(ensemble_cli.main, argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert run_cli(ensemble_cli.main, [*argv, "--overwrite"]) == 0
    assert (out / "best.keras").exists()


def test_class_mismatch_is_a_usage_error_from_the_command_line(tmp_path, make_run):
    a = make_run("a", class_names=("NORMAL", "PNEUMONIA"))
    b = make_run("b", class_names=("PNEUMONIA", "NORMAL"))
    out = tmp_path / "ensemble"
    result = subprocess.run(
        [sys.executable, "-m", "keras_app.ensemble", str(a), str(b), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: members disagree on their classes")
    assert "['NORMAL', 'PNEUMONIA']" in last and "['PNEUMONIA', 'NORMAL']" in last
    assert not out.exists()


def exit_code(argv) -> int:
    """The exit status the command line would end with (argparse exits by itself)."""
    try:
        return run_cli(ensemble_cli.main, argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize(
    ("second_run", "flags", "message"),
    [
        (False, [], "at least 2 run folders. Received 1"),
        (True, ["--weights", "median"], "invalid choice: 'median'"),
        (True, ["--batch-size", "0"], "--batch-size must be at least 1. Received 0"),
        (True, ["--refer-band", "0.7"], "--refer-band must be in (0, 0.5]. Received 0.7"),
        (True, ["--refer-band", "0"], "--refer-band must be in (0, 0.5]. Received 0.0"),
    ],
)
def test_bad_command_lines(tmp_path, make_run, capsys, second_run, flags, message):
    runs = [str(make_run("a"))] + ([str(make_run("b"))] if second_run else [])
    assert exit_code([*runs, *flags, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_same_run_twice_and_split_mismatch_are_refused(tmp_path, make_run, capsys):
    a, b = make_run("a", seed=0), make_run("b", seed=1)
    assert exit_code([str(a), str(a), "--out", str(tmp_path / "e")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert exit_code([str(a), str(b), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "different data splits" in err and "seed=0" in err and "seed=1" in err


def test_members_data_that_does_not_resolve_points_to_data_flag(tmp_path, make_run, capsys):
    gone = str(tmp_path / "moved_away")
    a, b = make_run("a", data=gone), make_run("b", data=gone)
    assert exit_code([str(a), str(b), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert gone in err and "--data points to it" in err
    assert not (tmp_path / "e").exists()


def test_the_ensemble_carries_its_own_operating_point_fitted_on_val(
    tmp_path, two_runs, monkeypatch
):
    fitted = []
    real = calibrate.fit_operating_point

    def spy(y, probs, class_names, target, **kwargs):
        fitted.append((len(y), target))
        return real(y, probs, class_names, target, **kwargs)

    monkeypatch.setattr(calibrate, "fit_operating_point", spy)
    out = tmp_path / "ensemble"
    assert run_cli(ensemble_cli.main, [*map(str, two_runs), "--out", str(out)]) == 0
    assert fitted == [(2 * COUNTS["val"], 0.97)]  # val only; train's default target

    op = json.loads((out / "operating_point.json").read_text())
    assert op["chosen_on"] == "val" and op["positive_class"] == "PNEUMONIA"
    assert op["threshold"] is not None and op["validation"]["n"] == 2 * COUNTS["val"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["operating_point"] == op
    assert metrics["test"]["threshold"] == pytest.approx(op["threshold"])

    from keras_app.inference.predictor import open_predictor
    from keras_app.model.calibration import model_temperature

    model = load_model(out)  # safe_mode=True
    assert model_temperature(model) == pytest.approx(op["temperature"])
    predictor = open_predictor(out)
    assert predictor.threshold == pytest.approx(op["threshold"])


def test_members_stated_target_sensitivity_is_the_ensembles(make_run, xray_folder):
    runs = [make_run(n, data=str(xray_folder)) for n in ("a", "b")]
    for path, target in zip(runs, (0.9, 0.9), strict=True):
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "target_sensitivity": target}))
    assert cli.target_sensitivity([load_run(p) for p in runs]) == 0.9
    config = json.loads((runs[1] / "config.json").read_text())
    (runs[1] / "config.json").write_text(json.dumps({**config, "target_sensitivity": 0.95}))
    with pytest.raises(UsageError, match="different --target-sensitivity values"):
        cli.target_sensitivity([load_run(p) for p in runs])


def test_an_earlier_ensemble_is_refused_as_a_member_unless_asked(tmp_path, two_runs, capsys):
    members = tmp_path / "members"
    members.mkdir()
    for run in two_runs:
        run.rename(members / run.name)
    argv = [*map(str, sorted(members.iterdir())), "--out", str(members / "ensemble")]
    assert run_cli(ensemble_cli.main, argv) == 0
    capsys.readouterr()
    again = [*map(str, sorted(members.iterdir())), "--out", str(tmp_path / "e2")]  # glob: 3
    assert exit_code(again) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is an ensemble folder" in err[0]
    assert "--allow-ensemble-members" in err[0]
    assert len(cli.load_members(again[:3], allow_ensembles=True)) == 3


def test_members_trained_on_a_manifest_task_are_read_with_it(tmp_path, make_run, capsys):
    """Runs trained on ChestX-ray14's Pneumonia task: the ensemble reads that task of the
    table (without it the table has four findings and no binary task); another task is
    other data, refused."""
    from tests.makers import write_chestxray14

    table = write_chestxray14(tmp_path / "nih", n_patients=80)
    names = ("no Pneumonia", "Pneumonia")
    members = []
    for i, label in enumerate(("Pneumonia", "Pneumonia", "Effusion")):
        run = make_run(f"m{i}", class_names=names, data=f"csv:{table}", seed=i)
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "label": label, "seed": 0}))
        members.append(str(run))
    out = tmp_path / "ensemble"
    assert run_cli(ensemble_cli.main, [*members[:2], "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["label"] == "Pneumonia"
    capsys.readouterr()
    assert run_cli(ensemble_cli.main, [members[0], members[2], "--out", str(out) + "2"]) == 2
    assert "label='Pneumonia'" in capsys.readouterr().err


def test_an_ensemble_fits_its_own_refer_band_on_val(tmp_path, two_runs):
    out = tmp_path / "ensemble"
    argv = [*map(str, two_runs), "--out", str(out), "--refer-band", "0.2"]
    assert run_cli(ensemble_cli.main, argv) == 0
    op = json.loads((out / "operating_point.json").read_text())
    band = op["refer_band"]
    assert band["share"] == 0.2 and band["low"] < op["threshold"] < band["high"]
    assert band["validation"]["referred"]["k"] == round(0.2 * 2 * COUNTS["val"])
    assert json.loads((out / "config.json").read_text())["refer_band"] == 0.2
