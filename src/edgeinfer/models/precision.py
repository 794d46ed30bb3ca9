"""Precisions a model runs in: the three it is built in, and bfloat16, computed from its FP32 build.

``fp32``, ``fp16`` and ``int8`` are builds in the model repository (``models build -p``).
``bf16`` is not a build: OpenVINO computes the FP32 build in bfloat16 on CPUs with bfloat16
arithmetic (AMX or AVX512_BF16), 1.5-2.3x faster than float32 on the development machine, with
93% top-1 agreement with FP32 over all held-out inputs and 100% over those the INT8 gate counts
(docs/BENCHMARKS.md, "INT8" and "Beside the runtimes' own benchmark tools"). It changes the
answers, so it is only used when asked for, like INT8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edgeinfer.errors import RuntimeUnavailable

BUILD_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ComputedPrecision:
    """A precision a runtime computes from another build."""

    name: str
    build: str
    runtime: str
    runtime_options: Mapping[str, str] = field(default_factory=dict)
    cpu_flags: tuple[str, ...] = ()  # any one of these (``isa_flags`` names) is needed

    def check(self, runtime: str, flags: Sequence[str]) -> str:
        """The runtime to open (``auto`` becomes the one that computes it), or why it cannot run."""
        if runtime not in ("auto", self.runtime):
            raise RuntimeUnavailable(
                f"{self.name} is computed by {self.runtime} only (from the {self.build} build); "
                f"not by {runtime}: use runtime {self.runtime} or auto"
            )
        if not any(flag in flags for flag in self.cpu_flags):
            raise RuntimeUnavailable(
                f"this CPU has no {self.name} arithmetic ({' or '.join(self.cpu_flags)}): "
                f"{self.runtime} would compute in float32; use {self.build}"
            )
        return self.runtime


COMPUTED: Mapping[str, ComputedPrecision] = {
    "bf16": ComputedPrecision(
        "bf16", "fp32", "openvino", {"INFERENCE_PRECISION_HINT": "bf16"}, ("AMX_BF16", "AVX512_BF16")
    ),
}
PRECISIONS = BUILD_PRECISIONS + tuple(COMPUTED)


def build_of(precision: str | None) -> str | None:
    """The build a precision runs from (None: the model's default build)."""
    computed = COMPUTED.get(precision or "")
    return computed.build if computed is not None else precision
