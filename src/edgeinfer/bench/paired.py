"""The runtime alone against the whole engine, measured in one loop so both see the same machine.

Measuring the raw runtime call after the scenarios (minutes later) lets a busy neighbour move the
engine-overhead ratio by more than the engine itself adds. Here every round runs, for the same
sample, ``Engine.classify`` on its encoded bytes and the runtime's own ``run`` on its preprocessed
tensor, in alternating order, so load swings hit both sides alike. ``classify`` times its own
decode and preprocess stages, which gives the three parts of the overhead ratio from the same calls;
each round's three parts are summed, so the ratio's p90 compares the p90 of the whole with the p90
of the parts' sum (summing three p90s instead inflates the parts and flatters the engine).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.bench.report import EngineOverhead, ModelOnly
from edgeinfer.bench.results import overhead_of
from edgeinfer.bench.samples import Sample
from edgeinfer.bench.stats import LatencyRecorder
from edgeinfer.errors import EdgeInferError


@dataclass(frozen=True)
class PairedResult:
    model_only: ModelOnly
    overhead: EngineOverhead | None


def measure_paired(
    engine: Any, samples: Sequence[Sample], duration_s: float, *, min_rounds: int = 20
) -> PairedResult | None:
    """Alternate ``engine.classify`` and ``runtime.run`` on the same samples for ``duration_s``.

    Samples the engine refuses (an undecodable image) are left out and counted; None when none is
    left, or nothing is asked."""
    if duration_s <= 0 or not samples:
        return None
    runtime = engine.runtime
    name = runtime.inputs[0].name
    tensors: dict[int, np.ndarray] = {}
    for index, sample in enumerate(samples):
        try:
            tensors[index] = np.stack([engine.preprocess(engine.decode(sample.data))])
        except EdgeInferError:
            continue  # a sample the engine refuses: its errors are counted by the scenarios
    if not tensors:
        return None
    usable = list(tensors)
    raw, e2e = LatencyRecorder(), LatencyRecorder()
    decode, preprocess, parts = LatencyRecorder(), LatencyRecorder(), LatencyRecorder()
    round_parts_ns = [0, 0]  # this round's runtime call, and its decode + preprocess

    def run_raw(index: int) -> None:
        t0 = time.perf_counter_ns()
        runtime.run({name: tensors[index]})
        round_parts_ns[0] = time.perf_counter_ns() - t0
        raw.record(round_parts_ns[0])

    def run_engine(index: int) -> None:
        t0 = time.perf_counter_ns()
        result = engine.classify(samples[index].data)
        e2e.record(time.perf_counter_ns() - t0)
        decode.record(result.timings.decode_ns)
        preprocess.record(result.timings.preprocess_ns)
        round_parts_ns[1] = result.timings.decode_ns + result.timings.preprocess_ns

    runtime.run({name: tensors[usable[0]]})  # warm: the scenarios ran other batch sizes
    engine.classify(samples[usable[0]].data)
    deadline = time.perf_counter_ns() + int(duration_s * 1e9)
    rounds = 0
    while rounds < min_rounds or time.perf_counter_ns() < deadline:
        index = usable[rounds % len(usable)]
        first, second = (run_raw, run_engine) if rounds % 2 == 0 else (run_engine, run_raw)
        first(index)
        second(index)
        parts.record(sum(round_parts_ns))
        rounds += 1
    left_out = len(samples) - len(usable)
    model_only = ModelOnly(batch_size=1, call="runtime.run", latency=raw.summary(), samples_left_out=left_out)
    overhead = overhead_of(
        e2e.summary(),
        model_only.latency,
        decode.summary(),
        preprocess.summary(),
        "paired",
        summed=parts.summary(),
    )
    return PairedResult(model_only, overhead)
