"""Machine facts for `edgeinfer doctor` and benchmark reports."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
from pathlib import Path

import pytest

from edgeinfer.system import machine

# Trimmed from a Raspberry Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76).
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08

processor\t: 1
Features\t: fp asimd evtstrm crc32 cpuid

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
PI5_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""
ZEN3_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse4_2 avx f16c fma avx2 bmi2
"""


def test_int8_products_saturate_on_x86_without_vnni_only() -> None:
    zen3 = machine.isa_flags(ZEN3_CPUINFO)  # AVX2, no VNNI: VPMADDUBSW's int16 sums
    assert machine.int8_products_saturate(zen3, "x86_64")
    assert not machine.int8_products_saturate((*zen3, "AVX-512F", "AVX512_VNNI"), "x86_64")
    assert not machine.int8_products_saturate((*zen3, "AVX_VNNI"), "AMD64")
    assert not machine.int8_products_saturate(("AMX_INT8",), "x86_64")
    assert machine.int8_products_saturate((), "x86_64")  # flags unknown: assume the worst
    assert not machine.int8_products_saturate(machine.isa_flags(PI4_CPUINFO), "aarch64")


def test_isa_flags_on_arm_and_x86() -> None:
    assert machine.isa_flags(PI4_CPUINFO) == ("NEON",)
    assert machine.isa_flags(PI5_CPUINFO) == ("NEON", "FP16", "DOTPROD")
    assert machine.isa_flags(ZEN3_CPUINFO) == ("SSE4.2", "AVX", "AVX2", "FMA", "F16C")


def test_cpu_model_on_arm_and_x86() -> None:
    assert machine.cpu_model(ZEN3_CPUINFO) == "AMD EPYC 7B13"
    assert machine.cpu_model(PI4_CPUINFO) == "BCM2835"
    assert machine.cpu_model(PI5_CPUINFO) == "ARM implementer 0x41 part 0xd0b"


def test_collect_reads_this_machine() -> None:
    info = machine.collect()
    assert info.cpu_model and info.architecture == platform.machine()
    assert 1 <= info.usable_cores <= info.physical_cores <= info.logical_cores == os.cpu_count()
    assert info.ram_total_mb > info.ram_available_mb > 0
    assert info.python_version == platform.python_version()
    assert info.kernel == platform.release()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and platform.machine() == "x86_64":
        flags = set(cpuinfo.read_text().split("flags")[1].splitlines()[0].split())
        assert ("AVX2" in info.isa_flags) == ("avx2" in flags)
        assert ("AVX-512F" in info.isa_flags) == ("avx512f" in flags)
        assert ("AVX512_VNNI" in info.isa_flags) == ("avx512_vnni" in flags)
        assert ("AMX_INT8" in info.isa_flags) == ("amx_int8" in flags)


def test_runtimes_and_versions_come_from_the_registry() -> None:
    info = machine.collect()
    runtimes = {r.name: r for r in info.runtimes}
    assert set(runtimes) == {"onnxruntime", "openvino", "litert", "keras", "null"}
    assert runtimes["onnxruntime"].installed
    assert runtimes["onnxruntime"].version == importlib.metadata.version("onnxruntime")
    for runtime in runtimes.values():
        assert (runtime.version is not None) == runtime.installed


def test_is_frozen_and_serializes_to_json() -> None:
    info = machine.collect()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.cpu_model = "other"  # type: ignore[misc]
    raw = json.loads(json.dumps(info.to_dict()))
    assert raw["cpu_model"] == info.cpu_model
    assert raw["runtimes"][0]["name"] == "onnxruntime"
    assert info.key == machine.machine_key()
