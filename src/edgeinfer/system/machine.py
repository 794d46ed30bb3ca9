"""Facts about this machine for ``edgeinfer doctor`` and benchmark reports.

Everything here is read from the OS (``/proc/cpuinfo``, ``platform``, ``psutil``) without
importing any inference runtime; the runtimes' versions come from the registry's metadata look-up.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeinfer.system.threads import affinity_cpus, physical_cores, usable_cores

_CPUINFO = Path("/proc/cpuinfo")

# What each ISA feature is called in /proc/cpuinfo, and the name we report.
_X86_FLAGS = {
    "sse4_2": "SSE4.2",
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX-512F",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX512_VNNI",
    "avx512_bf16": "AVX512_BF16",
    "avx512_fp16": "AVX512_FP16",
    "avx_vnni": "AVX_VNNI",
    "amx_tile": "AMX_TILE",
    "amx_int8": "AMX_INT8",
    "amx_bf16": "AMX_BF16",
}
_ARM_FLAGS = {
    "neon": "NEON",
    "asimd": "NEON",
    "asimdhp": "FP16",
    "asimddp": "DOTPROD",
    "i8mm": "I8MM",
    "bf16": "BF16",
    "sve": "SVE",
    "sve2": "SVE2",
}


# x86 features whose int8 dot product adds u8 x s8 products straight into 32 bits.
_INT8_DOT_32 = ("AVX512_VNNI", "AVX_VNNI", "AMX_INT8")
_X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


@dataclass(frozen=True)
class RuntimeInfo:
    """One runtime as the registry sees it: installed or not, and its version."""

    name: str
    installed: bool
    version: str | None
    formats: tuple[str, ...]


@dataclass(frozen=True)
class MachineInfo:
    """What a benchmark needs to say about where it ran."""

    cpu_model: str
    architecture: str
    physical_cores: int
    logical_cores: int
    usable_cores: int
    affinity_cpus: tuple[int, ...]
    isa_flags: tuple[str, ...]
    ram_total_mb: int
    ram_available_mb: int
    os: str
    kernel: str
    python_version: str
    runtimes: tuple[RuntimeInfo, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        """Identifies the machine for caches of measurements: CPU model and usable cores."""
        return f"{self.cpu_model} x{self.usable_cores} ({self.architecture})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name (``model name`` on x86, ``Hardware``/``CPU part`` on ARM)."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    fields = _first_block(text)
    for key in ("model name", "Hardware", "Model", "cpu model"):
        if fields.get(key):
            return fields[key]
    if "CPU implementer" in fields:
        return f"ARM implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return platform.processor() or platform.machine() or "unknown"


def isa_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The ISA extensions that matter for inference kernels, in a fixed order."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    fields = _first_block(text)
    raw = set((fields.get("flags") or fields.get("Features") or "").split())
    found: list[str] = []
    for table in (_X86_FLAGS, _ARM_FLAGS):
        for flag, name in table.items():
            if flag in raw and name not in found:
                found.append(name)
    if not raw and platform.machine() in ("arm64", "aarch64"):
        found.append("NEON")  # every AArch64 CPU has Advanced SIMD, even where cpuinfo is silent
    return tuple(found)


def int8_products_saturate(flags: Sequence[str] | None = None, machine: str | None = None) -> bool:
    """Whether u8 x s8 int8 kernels here pass through a saturating int16 sum (x86 without VNNI/AMX).

    SSE4.1, AVX2 and AVX-512 without VNNI multiply u8 by s8 and add pairs of products into int16
    (``VPMADDUBSW``), which saturates once two products of large weights pass 32767; VNNI and AMX
    add into 32 bits. ONNX Runtime's and OpenVINO's documentation both name the cure: weights of
    7 bits. ARM's int8 kernels have no int16 step. Unknown flags on x86 count as saturating.
    """
    arch = (machine or platform.machine()).lower()
    if arch not in _X86_MACHINES:
        return False
    found = this_cpu_flags() if flags is None else tuple(flags)
    return not any(flag in found for flag in _INT8_DOT_32)


@functools.cache
def this_cpu_flags() -> tuple[str, ...]:
    """This CPU's :func:`isa_flags`, read once per process (they do not change while it runs)."""
    return isa_flags()


def collect(runtimes: Mapping[str, RuntimeInfo] | None = None) -> MachineInfo:
    """Read the machine's facts now. ``runtimes=None`` asks the runtime registry."""
    import psutil

    if runtimes is None:
        # The one upward look-up of this layer, done lazily: the registry reads package metadata only.
        from edgeinfer.runtimes.registry import runtime_infos

        runtimes = runtime_infos()
    memory = psutil.virtual_memory()
    cpuinfo = _read_cpuinfo()
    return MachineInfo(
        cpu_model=cpu_model(cpuinfo),
        architecture=platform.machine(),
        physical_cores=physical_cores(),
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable_cores(),
        affinity_cpus=affinity_cpus(),
        isa_flags=isa_flags(cpuinfo),
        ram_total_mb=memory.total // (1 << 20),
        ram_available_mb=memory.available // (1 << 20),
        os=_os_name(),
        kernel=platform.release(),
        python_version=platform.python_version(),
        runtimes=tuple(runtimes.values()),
    )


def machine_key() -> str:
    """The cache key of :meth:`MachineInfo.key` without collecting everything else."""
    return f"{cpu_model()} x{usable_cores()} ({platform.machine()})"


def _read_cpuinfo() -> str:
    try:
        return _CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def _first_block(text: str) -> dict[str, str]:
    """``key: value`` pairs of the first processor in cpuinfo, plus machine-wide keys after it."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def _os_name() -> str:
    if sys.platform.startswith("linux"):
        try:
            release = platform.freedesktop_os_release()
            return release.get("PRETTY_NAME") or release.get("NAME") or "Linux"
        except OSError:
            return "Linux"
    return f"{platform.system()} {platform.version()}"
