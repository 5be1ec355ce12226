"""`--precision auto`: the dtype policy for a backbone on the hardware found.

A pure function of (backbone, hardware), so a test can say what hardware it
has; `cpu_flags` reads the real one. This module imports neither TensorFlow
nor Keras.
"""

from __future__ import annotations

from pathlib import Path

# /proc/cpuinfo flags of a CPU with bfloat16 arithmetic: AVX512-BF16 or AMX.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# Backbones whose Keras train step ran faster under mixed_bfloat16 than float32 on
# an AVX512-BF16 CPU without AMX: issue 14's probe (96 px, batch 16): Xception 32 ->
# 41 img/s, ResNet50 39 -> 48, DenseNet121 37 -> 43; the MobileNets ran slower
# (V3Large 119 -> 77), as their depthwise convolutions gain nothing from bf16 and
# pay for the casts. Measured again with benchmarks/bench_train.py on an idle
# AVX512-BF16 EPYC (2026-12-02, docs/BENCHMARKS.md): ResNet50 +42%, DenseNet121
# +18%, Xception +41%, MobileNetV3Large -32% under mixed_bfloat16.
BF16_FASTER_ON_CPU = frozenset({"xception", "resnet50", "densenet121"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in `cpuinfo`; empty where it is unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def choose_precision(backbone: str, gpus: int, flags: frozenset[str]) -> tuple[str, str]:
    """The dtype policy `--precision auto` picks, and why.

    Args:
        backbone: a key of `BACKBONES`.
        gpus: the number of GPUs found.
        flags: the CPU's feature flags (`cpu_flags()`).

    Returns:
        `(policy, reason)`: a Keras dtype policy name and one line saying why.
    """
    if gpus:
        return "mixed_float16", "a GPU: float16 tensor cores"
    bf16 = sorted(BF16_FLAGS & flags)
    if not bf16:
        return "float32", "CPU without bfloat16 support: no avx512_bf16 or amx_bf16"
    if backbone in BF16_FASTER_ON_CPU:
        return "mixed_bfloat16", f"CPU with {', '.join(bf16)}; {backbone} trains faster in bf16"
    return "float32", (
        f"CPU with {', '.join(bf16)}, but {backbone} trains slower in bf16 there "
        "(or is not measured)"
    )
