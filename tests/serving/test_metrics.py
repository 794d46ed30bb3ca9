"""The server's metrics: updates made on the event loop wait for the end of the loop's step."""

from __future__ import annotations

import asyncio

from edgeinfer.serving.metrics import AfterThisStep, ServerMetrics


def _requests(metrics: ServerMetrics, model: str = "m", protocol: str = "http") -> float:
    value = metrics.registry.get_sample_value(
        "edgeinfer_requests_total", {"model": model, "protocol": protocol}
    )
    return 0.0 if value is None else value


def test_updates_off_the_loop_apply_at_once() -> None:
    done: list[int] = []
    AfterThisStep()(done.append, 1)
    assert done == [1]
    metrics = ServerMetrics()
    metrics.for_model("m").on_request("http")
    assert _requests(metrics) == 1


def test_updates_on_the_loop_apply_after_the_step_in_order() -> None:
    async def main() -> tuple[list[int], list[int]]:
        later = AfterThisStep()
        done: list[int] = []
        for i in range(3):
            later(done.append, i)
        during = list(done)
        await asyncio.sleep(0)
        return during, done

    during, after = asyncio.run(main())
    assert during == [] and after == [0, 1, 2]


def test_the_exposition_includes_updates_still_waiting() -> None:
    async def main() -> tuple[float, bytes]:
        metrics = ServerMetrics()
        model = metrics.for_model("m")
        model.on_request("http")
        model.on_answer("http", 2_000_000, "deadline")
        waiting = _requests(metrics)
        return waiting, metrics.exposition()  # same step: nothing has flushed yet

    waiting, text = asyncio.run(main())
    assert waiting == 0
    assert b'edgeinfer_requests_total{model="m",protocol="http"} 1.0' in text
    assert b'edgeinfer_request_failures_total{kind="deadline",model="m",protocol="http"} 1.0' in text
    assert b'edgeinfer_request_seconds_bucket{le="0.002",model="m",protocol="http"} 1.0' in text
