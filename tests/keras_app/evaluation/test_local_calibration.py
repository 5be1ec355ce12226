"""keras_app.calibrate: a site's operating point as a new version; training's never lost; the
version answers through export, predict and the DICOM node; too few images refused."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from keras_app import calibrate as calibrate_cli
from keras_app.artifacts import runs
from keras_app.artifacts.loader import load_model
from keras_app.artifacts.op_history import OperatingPointHistory
from keras_app.core.cli import run_cli
from keras_app.model.calibration import model_temperature
from tests.keras_app.inference.test_export import write_run
from tests.makers import write_class_folder

# Levels low enough for a dozen images a class: floors of 4 positives and 1 negative.
LOW_LEVELS = ["--min-sensitivity", "0.5", "--min-specificity", "0.1"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny untrained run with training's operating point, and 12 + 12 local images."""
    root = tmp_path_factory.mktemp("site")
    run = write_run(root / "run")
    op = {"temperature": 1.0, "positive_class": "PNEUMONIA", "threshold": 0.5}
    op |= {"target_sensitivity": 0.9, "chosen_on": "val", "version": 1}
    (run / runs.OPERATING_POINT).write_text(json.dumps(op))
    local = root / "local"
    # One patient per image (person1000_x.png ...): the holdout is carved by patient.
    write_class_folder(local / "NORMAL", 12, seed=0, prefix="person1", suffix="_x.png")
    write_class_folder(local / "PNEUMONIA", 12, seed=100, prefix="person2", suffix="_x.png")
    return run, local


@pytest.fixture(scope="module")
def refitted(site, tmp_path_factory):
    """The run copied and refitted once, with AdaBN and a patient-grouped holdout."""
    run, local = site
    copy = tmp_path_factory.mktemp("refitted") / "run"
    shutil.copytree(run, copy)
    argv = [str(copy), "--data", str(local), "--holdout-fraction", "0.25", "--adabn", "on"]
    code = run_cli(calibrate_cli.main, [*argv, *LOW_LEVELS, "--force"])
    return copy, code


def test_the_refit_is_version_2_and_current(refitted):
    run, code = refitted
    assert code == 0
    op = json.loads((run / runs.OPERATING_POINT).read_text())
    assert op["version"] == 2 and op["chosen_on"] == "local:local"
    prov = op["provenance"]
    assert prov["data"]["fingerprint"] and prov["date"] and prov["target_sensitivity"] == 0.9
    assert sum(prov["data"]["fit"].values()) + sum(prov["data"]["holdout"].values()) == 24
    assert prov["figures"]["holdout"]["after"]["n"] == sum(prov["data"]["holdout"].values())
    for rate in ("sensitivity", "specificity"):
        assert {"value", "low", "high", "k", "n"} <= set(op["validation"][rate])
    assert prov["adabn"]["adopted"] and prov["replaced_version"] == 1
    assert prov["data"]["grouped_by_patient"]


def test_training_s_point_and_model_are_kept(site, refitted):
    trained, _ = site
    run, _ = refitted
    history = OperatingPointHistory(run)
    assert history.versions() == [1, 2] and history.consistent()
    original = json.loads((trained / runs.OPERATING_POINT).read_text())
    assert history.record(1)["operating_point"] == original
    assert history.model_path(1).read_bytes() == (trained / runs.BEST).read_bytes()
    assert history.reference(2)["n"] == history.record(2)["operating_point"]["validation"]["n"]


def test_the_weights_are_training_s_and_the_temperature_is_the_point_s(site, refitted):
    trained, _ = site
    run, _ = refitted
    before, after = load_model(trained), load_model(run)
    op = json.loads((run / runs.OPERATING_POINT).read_text())
    assert model_temperature(after) == pytest.approx(op["temperature"])
    for old, new in zip(before.trainable_weights, after.trainable_weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(old), new.numpy())


def test_export_and_the_node_answer_with_the_current_version(refitted, tmp_path):
    import io

    from PIL import Image

    from keras_app.hospital.node import Analyser
    from keras_app.hospital.reading import read_image
    from keras_app.hospital.results import ResultUids, build_sr, read_sr
    from keras_app.inference import export
    from keras_app.inference.predictor import open_predictor
    from tests.keras_app.hospital import xray_dicom

    run, _ = refitted
    version_dir = export.export_model(run, "pneumonia", base=tmp_path / "saved_models")
    served = open_predictor(version_dir)
    jpeg = tmp_path / "xray.jpeg"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(jpeg)
    dicom, shown = xray_dicom.make_xray(jpeg, "cr", accession="ACC1")
    assert served.predict_bytes([shown]).operating_point_version == 2
    image = read_image(dicom)
    analyser = Analyser(open_predictor(run), overlays=False)
    [finding] = analyser.findings([image])
    sr = build_sr(image.header, finding, ResultUids.for_source(image.header, finding.model_key))
    assert read_sr(pydicom_roundtrip(sr, io))["operating_point_version"] == 2


