"""The batcher on plain functions standing in for a runtime (their cost is a sleep we control)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pytest

from edgeinfer.errors import DeadlineExceeded, EdgeInferError, InvalidInput, NotReady, Overloaded
from edgeinfer.serving.batching.batcher import Batcher, retry_after_header
from edgeinfer.serving.batching.settings import BatcherSettings, SplitLanes
from tests.serving.batching.helpers import MS, deadline_in, sample, started

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class SlowModel:
    """Returns each sample's first value times 10; records the batches it saw."""

    def __init__(self, ms_per_batch: float = 5.0) -> None:
        self.seconds = ms_per_batch / 1000
        self.batches: list[list[float]] = []
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        with self.lock:
            self.batches.append([float(v) for v in batch[:, 0]])
        return batch[:, :1] * 10


def test_each_request_gets_its_own_rows_and_busy_time_forms_batches() -> None:
    model = SlowModel(ms_per_batch=20)

    async def main() -> list[np.ndarray]:
        batcher = await started(model, max_batch_size=4, max_queue_delay_us=0, max_queue_size=16)
        model.batches.clear()
        results = await asyncio.gather(*(batcher.infer(sample(i), deadline_in(5_000)) for i in range(9)))
        await batcher.close()
        return results

    results = run(main())
    assert [float(r[0, 0]) for r in results] == [i * 10.0 for i in range(9)]
    assert max(len(b) for b in model.batches) > 1  # requests that arrived while busy ran together
    assert all(len(b) <= 4 for b in model.batches)


def test_queue_runs_earliest_deadline_first() -> None:
    model = SlowModel(ms_per_batch=30)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=8)
        model.batches.clear()
        blocker = asyncio.create_task(batcher.infer(sample(0), deadline_in(5_000)))
        await asyncio.sleep(0.005)  # let the worker take it
        later = [
            asyncio.create_task(batcher.infer(sample(v), deadline_in(ms)))
            for v, ms in ((1, 3000), (2, 1000), (3, 2000))
        ]
        await asyncio.gather(blocker, *later)
        await batcher.close()

    run(main())
    assert model.batches == [[0.0], [2.0], [3.0], [1.0]]


def test_full_queue_is_refused_at_once_with_a_retry_hint() -> None:
    model = SlowModel(ms_per_batch=50)

    async def main() -> tuple[Overloaded, float]:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=2)
        tasks = [asyncio.create_task(batcher.infer(sample(i), deadline_in(10_000))) for i in range(2)]
        await asyncio.sleep(0)
        begin = time.perf_counter()
        with pytest.raises(Overloaded) as caught:
            await batcher.infer(sample(9), deadline_in(10_000))
        elapsed = time.perf_counter() - begin
        await asyncio.gather(*tasks)
        await batcher.close()
        return caught.value, elapsed

    error, elapsed = run(main())
    assert elapsed < 0.01
    assert error.retry_after_s > 0
    assert "max_queue_size 2" in str(error)
    assert retry_after_header(error.retry_after_s) == "1"


def test_request_that_cannot_make_its_deadline_is_refused_before_queueing() -> None:
    model = SlowModel(ms_per_batch=40)

    async def main() -> None:
        batcher = await started(model, max_batch_size=2, max_queue_delay_us=0, max_queue_size=8)
        assert batcher.profile.compute_ns(1) >= 40 * MS
        with pytest.raises(DeadlineExceeded, match="cannot finish before the deadline"):
            await batcher.infer(sample(1), deadline_in(10))
        # with room to spare it runs
        out = await batcher.infer(sample(2), deadline_in(2_000))
        assert float(out[0, 0]) == 20.0
        await batcher.close()

    run(main())


def test_queued_request_whose_deadline_became_impossible_is_failed_not_run() -> None:
    model = SlowModel(ms_per_batch=60)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=8)
        model.batches.clear()
        blocker = asyncio.create_task(batcher.infer(sample(0), deadline_in(5_000)))
        await asyncio.sleep(0.005)
        # Admitted on an optimistic estimate (the profile says 60 ms; 130 ms are left) ...
        ticket = batcher.admit(1, deadline_in(130))
        queued = asyncio.create_task(batcher.run(ticket, sample(1)))
        await asyncio.sleep(0)
        batcher.profile.observe(1, 400 * MS)  # ... then the machine slows down while it waits
        batcher.profile.observe(1, 400 * MS)
        with pytest.raises(DeadlineExceeded, match="its batch needs about"):
            await queued
        await blocker
        await batcher.close()

    run(main())
    assert [1.0] not in model.batches


