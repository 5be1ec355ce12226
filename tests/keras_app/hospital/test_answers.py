"""What the node answers, with a stand-in predictor: the model's image guard honoured, the
usage record free of patient data, the log lines naming the study, not the patient."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pydicom

from keras_app.decision.operating_point import OperatingPoint
from keras_app.hospital.answers import Analyser, log, log_answers, usage_fields
from keras_app.hospital.reading import Image, NotAnalysed
from keras_app.hospital.results import read_sr
from keras_app.inference.serving_client import Scores
from keras_app.inference.usage_log import UsageLog
from tests.keras_app.hospital import xray_dicom
from tests.keras_app.hospital.conftest import assert_no_patient


class _GuardedPredictor:
    """A served model with an image guard: the second image is out of distribution."""

    kind, name, keras_model = "serving", "stand-in", None
    class_names = ("NORMAL", "PNEUMONIA")
    operating_point = OperatingPoint(positive_class="PNEUMONIA", threshold=0.4)
    guard_limit = 2.5

    class client:  # noqa: N801 (the attribute a ServingPredictor has)
        version = 7

    def predict_bytes(self, contents):
        n = len(contents)
        probs = np.tile([[0.3, 0.7]], (n, 1)).astype(np.float32)
        return Scores(
            probs,
            ["PNEUMONIA"] * n,
            self.class_names,
            decisions=["PNEUMONIA"] * n,
            threshold=0.4,
            positive_class="PNEUMONIA",
            operating_point_version=2,
            in_distribution=[i % 2 == 0 for i in range(n)],
            ood_score=np.array([0.5 + 3 * (i % 2) for i in range(n)]),
            ood_limit=self.guard_limit,
        )


def image(accession: str) -> Image:
    data = xray_dicom.make_no_pixels(accession=accession)
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return Image(header, np.zeros((8, 8, 1), np.uint8), b"png")


def test_an_image_the_guard_refuses_is_not_analysed_with_its_score_and_limit():
    analyser = Analyser(_GuardedPredictor())
    refused = NotAnalysed("view position LL is not PA or AP", image("A3").header)
    answers = analyser.answer([image("A1"), image("A2"), refused])
    first, second, third = (read_sr(a.datasets[0]) for a in answers)
    assert first["analysed"] and first["probability"] == np.float32(0.7)
    assert first["operating_point_version"] == 2 and first["model_version"] == "7"
    assert second == {**second, "analysed": False}
    assert second["reason"].startswith("out of distribution: unlike the images the model was")
    assert second["reason"].endswith("(guard score 3.5 above its limit 2.5)")
    assert third["reason"] == "view position LL is not PA or AP"
    assert answers[1].ood_score == 3.5 and answers[1].finding is None
    assert [analyser.wants_overlay(a) for a in answers] == [False, False, False]  # served


def test_usage_record_and_log_lines_hold_no_patient_data(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger=log.name)
    answers = Analyser(_GuardedPredictor()).answer([image("REC1"), image("REC2")])
    log_answers(answers, 12.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("REC2  not analysed: out of distribution")
    assert lines[1] == "REC1  pneumonia present  p=0.700  12 ms"
    usage = UsageLog(tmp_path / "usage.jsonl", key=b"k" * 32, source="dicom_node")
    record = usage.record(**usage_fields(answers[0], received=100.0, answered=100.25))
    assert record == {
        **record,
        "time": "1970-01-01T00:01:40.250Z",
        "study": usage.pseudonym(str(answers[0].header.StudyInstanceUID)),
        "instance": usage.pseudonym(str(answers[0].header.SOPInstanceUID)),
        "model": "stand-in",
        "model_version": "7",
        "operating_point_version": 2,
        "decision": "present",
        "status": "analysed",
        "guard": "passed",
        "latency_ms": 250.0,
    }
    refused = usage.record(**usage_fields(answers[1], received=100.0, answered=100.5))
    assert (refused["status"], refused["guard"], refused["decision"]) == (
        "not_analysed",
        "refused",
        None,
    )
    text = json.dumps(record)
    assert_no_patient(text)
    assert str(answers[0].header.SOPInstanceUID) not in text
