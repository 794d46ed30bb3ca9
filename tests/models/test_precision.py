"""Precisions: builds, and bf16 computed by OpenVINO from the FP32 build where the CPU can."""

from __future__ import annotations

import pytest

from edgeinfer.errors import RuntimeUnavailable
from edgeinfer.models.precision import BUILD_PRECISIONS, COMPUTED, PRECISIONS, build_of

BF16 = COMPUTED["bf16"]


def test_every_precision_runs_from_a_build() -> None:
    assert PRECISIONS == ("fp32", "fp16", "int8", "bf16")
    assert [build_of(p) for p in PRECISIONS] == ["fp32", "fp16", "int8", "fp32"]
    assert build_of(None) is None
    assert all(build_of(p) in BUILD_PRECISIONS for p in PRECISIONS)


def test_bf16_runs_on_openvino_where_the_cpu_has_bfloat16_arithmetic() -> None:
    assert BF16.check("auto", ("AVX2", "AMX_BF16")) == "openvino"
    assert BF16.check("openvino", ("AVX512_BF16",)) == "openvino"
    assert BF16.runtime_options == {"INFERENCE_PRECISION_HINT": "bf16"}


@pytest.mark.parametrize(
    ("runtime", "flags", "message"),
    [
        ("onnxruntime", ("AMX_BF16",), "computed by openvino only"),
        ("litert", ("AMX_BF16",), "use runtime openvino or auto"),
        ("openvino", ("AVX2", "AVX512_VNNI"), "this CPU has no bf16 arithmetic"),
        ("auto", (), "openvino would compute in float32; use fp32"),
    ],
)
def test_bf16_elsewhere_is_unavailable_with_the_reason(
    runtime: str, flags: tuple[str, ...], message: str
) -> None:
    with pytest.raises(RuntimeUnavailable, match=message):
        BF16.check(runtime, flags)
