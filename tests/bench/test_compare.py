"""Configuration matrix, baseline choice and speed-up orientation."""

from __future__ import annotations

import pytest

from edgeinfer.bench.compare import (
    expand,
    pick_baseline,
    precision_name,
    runtime_name,
    skipped,
    speedups,
    with_agreement,
)
from edgeinfer.bench.report import ConfigurationResult, ModelOnly, ScenarioResult
from edgeinfer.bench.stats import summarize_ns


def config(runtime: str, p90_ms: float, offline: float, status: str = "ok") -> ConfigurationResult:
    latency = summarize_ns([int(p90_ms * 1e6)] * 20)
    scenarios = (
        ScenarioResult(
            "SingleStream", 1, 1, 20, 20, 0, 1.0, 20.0, 20.0, latency, latency, {}, latency, None, None
        ),
        ScenarioResult(
            "Offline", 4, 1, 40, 1, 0, 1.0, offline, 1.0, latency, latency, {}, latency, None, None
        ),
    )
    return ConfigurationResult(
        label=f"{runtime}/fp32/t1",
        status=status,
        model="mobilenet_v2",
        runtime=runtime,
        precision="fp32",
        threads=1,
        runtime_resolved=runtime,
        scenarios=scenarios if status == "ok" else (),
        model_only=ModelOnly(1, "runtime.run", latency),
        top1={"a.png": 1, "b.png": 2},
    )


def test_aliases_and_matrix_order() -> None:
    assert runtime_name("ORT") == "onnxruntime" and runtime_name("tflite") == "litert"
    # one table of spellings for every command: the registry's (tune, classify, serve use it too)
    from edgeinfer.runtimes.registry import canonical

    for spelling in ("ort", "onnx", "ov", "tflite", "tf", "tensorflow", "OpenVINO"):
        assert runtime_name(spelling) == canonical(spelling)
    specs = expand("mobilenet_v2", ["ort", "onnxruntime", "keras"], ["fp32", "int8"], [1, None])
    assert [s.label for s in specs] == [
        "onnxruntime/fp32/t1",
        "onnxruntime/fp32/tauto",
        "onnxruntime/int8/t1",
        "onnxruntime/int8/tauto",
        "keras/fp32/t1",
        "keras/fp32/tauto",  # the blog's path is FP32: no Keras "int8" that would run FP32 weights
    ]


@pytest.mark.parametrize(("bad", "message"), [("tensorrt", "unknown runtime"), ("fp8", "unknown precision")])
def test_unknown_names_are_refused(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        expand(
            "m",
            [bad] if message == "unknown runtime" else ["ort"],
            ["fp32"] if bad == "tensorrt" else [bad],
            [1],
        )


def test_keras_is_the_baseline_and_ratios_read_better_above_one() -> None:
    configs = [config("null", 1.0, 900.0), config("onnxruntime", 10.0, 120.0), config("keras", 150.0, 25.0)]
    assert pick_baseline(configs) is configs[2]
    found = {(s.label, s.figure): s for s in speedups(configs)}
    latency = found[("onnxruntime/fp32/t1", "SingleStream p90 latency (ms)")]
    assert latency.ratio == pytest.approx(15.0, rel=1e-2) and latency.baseline == "keras/fp32/t1"
    throughput = found[("onnxruntime/fp32/t1", "Offline samples/s (best batch)")]
    assert throughput.ratio == pytest.approx(120.0 / 25.0)
    assert not any(label.startswith("null/") for label, _ in found)


def test_without_keras_the_first_real_runtime_is_the_baseline() -> None:
    configs = [
        config("null", 1.0, 900.0),
        config("openvino", 9.0, 100.0, status="unavailable"),
        config("onnxruntime", 10.0, 120.0),
    ]
    assert pick_baseline(configs) is configs[2]
    assert speedups(configs) == ()


def test_top1_agreement_with_the_baseline() -> None:
    keras, ort = config("keras", 150.0, 25.0), config("onnxruntime", 10.0, 120.0)
    ort = ConfigurationResult(**{**ort.__dict__, "top1": {"a.png": 1, "b.png": 999}})
    null = ConfigurationResult(**{**config("null", 1.0, 900.0).__dict__, "top1": {"a.png": 0, "b.png": 0}})
    updated = with_agreement([keras, ort, null])
    assert updated[1].extra["top1_agreement_with_baseline"] == 0.5
    assert updated[0].extra == {"baseline": keras.label}  # not "100%": it would only agree with itself
    assert "top1_agreement_with_baseline" not in updated[2].extra  # zeros are not predictions


def test_one_configuration_is_not_compared_with_itself() -> None:
    (only,) = with_agreement([config("onnxruntime", 10.0, 120.0)])
    assert "top1_agreement_with_baseline" not in only.extra


def test_skipped_combinations_are_named_once() -> None:
    assert precision_name(" FP16 ") == "fp16"
    assert skipped(["keras", "tf", "ort"], ["fp32", "int8", "INT8"]) == [
        "keras/int8 is skipped: Keras, the blog's path, runs its FP32 weights only"
    ]
    assert expand("mobilenet_v2", ["keras"], ["int8"], [1]) == []
    # bf16 is a precision to bench (OpenVINO computes it; other runtimes report it unavailable)
    assert precision_name("BF16") == "bf16"
    assert [s.precision for s in expand("mobilenet_v2", ["ov", "ort"], ["bf16"], [1])] == ["bf16", "bf16"]
    assert skipped(["keras"], ["bf16"]) == [
        "keras/bf16 is skipped: Keras, the blog's path, runs its FP32 weights only"
    ]


def test_throughput_against_threads_draws_the_runtime_that_ran() -> None:
    """Under auto, one thread count may have opened OpenVINO and another ONNX Runtime: they are two
    runtimes with one point each, not one line from 1 to 2 threads."""
    from dataclasses import replace

    from edgeinfer.bench import plots

    one = replace(config("auto", 10.0, 100.0), threads=1, runtime_resolved="openvino", label="auto/fp32/t1")
    two = replace(
        config("auto", 10.0, 150.0), threads=2, runtime_resolved="onnxruntime", label="auto/fp32/t2"
    )
    assert plots.throughput_scaling([one, two]) is None  # nothing to draw against threads
    same = replace(two, runtime_resolved="openvino")
    assert plots.throughput_scaling([one, same]) is not None  # one runtime at 1 and 2 threads
