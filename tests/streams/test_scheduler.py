"""Latest-frame slots and fair cross-stream batches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgeinfer.streams.messages import Frame
from edgeinfer.streams.scheduler import FrameScheduler

PIXELS = np.zeros((32, 32, 3), np.uint8)


def frame(stream: str, seq: int) -> Frame:
    now = time.monotonic_ns()
    return Frame(stream, seq, PIXELS, now, time.time_ns(), 0)


def test_a_new_frame_replaces_the_pending_one_and_returns_it_as_dropped() -> None:
    sched = FrameScheduler(["a", "b"], max_batch=4)
    assert sched.put(frame("a", 0)) is None
    dropped = sched.put(frame("a", 1))
    assert dropped is not None and dropped.seq == 0
    assert sched.pending() == 1
    batch = sched.next_batch(0.01)
    assert [(f.stream, f.seq) for f in batch] == [("a", 1)]
    assert sched.next_batch(0.01) == []


def test_a_batch_takes_at_most_one_frame_per_stream() -> None:
    sched = FrameScheduler(["a", "b", "c"], max_batch=8)
    for seq in range(5):
        sched.put(frame("a", seq))
    sched.put(frame("c", 0))
    batch = sched.next_batch(0.01)
    assert sorted((f.stream, f.seq) for f in batch) == [("a", 4), ("c", 0)]


def test_round_robin_serves_every_always_ready_stream_equally() -> None:
    streams = ["fast", "medium", "slow"]
    sched = FrameScheduler(streams, max_batch=1)
    served = dict.fromkeys(streams, 0)
    for seq in range(300):
        sched.put(frame("fast", seq))  # fast refills before every batch
        if seq % 2 == 0:
            sched.put(frame("medium", seq))
        if seq % 3 == 0:
            sched.put(frame("slow", seq))
        for f in sched.next_batch(0.01):
            served[f.stream] += 1
    # "fast" is always ready, yet the others get their turn every time they have a frame
    assert served["slow"] >= 95 and served["medium"] >= 95
    assert sum(served.values()) == 300


def test_with_batches_smaller_than_the_streams_nobody_waits_more_than_its_turn() -> None:
    streams = [f"s{i}" for i in range(5)]
    sched = FrameScheduler(streams, max_batch=2)
    last_served = dict.fromkeys(streams, 0)
    worst_gap = 0
    for round_ in range(1, 101):
        for s in streams:
            sched.put(frame(s, round_))
        for f in sched.next_batch(0.01):
            worst_gap = max(worst_gap, round_ - last_served[f.stream])
            last_served[f.stream] = round_
    assert worst_gap <= 3  # ceil(5 / 2)


def test_next_batch_wakes_when_a_frame_arrives_without_polling() -> None:
    sched = FrameScheduler(["a"], max_batch=1)
    threading.Timer(0.05, lambda: sched.put(frame("a", 0))).start()
    started = time.monotonic()
    batch = sched.next_batch(5.0)
    waited = time.monotonic() - started
    assert len(batch) == 1
    assert 0.03 < waited < 1.0


def test_batch_delay_waits_for_the_other_streams() -> None:
    sched = FrameScheduler(["a", "b"], max_batch=2, max_batch_delay_us=500_000)
    sched.put(frame("a", 0))
    threading.Timer(0.05, lambda: sched.put(frame("b", 0))).start()
    assert sorted(f.stream for f in sched.next_batch(1.0)) == ["a", "b"]


def test_a_stop_request_ends_the_wait_for_more_frames() -> None:
    """A stream that stalls must not hold the others' batch for the whole delay once the run is
    stopping (Ctrl-C, --duration): wake() sends the batch with what it has."""
    sched = FrameScheduler(["a", "stalled"], max_batch=2, max_batch_delay_us=1_000_000)
    sched.put(frame("a", 0))
    threading.Timer(0.05, sched.wake).start()
    started = time.monotonic()
    assert [f.stream for f in sched.next_batch(1.0)] == ["a"]
    assert time.monotonic() - started < 0.5


def test_a_stalled_stream_is_not_waited_for_until_it_delivers_again() -> None:
    sched = FrameScheduler(["a", "quiet"], max_batch=2, max_batch_delay_us=1_000_000)
    sched.stalled("quiet")
    sched.put(frame("a", 0))
    started = time.monotonic()
    assert [f.stream for f in sched.next_batch(1.0)] == ["a"]  # at once, not after the delay
    assert time.monotonic() - started < 0.5
    sched.put(frame("quiet", 0))  # it is back: waited for again
    sched.next_batch(1.0)
    sched.put(frame("a", 1))
    threading.Timer(0.05, lambda: sched.put(frame("quiet", 1))).start()
    assert sorted(f.stream for f in sched.next_batch(1.0)) == ["a", "quiet"]


def test_the_batch_delay_is_at_most_a_second() -> None:
    from edgeinfer.streams.config import PipelineOptions

    with pytest.raises(ValueError, match=r"max_batch_delay_us must be 0\.\.1000000"):
        PipelineOptions(max_batch_delay_us=20_000_000)


def test_exhausted_only_after_every_stream_finished_and_was_drained() -> None:
    sched = FrameScheduler(["a", "b"], max_batch=2)
    sched.put(frame("a", 0))
    sched.finish_stream("a")
    sched.finish_stream("b")
    assert not sched.exhausted
    assert len(sched.next_batch(0.01)) == 1
    assert sched.exhausted


def test_after_close_a_put_frame_comes_back_as_dropped_and_drain_takes_the_rest() -> None:
    sched = FrameScheduler(["a", "b"], max_batch=2)
    sched.put(frame("a", 0))
    sched.close()
    late = frame("b", 0)
    assert sched.put(late) is late
    assert sched.next_batch(0.01) == []
    assert [f.seq for f in sched.drain()] == [0]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        FrameScheduler(["a", "a"], max_batch=1)
    with pytest.raises(ValueError, match="max_batch"):
        FrameScheduler(["a"], max_batch=0)
    with pytest.raises(KeyError):
        FrameScheduler(["a"], max_batch=1).put(frame("zzz", 0))
