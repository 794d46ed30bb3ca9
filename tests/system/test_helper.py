"""The process's helper thread: work shared with it is done once, in place, and nobody waits on it."""

from __future__ import annotations

import threading
import time

import pytest

from edgeinfer.system import helper


def test_share_returns_every_result_in_its_place_and_uses_both_threads() -> None:
    threads: dict[int, str] = {}

    def work(index: int) -> int:
        threads[index] = threading.current_thread().name
        time.sleep(0.01)  # long enough for the helper to start on its share
        return index * index

    assert helper.share(12, work) == [i * i for i in range(12)]
    assert sorted(threads) == list(range(12))  # each item done exactly once
    names = set(threads.values())
    assert threading.current_thread().name in names
    assert any(name.startswith("edgeinfer-helper") for name in names)


def test_one_failing_item_is_its_own_outcome() -> None:
    def work(index: int) -> int:
        if index in (1, 4):
            raise ValueError(f"bad item {index}")
        return index

    outcomes = helper.share(6, work)
    assert [o for o in outcomes if not isinstance(o, Exception)] == [0, 2, 3, 5]
    assert [str(o) for o in outcomes if isinstance(o, Exception)] == ["bad item 1", "bad item 4"]
    assert helper.share(0, work) == []


def test_a_busy_helper_makes_nobody_wait() -> None:
    release = threading.Event()
    blocker = helper._helper().submit(release.wait, 30)
    try:
        time.sleep(0.05)  # the helper is inside release.wait
        threads = set()

        def work(index: int) -> int:
            threads.add(threading.current_thread().name)
            return index

        assert helper.share(5, work) == [0, 1, 2, 3, 4]
        assert not blocker.done()  # returned while the helper was still busy
        assert threads == {threading.current_thread().name}
    finally:
        release.set()
        blocker.result(5)


def test_nothing_is_offered_from_inside_a_share() -> None:
    offered: list[object] = []

    def work(index: int) -> int:
        offered.append(helper.offer(lambda: None))
        return index

    helper.share(4, work)
    assert offered == [None, None, None, None]
    future = helper.offer(lambda: None)  # outside a share the helper takes work again
    assert future is not None
    future.result(5)


def test_an_interrupt_stops_the_helper_taking_more() -> None:
    done: list[int] = []

    def work(index: int) -> int:
        if threading.current_thread() is threading.main_thread() and index > 0:
            raise KeyboardInterrupt
        time.sleep(0.02)
        done.append(index)
        return index

    with pytest.raises(KeyboardInterrupt):
        helper.share(50, work)
    time.sleep(0.1)
    assert len(done) < 10  # the helper finished the item it had and took no other


def test_a_single_item_may_still_offer_its_parts() -> None:
    def work(index: int) -> bool:
        future = helper.offer(lambda: None)
        if future is not None:
            future.result(5)
        return future is not None

    assert helper.share(1, work) == [True]


def test_on_one_core_nothing_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeinfer.system import threads

    monkeypatch.setattr(threads, "_budget", threads.ThreadBudget(total=1))
    assert helper.offer(lambda: None) is None
    names: set[str] = set()

    def work(index: int) -> int:
        names.add(threading.current_thread().name)
        time.sleep(0.005)
        return index

    assert helper.share(6, work) == list(range(6))
    assert names == {threading.current_thread().name}


def test_offered_work_runs_on_the_helper_returns_its_result_and_does_its_own_parts() -> None:
    def work(value: int) -> tuple[str, object, int]:
        return threading.current_thread().name, helper.offer(lambda: None), value * 2

    future = helper.offer(work, 21)
    assert future is not None
    name, offered, doubled = future.result(5)
    assert name.startswith("edgeinfer-helper") and doubled == 42
    assert offered is None  # the helper is busy with it: nothing is offered to itself
    later = helper.offer(lambda: None)  # afterwards the helper takes offers again
    assert later is not None
    later.result(5)


def test_nothing_is_offered_on_one_core_or_from_inside_a_share_whatever_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = helper.share(3, lambda index: helper.offer(lambda: index))
    assert started == [None, None, None]
    from edgeinfer.system import threads

    monkeypatch.setattr(threads, "_budget", threads.ThreadBudget(total=1))
    assert helper.offer(lambda: 1) is None
