"""Core counting and the process-wide thread budget."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import psutil
import pytest

from edgeinfer.errors import Overloaded
from edgeinfer.system import threads
from edgeinfer.system.threads import ThreadBudget, physical_cores, process_budget, usable_cores


def test_usable_cores_are_physical_cores_within_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(threads.CORES_ENV, raising=False)
    cores = usable_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert cores <= physical_cores() == (psutil.cpu_count(logical=False) or os.cpu_count())


def test_sysfs_topology_counts_each_core_once() -> None:
    cpus = threads.affinity_cpus()
    counted = threads._cores_of(cpus)
    if counted is None:
        pytest.skip("no CPU topology in sysfs here")
    assert 1 <= counted <= len(cpus)
    if len(cpus) == os.cpu_count():
        assert counted == psutil.cpu_count(logical=False)
    assert threads._cores_of(cpus[:1]) == 1


def test_environment_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.CORES_ENV, "3")
    assert usable_cores() == 3
    monkeypatch.setenv(threads.CORES_ENV, "0")
    with pytest.raises(ValueError, match=">= 1"):
        usable_cores()
    monkeypatch.setenv(threads.CORES_ENV, "two")
    with pytest.raises(ValueError, match="whole number"):
        usable_cores()


@pytest.mark.parametrize(
    ("text", "cpus"), [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000", 1), ("junk", None)]
)
def test_cgroup_quota(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, cpus: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    monkeypatch.setattr(threads, "_CGROUP_CPU_MAX", cpu_max)
    assert threads._cgroup_quota_cpus() == cpus


def test_default_request_takes_everything_free() -> None:
    budget = ThreadBudget(4)
    first = budget.acquire(None, "a")
    assert first.threads == 4 and not first.clamped and budget.free == 0
    budget.release(first)
    assert budget.free == 4


def test_requests_are_clamped_to_what_is_free_and_never_exceed_the_total() -> None:
    budget = ThreadBudget(4)
    a = budget.acquire(3, "a")
    b = budget.acquire(3, "b")
    assert (a.threads, b.threads) == (3, 1) and b.clamped and not a.clamped
    assert sum(lease.threads for lease in budget.leases) == budget.total
    with pytest.raises(Overloaded, match=r"no CPU threads left for c: all 4 are held by a \(3\), b \(1\)"):
        budget.acquire(1, "c")
    budget.release(a)
    budget.release(a)  # twice is harmless
    assert budget.acquire(None, "c").threads == 3


def test_bad_requests() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ThreadBudget(0)
    with pytest.raises(ValueError, match=">= 1"):
        ThreadBudget(2).acquire(0, "x")


def test_a_lease_returns_when_its_holder_is_garbage_collected() -> None:
    class Holder:
        pass

    budget = ThreadBudget(2)
    holder = Holder()
    release = budget.release_with(holder, budget.acquire(2, "holder"))
    assert budget.free == 0
    del holder
    gc.collect()
    assert budget.free == 2
    release()  # already released: harmless


def test_the_process_budget_is_shared() -> None:
    assert process_budget() is process_budget()
    assert 1 <= process_budget().total <= os.cpu_count()  # type: ignore[operator]
