"""Keras callbacks that watch the GPU: ThermalGuard pauses training while it is
too hot, GpuTelemetry logs its temperature, memory, utilisation and power.

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
    probe_sensor,
)
from callbacks.telemetry import GpuTelemetry
from callbacks.thermal import PauseEvent, ThermalGuard

__all__ = [
    "GpuReading",
    "GpuSensor",
    "GpuTelemetry",
    "NvmlSensor",
    "PauseEvent",
    "ScriptedSensor",
    "SensorProbe",
    "ThermalGuard",
    "auto_sensor",
    "decode_throttle_reasons",
    "probe_sensor",
]
