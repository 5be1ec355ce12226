"""keras_app.predict with local models: inputs, every model kind, output formats, bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_pipelines.dicom import read_dicom
from keras_app import export, predict
from keras_app.errors import run_cli
from tests.data_pipelines.conftest import ramp12, write_dicom
from tests.keras_app.test_export import CLASS_NAMES, write_ensemble, write_run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two runs, both exported (versions 1 and 2), and a folder of mixed image files."""
    root = tmp_path_factory.mktemp("predict")
    runs = [write_run(root / "run1", seed=0), write_run(root / "run2", seed=5)]
    base = root / "saved_models"
    for run in runs:
        export.export_model(run, "pneumonia", base=base)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(images / "b.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / "c.jpeg")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(images / "d.bmp")
    write_dicom(images / "e.dcm", ramp12(32, 32), photometric="MONOCHROME1", window=(2048, 4096))
    return {"root": root, "runs": runs, "base": base, "images": images}


def run_json(capsys, argv) -> list[dict]:
    assert run_cli(predict.main, [*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def probabilities(records: list[dict]) -> np.ndarray:
    return np.array([[r["probabilities"][c] for c in CLASS_NAMES] for r in records])


def test_every_local_model_kind_gives_the_same_answer(world, capsys):
    images, run1 = str(world["images"]), world["runs"][0]
    by_run = run_json(capsys, [images, "--model", str(run1)])
    by_file = run_json(capsys, [images, "--model", str(run1 / "best.keras")])
    by_export = run_json(capsys, [images, "--model", str(world["base"] / "pneumonia" / "1")])
    assert [r["file"] for r in by_run] == [
        str(world["images"] / f) for f in ("a.png", "b.png", "c.jpeg", "d.bmp", "e.dcm")
    ]
    for other in (by_file, by_export):
        np.testing.assert_allclose(probabilities(other), probabilities(by_run), atol=1e-5)
        assert [r["class"] for r in other] == [r["class"] for r in by_run]
    for r in by_run:
        assert r["class"] in CLASS_NAMES
        assert r["probability"] == pytest.approx(max(r["probabilities"].values()))


def test_model_folder_without_version_takes_the_highest(world, capsys):
    images, base = str(world["images"]), str(world["base"] / "pneumonia")
    latest = probabilities(run_json(capsys, [images, "--model", base]))
    first = probabilities(run_json(capsys, [images, "--model", base, "--version", "1"]))
    np.testing.assert_allclose(
        latest,
        probabilities(run_json(capsys, [images, "--model", str(world["runs"][1])])),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        first,
        probabilities(run_json(capsys, [images, "--model", str(world["runs"][0])])),
        atol=1e-5,
    )


def test_dicom_is_classified_as_its_decoded_pixels(world, capsys, tmp_path):
    pixels = read_dicom(world["images"] / "e.dcm")
    assert pixels[0, 0, 0] == 255  # MONOCHROME1: the lowest value shows white
    Image.fromarray(pixels[..., 0]).save(tmp_path / "e.png")
    model = str(world["base"] / "pneumonia")
    [dicom] = run_json(capsys, [str(world["images"] / "e.dcm"), "--model", model])
    [png] = run_json(capsys, [str(tmp_path / "e.png"), "--model", model])
    assert dicom["probabilities"] == pytest.approx(png["probabilities"], abs=1e-6)


def test_table_csv_globs_and_skipped_files(world, capsys, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("x.png", "y.png"):
        (folder / name).write_bytes((world["images"] / "a.png").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    model = str(world["runs"][0])
    assert run_cli(predict.main, [str(folder), "--model", model]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["file", "class", "probability"] and len(lines) == 3
    assert "skipped" in err and "notes.txt" in err
    assert run_cli(predict.main, [str(folder / "*.png"), "--model", model, "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["file"] for r in table] == [str(folder / "x.png"), str(folder / "y.png")]
    assert set(table[0]) == {"file", "class", "probability", *CLASS_NAMES}


def test_gradcam_overlays_from_a_run_folder(world, capsys, tmp_path):
    out = tmp_path / "heat"
    argv = [str(world["images"]), "--model", str(world["runs"][0]), "--gradcam", str(out)]
    assert run_cli(predict.main, argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"{s}.gradcam.png" for s in ("a", "b", "c", "d", "e")
    ]
    assert Image.open(out / "b.gradcam.png").size == (40, 48)


def test_ensemble_folder_predicts_and_refuses_gradcam(world, capsys):
    folder = write_ensemble(world["root"] / "ensemble")
    images = str(world["images"])
    assert len(run_json(capsys, [images, "--model", str(folder)])) == 5
    assert run_cli(predict.main, [images, "--model", str(folder), "--gradcam", "x"]) == 2
    assert "nested 'backbone' sub-model" in capsys.readouterr().err


@pytest.fixture
def bad_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"")  # zero bytes
    Image.new("CMYK", (32, 32)).save(tmp_path / "cmyk.jpeg")  # four channels
    return tmp_path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{images}", "--model", "{tmp}/nowhere"], "no model at"),
        (
            ["{images}", "--model", "{base}/pneumonia", "--version", "9"],
            "has no version 9 (versions: 1, 2)",
        ),
        (["{images}", "--model", "{tmp}/empty"], "holds no exported version"),
        (
            ["{images}", "--model", "{run}", "--version", "1"],
            "--version applies to an exported model",
        ),
        (["{tmp}/notes.txt", "--model", "{run}"], "notes.txt is not an image this tool reads"),
        (["{tmp}/cmyk.jpeg", "--model", "{run}"], "CMYK JPEG is not supported"),
        (["{tmp}/empty", "--model", "{run}"], "folder {tmp}/empty is empty"),
        (["{tmp}/junk", "--model", "{run}"], "no readable image in folder"),
        (["{tmp}/*.png", "--model", "{run}"], "no readable image matches"),
        (["{tmp}/missing.png", "--model", "{run}"], "no such file or folder"),
        (
            ["{images}", "--model", "{base}/pneumonia", "--gradcam", "{tmp}/g"],
            "pass the run folder",
        ),
        (["{images}", "--server", "http://127.0.0.1:1", "--gradcam", "{tmp}/g"], "not a server"),
        (["{images}", "--model", "{run}", "--batch-size", "0"], "Received --batch-size=0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(world, bad_files, capsys, argv, message):
    values = {
        "images": world["images"],
        "tmp": bad_files,
        "base": world["base"],
        "run": world["runs"][0],
    }
    assert run_cli(predict.main, [a.format(**values) for a in argv]) == 2
    *notes, last = capsys.readouterr().err.splitlines()
    assert last.startswith("error: ") and message.format(**values) in last
    assert all(note.startswith("skipped ") for note in notes)


def test_command_line_exit_code(world, bad_files):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_app.predict",
            str(bad_files / "notes.txt"),
            "--model",
            str(world["runs"][0]),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "notes.txt is not an image" in done.stderr
