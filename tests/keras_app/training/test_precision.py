"""`--precision auto` picks by the hardware it is told it has."""

from __future__ import annotations

import pytest

from keras_app.training.precision import BF16_FASTER_ON_CPU, choose_precision, cpu_flags

AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
AMX = frozenset({"avx512f", "amx_bf16", "amx_tile"})
PLAIN_AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize("backbone", sorted(BF16_FASTER_ON_CPU))
@pytest.mark.parametrize("flags", [AVX512_BF16, AMX])
def test_bf16_cpu_picks_mixed_bfloat16_where_it_was_measured_faster(backbone, flags):
    policy, reason = choose_precision(backbone, 0, flags)
    assert policy == "mixed_bfloat16"
    assert "bf16" in reason and backbone in reason


@pytest.mark.parametrize("backbone", ["mobilenet", "mobilenetv3large", "mobilenetv3small"])
def test_bf16_cpu_keeps_float32_where_bf16_was_slower(backbone):
    policy, reason = choose_precision(backbone, 0, AVX512_BF16)
    assert policy == "float32" and "slower" in reason


def test_cpu_without_bf16_and_gpu_choices():
    assert choose_precision("resnet50", 0, PLAIN_AVX2)[0] == "float32"
    assert choose_precision("resnet50", 0, frozenset())[0] == "float32"
    assert choose_precision("mobilenet", 1, AVX512_BF16)[0] == "mixed_float16"


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t: x\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()
