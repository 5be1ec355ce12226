"""Stand-ins the callback tests share: a manual clock and a model stub."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path (for tests/conftest.py), and there the folder
# tests/callbacks/ is a namespace package named `callbacks` that hides the real
# one: `callbacks/__init__.py` would never run. The checkout root, ahead of
# tests/, makes `import callbacks` find the real package.
REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)


class ManualClock:
    """A monotonic clock that moves only when `sleep` is called."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def messages() -> list[str]:
    """Pass `messages.append` as print_fn and read what a callback printed."""
    return []


@pytest.fixture
def stub_model():
    """What a callback touches of a Keras model: only `stop_training`."""
    return types.SimpleNamespace(stop_training=False)
