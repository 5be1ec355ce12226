"""keras_app.inference.usage_log: one line per image, and nothing in it names the patient."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone

import numpy as np
import pydicom
import pytest
from PIL import Image

from keras_app import predict as predict_cli
from keras_app.core.cli import run_cli
from keras_app.core.errors import UsageError
from keras_app.inference.usage_log import (
    FIELDS,
    KEY_ENV,
    KEY_FILE_ENV,
    UsageLog,
    installation_key,
    read_usage_log,
)
from tests.keras_app.hospital import xray_dicom
from tests.keras_app.inference.test_export import write_run

PHI = ("Test^ACC7", "PACC7", "19700101", "ACC7", "Doe_John")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny run, and two inputs: a DICOM carrying a patient's identity (in its tags and
    its file name) and a JPEG."""
    root = tmp_path_factory.mktemp("usage")
    run = write_run(root / "run")
    folder = root / "inputs"
    folder.mkdir()
    jpeg = folder / "chest.jpeg"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(jpeg)
    dicom, _ = xray_dicom.make_xray(jpeg, "cr", accession="ACC7")
    (folder / "Doe_John_19700101.dcm").write_bytes(dicom)
    return run, folder, pydicom.dcmread(folder / "Doe_John_19700101.dcm")


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "keys" / "usage.key"))
    return tmp_path / "keys" / "usage.key"


def test_predict_logs_each_image_without_the_patient(inputs, key_file, tmp_path, capsys):
    run, folder, ds = inputs
    log = tmp_path / "usage.jsonl"
    argv = [str(folder), "--model", str(run), "--usage-log", str(log), "--json"]
    assert run_cli(predict_cli.main, argv) == 0
    text = log.read_text()
    for value in (*PHI, str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(folder)):
        assert value not in text, value
    lines = list(read_usage_log(log))
    assert len(lines) == 2 and all(line["status"] == "analysed" for line in lines)
    assert all(list(line) == list(FIELDS) for line in lines)  # these keys, nothing else
    by_study = {line["study"] is None: line for line in lines}
    hashed = UsageLog(tmp_path / "other.jsonl")  # the same installation key
    assert by_study[False]["study"] == hashed.pseudonym(str(ds.StudyInstanceUID))
    assert by_study[False]["instance"] == hashed.pseudonym(str(ds.SOPInstanceUID))
    assert by_study[True]["instance"] and by_study[True]["study"] is None  # the JPEG
    predictions = json.loads(capsys.readouterr().out)
    assert {line["decision"] for line in lines} == {p["decision"] for p in predictions}
    assert all(line["operating_point_version"] == 1 for line in lines)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_the_hash_is_keyed(tmp_path, monkeypatch):
    uid = "1.2.826.0.1.3680043.8.498.1"
    a, b = UsageLog(tmp_path / "a", key=b"a" * 32), UsageLog(tmp_path / "b", key=b"b" * 32)
    assert a.pseudonym(uid) == UsageLog(tmp_path / "c", key=b"a" * 32).pseudonym(uid)
    assert a.pseudonym(uid) != b.pseudonym(uid) and a.key_id != b.key_id
    monkeypatch.setenv(KEY_ENV, "ab" * 32)
    assert installation_key() == bytes.fromhex("ab" * 32)
    monkeypatch.setenv(KEY_ENV, "not hex")
    with pytest.raises(UsageError, match="32 hex digits"):
        installation_key()


def test_a_refused_image_has_no_decision_and_times_are_utc(tmp_path):
    log = UsageLog(tmp_path / "usage.jsonl", key=b"k" * 32, source="dicom_node")
    when = datetime(2026, 11, 23, 10, 15, 2, tzinfo=timezone.utc)
    line = log.record(
        instance_uid="1.2.3",
        study_uid="1.2",
        model="readme",
        probability=0.9,
        decision="PNEUMONIA",
        guard=False,
        latency_ms=12.34,
        time=when,
    )
    assert line["status"] == "not_analysed" and line["decision"] is None
    assert line["guard"] == "refused" and line["time"] == "2026-11-23T10:15:02.000Z"
    assert log.record(instance_uid="1.2.4", model="readme", failed=True)["status"] == "failed"


def test_reading_skips_an_unfinished_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "usage.jsonl"
    log = UsageLog(path, key=b"k" * 32)
    log.record(instance_uid="1", model="m")
    with open(path, "a") as f:
        f.write('{"time": "2026')  # a writer stopped mid-line
    assert len(list(read_usage_log(path))) == 1
    path.write_text('{"time": "x", "status": "analysed"}\nnot json\n')
    with pytest.raises(UsageError, match=r"usage.jsonl:2: not a JSON line"):
        list(read_usage_log(path))
