"""``Batcher.run_inline``: an idle model runs a lone client's request on the calling thread."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from edgeinfer.errors import DeadlineExceeded, InvalidInput
from edgeinfer.serving.batching.batcher import Batcher
from tests.serving.batching.helpers import MS, deadline_in, sample
from tests.serving.batching.helpers import started as started_on


class Recorder:
    """A model that sleeps and records on which thread each call ran."""

    def __init__(self, ms: float = 5.0) -> None:
        self.seconds = ms / 1000
        self.threads: list[str] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.seconds)
        return batch[:, :1] * 10


class Observed:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.queued: list[int] = []
        self.missed = 0

    def on_batch(self, size: int, compute_ns: int) -> None:
        self.batches.append(size)

    def on_queued(self, queue_ns: int) -> None:
        self.queued.append(queue_ns)

    def on_rejected(self, reason: str) -> None:
        pass

    def on_deadline_missed(self) -> None:
        self.missed += 1


async def started(model: Recorder, observer: Observed | None = None, **settings: object) -> Batcher:
    """The shared helper's batcher, with the warm-up runs forgotten by the model."""
    batcher = await started_on(model, observer, **settings)
    model.threads.clear()
    return batcher


def test_an_idle_model_prepares_and_computes_on_the_calling_thread() -> None:
    model, observed = Recorder(), Observed()
    prepared_on: list[str] = []

    def prepare() -> np.ndarray:
        prepared_on.append(threading.current_thread().name)
        time.sleep(0.002)
        return sample(3)

    async def main() -> tuple[np.ndarray, int] | None:
        batcher = await started(model, observed, max_batch_size=2, max_queue_delay_us=0)
        ticket = batcher.admit(1, deadline_in(1_000))
        result = batcher.run_inline(ticket, prepare)
        assert batcher.incoming_samples == 0 and batcher.queued_samples == 0
        assert batcher.batches_run()["inline"] == 1
        await batcher.close()
        return result

    result = asyncio.run(main())
    assert result is not None
    output, prepare_ns = result
    assert float(output[0, 0]) == 30.0
    assert prepare_ns >= 2 * MS
    here = threading.current_thread().name
    assert prepared_on == model.threads == [here]  # no hop to another thread
    assert observed.batches[-1] == 1 and observed.queued[-1] == 0


def test_a_busy_model_declines_and_the_request_takes_the_queue() -> None:
    model = Recorder(ms=30)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0)
        first = asyncio.create_task(batcher.infer(sample(1), deadline_in(5_000)))
        await asyncio.sleep(0.005)  # the worker runs it now
        ticket = batcher.admit(1, deadline_in(5_000))
        assert batcher.run_inline(ticket, lambda: sample(2)) is None
        assert ticket.open and batcher.incoming_samples == 1  # nothing run, the claim still held
        second = await batcher.run(ticket, sample(2))
        assert float((await first)[0, 0]) == 10.0 and float(second[0, 0]) == 20.0
        assert batcher.batches_run()["inline"] == 0
        await batcher.close()

    asyncio.run(main())


def test_a_slow_model_is_never_run_inline() -> None:
    model = Recorder(ms=20)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, inline_max_us=5_000)  # 20 ms > 5 ms
        ticket = batcher.admit(1, deadline_in(5_000))
        assert batcher.run_inline(ticket, lambda: sample(1)) is None
        assert float((await batcher.run(ticket, sample(1)))[0, 0]) == 10.0
        await batcher.close()

    asyncio.run(main())


def test_a_failing_prepare_frees_the_lane_and_the_next_request_runs() -> None:
    model = Recorder(ms=2)

    def corrupt() -> np.ndarray:
        raise InvalidInput("cannot decode image: not a JPEG")

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0)
        ticket = batcher.admit(1, deadline_in(1_000))
        with pytest.raises(InvalidInput, match="not a JPEG"):
            batcher.run_inline(ticket, corrupt)
        assert batcher.incoming_samples == 0
        assert model.threads == []  # never computed
        out = await batcher.infer(sample(4), deadline_in(1_000))  # the queue path still runs
        assert float(out[0, 0]) == 40.0
        ticket = batcher.admit(1, deadline_in(1_000))
        result = batcher.run_inline(ticket, lambda: sample(5))
        assert result is not None and float(result[0][0, 0]) == 50.0
        await batcher.close()

    asyncio.run(main())


def test_a_prepare_that_eats_the_deadline_is_answered_late_without_computing() -> None:
    model, observed = Recorder(ms=10), Observed()

    def slow_decode() -> np.ndarray:
        time.sleep(0.06)
        return sample(5)

    async def main() -> None:
        batcher = await started(model, observed, max_batch_size=1, max_queue_delay_us=0, answer_margin_us=0)
        ticket = batcher.admit(1, deadline_in(50))  # 10 ms of compute fits 50 ms; 60 + 10 does not
        with pytest.raises(DeadlineExceeded, match="after preparing"):
            batcher.run_inline(ticket, slow_decode)
        assert model.threads == [] and observed.missed == 1
        out = await batcher.infer(sample(6), deadline_in(1_000))  # still serving
        assert float(out[0, 0]) == 60.0
        await batcher.close()

    asyncio.run(main())


def test_the_fast_path_can_be_turned_off() -> None:
    model = Recorder(ms=2)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, idle_fast_path=False)
        ticket = batcher.admit(1, deadline_in(1_000))
        assert batcher.run_inline(ticket, lambda: sample(1)) is None
        assert float((await batcher.run(ticket, sample(1)))[0, 0]) == 10.0
        await batcher.close()

    asyncio.run(main())
