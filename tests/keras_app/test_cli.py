"""Every `python -m keras_app.<verb>`: help without TensorFlow, readable help, quiet start-up.

Each check runs in a fresh interpreter, since what a command imports is the point.
Nothing here is timed: benchmarks/cli_help.py measures how fast `--help` answers.
"""

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIS = [
    "keras_app.train",
    "keras_app.export",
    "keras_app.gradcam",
    "keras_app.cv",
    "keras_app.compare",
    "keras_app.train_many",
    "keras_app.ensemble",
    "keras_app.predict",
    "keras_app.evaluate",
    "keras_app.sweep",
    "keras_app.model_card",
    "keras_app.dicom_node",
    "keras_app.calibrate",
    "keras_app.monitor",
    "keras_app.audit",
]
HELP_TEXT_CLIS = CLIS

# Runs MODULE as `python -m MODULE --help` does.
_PROBE = """
import runpy, sys
sys.argv = ["-m", "--help"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("loaded:", ",".join(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@functools.cache
def _help(module: str) -> tuple[str, str]:
    """The help text of `module`, and which of TensorFlow and Keras it loaded."""
    done = _python(_PROBE.format(module=module))
    assert done.returncode == 0, done.stderr
    text, _, loaded = done.stdout.rpartition("loaded:")
    return text, loaded.strip()


@pytest.mark.parametrize("module", CLIS)
def test_help_imports_neither_tensorflow_nor_keras(module):
    text, loaded = _help(module)
    assert "usage: python -m" in text
    assert loaded == ""


def _option_entries(text: str) -> list[str]:
    """Each option's entry in a help text: its invocation line and any continuation."""
    options = text.split("options:", 1)[1]
    return [e for e in re.split(r"\n(?=  -)", options) if e.strip().startswith("-")]


@pytest.mark.parametrize("module", HELP_TEXT_CLIS)
def test_help_text_states_each_option_once_and_plainly(module):
    text, _ = _help(module)
    flat = " ".join(text.split())
    assert "(default: None)" not in flat
    assert "(default: True)" not in flat and "(default: False)" not in flat
    assert not re.search(r"\(default: [^)]*\)\s*\(default:", flat), "a doubled default"
    for entry in _option_entries(text):
        one_line = " ".join(entry.split("\n"))
        # argparse puts the help two spaces or more after the invocation, or on the next line.
        assert "\n" in entry.strip() or "  " in one_line.strip(), f"no help: {entry.strip()}"


def test_required_options_show_no_default():
    text, _ = _help("keras_app.ensemble")
    out = next(e for e in _option_entries(text) if e.strip().startswith("--out"))
    assert "default" not in out


def test_thermal_switch_states_its_behaviour():
    text, _ = _help("keras_app.train")
    entry = next(e for e in _option_entries(text) if "--no-thermal" in e)
    assert "--thermal, --no-thermal" in entry
    assert "(default: on)" in " ".join(entry.split())


def test_import_keras_app_is_light_and_keras_app_model_registers_every_custom_object():
    code = (
        "import sys, keras_app\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "import keras, keras_app.model\n"
        "for name in ('TemperatureScaling', 'EnsembleCombine', 'ClassAUC', "
        "'BackbonePreprocess', 'FusedBatchNormalization', 'FusedAdam'):\n"
        "    assert keras.saving.get_registered_object('keras_app>' + name), name\n"
        "assert keras_app.load_model.__module__ == 'keras_app.artifacts.loader'\n"
        "print('ok')\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("asked, expected", [(None, "1 True"), ("0", "0 False")])
def test_onednn_kernels_are_on_unless_the_user_turned_them_off(asked, expected, monkeypatch):
    # TensorFlow leaves them off on CPUs without AVX-512; `import keras_app` asks for them.
    if asked is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", asked)
    code = (
        "import os, keras_app\n"
        "from keras_app.training.runtime import _onednn_enabled\n"
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], _onednn_enabled())\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


# What TensorFlow writes to the terminal on start-up on a machine like this one (no GPU).
STARTUP_NOISE = (
    "absl::InitializeLog",
    "cudart_stub",
    "Could not find cuda drivers",
    "cuInit",
    "oneDNN",
    "cpu_feature_guard",
)


def test_a_command_that_loads_tensorflow_prints_only_its_own_lines(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # the product's default
    missing = tmp_path / "no-such-run"
    probe = _PROBE.replace('"--help"', f"{str(missing)!r}, '--base', {str(tmp_path)!r}")
    done = _python(probe.format(module="keras_app.export"))
    assert done.stdout.strip().endswith("loaded: tensorflow,keras")  # the flags parsed first
    noise = [line for line in done.stderr.splitlines() if any(n in line for n in STARTUP_NOISE)]
    assert noise == []
    assert done.stderr.startswith("error: ") and str(missing) in done.stderr


def test_every_module_directly_in_keras_app_is_a_command():
    """docs/ARCHITECTURE.md: keras_app/*.py are the commands; everything else is in a room."""
    found = {f"keras_app.{p.stem}" for p in (ROOT / "keras_app").glob("*.py")}
    assert found - {"keras_app.__init__"} == set(CLIS)
