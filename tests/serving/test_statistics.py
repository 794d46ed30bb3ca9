"""Triton-style statistics: a request's stages are counted together, batches per size, and a read
sees every update made on the event loop so far."""

from __future__ import annotations

import asyncio
import threading

from edgeinfer.serving.metrics import ServerMetrics
from edgeinfer.serving.statistics import BatchStatistics, Duration, StatisticsRecorder


def test_a_request_adds_one_to_every_stage_and_batches_count_per_size() -> None:
    recorder = StatisticsRecorder()
    recorder.succeeded(input_ns=2_000, queue_ns=500, infer_ns=7_000, output_ns=30)
    recorder.succeeded(input_ns=1_000, queue_ns=-5, infer_ns=7_000, output_ns=20)  # clock skew: 0
    recorder.answered(11_000, ok=True)
    recorder.answered(9_000, ok=True)
    recorder.answered(300, ok=False)
    recorder.batch_ran(2, 7_000)
    recorder.batch_ran(1, 4_000)
    recorder.batch_ran(1, 5_000)
    stats = recorder.snapshot("m", "1")
    assert (stats.name, stats.version) == ("m", "1")
    assert stats.success == Duration(2, 20_000) and stats.fail == Duration(1, 300)
    assert stats.queue == Duration(2, 500)
    assert stats.compute_input == Duration(2, 3_000)
    assert stats.compute_infer == Duration(2, 14_000)
    assert stats.compute_output == Duration(2, 50)
    assert stats.batches == (BatchStatistics(1, Duration(2, 9_000)), BatchStatistics(2, Duration(1, 7_000)))
    assert (stats.inference_count, stats.execution_count) == (4, 3)
    assert stats.last_inference_ms > 0


def test_nothing_run_reads_as_zeros() -> None:
    stats = StatisticsRecorder().snapshot("m", "1")
    assert stats.success == stats.compute_infer == Duration()
    assert (stats.inference_count, stats.execution_count, stats.last_inference_ms, stats.batches) == (
        0,
        0,
        0,
        (),
    )


def test_updates_from_threads_are_not_lost() -> None:
    recorder = StatisticsRecorder()

    def work() -> None:
        for _ in range(2_000):
            recorder.succeeded(1, 1, 1, 1)
            recorder.batch_ran(1, 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = recorder.snapshot("m", "1")
    assert stats.compute_infer == Duration(8_000, 8_000)
    assert stats.execution_count == stats.inference_count == 8_000


def test_a_read_on_the_loop_sees_the_updates_deferred_in_its_step() -> None:
    model = ServerMetrics().for_model("m")

    async def step() -> tuple[int, int]:
        model.on_succeeded(100, 10, 1_000, 5)
        model.on_batch(1, 1_000)
        model.on_answer("http", 1_200, None)
        stats = model.statistics("1")  # same step: the updates are still pending
        return stats.compute_infer.count, stats.success.count

    assert asyncio.run(step()) == (1, 1)
