"""Tests for callbacks/sensors.py: NVML decoding via a fake module, scripted sensor."""

from __future__ import annotations

import dataclasses
import types

import pytest

from callbacks.sensors import (
    GpuReading,
    GpuSensor,
    NvmlSensor,
    ScriptedSensor,
    auto_sensor,
    decode_throttle_reasons,
    probe_sensor,
)

MIB = 1024 * 1024


class FakeNVMLError(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


NOT_SUPPORTED, DRIVER_NOT_LOADED, FUNCTION_NOT_FOUND, GPU_IS_LOST = 3, 9, 13, 15


class FakeNvml:
    """The part of `pynvml` NvmlSensor calls. A GPU is a dict of raw NVML values;
    a value that is an exception is raised instead of returned."""

    NVMLError = FakeNVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    NVML_ERROR_FUNCTION_NOT_FOUND = FUNCTION_NOT_FOUND

    def __init__(self, gpus, init_error=None, old_driver=False):
        self.gpus = gpus
        self.init_error = init_error
        self.old_driver = old_driver  # lacks the newer *V / *EventReasons functions
        self.calls: list[str] = []
        self.initialised = 0

    def _get(self, name, handle):
        self.calls.append(name)
        value = self.gpus[handle][name]
        if isinstance(value, Exception):
            raise value
        return value

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self):
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self._get("name", handle)

    def nvmlDeviceGetTemperatureV(self, handle, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        self.calls.append("TemperatureV")
        if self.old_driver:
            raise FakeNVMLError(FUNCTION_NOT_FOUND)
        return self._get("temp", handle)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._get("temp", handle)

    def nvmlDeviceGetMemoryInfo(self, handle):
        used, total = self._get("memory", handle)
        return types.SimpleNamespace(used=used, total=total, free=total - used)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=self._get("util", handle), memory=0)

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._get("power_mw", handle)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self.calls.append("EventReasons")
        if self.old_driver:
            raise FakeNVMLError(FUNCTION_NOT_FOUND)
        return self._get("reasons", handle)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self._get("reasons", handle)


def gpu(**overrides):
    values = {
        "name": "NVIDIA GeForce RTX 3080",
        "temp": 71,
        "memory": (2048 * MIB, 10240 * MIB),
        "util": 87,
        "power_mw": 215500,
        "reasons": 0x24,  # sw_power_cap | sw_thermal_slowdown
    }
    values.update(overrides)
    return values


def test_decode_throttle_reasons():
    assert decode_throttle_reasons(0) == ()
    assert decode_throttle_reasons(0x1) == ("gpu_idle",)
    assert decode_throttle_reasons(0x60) == ("sw_thermal_slowdown", "hw_thermal_slowdown")
    assert decode_throttle_reasons(0x808) == ("hw_slowdown", "unknown_0x800")


def test_nvml_sensor_decodes_units_and_reasons():
    sensor = NvmlSensor(FakeNvml([gpu(name=b"NVIDIA RTX A2000 Laptop GPU")]))

    reading = sensor.read(0)

    assert reading == GpuReading(
        index=0,
        temperature_c=71.0,
        memory_used_mib=2048.0,
        memory_total_mib=10240.0,
        utilization_pct=87.0,
        power_w=215.5,
        throttle_reasons=("sw_power_cap", "sw_thermal_slowdown"),
        name="NVIDIA RTX A2000 Laptop GPU",
    )
    assert reading.thermal_throttled
    assert sensor.device_count() == 1
    assert "550.54.15" in sensor.description and "RTX A2000" in sensor.description


def test_nvml_sensor_unsupported_fields_read_as_none():
    unsupported = FakeNVMLError(NOT_SUPPORTED)
    fake = FakeNvml([gpu(power_mw=unsupported, util=unsupported, reasons=0)])

    reading = NvmlSensor(fake).read(0)

    assert reading.power_w is None and reading.utilization_pct is None
    assert reading.throttle_reasons == () and not reading.thermal_throttled
    assert reading.temperature_c == 71.0


def test_nvml_sensor_falls_back_to_older_functions_once():
    fake = FakeNvml([gpu(temp=64, reasons=0x40)], old_driver=True)
    sensor = NvmlSensor(fake)

    first, second = sensor.read(0), sensor.read(0)

    assert first.temperature_c == second.temperature_c == 64.0
    assert first.throttle_reasons == ("hw_thermal_slowdown",)
    # The missing newer functions are tried on the first read only.
    assert fake.calls.count("TemperatureV") == 1
    assert fake.calls.count("EventReasons") == 1


def test_nvml_sensor_temperature_error_propagates():
    sensor = NvmlSensor(FakeNvml([gpu(temp=FakeNVMLError(GPU_IS_LOST))]))

    with pytest.raises(FakeNVMLError) as caught:
        sensor.read(0)
    assert caught.value.value == GPU_IS_LOST


def test_nvml_sensor_close_shuts_nvml_down_once():
    fake = FakeNvml([gpu()])
    sensor = NvmlSensor(fake)
    assert fake.initialised == 1

    sensor.close()
    sensor.close()

    assert fake.initialised == 0


def test_probe_sensor_finds_gpus_through_nvml():
    sensor, reason = probe_sensor(FakeNvml([gpu(), gpu(temp=50)]))

    assert isinstance(sensor, NvmlSensor)
    assert [sensor.read(i).temperature_c for i in range(2)] == [71.0, 50.0]
    assert "2 GPU(s)" in reason
    assert isinstance(auto_sensor(FakeNvml([gpu()])), NvmlSensor)


def test_probe_sensor_without_driver_says_why():
    fake = FakeNvml([], init_error=FakeNVMLError(DRIVER_NOT_LOADED))

    probe = probe_sensor(fake)

    assert probe.sensor is None
    assert "NVML is unavailable" in probe.reason and "NVML error 9" in probe.reason
    assert auto_sensor(fake) is None


def test_probe_sensor_without_gpu_says_why_and_shuts_down():
    fake = FakeNvml([])

    probe = probe_sensor(fake)

    assert probe == (None, "NVML found no NVIDIA GPU")
    assert fake.initialised == 0


def test_probe_sensor_on_this_machine():
    """No GPU in CI: None with a reason. On a GPU machine: a real NVML reading."""
    sensor, reason = probe_sensor()

    if sensor is None:
        assert auto_sensor() is None
        assert "NVML" in reason or "pynvml" in reason
        return
    reading = sensor.read(0)
    assert 0 < reading.temperature_c < 120, reason
    sensor.close()


def test_scripted_sensor_plays_steps_then_repeats_the_last():
    lost = RuntimeError("GPU is lost")
    sensor = ScriptedSensor([[50, lost, GpuReading(index=9, temperature_c=66, power_w=80)], [40]])

    assert isinstance(sensor, GpuSensor)
    assert sensor.device_count() == 2
    assert sensor.read(0).temperature_c == 50.0
    with pytest.raises(RuntimeError, match="lost"):
        sensor.read(0)
    assert sensor.read(0) == GpuReading(index=0, temperature_c=66, power_w=80)
    assert sensor.read(0).temperature_c == 66
    assert sensor.read(1) == GpuReading(index=1, temperature_c=40.0)
    assert sensor.reads == [4, 1]


def test_scripted_sensor_rejects_a_device_without_steps():
    with pytest.raises(ValueError, match=r"Received script\[1\]=\[\]"):
        ScriptedSensor([[50], []])


def test_gpu_reading_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GpuReading(index=0, temperature_c=50).temperature_c = 60
