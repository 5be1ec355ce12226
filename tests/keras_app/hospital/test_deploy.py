"""The systemd unit of docs/deploy: systemd parses it, and the node accepts its flags."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest

from keras_app import dicom_node
from tests.conftest import REPO

UNIT = REPO / "docs" / "deploy" / "keras-app-dicom-node.service"
PYTHON = "/opt/keras-app/.venv/bin/python"


def exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(PYTHON, sys.executable))  # an executable here
    found = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    # verify exits 0 on an unknown key or a bad value, and only says so: both must be empty.
    assert found.returncode == 0 and found.stderr.strip() == "", found.stderr


def test_the_units_flags_are_the_nodes():
    argv = exec_start()
    assert argv[:3] == [PYTHON, "-m", "keras_app.dicom_node"]
    args = dicom_node.parse_args(argv[3:])
    dicom_node.check_args(args)
    assert args.follow and args.no_listen and args.spool.startswith("/var/lib/keras-app/")
