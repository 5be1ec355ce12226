"""Keras callbacks that watch the GPU: ThermalGuard pauses training while it is

This package knows nothing of `keras_app` or `data_pipelines`.
"""

from callbacks.sensors import (
    GpuReading,
    GpuSensor,
    NvmlSensor,
    ScriptedSensor,
    SensorProbe,
    auto_sensor,
    decode_throttle_reasons,
)
from callbacks.thermal import PauseEvent, ThermalGuard

__all__ = [
    "GpuReading",
    "GpuSensor",
    "NvmlSensor",
    "PauseEvent",
    "ScriptedSensor",
    "SensorProbe",
    "ThermalGuard",
    "auto_sensor",
    "decode_throttle_reasons",
]