def test_runtime_failure_fails_the_whole_batch_and_the_batcher_goes_on() -> None:
    calls = {"n": 0}

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:  # warm-up runs sizes 1 and 2, then the first real batch fails
            raise RuntimeError("device lost")
        return batch[:, :1]

    async def main() -> None:
        batcher = await started(flaky, max_batch_size=2, max_queue_delay_us=0, max_queue_size=8)
        with pytest.raises(EdgeInferError, match="inference failed: RuntimeError\\('device lost'\\)"):
            await batcher.infer(sample(1), deadline_in(1_000))
        out = await batcher.infer(sample(5), deadline_in(1_000))
        assert float(out[0, 0]) == 5.0
        await batcher.close()

    run(main())


def test_runtime_returning_the_wrong_number_of_rows_is_an_error() -> None:
    async def main() -> None:
        batcher = Batcher([lambda b: np.zeros((b.shape[0] + 1, 1))], BatcherSettings(2, 0, 4))
        batcher.start()
        with pytest.raises(EdgeInferError, match="returned 2 rows for a batch of 1"):
            await batcher.infer(sample(1), deadline_in(1_000))
        await batcher.close()

    run(main())


def test_idle_runtime_does_not_wait_for_a_batch_to_fill() -> None:
    model = SlowModel(ms_per_batch=2)

    async def main() -> float:
        batcher = await started(model, max_batch_size=8, max_queue_delay_us=500_000, max_queue_size=16)
        begin = time.perf_counter()
        await batcher.infer(sample(1), deadline_in(5_000))
        elapsed = time.perf_counter() - begin
        await batcher.close()
        return elapsed

    assert run(main()) < 0.2  # far below the 500 ms max_queue_delay


def test_close_finishes_admitted_work_then_refuses() -> None:
    model = SlowModel(ms_per_batch=10)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=8)
        tasks = [asyncio.create_task(batcher.infer(sample(i), deadline_in(5_000))) for i in range(4)]
        await asyncio.sleep(0)
        await batcher.close(timeout_s=5)
        assert [float(t.result()[0, 0]) for t in tasks] == [0.0, 10.0, 20.0, 30.0]
        with pytest.raises(NotReady, match="shutting down"):
            batcher.admit(1, deadline_in(1_000))

    run(main())


def test_request_over_max_batch_size_is_invalid() -> None:
    async def main() -> None:
        batcher = Batcher([lambda b: b], BatcherSettings(2, 0, 4))
        batcher.start()
        with pytest.raises(InvalidInput, match="over this model's max_batch_size"):
            batcher.admit(3, deadline_in(1_000))
        await batcher.close()

    run(main())


def test_settings_explain_bad_values() -> None:
    with pytest.raises(ValueError, match=r"max_queue_size .* must be at least max_batch_size"):
        BatcherSettings(max_batch_size=8, max_queue_size=4)


def test_idle_batcher_does_not_trust_a_stale_estimate_from_a_past_burst() -> None:
    model = SlowModel(ms_per_batch=5)

    async def main() -> None:
        batcher = await started(model, max_batch_size=2, max_queue_delay_us=0, max_queue_size=8)
        long_ago = time.monotonic_ns() - 10_000 * MS
        for _ in range(20):  # a burst ten seconds ago left the estimate at 400 ms ...
            batcher.profile.observe(1, 400 * MS, at_ns=long_ago)
        out = await batcher.infer(sample(3), deadline_in(100))  # ... the request still gets to run
        assert float(out[0, 0]) == 30.0
        await batcher.close()

    run(main())


def test_admission_learns_how_late_requests_really_finish() -> None:
    model = SlowModel(ms_per_batch=5)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=8,
                                answer_margin_us=0)  # fmt: skip
        # Room for a busy machine: 5 ms of compute (up to 9 measured) fits 18 ms; 4x it does not.
        batcher.cancel(batcher.admit(1, deadline_in(18)))
        for _ in range(8):  # requests keep taking far longer than estimated (slow preparation)
            ticket = batcher.admit(1, deadline_in(5_000))
            await asyncio.sleep(0.05)
            await batcher.run(ticket, sample(1))
        with pytest.raises(DeadlineExceeded, match="as measured"):
            batcher.admit(1, deadline_in(18))
        await batcher.close()

    run(main())


