"""Every test of the DICOM node: no log line may name the patient.

The made-up patient of `xray_dicom` (name, ID prefix, birth date) must not appear in
any log record emitted while a test runs, from the node or from a library, at the
levels the node's command runs them. Tests that run the command in a subprocess check
its log file with `assert_no_patient`.
"""

from __future__ import annotations

import logging

import pytest

from tests.keras_app.hospital.xray_dicom import PATIENT_WORDS


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 (a record that cannot format is not ours to judge)
            pass


@pytest.fixture(autouse=True)
def _no_patient_in_logs():
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    node = logging.getLogger("keras_app.dicom_node")
    level = node.level
    node.setLevel(logging.DEBUG)  # every line the node could write, debug ones too
    try:
        yield
    finally:
        root.removeHandler(handler)
        node.setLevel(level)
    for line in handler.lines:
        assert_no_patient(line)


def assert_no_patient(text: str) -> None:
    found = [word for word in PATIENT_WORDS if word in text]
    assert not found, f"patient data {found} in a log line: {text[:300]}"
