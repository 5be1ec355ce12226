"""Manifests: the public formats are recognised, bad rows named and counted, patients kept apart."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import DataError, ManifestOptions, load_dataset, make_dataset
from data_pipelines.manifest import read_manifest
from tests.makers import grey_pixels, write_chestxray14, write_chexpert, write_image, write_rsna

SPLITS = ["train", "val", "test"]


def load(spec, lines=None, **options):
    report = (lambda line: None) if lines is None else lines.append
    return load_dataset(str(spec), report=report, manifest=ManifestOptions(**options))


def assert_patients_apart(data):
    seen = {name: set(split.groups) for name, split in data.splits.items()}
    for a in seen:
        for b in seen:
            assert a == b or not seen[a] & seen[b], (a, b)


def test_rsna_is_recognised_boxes_are_merged_and_dicom_read(tmp_path):
    lines = []
    data = load(write_rsna(tmp_path), lines)
    assert data.class_names == ("no Pneumonia", "Pneumonia")
    assert list(data.splits) == SPLITS and not data.has_splits
    assert sum(len(s) for s in data.splits.values()) == 40
    assert sum(s.counts()["Pneumonia"] for s in data.splits.values()) == 14
    train = data.splits["train"]
    assert all(f.endswith(".dcm") for f in train.files)
    assert train.groups[0] == train.files[0].split("/")[-1].removesuffix(".dcm")
    assert any("14 rows name a file an earlier row names" in line for line in lines)
    assert_patients_apart(data)


def test_rsna_has_one_task(tmp_path):
    with pytest.raises(DataError, match="one task.*Received label='Effusion'"):
        load(write_rsna(tmp_path, 6), label="Effusion")


def test_chestxray14_needs_a_finding_and_reads_the_multi_label_cells(tmp_path):
    path = write_chestxray14(tmp_path)
    with pytest.raises(DataError, match="choose the binary task.*Effusion, Infiltration"):
        load(path)
    with pytest.raises(DataError, match="no finding 'Hernia'.*Received label='Hernia'"):
        load(path, label="Hernia")
    data = load(path, label="pneumonia")  # case aside, as the finding is written
    assert data.class_names == ("no Pneumonia", "Pneumonia")
    manifest = read_manifest(path, ManifestOptions(label="Pneumonia"))
    assert manifest.format == "chestx-ray14" and len(manifest.files) == 60
    # "Pneumonia" and "Effusion|Pneumonia" are positive; the rest negative.
    assert manifest.labels.sum() == 24
    assert manifest.groups[:4].tolist() == ["1", "1", "2", "2"]
    assert all("/images_001/images/" in f for f in manifest.files)
    assert_patients_apart(data)


def test_chexpert_uncertain_policy_and_patients_from_paths(tmp_path):
    path = write_chexpert(tmp_path)
    lines = []
    ignored = read_manifest(path, ManifestOptions(label="Pneumonia"))
    assert ignored.format == "chexpert" and ignored.name == "CheXpert-v1.0-small-train-Pneumonia"
    assert len(ignored.files) == 32  # 8 of 40 rows are -1.0
    assert ignored.labels.sum() == 8  # 1.0; empty cells are "not mentioned": negative
    assert ignored.groups[0] == "patient00001"
    assert ignored.files[0] == str(tmp_path / ignored.files[0].removeprefix(f"{tmp_path}/"))
    assert ignored.notes == [
        "8 rows with an uncertain Pneumonia label (-1.0): left out "
        "(uncertain='zeros' or 'ones' keeps them)"
    ]
    ones = read_manifest(path, ManifestOptions(label="Pneumonia", uncertain="ones"))
    zeros = read_manifest(path, ManifestOptions(label="Pneumonia", uncertain="zeros"))
    assert (len(ones.files), ones.labels.sum()) == (40, 16)
    assert (len(zeros.files), zeros.labels.sum()) == (40, 8)
    with pytest.raises(DataError, match=r"\{'no Pleural Effusion': 40, 'Pleural Effusion': 0\}"):
        load(path, lines, label="pleural_effusion")  # a finding no row has
    with pytest.raises(DataError, match="uncertain must be one of.*Received uncertain='maybe'"):
        ManifestOptions(uncertain="maybe")


def write_generic(tmp_path, n=40, header="path,label,patient,split", extra_rows=()):
    (tmp_path / "img").mkdir(exist_ok=True)
    rows = [header]
    for i in range(n):
        name = f"img/{i:03d}.png"
        write_image(tmp_path / name, grey_pixels(16, 16, seed=i), format="PNG")
        split = "test" if (i // 2) % 5 == 0 else "train"  # by patient
        rows.append(f"{name},{'sick' if i % 2 else 'well'},p{i // 2},{split}")
    (tmp_path / "m.csv").write_text("\n".join([*rows, *extra_rows]) + "\n")
    return tmp_path / "m.csv"


def test_generic_manifest_bad_rows_are_named_and_counted(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "zero.png").write_bytes(b"")
    bad_rows = (
        "img/gone.png,sick,p90,train",
        "img/000.png,sick,p0,train",  # named before as well: two labels, left out
        "img/001.png,sick,p0,train",  # named before, same label: read once
        "img/zero.png,well,p91,train",
        "img/002.png,,p1,train",
        "img/003.png,well,p1,holdout",
        ",well,p92,train",
    )
    path = write_generic(tmp_path, extra_rows=bad_rows)
    lines = []
    data = load(path, lines)
    assert data.class_names == ("sick", "well")
    assert data.own_splits == ("train", "test")
    reasons = {str(what).split("/")[-1]: why for what, why in data.skipped}
    assert reasons["gone.png"] == "missing file (row 42)"
    assert reasons["000.png"] == "two labels, well and sick (rows 2 and 43)"
    assert reasons["zero.png"] == "zero-byte file"
    assert reasons["m.csv:46"] == "empty label in column 'label'"
    assert reasons["m.csv:47"] == "unknown split 'holdout' (train, val or test)"
    assert reasons["m.csv:48"] == "empty path"
    assert len(data.skipped) == 6
    assert lines[-1] == f"skipped 6 manifest rows under {path}"
    assert sum(len(s) for s in data.splits.values()) == 39
    assert len(data.splits["test"]) == 7  # its own test split, kept (000.png is left out)
    assert_patients_apart(data)


def test_columns_named_by_options_and_wrong_names_refused(tmp_path):
    path = write_generic(tmp_path, header="file_ref,outcome,mrn_x,split")
    with pytest.raises(DataError, match="holds the paths.*--path-column"):
        load(path)
    data = load(path, path_column="file_ref", label="outcome", patient_column="mrn_x")
    assert data.class_names == ("sick", "well")
    assert {g for s in data.splits.values() for g in s.groups} == {f"p{i}" for i in range(20)}
    with pytest.raises(DataError, match="no label column 'nope'.*Received label='nope'"):
        load(path, path_column="file_ref", label="nope")


def test_nothing_usable_is_an_error_and_options_belong_to_manifests(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\nmissing/a.png,x\nmissing/b.png,y\n")
    with pytest.raises(DataError, match="no usable image.*2 rows left out.*missing file"):
        load(tmp_path / "m.csv")
    with pytest.raises(DataError, match="apply to a manifest"):
        load("digits", label="Pneumonia")


def test_a_task_is_part_of_the_fingerprint_and_a_second_load_reads_no_file(tmp_path, monkeypatch):
    path = write_chestxray14(tmp_path)
    pneumonia = load(f"csv:{path}", label="Pneumonia")
    effusion = load(f"csv:{path}", label="Effusion")
    assert pneumonia.fingerprint != effusion.fingerprint
    from data_pipelines import scan

    monkeypatch.setattr(scan, "_check_one", None)  # any read would fail
    again = load(path, label="Pneumonia")
    assert again.fingerprint == pneumonia.fingerprint
    assert again.splits["test"].files == pneumonia.splits["test"].files


def test_each_public_format_trains_and_evaluates(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    formats = [
        (write_rsna, {}),
        (write_chestxray14, {"label": "Pneumonia"}),
        (write_chexpert, {"label": "Pneumonia", "uncertain": "ones"}),
    ]
    common = dict(image_size=(16, 16), batch_size=8, num_classes=2)
    for write, options in formats:  # one model: traced once, each format fits and evaluates
        data = load(write(tmp_path / write.__name__), **options)
        train = make_dataset(data.splits["train"], training=True, **common)
        test = make_dataset(data.splits["test"], training=False, **common)
        history = model.fit(train, epochs=1, verbose=0)
        loss, accuracy = model.evaluate(test, verbose=0)
        assert np.isfinite(history.history["loss"][0]) and np.isfinite(loss), write.__name__
        assert 0.0 <= accuracy <= 1.0