def test_decoding_and_the_compute_ahead_overlap_in_the_admission_estimate() -> None:
    """Images admitted ahead are decoded while the lanes compute what is queued: a request waits
    for the longer of the two, not their sum (the sum refused requests that would have made it)."""
    model = SlowModel(ms_per_batch=20)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=8,
                                answer_margin_us=0, idle_fast_path=False)  # fmt: skip
        ahead = [batcher.admit(1, deadline_in(5_000)) for _ in range(3)]  # decoding: ~60 ms of compute
        # its own decoding after theirs 60 ms, the compute ahead 3 x c, its own c (c: 20 ms as
        # measured at warm-up, more on a loaded machine): max(60, 3c) + c when the two overlap,
        # 60 + 3c + c if added; the deadline lies halfway between
        compute_ms = batcher.profile.snapshot()[1] / MS
        overlapped, added = max(60, 3 * compute_ms) + compute_ms, 60 + 4 * compute_ms
        ticket = batcher.admit(1, deadline_in((overlapped + added) / 2), prep_ns=60 * MS)
        for claim in [*ahead, ticket]:
            batcher.cancel(claim)
        await batcher.close()

    run(main())


def test_learned_lateness_falls_back_with_time_when_every_request_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused requests teach the batcher nothing, so without time the estimate that refuses them
    would never come down (one huge image made every tight-deadline request a 504 for good)."""
    from edgeinfer.serving.batching import batcher as module

    monkeypatch.setattr(module, "LEARNED_HALF_LIFE_NS", 50 * MS)
    model = SlowModel(ms_per_batch=5)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=8,
                                answer_margin_us=0)  # fmt: skip
        for _ in range(8):  # a slow spell: requests take far longer than estimated
            ticket = batcher.admit(1, deadline_in(5_000))
            await asyncio.sleep(0.05)
            await batcher.run(ticket, sample(1))
        with pytest.raises(DeadlineExceeded, match="as measured"):
            batcher.admit(1, deadline_in(18))
        await asyncio.sleep(0.5)  # ten half-lives with nothing admitted
        batcher.cancel(batcher.admit(1, deadline_in(18)))  # admitted again
        await batcher.close()

    run(main())


class IntervalModel(SlowModel):
    """A SlowModel that also records when each call ran, and on which kind of lane."""

    def __init__(self, kind: str, log: list[tuple[str, float, float]], ms_per_batch: float) -> None:
        super().__init__(ms_per_batch)
        self.kind = kind
        self.log = log

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        begin = time.monotonic()
        out = super().__call__(batch)
        with self.lock:
            self.log.append((self.kind, begin, time.monotonic()))
        return out


def _overlap(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def test_split_lanes_take_a_backlog_side_by_side_and_never_run_with_the_wide_instance() -> None:
    log: list[tuple[str, float, float]] = []
    wide = IntervalModel("wide", log, ms_per_batch=10)
    narrow = IntervalModel("split", log, ms_per_batch=15)
    split = SplitLanes(narrow, lanes=2)

    async def main() -> None:
        batcher = Batcher([wide], BatcherSettings(1, 0, 32), split=split)
        await batcher.warm_up((2,), np.dtype(np.float32), runs=1)
        batcher.start()
        log.clear()
        for value in range(3):  # one at a time: the wide instance, fastest for a single request
            out = await batcher.infer(sample(value), deadline_in(5_000))
            assert float(out[0, 0]) == value * 10
        assert [kind for kind, _, _ in log] == ["wide"] * 3
        log.clear()
        outs = await asyncio.gather(*(batcher.infer(sample(v), deadline_in(5_000)) for v in range(8)))
        assert [float(o[0, 0]) for o in outs] == [v * 10.0 for v in range(8)]
        split_runs = sum(1 for k, _, _ in log if k == "split")
        assert batcher.batches_run() == {"wide": 3, "split": split_runs, "inline": 0}
        await batcher.close()

    run(main())
    splits = [entry for entry in log if entry[0] == "split"]
    assert len(splits) >= 6  # the backlog went to the split lanes ...
    assert any(_overlap(a, b) for i, a in enumerate(splits) for b in splits[i + 1 :])  # ... side by side
    wides = [entry for entry in log if entry[0] == "wide"]
    assert not any(_overlap(w, s) for w in wides for s in splits)  # never both kinds at once


def test_split_lanes_need_a_single_instance_and_two_lanes() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Batcher([lambda b: b, lambda b: b], BatcherSettings(2, 0, 4), split=SplitLanes(lambda b: b, 2))
    with pytest.raises(ValueError, match=">= 2"):
        SplitLanes(lambda b: b, lanes=1)


def test_admission_estimate_counts_the_split_lanes_capacity() -> None:
    wide = SlowModel(ms_per_batch=20)
    narrow = SlowModel(ms_per_batch=20)

    async def main() -> None:
        settings = BatcherSettings(1, 0, 32, answer_margin_us=0)
        batcher = Batcher([wide], settings, split=SplitLanes(narrow, lanes=2))
        await batcher.warm_up((2,), np.dtype(np.float32), runs=1)
        batcher.start()
        tickets = [batcher.admit(1, deadline_in(5_000)) for _ in range(8)]
        per_sample = batcher.per_sample_ns()
        assert 6 * MS < per_sample < 16 * MS  # two 20 ms lanes: about 10 ms per sample
        # In units of the measured per-sample time p (a lane takes 2p for one sample), 8 samples
        # ahead on two lanes are 8p of wait + 2p of its own = 10p, where one lane would need
        # 8 x 2p + 2p = 18p: a deadline of 14p tells them apart however fast this machine sleeps.
        tickets.append(batcher.admit(1, deadline_in(14 * per_sample / MS)))
        with pytest.raises(DeadlineExceeded, match="9 samples ahead"):
            batcher.admit(1, deadline_in(6 * per_sample / MS))  # 9p + 2p needed
        for ticket in tickets:
            batcher.cancel(ticket)
        await batcher.close()

    run(main())


def test_answer_margin_is_kept_in_hand_before_every_deadline() -> None:
    model = SlowModel(ms_per_batch=5)

    async def main() -> None:
        settings = BatcherSettings(max_batch_size=1, max_queue_delay_us=0, answer_margin_us=30_000)
        batcher = Batcher([model], settings)
        await batcher.warm_up((2,), np.dtype(np.float32), runs=1)
        batcher.start()
        with pytest.raises(DeadlineExceeded, match="kept in hand"):
            batcher.admit(1, deadline_in(20))  # 5 ms of compute fits, 5 + 30 does not
        out = await batcher.infer(sample(2), deadline_in(60))
        assert float(out[0, 0]) == 20.0
        await batcher.close()

    run(main())
    with pytest.raises(ValueError, match="answer_margin_us"):
        BatcherSettings(answer_margin_us=-1)


def test_results_that_reach_their_request_late_raise_the_margin() -> None:
    model = SlowModel(ms_per_batch=2)

    async def main() -> None:
        batcher = await started(model, max_batch_size=1, max_queue_delay_us=0, max_queue_size=8)
        busy = True

        async def hog() -> None:  # another task that holds the event loop 20 ms at a time
            while busy:
                await asyncio.sleep(0.001)
                time.sleep(0.02)

        hogging = asyncio.create_task(hog())
        for value in range(12):
            await batcher.infer(sample(value), deadline_in(5_000))
        busy = False
        await hogging
        assert batcher.tail_ns > 2 * MS  # answers resumed well after their batch ended
        await batcher.close()

    run(main())


class GatedModel:
    """Each call records its start and then waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = 0
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.started += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.gate.wait(5)
        with self.lock:
            self.running -= 1
        return batch[:, :1] * 10


