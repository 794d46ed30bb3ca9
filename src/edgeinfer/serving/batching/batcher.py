"""A deadline-aware dynamic batcher wrapping one model's runtime instances.

Life of a request:

1. ``admit`` (at arrival, before any decoding): refuse at once when the queue is full
   (:class:`Overloaded`, with a retry hint) or when the work already ahead of it under EDF plus its
   own compute cannot finish before its deadline (:class:`DeadlineExceeded`).
2. The caller prepares its samples (decode + preprocess, on other threads), then ``run`` puts them in
   the earliest-deadline-first queue and awaits the result. For a lone client (see
   :mod:`edgeinfer.serving.lone_client`) on an idle model, ``run_inline`` instead prepares and
   computes the request on the event-loop thread: nothing could share its batch, and each hop
   between threads is latency that client sees.
3. A worker per lane takes the earliest-deadline requests that fit ``max_batch_size``. It waits
   for more only when more are known to be on their way (admitted, still decoding), never longer
   than ``max_queue_delay_us``, the head's slack, or the time batching would save by the measured
   profile; an idle runtime never waits for nothing.
4. Before running, requests that cannot finish in time by the measured compute time of the batch's
   size, plus the measured lateness of recent answers (``tail_ns``: how much later than the profile
   said results really reached their request, under contention), are failed with
   :class:`DeadlineExceeded` instead of wasting compute, delaying others and answering late.

Under load a split lane's next batch is handed to its thread while the current one runs
(``prefetch``): the thread starts it the moment the current one ends instead of idling while the
event loop (busy with other requests) takes the result and picks the next batch, which cost each
lane about 2 ms per batch at 16 clients.

Lanes: one per runtime instance, all running side by side. With :class:`SplitLanes` the batcher
also has an adaptive shape: one multi-thread instance (the "wide" lane) while few samples wait, and
``lanes`` single-thread runs side by side (the "split" lanes) when more wait, chosen per batch from
the backlog. The two kinds never run at once, so no more compute threads run than the wide instance
holds: a multi-thread runtime is fastest for one image, single-thread runs side by side keep every
core busy under load (its parallel operators leave cores idle at batch 1 and larger batches are no
cheaper per image on small CPUs).

Every pending future is completed on every path (result, error, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from edgeinfer.errors import DeadlineExceeded, EdgeInferError, InvalidInput, NotReady, Overloaded
from edgeinfer.serving.batching.edf_queue import EdfQueue, Pending
from edgeinfer.serving.batching.observer import BatchObserver, NullObserver
from edgeinfer.serving.batching.profile import ComputeProfile
from edgeinfer.serving.batching.settings import BatcherSettings, InferFn, SplitLanes, Ticket

# How fast the learned lateness (_slack, tail_ns) falls back with time alone; see Batcher._relax.
LEARNED_HALF_LIFE_NS = 2_000_000_000


@dataclass
class _Running:
    size: int
    started_ns: int


@dataclass
class _Lane:
    """One thread that runs batches: its function, executor, profile and what it runs now."""

    index: int
    fn: InferFn
    executor: ThreadPoolExecutor
    profile: ComputeProfile
    split: bool
    running: _Running | None = None
    queued: _Running | None = None  # handed to the thread behind ``running`` (split lanes)


class Batcher:
    """Forms batches for one lane per instance (each running ``infer_fns[i]`` on its own thread),
    plus the ``split`` lanes that replace a single wide instance under load."""

    def __init__(
        self,
        infer_fns: Sequence[InferFn],
        settings: BatcherSettings,
        *,
        name: str = "model",
        observer: BatchObserver | None = None,
        split: SplitLanes | None = None,
    ) -> None:
        if not infer_fns:
            raise ValueError("a batcher needs at least one instance")
        if split is not None and len(infer_fns) != 1:
            raise ValueError("split lanes replace a single (multi-thread) instance; give exactly one")
        self.name = name
        self.settings = settings
        self.split = split
        self.profile = ComputeProfile(settings.max_batch_size)
        self.split_profile = ComputeProfile(settings.max_batch_size) if split is not None else None
        self._observer = observer or NullObserver()
        self._queue = EdfQueue()
        self._incoming = 0
        self._seq = 0
        self._lanes = [self._lane(i, fn, self.profile, False) for i, fn in enumerate(infer_fns)]
        if split is not None and self.split_profile is not None:
            first = len(self._lanes)
            self._lanes += [
                self._lane(first + i, split.infer_fn, self.split_profile, True) for i in range(split.lanes)
            ]
        self._workers: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self._accepting = False
        self._closing = False
        self._slack = 1.0  # measured (actual / estimated) time to answer; see _calibrate
        self._margin_ns = settings.answer_margin_us * 1000
        self.tail_ns = 0  # measured lateness of results beyond the profile's compute time; see _learn_tail
        self._learned_ns = 0  # when _slack and tail_ns last moved; see _relax
        self._batch_counts = {"wide": 0, "split": 0, "inline": 0}

    def _lane(self, index: int, fn: InferFn, profile: ComputeProfile, split: bool) -> _Lane:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{self.name}-{index}")
        return _Lane(index, fn, executor, profile, split)

    @property
    def instances(self) -> int:
        """Runtime instances that run side by side (the split lanes replace the one instance)."""
        return sum(1 for lane in self._lanes if not lane.split)

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def batches_run(self) -> dict[str, int]:
        """Batches run so far by kind (``wide``, ``split``, ``inline``: on the loop), for tests and logs."""
        return dict(self._batch_counts)

    @property
    def queued_samples(self) -> int:
        return self._queue.samples

    @property
    def incoming_samples(self) -> int:
        return self._incoming

    def waiting_samples(self) -> float:
        """Admitted samples not yet running (decoding or queued): the queue-depth gauge."""
        return float(self._queue.samples + self._incoming)

    # -- lifecycle ------------------------------------------------------------------------------

    async def warm_up(self, sample_shape: tuple[int, ...], dtype: np.dtype, runs: int = 2) -> None:
        """Run every batch size on every instance; the last run of each size seeds the profile.

        Split lanes run their ``warm_sizes`` all at once, as they will under load, so their profile
        holds the side-by-side cost (and the runtime's memory holds concurrent runs from the start).
        """
        loop = asyncio.get_running_loop()
        for lane in (lane for lane in self._lanes if not lane.split):
            for size in range(1, self.settings.max_batch_size + 1):
                batch = np.zeros((size, *sample_shape), dtype=dtype)
                for _ in range(max(1, runs)):
                    started = time.monotonic_ns()
                    await loop.run_in_executor(lane.executor, lane.fn, batch)
                    elapsed = time.monotonic_ns() - started
                self.profile.observe(size, elapsed)
        split = [lane for lane in self._lanes if lane.split]
        if self.split is None or self.split_profile is None:
            return
        for size in range(1, min(self.split.warm_sizes, self.settings.max_batch_size) + 1):
            batch = np.zeros((size, *sample_shape), dtype=dtype)
            for _ in range(max(1, runs)):
                times = await asyncio.gather(*(self._timed(lane, batch) for lane in split))
            self.split_profile.observe(size, max(times))

    async def _timed(self, lane: _Lane, batch: np.ndarray) -> int:
        started = time.monotonic_ns()
        await asyncio.get_running_loop().run_in_executor(lane.executor, lane.fn, batch)
        return time.monotonic_ns() - started

    def start(self) -> None:
        """Start the workers (from the event loop) and begin admitting requests."""
        if self._workers:
            return
        self._wake = asyncio.Event()
        # A split lane gets a second worker, which hands the thread its next batch while the current
        # one runs, so the thread never waits for the event loop between batches under load.
        self._workers = [
            asyncio.create_task(self._worker(lane), name=f"batcher-{self.name}-{lane.index}-{depth}")
            for lane in self._lanes
            for depth in range(2 if lane.split and self.settings.prefetch else 1)
        ]
        self._accepting = True

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop admitting, finish what was admitted (up to ``timeout_s``), then stop the workers."""
        self._accepting = False
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=timeout_s)
            for task in pending:
                task.cancel()
            for item in self._queue.drain():
                _fail(item, NotReady(f"model {self.name!r} shut down before this request ran"))
        for lane in self._lanes:
            lane.executor.shutdown(wait=False, cancel_futures=True)

    # -- requests -------------------------------------------------------------------------------

    def admit(self, samples: int, deadline_ns: int, prep_ns: int = 0) -> Ticket:
        """Claim queue space for a request of ``samples`` samples, or refuse it at once."""
        if not self._accepting:
            state = "shutting down" if self._closing else "not ready yet"
            raise NotReady(f"model {self.name!r} is {state}")
        if samples < 1:
            raise InvalidInput("a request needs at least one sample (batch dimension >= 1)")
        if samples > self.settings.max_batch_size:
            raise InvalidInput(
                f"a request of {samples} samples is over this model's max_batch_size "
                f"({self.settings.max_batch_size}); split it"
            )
        held = self._queue.samples + self._incoming
        if held + samples > self.settings.max_queue_size:
            self._observer.on_rejected("queue_full")
            retry = self.drain_estimate_s()
            raise Overloaded(
                f"model {self.name!r} is overloaded: {held} samples already waiting "
                f"(max_queue_size {self.settings.max_queue_size}); retry in about {retry:.3f} s",
                retry_after_s=retry,
            )
        now = time.monotonic_ns()
        self._relax(now)
        wait_ns, compute = self._estimate_ns(deadline_ns, now, samples)
        # Decoding (this request's images after those admitted ahead) and the compute queued
        # ahead (which counts those same admitted samples) run at the same time, on the decode
        # pool and the lanes: the request computes once both are done, not after their sum.
        raw_ns = max(prep_ns, wait_ns) + compute
        finish_ns = now + int(raw_ns * self._slack) + self.tail_ns + self._margin_ns
        if finish_ns > deadline_ns:
            self._observer.on_rejected("deadline")
            raise DeadlineExceeded(
                f"cannot finish before the deadline: {(deadline_ns - now) / 1e6:.1f} ms left, about "
                f"{(finish_ns - now) / 1e6:.1f} ms needed (prepare {prep_ns / 1e6:.1f}, "
                f"wait {wait_ns / 1e6:.1f}, compute {compute / 1e6:.1f}, x{self._slack:.2f} "
                f"+ {(self.tail_ns + self._margin_ns) / 1e6:.1f} as measured and kept in hand; "
                f"{held} samples ahead); "
                "allow a longer timeout or retry later"
            )
        self._incoming += samples
        return Ticket(samples, deadline_ns, now, raw_ns, prep_ns)

    def cancel(self, ticket: Ticket) -> None:
        """Give back a ticket whose samples will never come (decoding failed, client left)."""
        if ticket.open:
            ticket.open = False
            self._incoming -= ticket.samples
            if self._wake is not None:
                self._wake.set()

    async def run(self, ticket: Ticket, samples: np.ndarray) -> np.ndarray:
        """Queue the prepared samples of an admitted request and await their output rows."""
        if samples.shape[0] != ticket.samples:
            self.cancel(ticket)
            raise InvalidInput(f"admitted {ticket.samples} samples but got {samples.shape[0]}")
        self.cancel(ticket)  # the claim becomes a queue entry (or nothing)
        now = time.monotonic_ns()
        need = self._fastest_ns(ticket.samples) + self.tail_ns + self._margin_ns
        if now + need > ticket.deadline_ns:
            raise self._late_after_preparing(ticket, now, need)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._seq += 1
        item = Pending(ticket.deadline_ns, self._seq, samples, future, now)
        self._queue.push(item)
        assert self._wake is not None
        self._wake.set()
        result = await future
        ticket.queue_ns, ticket.compute_ns = item.queue_ns, item.compute_ns
        if item.due_ns > 0:
            self._learn_tail(time.monotonic_ns() - item.due_ns)
        if ticket.estimate_ns > 0:
            self._calibrate((time.monotonic_ns() - ticket.admitted_ns) / ticket.estimate_ns)
        return result

    def run_inline(self, ticket: Ticket, prepare: Callable[[], np.ndarray]) -> tuple[np.ndarray, int] | None:
        """Prepare and compute an idle model's request here, on the calling (event-loop) thread.

        Only for a caller that knows no other request can be waiting (a lone client): the loop is
        blocked meanwhile. Returns the output rows and the nanoseconds ``prepare`` took, or ``None``
        (the ticket still open, nothing run) when the model is not idle or its batch would take
        longer than ``inline_max_us``: then the caller prepares and calls ``run``.
        """
        lane = self._idle_lane(ticket)
        if lane is None:
            return None
        size = ticket.samples
        if ticket.prep_ns + lane.profile.compute_ns(size) > self.settings.inline_max_us * 1000:
            return None
        self.cancel(ticket)  # the claim becomes the running batch
        need_ns = lane.profile.compute_ns(size) + self.tail_ns + self._margin_ns
        self._batch_counts["inline"] += 1
        self._observer.on_queued(0)
        job = _InlineJob(prepare, lane.fn, size, ticket.deadline_ns, need_ns)
        lane.running = _Running(size, time.monotonic_ns() + ticket.prep_ns)
        try:
            output = job()
        except EdgeInferError:
            raise
        except Exception as exc:
            raise EdgeInferError(f"inference failed: {exc!r}") from exc
        finally:
            lane.running = None
            if self._wake is not None:
                self._wake.set()
        if job.late:
            raise self._late_after_preparing(ticket, job.prepared_ns, need_ns)
        ticket.queue_ns, ticket.compute_ns = 0, job.done_ns - job.prepared_ns
        wrong_rows = self._measured(lane, output, size, ticket.compute_ns)
        if wrong_rows is not None:
            raise wrong_rows
        if ticket.estimate_ns > 0:
            self._calibrate((time.monotonic_ns() - ticket.admitted_ns) / ticket.estimate_ns)
        return output, job.prepared_ns - job.started_ns

    def latest_prepared_ns(self, ticket: Ticket) -> int:
        """When an admitted request's inputs must be ready for it still to finish in time (its
        fastest run, the answer's tail and the margin before its deadline)."""
        return ticket.deadline_ns - (self._fastest_ns(ticket.samples) + self.tail_ns + self._margin_ns)

    def late_while_preparing(self, ticket: Ticket) -> DeadlineExceeded:
        """Count and describe a request whose inputs were not ready by :meth:`latest_prepared_ns`."""
        now = time.monotonic_ns()
        return self._late_after_preparing(ticket, now, ticket.deadline_ns - self.latest_prepared_ns(ticket))

    def _late_after_preparing(self, ticket: Ticket, now: int, need_ns: int) -> DeadlineExceeded:
        """Count and describe a request whose inputs took so long that it can no longer finish."""
        self._observer.on_deadline_missed()
        return DeadlineExceeded(
            f"request cannot finish before its deadline after preparing its inputs: "
            f"{(ticket.deadline_ns - now) / 1e6:.1f} ms left, running it needs about {need_ns / 1e6:.1f} ms"
        )

    def _measured(self, lane: _Lane, output: np.ndarray, size: int, elapsed_ns: int) -> EdgeInferError | None:
        """Record a batch's compute time; the error to give its requests if the rows are wrong."""
        lane.profile.observe(size, elapsed_ns)
        self._observer.on_batch(size, elapsed_ns)
        if output.shape[0] != size:
            return EdgeInferError(f"the runtime returned {output.shape[0]} rows for a batch of {size}")
        return None

    def _idle_lane(self, ticket: Ticket) -> _Lane | None:
        """A lane that may run ``ticket`` now with nothing else admitted, queued or running."""
        if not self.settings.idle_fast_path:
            return None
        if not (ticket.open and self._accepting) or self._queue.samples or self._incoming != ticket.samples:
            return None
        if any(lane.running is not None for lane in self._lanes):
            return None
        return next((lane for lane in self._lanes if not lane.split), None)

    def _calibrate(self, ratio: float) -> None:
        """Learn how optimistic the admission estimate is (event-loop lag, decode contention...).

        Estimates are multiplied by ``_slack`` from then on. It rises quickly when requests take longer
        than estimated and falls back slowly, so it tracks the late tail rather than the mean.
        """
        rate = 0.2 if ratio > self._slack else 0.01
        self._slack = min(4.0, max(1.0, self._slack + rate * (ratio - self._slack)))
        self._learned_ns = time.monotonic_ns()

    def _relax(self, now_ns: int) -> None:
        """Let ``_slack`` and ``tail_ns`` fall back with time as well as with answers (half-life
        ``LEARNED_HALF_LIFE_NS``): they only learn from requests that were admitted, so after a
        slow spell (a huge image, a burst, a busy machine) an estimate that refuses every request
        with a tight deadline would otherwise never see the evidence to come down again."""
        if self._learned_ns == 0 or now_ns <= self._learned_ns:
            return
        keep = 0.5 ** ((now_ns - self._learned_ns) / LEARNED_HALF_LIFE_NS)
        self._slack = 1.0 + (self._slack - 1.0) * keep
        self.tail_ns = int(self.tail_ns * keep)
        self._learned_ns = now_ns

    def _learn_tail(self, late_ns: int) -> None:
        """Track the late tail of results (resumed request minus the batch's expected end).

        Like ``_slack``: up quickly, down slowly, so it follows roughly the worst few percent. The
        deadline checks keep this much in hand, so an admitted request is answered in time even when
        its batch runs slow (cores shared with decoding, other processes) or the loop is busy.
        """
        late_ns = max(0, late_ns)
        rate = 0.2 if late_ns > self.tail_ns else 0.01
        self.tail_ns = int(min(1e9, self.tail_ns + rate * (late_ns - self.tail_ns)))
        self._learned_ns = time.monotonic_ns()

    async def infer(self, samples: np.ndarray, deadline_ns: int) -> np.ndarray:
        """``admit`` + ``run`` for samples that are ready now."""
        ticket = self.admit(int(samples.shape[0]), deadline_ns)
        return await self.run(ticket, samples)

    def per_sample_ns(self) -> float:
        """Nanoseconds per sample when busy, over all lanes: the model's best drain rate under load
        (the split lanes side by side where the shape is adaptive, else the instances together)."""
        per_sample = self.profile.per_sample_ns() / self.instances
        if self.split is not None and self.split_profile is not None:
            per_sample = min(per_sample, self.split_profile.per_sample_ns() / self.split.lanes)
        return per_sample

    def drain_estimate_s(self) -> float:
        """Seconds until what is waiting now has run: the basis of a Retry-After hint."""
        waiting = self._queue.samples + self._incoming
        return max(0.001, waiting * self.per_sample_ns() / 1e9)

    # -- scheduling -----------------------------------------------------------------------------

    def _fastest_ns(self, samples: int) -> int:
        """The least time a batch of ``samples`` can take on any lane."""
        profiles = [self.profile] if self.split_profile is None else [self.profile, self.split_profile]
        return min(profile.compute_ns(samples) for profile in profiles)

    def _lanes_for(self, backlog: int) -> list[_Lane]:
        """The lanes that serve a backlog of ``backlog`` waiting samples."""
        split = self.split is not None and backlog >= self.split.min_backlog
        return [lane for lane in self._lanes if lane.split == split]

    def _any_running(self, split: bool) -> bool:
        return any(lane.running is not None for lane in self._lanes if lane.split == split)

    def _blocked(self, lane: _Lane) -> bool:
        """Busy, or kept idle because lanes of the other kind are running (the threads are theirs)."""
        if lane.running is not None:
            return True
        return self.split is not None and self._any_running(not lane.split)

    def _may_start(self, lane: _Lane) -> bool:
        """Whether ``lane`` may take a batch now: the shape follows the backlog, kinds never overlap."""
        if lane.running is not None:
            return self._may_queue(lane)
        if self._blocked(lane):
            return False
        if self.split is None:
            return True
        backlog = self._queue.samples + self._incoming
        if lane.split:  # once split, an idle split lane helps out while its sibling still runs
            return backlog >= self.split.min_backlog or self._any_running(True)
        return backlog < self.split.min_backlog

    def _may_queue(self, lane: _Lane) -> bool:
        """Whether a running split lane may take its next batch now, to run right after this one:
        only while every split lane is running (none idle could take it sooner) and samples wait."""
        if not (lane.split and self.settings.prefetch) or lane.queued is not None or not self._queue.samples:
            return False
        return all(o.running is not None for o in self._lanes if o.split)

    def _start_ns(self, lane: _Lane, now: int) -> int:
        """When a batch taken now by ``lane`` would start: now, or after the batch it runs."""
        running = lane.running
        if running is None:
            return now
        return max(now, running.started_ns + lane.profile.compute_ns(running.size))

    def _estimate_ns(self, deadline_ns: int, now: int, samples: int) -> tuple[int, int]:
        """Wait until a new request with this deadline would start (by EDF, the shape the backlog
        will get and the profile) and its own compute time."""
        ahead = self._queue.samples_due_by(deadline_ns) + self._incoming
        lanes = self._lanes_for(ahead + samples)
        profile = lanes[0].profile
        size = profile.best_batch_size(ahead)
        full, rest = divmod(ahead, size)
        work = full * profile.compute_ns(size) + (profile.compute_ns(rest) if rest else 0)
        running_left = 0
        busy = [lane for lane in self._lanes if lane.running is not None]
        if busy and all(self._blocked(lane) for lane in lanes):
            running_left = min(
                max(0, lane.profile.compute_ns(lane.running.size) - (now - lane.running.started_ns))
                + (lane.profile.compute_ns(lane.queued.size) if lane.queued is not None else 0)
                for lane in busy
                if lane.running is not None
            )
        return work // len(lanes) + running_left, profile.compute_ns(samples)

    async def _worker(self, lane: _Lane) -> None:
        while True:
            items = await self._next_batch(lane)
            if items is None:
                return
            await self._execute(lane, items)

    async def _next_batch(self, lane: _Lane) -> list[Pending] | None:
        assert self._wake is not None
        while True:
            head = self._queue.peek()
            if head is None or not self._may_start(lane):
                if head is None and self._closing and self._incoming == 0:
                    return None
                self._wake.clear()
                await self._wake.wait()
                continue
            wait_ns = self._batch_wait_ns(head, lane.profile)
            if wait_ns > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_ns / 1e9)
                continue
            size = lane.profile.best_batch_size(self._share(lane))
            items = [i for i in self._queue.pop_batch(max(size, head.count)) if not i.future.done()]
            items = self._drop_late(items, lane.profile, self._start_ns(lane, time.monotonic_ns()))
            if items:
                return items

    def _share(self, lane: _Lane) -> int:
        """Queued samples this lane may take: split lanes share the queue with their idle siblings."""
        queued = self._queue.samples
        if not lane.split:
            return queued
        idle = sum(1 for o in self._lanes if o.split and o.running is None)
        return -(-queued // max(1, idle))

    def _batch_wait_ns(self, head: Pending, profile: ComputeProfile) -> int:
        """How long to hold a partial batch for samples known to be on their way (0: run now)."""
        size = self.settings.max_batch_size
        queued = self._queue.samples
        if self.settings.max_queue_delay_us == 0 or queued >= size or self._incoming == 0 or self._closing:
            return 0
        now = time.monotonic_ns()
        target = min(size, queued + self._incoming)
        saving = profile.compute_ns(queued) + profile.compute_ns(target - queued) - profile.compute_ns(target)
        oldest = self._queue.oldest_enqueued_ns() or now
        delay_left = oldest + self.settings.max_queue_delay_us * 1000 - now
        slack = head.deadline_ns - now - profile.compute_ns(target)
        return max(0, min(delay_left, slack, saving))

    def _drop_late(self, items: list[Pending], profile: ComputeProfile, start_ns: int) -> list[Pending]:
        """Fail the requests that cannot finish in time at this batch size, starting no sooner than
        ``start_ns``; keep the rest."""
        while items:
            now = max(time.monotonic_ns(), start_ns)
            need = profile.compute_ns(sum(i.count for i in items)) + self.tail_ns + self._margin_ns
            late = [i for i in items if i.deadline_ns < now + need]
            if not late:
                return items
            for item in late:
                self._observer.on_deadline_missed()
                _fail(
                    item,
                    DeadlineExceeded(
                        f"request cannot finish before its deadline: {(item.deadline_ns - now) / 1e6:.1f} ms "
                        f"left, its batch needs about {need / 1e6:.1f} ms"
                    ),
                )
            items = [i for i in items if i.deadline_ns >= now + need]
        return items

    async def _execute(self, lane: _Lane, items: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        batch = items[0].samples if len(items) == 1 else np.concatenate([i.samples for i in items])
        size = int(batch.shape[0])
        started = self._start_ns(lane, time.monotonic_ns())
        mine = _Running(size, started)
        if lane.running is None:
            lane.running = mine
            if lane.split and self.settings.prefetch and self._wake is not None:
                self._wake.set()  # the other split lanes' second workers may queue now
        else:  # runs on the lane's thread right after the batch it runs now
            lane.queued = mine
        for item in items:
            item.queue_ns = started - item.enqueued_ns
            self._observer.on_queued(item.queue_ns)
        due = started + lane.profile.compute_ns(size)
        for item in items:
            item.due_ns = due
        self._batch_counts["split" if lane.split else "wide"] += 1
        try:
            output, thread_started = await loop.run_in_executor(lane.executor, _timed_call, lane.fn, batch)
        except Exception as exc:  # every pending future must hear about it
            error = exc if isinstance(exc, EdgeInferError) else EdgeInferError(f"inference failed: {exc!r}")
            for item in items:
                _fail(item, error)
            return
        finally:
            _finished(lane, mine)
            if self.split is not None and self._wake is not None:
                self._wake.set()  # the other kind of lane may start now, or this one queue again
        # timed from its start on the thread, not its hand-over
        compute_ns = time.monotonic_ns() - thread_started
        wrong_rows = self._measured(lane, output, size, compute_ns)
        if wrong_rows is not None:
            for item in items:
                _fail(item, wrong_rows)
            return
        offset = 0
        for item in items:
            item.compute_ns = compute_ns
            if not item.future.done():
                item.future.set_result(output[offset : offset + item.count])
            offset += item.count


def _timed_call(fn: InferFn, batch: np.ndarray) -> tuple[np.ndarray, int]:
    """On the lane's thread: the output and when the call really started."""
    started = time.monotonic_ns()
    return fn(batch), started


def _finished(lane: _Lane, batch: _Running) -> None:
    """A lane's batch came back: the queued one (already running on the thread) moves up."""
    if lane.running is batch:
        lane.running, lane.queued = lane.queued, None
        if lane.running is not None:
            lane.running.started_ns = time.monotonic_ns()
    elif lane.queued is batch:
        lane.queued = None


class _InlineJob:
    """``run_inline``'s work: prepare, check the deadline, compute."""

    def __init__(self, prepare: Callable[[], np.ndarray], fn: InferFn, size: int, deadline_ns: int,
                 need_ns: int) -> None:  # fmt: skip
        self.prepare, self.fn, self.size = prepare, fn, size
        self.deadline_ns, self.need_ns = deadline_ns, need_ns
        self.started_ns = self.prepared_ns = self.done_ns = 0
        self.late = False

    def __call__(self) -> np.ndarray:
        self.started_ns = time.monotonic_ns()
        samples = self.prepare()
        self.prepared_ns = time.monotonic_ns()
        if samples.shape[0] != self.size:
            raise InvalidInput(f"admitted {self.size} samples but got {samples.shape[0]}")
        if self.prepared_ns + self.need_ns > self.deadline_ns:
            self.late = True
            return samples
        output = self.fn(samples)
        self.done_ns = time.monotonic_ns()
        return output


def _fail(item: Pending, error: BaseException) -> None:
    if not item.future.done():
        item.future.set_exception(error)


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; never say 0."""
    return str(max(1, math.ceil(seconds)))
