"""keras_app.cv: patient-grouped folds over train+val, out-of-fold predictions, summary, resume."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from keras_app import cv as cv_cli
from keras_app.core.cli import run_cli
from keras_app.core.errors import UsageError
from keras_app.experiments import cv, cv_report

QUICK = [
    "--model",
    "simple_cnn",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--augment",
    "none",
    "--head-epochs",
    "1",
    "--fine-tune-epochs",
    "0",
    "--lr",
    "3e-3",
    # Each fold's training part holds 10 patients: a 10% val would be one patient, one class.
    "--val-fraction",
    "0.4",
]
IMAGES_PER_PATIENT = 3


def write_patients(root, patients: dict[str, int]):
    """A chest-X-ray-layout folder whose patients have several images each (brightness differs
    by class, so it is learnable); `patients` maps a split to patients per class."""
    rng = np.random.default_rng(0)
    pid = 0
    for split, per_class in patients.items():
        for name, base in (("NORMAL", 60), ("PNEUMONIA", 170)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for _ in range(per_class):
                pid += 1
                for j in range(IMAGES_PER_PATIENT):
                    pixels = np.clip(rng.normal(base, 30, (32, 32)), 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"person{pid}_virus_{j}.png")
    return root


@pytest.fixture(scope="module")
def patients_folder(tmp_path_factory):
    # val of 2 patients per class is tiny: load_dataset merges it into train and carves its own.
    return write_patients(tmp_path_factory.mktemp("cv") / "xray", {"train": 8, "val": 2, "test": 2})


@pytest.fixture(scope="module")
def cv_out(patients_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv-runs") / "cv"
    cv_cli.main(["--folds", "2", "--out", str(out), "--data", str(patients_folder), *QUICK])
    return out


def read_oof(out) -> list[dict]:
    with (out / "oof.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_no_patient_is_in_two_folds_and_every_pooled_image_is_held_out_once(
    cv_out, patients_folder
):
    rows = read_oof(cv_out)
    assert len(rows) == 2 * 10 * IMAGES_PER_PATIENT  # train + val pooled; test left out
    assert sorted(int(r["index"]) for r in rows) == list(range(len(rows)))
    assert not any("/test/" in r["path"] for r in rows)
    folds_of = defaultdict(set)
    for r in rows:
        folds_of[r["group"]].add(r["fold"])
    assert len(folds_of) == 20 and all(len(f) == 1 for f in folds_of.values())
    # Stratified: both classes held out in each fold.
    for fold in ("1", "2"):
        assert {r["label"] for r in rows if r["fold"] == fold} == {"NORMAL", "PNEUMONIA"}


@pytest.mark.slow
def test_oof_npz_matches_the_csv_and_the_pooled_labels(cv_out, patients_folder):
    import data_pipelines

    rows = read_oof(cv_out)
    with np.load(cv_out / "oof.npz") as npz:
        assert npz["class_names"].tolist() == ["NORMAL", "PNEUMONIA"]
        np.testing.assert_allclose(npz["probs"].sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(
            npz["probs"][:, 1], [float(r["p_PNEUMONIA"]) for r in rows], atol=1e-6
        )
        assert npz["fold"].tolist() == [int(r["fold"]) for r in rows]
        labels, paths = npz["label"], npz["path"]
    # The same data, seed and val fraction give the same pooled order.
    data = data_pipelines.load_dataset(str(patients_folder), val_fraction=0.4)
    pooled = cv.pool_train_val(data)
    assert labels.tolist() == pooled.labels.tolist() and paths.tolist() == pooled.files


@pytest.mark.slow
def test_per_fold_metrics_mean_std_chart_and_summary(cv_out):
    metrics = json.loads((cv_out / "metrics.json").read_text())
    assert metrics["folds"] == 2 and metrics["grouped_by_patient"] and metrics["patients"] == 20
    folds = metrics["per_fold"]
    assert [f["fold"] for f in folds] == [1, 2]
    assert sum(f["n_held_out"] for f in folds) == 60
    # Fold 1 fits and validates on what fold 2 holds out, and the other way round.
    assert folds[0]["n_fit"] + folds[0]["n_val"] == folds[1]["n_held_out"]
    assert folds[1]["n_fit"] + folds[1]["n_val"] == folds[0]["n_held_out"]
    accuracies = [f["accuracy"] for f in folds]
    assert metrics["mean"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert metrics["std"]["accuracy"] == pytest.approx(np.std(accuracies, ddof=1))
    assert metrics["oof"]["n"] == 60
    for name in ("folds.png", "folds.csv", "summary.md", "config.json"):
        assert (cv_out / name).is_file(), name
    for k in (1, 2):
        env = json.loads((cv_out / f"fold-{k}" / "environment.json").read_text())
        assert env["data"]["name"] == f"xray fold {k}/2"
        splits = {name: sum(c.values()) for name, c in env["data"]["splits"].items()}
        fold = folds[k - 1]
        assert splits == {"train": fold["n_fit"], "val": fold["n_val"], "test": fold["n_held_out"]}
        # The held-out fold, judged once by the calibrated best model: train's test metrics.
        run_metrics = json.loads((cv_out / f"fold-{k}" / "metrics.json").read_text())
        assert run_metrics["test"]["accuracy"] == pytest.approx(fold["accuracy"])
        assert fold["best_epoch"] == run_metrics["best_epoch"] == 1  # 1-based, one epoch
    summary = (cv_out / "summary.md").read_text()
    assert "grouped by patient (20 patients)" in summary and "| **mean ± std** |" in summary
    assert "left out, kept for the final judgement" in summary
    assert "| ROC AUC (scikit-learn) |" in summary  # one AUC, said how it is computed


@pytest.mark.slow
def test_rerun_skips_finished_folds(cv_out, patients_folder, capsys):
    before = (cv_out / "oof.csv").read_text()
    cv_cli.main(["--folds", "2", "--out", str(cv_out), "--data", str(patients_folder), *QUICK])
    out = capsys.readouterr().out
    assert out.count("finished run in") == 2 and "phase end_to_end" not in out
    assert (cv_out / "oof.csv").read_text() == before


def fold_files(view) -> dict[str, set[str]]:
    return {name: set(split.files) for name, split in view.splits.items()}


def test_no_held_out_image_is_in_its_folds_fit_or_validation_data(patients_folder):
    import data_pipelines

    data = data_pipelines.load_dataset(str(patients_folder), val_fraction=0.4)
    pooled = cv.pool_train_val(data)
    folds = cv.make_folds(pooled, 2, 42)
    for k, (train_idx, held_idx) in enumerate(folds, 1):
        view = cv.fold_view(data, pooled, train_idx, held_idx, k, 2)
        files = fold_files(view)
        held_out = {pooled.files[i] for i in held_idx}
        assert not held_out & files["train"] and not held_out & files["val"]
        assert files["test"] == held_out  # what the fold is judged on, and only that
        assert not files["train"] & files["val"] and files["val"]
        assert files["train"] | files["val"] == {pooled.files[i] for i in train_idx}
        # Grouped by patient: no patient of the held-out fold or val elsewhere.
        groups = {name: set(split.groups) for name, split in view.splits.items()}
        assert not groups["test"] & (groups["train"] | groups["val"])
        assert not groups["train"] & groups["val"]
        assert not set(data.splits["test"].files) & set().union(*files.values())


def test_fold_view_keeps_the_source_fingerprint_and_names_the_fold(patients_folder):
    import data_pipelines

    data = data_pipelines.load_dataset(str(patients_folder))
    pooled = cv.pool_train_val(data)
    view = cv.fold_view(data, pooled, np.arange(0, 30), np.arange(30, 60), 2, 2, val_fraction=0.4)
    assert view.fingerprint == data.fingerprint and view.name.endswith("fold 2/2")
    assert view.splits["test"].files == pooled.files[30:]


def test_a_fold_whose_val_lacks_a_class_is_refused_before_any_trains(
    patients_folder, tmp_path, capsys
):
    # 10% of 10 patients is one patient: one class in val, no AUC, no operating point.
    argv = ["--folds", "2", "--out", str(tmp_path / "cv"), "--data", str(patients_folder)]
    argv += [*QUICK[:-2], "--val-fraction", "0.1"]
    assert run_cli(cv_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert "use a larger --val-fraction or fewer --folds" in err
    assert not (tmp_path / "cv").exists()


def test_mean_std_skips_undefined_values():
    mean, std = cv_report.mean_std(
        [{"accuracy": 0.5, "roc_auc": None}, {"accuracy": 0.7, "roc_auc": 0.9}]
    )
    assert mean["accuracy"] == pytest.approx(0.6) and std["accuracy"] == pytest.approx(0.1414, 1e-3)
    assert mean["roc_auc"] == 0.9 and std["roc_auc"] == 0.0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--folds", "1"], "--folds must be at least 2. Received 1"),
        (["--folds", "2", "--run-dir", "x"], "sets --run-dir for each run itself"),
        (["--folds", "2", "--model", "nope"], "invalid choice"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    try:
        code = run_cli(cv_cli.main, ["--out", str(tmp_path / "cv"), "--data", "digits", *extra])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_out_holding_another_cross_validation_is_refused(cv_out, patients_folder, capsys):
    argv = ["--folds", "3", "--out", str(cv_out), "--data", str(patients_folder), *QUICK]
    assert run_cli(cv_cli.main, argv) == 2
    assert "holds a cross-validation with another configuration" in capsys.readouterr().err


def test_too_few_patients_for_the_folds_is_one_line(patients_folder, tmp_path, capsys):
    argv = ["--folds", "20", "--out", str(tmp_path / "cv"), "--data", str(patients_folder), *QUICK]
    assert run_cli(cv_cli.main, argv) == 2
    assert "are too few for 20 folds" in capsys.readouterr().err


def test_an_out_from_before_val_was_carved_per_fold_is_not_resumed(tmp_path):
    out = tmp_path / "cv"
    config = cv_cli.parse_config(["--folds", "2", "--out", str(out), "--data", "digits"])
    old = {k: v for k, v in config.to_dict().items() if k != "fold_val"}  # validated on the fold
    out.mkdir()
    (out / "config.json").write_text(json.dumps(old))
    with pytest.raises(UsageError, match="holds a cross-validation with another configuration"):
        cv.prepare_out(config)
