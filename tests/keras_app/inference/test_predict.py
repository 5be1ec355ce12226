"""keras_app.predict with local models: inputs, every model kind, output formats, bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipelines.dicom import read_dicom
from keras_app import predict
from keras_app.core.cli import run_cli
from keras_app.inference import export
from tests.data_pipelines.conftest import ramp12, write_dicom
from tests.keras_app.inference.test_export import CLASS_NAMES, write_ensemble, write_run


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


def test_table_csv_globs_and_junk_left_out(world, capsys, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("x.png", "y.png"):
        (folder / name).write_bytes((world["images"] / "a.png").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"junk")
    model = str(world["runs"][0])
    assert run_cli(predict.main, [str(folder), "--model", model]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["file", "decision", "class", "probability", "status"]
    assert len(lines) == 3 and all(line.endswith(" ok") for line in lines[1:])
    assert "notes.txt" not in out + err and "Thumbs.db" not in out + err
    assert err.splitlines()[-1].startswith("decision: the most probable class")
    assert run_cli(predict.main, [str(folder / "*.png"), "--model", model, "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["file"] for r in table] == [str(folder / "x.png"), str(folder / "y.png")]
    assert list(table[0]) == ["file", "status", "decision", "class", "probability", *CLASS_NAMES]


def test_bad_inputs_get_their_own_row_and_the_rest_is_predicted(world, capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    argv = [
        str(world["images"]),
        str(tmp_path / "notes.txt"),
        str(tmp_path / "missing.jpeg"),
        str(tmp_path / "empty"),
        "--model",
        str(world["runs"][0]),
    ]
    for fmt in ("--csv", "--json", None):
        assert run_cli(predict.main, [*argv, fmt] if fmt else argv) == 2
        out, err = capsys.readouterr()
        assert err.splitlines()[-1] == "3 of 8 input(s) could not be classified"
        if fmt == "--csv":
            table = list(csv.DictReader(io.StringIO(out)))
        elif fmt == "--json":
            table = json.loads(out)
        else:
            continue
        status = {Path(r["file"]).name: r["status"] for r in table}
        assert [status[f] for f in ("a.png", "b.png", "c.jpeg", "d.bmp", "e.dcm")] == ["ok"] * 5
        assert status["notes.txt"] == "error: not an image"
        assert status["missing.jpeg"] == "error: no such file or folder"
        assert status["empty"] == "error: empty folder"
        assert all(r["decision"] for r in table if r["status"] == "ok")
    assert "could not be classified" in err and "notes.txt" in out


def test_decision_applies_the_stored_threshold(world, capsys, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world["runs"][0], run)
    records = run_json(capsys, [str(world["images"]), "--model", str(run)])
    p_pos = sorted(r["probabilities"][CLASS_NAMES[1]] for r in records)
    threshold = (p_pos[1] + p_pos[2]) / 2  # two images below, three above
    (run / "operating_point.json").write_text(
        json.dumps({"positive_class": CLASS_NAMES[1], "threshold": threshold})
    )
    records = run_json(capsys, [str(world["images"]), "--model", str(run)])
    decided = [r["decision"] == CLASS_NAMES[1] for r in records]
    assert decided == [r["probabilities"][CLASS_NAMES[1]] >= threshold for r in records]
    assert sum(decided) == 3


def test_gradcam_overlays_from_a_run_folder(world, capsys, tmp_path):
    out = tmp_path / "heat"
    argv = [str(world["images"]), "--model", str(world["runs"][0]), "--gradcam", str(out)]
    assert run_cli(predict.main, argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"{s}.gradcam.png" for s in ("a", "b", "c", "d", "e")
    ]
    assert min(Image.open(out / "b.gradcam.png").size) >= 512  # readable, whatever the input


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
        (
            ["{images}", "--model", "{base}/pneumonia", "--gradcam", "{tmp}/g"],
            "pass the run folder",
        ),
        (["{images}", "--server", "http://127.0.0.1:1", "--gradcam", "{tmp}/g"], "not a server"),
        (["{images}", "--model", "{run}", "--batch-size", "0"], "Received --batch-size=0"),
    ],
)
def test_bad_model_or_flag_is_one_line_and_exit_2(world, bad_files, capsys, argv, message):
    values = {
        "images": world["images"],
        "tmp": bad_files,
        "base": world["base"],
        "run": world["runs"][0],
    }
    assert run_cli(predict.main, [a.format(**values) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [err.splitlines()[-1]]
    assert err.startswith("error: ") and message.format(**values) in err


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
    assert "error: not an image" in done.stdout and "notes.txt" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "1 of 1 input(s) could not be classified"


def test_odd_inputs_in_a_folder_are_refused_or_named_never_classified(world, capsys, tmp_path):
    """A lateral DICOM and a CT secondary capture: not analysed (the header policy, exit 0);
    a cut JPEG in a folder: its own error row (exit 2), never quietly left out."""
    from tests.keras_app.hospital import xray_dicom

    film = tmp_path / "film.png"
    Image.fromarray(ramp12(32, 32).astype(np.uint8)).save(film)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "lateral.dcm").write_bytes(xray_dicom.make_refused(film, "lateral", accession="L1"))
    (odd / "sc_ct.dcm").write_bytes(xray_dicom.make_refused(film, "sc_ct", accession="S1"))
    (odd / "frontal.dcm").write_bytes(xray_dicom.make_xray(film, "cr", accession="F1")[0])
    argv = [str(odd), "--model", str(world["runs"][0]), "--json"]
    assert run_cli(predict.main, argv) == 0
    rows = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows["lateral.dcm"]["status"] == "not analysed: view position LL is not PA or AP"
    assert rows["sc_ct.dcm"]["status"] == "not analysed: modality CT is not CR or DX"
    assert "decision" not in rows["lateral.dcm"] and rows["frontal.dcm"]["status"] == "ok"
    jpeg = io.BytesIO()
    Image.fromarray(ramp12(64, 64).astype(np.uint8)).save(jpeg, format="JPEG")
    (odd / "cut.jpeg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) * 2 // 5])
    assert run_cli(predict.main, argv) == 2
    rows = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cut.jpeg"]["status"].startswith("error: corrupt or truncated")
