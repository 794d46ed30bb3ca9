"""How many cores this process may use, and a process-wide budget of compute threads.

The rule: every runtime that computes (ONNX Runtime, OpenVINO, LiteRT, Keras) takes a
:class:`ThreadLease` from the process's :class:`ThreadBudget` when it loads and gives it back
when it closes. The budget holds one thread per usable physical core (:func:`usable_cores`).

- ``threads=None`` (the default) asks for every thread still free.
- ``threads=n`` asks for ``n``; a request above what is free is clamped to what is free
  (the lease says so in ``clamped``).
- When nothing is free the request fails with :class:`~edgeinfer.errors.Overloaded`, whose message
  says how to fix it: close the other runtime or give each one fewer threads. So two runtimes
  in one process never run more compute threads than there are cores.

``EDGEINFER_CORES`` overrides the budget's size (for example to leave a core to the decoder).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeinfer.errors import Overloaded

CORES_ENV = "EDGEINFER_CORES"
_SYSFS_CPU = Path("/sys/devices/system/cpu")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def affinity_cpus() -> tuple[int, ...]:
    """Logical CPU ids this process may run on (all of them where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def physical_cores() -> int:
    """Physical cores in the machine (logical CPUs where the count is unknown)."""
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a core dependency
        count = None
    return count or os.cpu_count() or 1


def usable_cores() -> int:
    """Physical cores this process may use: affinity, cgroup CPU quota and ``EDGEINFER_CORES`` applied.

    Hyper-threads of one core count once. The result is at least 1.
    """
    override = os.environ.get(CORES_ENV)
    if override:
        try:
            value = int(override)
        except ValueError as exc:
            raise ValueError(f"{CORES_ENV} must be a whole number of cores, got {override!r}") from exc
        if value < 1:
            raise ValueError(f"{CORES_ENV} must be >= 1, got {value}")
        return value
    cpus = affinity_cpus()
    cores = _cores_of(cpus)
    if cores is None:
        cores = min(physical_cores(), len(cpus))
    quota = _cgroup_quota_cpus()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _cores_of(cpus: tuple[int, ...]) -> int | None:
    """Distinct (package, core) pairs among ``cpus`` from sysfs; None where sysfs does not say."""
    seen: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = _SYSFS_CPU / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return None
        seen.add((package, core))
    return len(seen) or None


def _cgroup_quota_cpus() -> int | None:
    """Whole CPUs allowed by a cgroup v2 quota (``cpu.max``), rounded up; None where unlimited."""
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class ThreadLease:
    """Threads handed to one runtime; give them back with :meth:`ThreadBudget.release`."""

    owner: str
    threads: int
    requested: int | None
    lease_id: int

    @property
    def clamped(self) -> bool:
        """True when the runtime got fewer threads than it asked for."""
        return self.requested is not None and self.threads < self.requested


class ThreadBudget:
    """Hands out compute threads so the runtimes of one process never oversubscribe the cores."""

    def __init__(self, total: int | None = None) -> None:
        self.total = usable_cores() if total is None else total
        if self.total < 1:
            raise ValueError(f"a thread budget needs at least 1 thread, got {self.total}")
        self._lock = threading.Lock()
        self._leases: dict[int, ThreadLease] = {}
        self._next_id = 1

    @property
    def free(self) -> int:
        with self._lock:
            return self.total - sum(lease.threads for lease in self._leases.values())

    @property
    def leases(self) -> tuple[ThreadLease, ...]:
        with self._lock:
            return tuple(self._leases.values())

    def acquire(self, requested: int | None, owner: str) -> ThreadLease:
        """Threads for ``owner``: all free ones for ``None``, else ``requested`` clamped to the free ones."""
        if requested is not None and requested < 1:
            raise ValueError(f"threads must be >= 1 (or None for all free cores), got {requested}")
        with self._lock:
            free = self.total - sum(lease.threads for lease in self._leases.values())
            if free < 1:
                holders = ", ".join(f"{lease.owner} ({lease.threads})" for lease in self._leases.values())
                raise Overloaded(
                    f"no CPU threads left for {owner}: all {self.total} are held by {holders}; "
                    "close one of those runtimes or load each with fewer threads (threads=1)"
                )
            granted = free if requested is None else min(requested, free)
            lease = ThreadLease(owner=owner, threads=granted, requested=requested, lease_id=self._next_id)
            self._next_id += 1
            self._leases[lease.lease_id] = lease
            return lease

    def release(self, lease: ThreadLease) -> None:
        """Give a lease back; releasing twice is harmless."""
        with self._lock:
            self._leases.pop(lease.lease_id, None)

    def release_with(self, holder: object, lease: ThreadLease) -> Callable[[], object]:
        """Release ``lease`` when ``holder`` is garbage-collected; call the result to release it now."""
        return weakref.finalize(holder, self.release, lease)


_budget: ThreadBudget | None = None
_budget_lock = threading.Lock()


def process_budget() -> ThreadBudget:
    """The one budget shared by every runtime in this process."""
    global _budget
    with _budget_lock:
        if _budget is None:
            _budget = ThreadBudget()
        return _budget