def pydicom_roundtrip(ds, io):
    import pydicom

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def test_use_version_1_restores_training_s_point_exactly_and_list_shows_both(
    site, refitted, tmp_path, capsys
):
    trained, _ = site
    run = tmp_path / "run"
    shutil.copytree(refitted[0], run)
    assert run_cli(calibrate_cli.main, [str(run), "--use-version", "1"]) == 0
    assert (run / runs.BEST).read_bytes() == (trained / runs.BEST).read_bytes()
    restored = json.loads((run / runs.OPERATING_POINT).read_text())
    assert restored == json.loads((trained / runs.OPERATING_POINT).read_text())
    capsys.readouterr()
    assert run_cli(calibrate_cli.main, [str(run), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("v1") and "*" in lines[1] and lines[2].startswith("v2")


def test_too_few_local_images_are_refused_in_one_line(site, tmp_path, capsys):
    run, local = site
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    argv = [str(copy), "--data", str(local), "--target-sensitivity", "0.97"]  # default levels
    code = run_cli(calibrate_cli.main, argv)
    assert code == 2
    out, err = capsys.readouterr()
    assert "takes 53 positives (floor 35)" in out  # said before refusing
    assert err.count("\n") == 1 and err.startswith("error: too few labelled local images")
    assert not (copy / "operating_points").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--holdout-fraction", "0.9"], "--holdout-fraction must be in [0, 0.5]"),
        (["--target-sensitivity", "1.5"], "--target-sensitivity must be in (0, 1)"),
        (["--min-sensitivity", "0.99"], "--min-sensitivity must be below --target-sensitivity"),
        (["--refer-band", "0"], "--refer-band must be in (0, 0.5] or none. Received '0'"),
        (["--refer-band", "0.7"], "--refer-band must be in (0, 0.5] or none. Received '0.7'"),
        (["--refer-band", "-1"], "--refer-band must be in (0, 0.5] or none. Received '-1'"),
    ],
)
def test_bad_flags_one_line_exit_2(site, argv, words, capsys):
    run, local = site
    code = run_cli(calibrate_cli.main, [str(run), "--data", str(local), *argv])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.count("\n") == 1


def test_calibrate_refits_the_refer_band_keeps_its_share_and_drops_it_on_none(
    site, tmp_path, capsys
):
    run, local = site
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    argv = [str(copy), "--data", str(local), "--adabn", "off", *LOW_LEVELS, "--force"]

    def current():
        return json.loads((copy / runs.OPERATING_POINT).read_text())

    assert run_cli(calibrate_cli.main, [*argv, "--refer-band", "0.25"]) == 0
    band = current()["refer_band"]
    assert band["share"] == 0.25 and band["validation"]["n"] == 24
    assert band["validation"]["referred"]["k"] == 6  # a quarter of the 24 local images
    assert band["low"] < current()["threshold"] < band["high"]
    assert run_cli(calibrate_cli.main, argv) == 0  # no flag: the current point's share
    assert current()["version"] == 3 and current()["refer_band"]["share"] == 0.25
    assert run_cli(calibrate_cli.main, [*argv, "--refer-band", "none"]) == 0
    assert current()["version"] == 4 and current()["refer_band"] == {}
    capsys.readouterr()
    assert run_cli(calibrate_cli.main, [str(copy), "--list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert "refer band" in rows[0]
    low, high = band["low"], band["high"]
    assert f"[{low:.4f}, {high:.4f})" in rows[2] and rows[4].startswith("v4") and " - " in rows[4]


def test_local_images_listed_in_a_hospital_export_are_read_with_its_columns(site, tmp_path, capsys):
    """--data export.csv with --path-column, --label and --patient-column, as train takes them."""
    run, local = site
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    rows = ["file_ref,outcome,mrn"] + [
        f"{path},{path.parent.name},{path.stem}" for path in sorted(local.glob("*/*.png"))
    ]
    export = tmp_path / "export.csv"
    export.write_text("\n".join(rows) + "\n")
    argv = [str(copy), "--data", str(export), "--adabn", "off", *LOW_LEVELS, "--force"]
    capsys.readouterr()
    assert run_cli(calibrate_cli.main, argv) == 2  # which column holds the paths?
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(--path-column)" in err, err
    columns = ["--path-column", "file_ref", "--label", "outcome", "--patient-column", "mrn"]
    assert run_cli(calibrate_cli.main, [*argv, *columns]) == 0
    current = json.loads((copy / runs.OPERATING_POINT).read_text())
    data = current["provenance"]["data"]
    assert current["version"] == 2 and data["spec"] == str(export) and data["grouped_by_patient"]
    assert data["fit"] == {"NORMAL": 12, "PNEUMONIA": 12}
