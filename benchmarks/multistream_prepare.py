"""MultiStream queries with their samples prepared on one thread against two (this thread and the
process's helper thread taking them in turn), alternating whole LoadGen runs in one process.

    python benchmarks/multistream_prepare.py --runtime onnxruntime --precision int8 --rounds 6

Each round runs LoadGen's MultiStream (8 samples a query, the bench's 32 JPEG samples) once each
way, in an order that reverses every other round; prints every run's query latency and the
medians over rounds. "one thread" is the harness with sharing off: what it did before.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeinfer.bench.harness import LoadGenHarness, Measurements, Pipeline, WorkItem
from edgeinfer.bench.samples import load_samples
from edgeinfer.bench.scenarios import Expectations, Scenario, ScenarioSettings
from edgeinfer.engine import Engine


class OneThread(Pipeline):
    """The harness's pipeline with sharing turned off."""

    def serve(
        self, items: Sequence[WorkItem], measurements: Measurements, *, shared: bool = False
    ) -> set[int]:
        return super().serve(items, measurements, shared=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per LoadGen run")
    args = parser.parse_args()
    engine = Engine.load("mobilenet_v2", runtime=args.runtime, precision=args.precision)
    engine.warmup((1, 8))
    samples = load_samples(32, encoding="jpeg")
    expect = Expectations(sample_latency_ns=6_000_000, samples_per_s=200.0)
    ways = {"one thread": OneThread, "two threads": Pipeline}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for r in range(args.rounds):
        for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
            settings = ScenarioSettings(
                Scenario.MULTI_STREAM, min_duration_s=args.duration, min_query_count=100
            )
            with tempfile.TemporaryDirectory() as log_dir:
                run = LoadGenHarness(ways[name](engine, samples), settings, Path(log_dir)).run(expect)
            query = run.measurements.query_latency.summary()
            figures[name].append((query.p50_ms, query.p99_ms))
            print(
                f"round {r} {name:11s} query p50 {query.p50_ms:6.2f} ms  p99 {query.p99_ms:6.2f} ms  "
                f"queries {run.measurements.queries}  errors {run.measurements.errors}",
                flush=True,
            )
    medians = {name: np.median(np.array(rows), axis=0) for name, rows in figures.items()}
    for name, (p50, p99) in medians.items():
        print(f"{name:11s} median over rounds: query p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    before, after = medians["one thread"], medians["two threads"]
    print(f"one thread / two threads: p50 {before[0] / after[0]:.2f}x  p99 {before[1] / after[1]:.2f}x")


if __name__ == "__main__":
    main()