@pytest.mark.parametrize("prefetch", [True, False])
def test_busy_split_lanes_get_their_next_batch_before_the_current_one_ends(prefetch: bool) -> None:
    wide, narrow = GatedModel(), GatedModel()

    async def main() -> None:
        wide.gate.set()
        narrow.gate.set()
        settings = BatcherSettings(1, 0, 16, prefetch=prefetch)
        batcher = Batcher([wide], settings, split=SplitLanes(narrow, lanes=2))
        await batcher.warm_up((2,), np.dtype(np.float32), runs=1)
        batcher.start()
        narrow.gate.clear()
        narrow.started = narrow.most_at_once = 0
        tasks = [asyncio.create_task(batcher.infer(sample(v), deadline_in(5_000))) for v in range(6)]
        for _ in range(200):  # until both split lanes are computing (they stay blocked on the gate)
            if narrow.started == 2:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)  # let the workers do what they will with the rest
        assert narrow.started == 2
        # With prefetch each blocked lane's thread already holds its next batch; without, none does.
        assert batcher.batches_run()["split"] == (4 if prefetch else 2)
        narrow.gate.set()
        outs = await asyncio.gather(*tasks)
        assert [float(o[0, 0]) for o in outs] == [v * 10.0 for v in range(6)]
        assert narrow.most_at_once == 2  # never more runs at once than lanes
        await batcher.close()

    run(main())
