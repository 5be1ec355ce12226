"""GPU sensors: one reading type, an NVML sensor, a scripted one for tests.

A sensor is anything with `device_count()` and `read(index)` (the
`GpuSensor` protocol). Callbacks take one as a constructor argument, so tests
hand them a `ScriptedSensor` and production code the `NvmlSensor` that
`auto_sensor()` (or `probe_sensor()`, which also says why there is none) finds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

# Bit values of NVML's clocks-event (formerly "throttle") reasons. They are part
# of the driver ABI (nvml.h), so they are spelled out here rather than read from
# the module: a fake `pynvml` in tests need not define them.
THROTTLE_REASON_BITS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
THERMAL_THROTTLE_REASONS = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})

# NVML error codes (nvml.h) that mean "this GPU or driver cannot tell you that".
_NVML_ERROR_NOT_SUPPORTED = 3
_NVML_ERROR_FUNCTION_NOT_FOUND = 13
_NVML_TEMPERATURE_GPU = 0
_MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class GpuReading:
    """One reading of one GPU. Fields a GPU does not report are None.

    Attributes:
        index: NVML device index (the order `nvidia-smi` lists GPUs in).
        temperature_c: Core temperature in degrees Celsius.
        memory_used_mib: Device memory in use, MiB.
        memory_total_mib: Device memory in total, MiB.
        utilization_pct: Percent of the last sample period a kernel ran.
        power_w: Power draw in watts.
        throttle_reasons: Why the driver holds clocks down right now, as names
            from `THROTTLE_REASON_BITS` (empty: clocks are not held down).
        name: Product name, e.g. "NVIDIA GeForce RTX 3080".
    """

    index: int
    temperature_c: float
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    utilization_pct: float | None = None
    power_w: float | None = None
    throttle_reasons: tuple[str, ...] = ()
    name: str = ""

    @property
    def thermal_throttled(self) -> bool:
        """Whether the driver itself is slowing the GPU down because it is hot."""
        return bool(THERMAL_THROTTLE_REASONS.intersection(self.throttle_reasons))


@runtime_checkable
class GpuSensor(Protocol):
    """What the callbacks need from a sensor."""

    def device_count(self) -> int:
        """Number of GPUs this sensor can read (indices 0 .. count - 1)."""
        ...

    def read(self, index: int) -> GpuReading:
        """Reads GPU `index` now; raises on any failure."""
        ...


def decode_throttle_reasons(mask: int) -> tuple[str, ...]:
    """Names of the bits set in an NVML clocks-event (throttle) reasons mask.

    Args:
        mask: Value of `nvmlDeviceGetCurrentClocksEventReasons` (or the older
            `nvmlDeviceGetCurrentClocksThrottleReasons`).

    Returns:
        The names in bit order; a bit this module does not know comes back
        as "unknown_0x...".

    >>> decode_throttle_reasons(0x21)
    ('gpu_idle', 'sw_thermal_slowdown')
    """
    names = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            names.append(THROTTLE_REASON_BITS.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return tuple(names)


class NvmlSensor:
    """Reads NVIDIA GPUs through NVML (the `nvidia-ml-py` package, `pynvml`).

    Initialises NVML on construction and caches the device handles. Indices
    are NVML's (the order of `nvidia-smi`), which `CUDA_VISIBLE_DEVICES` does
    not change. Temperature errors propagate; a field the GPU does not support
    (power on many laptop GPUs, for one) reads as None.

    Args:
        nvml: The module to call; None imports `pynvml`. Tests pass a fake with
            the same functions.

    Raises:
        pynvml.NVMLError: NVML cannot start (no driver, no library).

    Example:

    >>> sensor = NvmlSensor()  # doctest: +SKIP
    >>> sensor.read(0).temperature_c  # doctest: +SKIP
    54.0
    """

    def __init__(self, nvml: Any = None):
        if nvml is None:
            import pynvml as nvml
        self._nvml = nvml
        self._api: dict[str, str] = {}  # first call name -> the variant that worked
        nvml.nvmlInit()
        try:
            count = int(nvml.nvmlDeviceGetCount())
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception:
            nvml.nvmlShutdown()
            raise
        self._names = [self._optional(("nvmlDeviceGetName",), h) or "" for h in self._handles]
        self._names = [n.decode() if isinstance(n, bytes) else str(n) for n in self._names]
        self._closed = False

    @property
    def description(self) -> str:
        """One line naming the driver and the GPUs, for logs and reports."""
        driver = self._optional(("nvmlSystemGetDriverVersion",))
        if isinstance(driver, bytes):
            driver = driver.decode()
        gpus = ", ".join(f"{i}: {name or 'unnamed'}" for i, name in enumerate(self._names))
        return f"NVML (driver {driver or 'unknown'}), {len(self._names)} GPU(s): {gpus}"

    def device_count(self) -> int:
        return len(self._handles)

    def read(self, index: int) -> GpuReading:
        handle = self._handles[index]
        temperature = self._call(
            ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"),
            handle,
            getattr(self._nvml, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU),
        )
        memory = self._optional(("nvmlDeviceGetMemoryInfo",), handle)
        utilization = self._optional(("nvmlDeviceGetUtilizationRates",), handle)
        power_mw = self._optional(("nvmlDeviceGetPowerUsage",), handle)
        reasons = self._optional(
            (
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",
            ),
            handle,
        )
        return GpuReading(
            index=index,
            temperature_c=float(temperature),
            memory_used_mib=None if memory is None else memory.used / _MIB,
            memory_total_mib=None if memory is None else memory.total / _MIB,
            utilization_pct=None if utilization is None else float(utilization.gpu),
            power_w=None if power_mw is None else power_mw / 1000.0,
            throttle_reasons=() if reasons is None else decode_throttle_reasons(int(reasons)),
            name=self._names[index],
        )

    def close(self) -> None:
        """Shuts NVML down (it counts initialisations, so other users keep it)."""
        if not self._closed:
            self._closed = True
            self._nvml.nvmlShutdown()

    def _call(self, names: tuple[str, ...], *args):
        """Calls the first of `names` this driver has, remembering which one."""
        known = self._api.get(names[0])
        for name in (known,) if known else names:
            function = getattr(self._nvml, name, None)
            if function is None:
                continue
            try:
                result = function(*args)
            except self._nvml.NVMLError as err:
                # Newer functions are missing from older drivers: try the next.
                if getattr(err, "value", None) == self._error_code(
                    "NVML_ERROR_FUNCTION_NOT_FOUND", _NVML_ERROR_FUNCTION_NOT_FOUND
                ):
                    continue
                raise
            self._api[names[0]] = name
            return result
        raise self._nvml.NVMLError(
            self._error_code("NVML_ERROR_FUNCTION_NOT_FOUND", _NVML_ERROR_FUNCTION_NOT_FOUND)
        )

    def _optional(self, names: tuple[str, ...], *args):
        """Like `_call`, but None where the GPU or driver does not support it."""
        unsupported = {
            self._error_code("NVML_ERROR_NOT_SUPPORTED", _NVML_ERROR_NOT_SUPPORTED),
            self._error_code("NVML_ERROR_FUNCTION_NOT_FOUND", _NVML_ERROR_FUNCTION_NOT_FOUND),
        }
        try:
            return self._call(names, *args)
        except self._nvml.NVMLError as err:
            if getattr(err, "value", None) in unsupported:
                return None
            raise

    def _error_code(self, name: str, default: int) -> int:
        return getattr(self._nvml, name, default)


class ScriptedSensor:
    """A sensor that plays back a script, one step per `read()` of a device.

    Each device has its own list of steps. A step is a temperature (°C), a
    full `GpuReading` (its index is replaced by the device's), or an exception
    instance, which `read()` raises. After the last step the last one repeats.

    Args:
        script: One sequence of steps per device; `[]` is a machine without GPUs.

    Raises:
        ValueError: A device has no steps.

    Example:

    >>> sensor = ScriptedSensor([[50, 70, 58], [40]])
    >>> [sensor.read(0).temperature_c for _ in range(4)]
    [50.0, 70.0, 58.0, 58.0]
    """

    description = "scripted sensor"

    def __init__(self, script: Sequence[Sequence[float | GpuReading | BaseException]]):
        self._script = [list(steps) for steps in script]
        for index, steps in enumerate(self._script):
            if not steps:
                raise ValueError(
                    "ScriptedSensor needs at least one step per device. "
                    f"Received script[{index}]={steps}"
                )
        self.reads = [0] * len(self._script)  # how often each device was read

    def device_count(self) -> int:
        return len(self._script)

    def read(self, index: int) -> GpuReading:
        steps = self._script[index]
        step = steps[min(self.reads[index], len(steps) - 1)]
        self.reads[index] += 1
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, GpuReading):
            return dataclasses.replace(step, index=index)
        return GpuReading(index=index, temperature_c=float(step))


class SensorProbe(NamedTuple):
    """What `probe_sensor()` found: a sensor or None, and why, in words."""

    sensor: NvmlSensor | None
    reason: str


def probe_sensor(nvml: Any = None) -> SensorProbe:
    """Looks for NVIDIA GPUs through NVML and says what it found.

    Never raises: no `pynvml`, no driver and no GPU all come back as
    `SensorProbe(None, reason)`.

    Args:
        nvml: The module to use; None imports `pynvml`.

    Returns:
        `SensorProbe(sensor, reason)`, which unpacks as a pair. `reason`
        describes the GPUs found, or says why there is no sensor.

    Example:

    >>> sensor, reason = probe_sensor()
    >>> if sensor is None:
    ...     print("no GPU sensor:", reason)  # doctest: +SKIP
    """
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as err:
            return SensorProbe(None, f"nvidia-ml-py (pynvml) is not installed ({err})")
    try:
        sensor = NvmlSensor(nvml)
    except Exception as err:  # NVMLError, or OSError from a broken install
        return SensorProbe(
            None, f"NVML is unavailable, no NVIDIA driver? ({type(err).__name__}: {err})"
        )
    if sensor.device_count() == 0:
        sensor.close()
        return SensorProbe(None, "NVML found no NVIDIA GPU")
    return SensorProbe(sensor, sensor.description)


def auto_sensor(nvml: Any = None) -> NvmlSensor | None:
    """The NVML sensor when an NVIDIA GPU is present, else None.

    `probe_sensor()` does the same and also says why there is none; the
    callbacks print that reason themselves when given `sensor=None`.

    Args:
        nvml: The module to use; None imports `pynvml`.
    """
    return probe_sensor(nvml).sensor
