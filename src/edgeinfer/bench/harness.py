"""The system under test that LoadGen drives: encoded image in, labelled prediction out.

LoadGen's query sample library (QSL) is the list of encoded samples, already in memory. Its system
under test (SUT) runs the engine's four stages on each query and reports completion. Every issued
query completes, even when a stage raises: the failure is counted (``errors``) and its latency stays
in the statistics. SingleStream and MultiStream queries are served on LoadGen's thread, one at a time
as those scenarios define (a MultiStream query's samples are prepared by that thread and the
process's helper thread taking them in turn); Server and Offline queries go to a queue served by
``workers`` threads, which batch what is waiting up to ``batch_size`` samples per runtime call.

Latency of a sample is from the moment LoadGen hands the query to the SUT until the SUT reports it
complete, so in Server it includes queueing. Offline issues every sample at once by design, so there
a sample's latency is counted from the moment its batch starts being served.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import mlperf_loadgen as lg
import numpy as np

from edgeinfer.bench.samples import Sample
from edgeinfer.bench.scenarios import Expectations, Scenario, ScenarioSettings, loadgen_settings
from edgeinfer.bench.stats import LatencyRecorder, LatencySummary
from edgeinfer.system.helper import attempt, share

STAGES = ("decode", "preprocess", "infer", "postprocess")
MAX_ERROR_MESSAGES = 5


class PipelineEngine(Protocol):
    """The four stages of :class:`edgeinfer.Engine` that a benchmark drives."""

    def decode(self, source: bytes) -> np.ndarray: ...

    def preprocess(self, rgb: np.ndarray) -> np.ndarray: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def postprocess(self, scores: np.ndarray, top_k: int = 5) -> Sequence[Any]: ...


@dataclass(frozen=True)
class WorkItem:
    """One sample of one query: LoadGen's response id, the sample's index, when it was issued."""

    response_id: int
    index: int
    issued_ns: int


@dataclass
class Measurements:
    """Everything one scenario run records; thread-safe through the recorders and ``lock``."""

    latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    query_latency: LatencyRecorder = field(default_factory=LatencyRecorder)
    stages: dict[str, LatencyRecorder] = field(
        default_factory=lambda: {name: LatencyRecorder() for name in STAGES}
    )
    infer_call: LatencyRecorder = field(default_factory=LatencyRecorder)
    samples: int = 0
    queries: int = 0
    errors: int = 0
    error_messages: list[str] = field(default_factory=list)
    first_issue_ns: int = 0
    last_complete_ns: int = 0
    top1: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note_error(self, exc: BaseException, samples: int) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.errors += samples
            if len(self.error_messages) < MAX_ERROR_MESSAGES and message not in self.error_messages:
                self.error_messages.append(message)

    def note_issue(self, now_ns: int) -> None:
        """One query issued (LoadGen issues one query per call)."""
        with self.lock:
            if self.first_issue_ns == 0:
                self.first_issue_ns = now_ns
            self.queries += 1

    def note_complete(self, now_ns: int, samples: int) -> None:
        with self.lock:
            self.last_complete_ns = max(self.last_complete_ns, now_ns)
            self.samples += samples

    @property
    def duration_s(self) -> float:
        if self.last_complete_ns <= self.first_issue_ns:
            return 0.0
        return (self.last_complete_ns - self.first_issue_ns) / 1e9

    def stage_summaries(self) -> dict[str, LatencySummary]:
        return {name: recorder.summary() for name, recorder in self.stages.items()}


class Pipeline:
    """Runs the stages on a batch of samples and records what each took."""

    def __init__(self, engine: PipelineEngine, samples: Sequence[Sample], top_k: int = 5) -> None:
        self.engine = engine
        self.samples = samples
        self.top_k = top_k

    def serve(
        self, items: Sequence[WorkItem], measurements: Measurements, *, shared: bool = False
    ) -> set[int]:
        """Run ``items`` as one batch; returns the response ids that failed (they are counted).

        ``shared``: this thread and the process's helper thread take the samples in turn to decode
        and preprocess them (for a thread that serves alone, while the other core is idle)."""
        failed: set[int] = set()
        kept: list[WorkItem] = []
        tensors: list[np.ndarray] = []
        stages = measurements.stages

        def prepare(index: int) -> np.ndarray:
            t0 = time.perf_counter_ns()
            rgb = self.engine.decode(self.samples[items[index].index].data)
            t1 = time.perf_counter_ns()
            tensor = self.engine.preprocess(rgb)
            stages["decode"].record(t1 - t0)
            stages["preprocess"].record(time.perf_counter_ns() - t1)
            return tensor

        count = len(items)
        outcomes = share(count, prepare) if shared else [attempt(prepare, i) for i in range(count)]
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Exception):  # a bad sample fails alone; the batch goes on
                measurements.note_error(outcome, 1)
                failed.add(item.response_id)
                continue
            tensors.append(outcome)
            kept.append(item)
        if not kept:
            return failed
        try:
            t0 = time.perf_counter_ns()
            scores = self.engine.infer(np.stack(tensors))
            t1 = time.perf_counter_ns()
            if scores.shape[0] != len(kept):
                raise RuntimeError(f"infer returned {scores.shape[0]} rows for a batch of {len(kept)}")
            measurements.infer_call.record(t1 - t0)
            per_sample_ns = (t1 - t0) // len(kept)
            for item, row in zip(kept, scores, strict=True):
                stages["infer"].record(per_sample_ns)
                t2 = time.perf_counter_ns()
                predictions = self.engine.postprocess(row, self.top_k)
                stages["postprocess"].record(time.perf_counter_ns() - t2)
                if predictions:
                    with measurements.lock:
                        measurements.top1.setdefault(item.index, int(predictions[0].index))
        except Exception as exc:
            measurements.note_error(exc, len(kept))
            failed.update(item.response_id for item in kept)
        return failed


@dataclass(frozen=True)
class HarnessRun:
    """What one LoadGen test gave: our measurements and LoadGen's own summary."""

    measurements: Measurements
    loadgen_summary: dict[str, str]
    log_dir: Path | None
    wall_s: float


class LoadGenHarness:
    """One LoadGen test of ``settings.scenario`` on ``pipeline``'s engine and samples."""

    def __init__(self, pipeline: Pipeline, settings: ScenarioSettings, log_dir: Path) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.log_dir = log_dir
        self._measurements = Measurements()
        self._queue: queue.SimpleQueue[list[WorkItem] | None] = queue.SimpleQueue()
        self._inline = settings.scenario in (Scenario.SINGLE_STREAM, Scenario.MULTI_STREAM)

    def run(self, expect: Expectations, target_qps: float | None = None) -> HarnessRun:
        samples = self.pipeline.samples
        test_settings = loadgen_settings(self.settings, expect, len(samples), target_qps)
        log_settings = lg.LogSettings()
        log_settings.enable_trace = False
        log_settings.log_output.outdir = str(self.log_dir)
        log_settings.log_output.copy_summary_to_stdout = False
        self.log_dir.mkdir(parents=True, exist_ok=True)
        workers = [] if self._inline else self._start_workers()
        sut = lg.ConstructSUT(self._issue, self._flush)
        qsl = lg.ConstructQSL(len(samples), len(samples), _no_op, _no_op)
        started = time.perf_counter_ns()
        try:
            lg.StartTestWithLogSettings(sut, qsl, test_settings, log_settings)
        finally:
            wall_s = (time.perf_counter_ns() - started) / 1e9
            for _ in workers:
                self._queue.put(None)
            for worker in workers:
                worker.join()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        return HarnessRun(self._measurements, read_loadgen_summary(self.log_dir), self.log_dir, wall_s)

    # -- LoadGen callbacks (called on LoadGen's threads) -----------------------------------------

    def _issue(self, query_samples: list[Any]) -> None:
        now = time.perf_counter_ns()
        self._measurements.note_issue(now)
        items = [WorkItem(int(q.id), int(q.index), now) for q in query_samples]
        if self._inline:
            self._complete(items, None)
            return
        if self.settings.scenario is Scenario.OFFLINE:
            size = self.settings.batch_size
            for start in range(0, len(items), size):
                self._queue.put(items[start : start + size])
        else:
            self._queue.put(items)

    def _flush(self) -> None:
        """LoadGen's hint that no more queries follow soon; the workers never hold queries back."""

    # -- serving ---------------------------------------------------------------------------------

    def _start_workers(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._work, name=f"edgeinfer-bench-worker-{i}", daemon=True)
            for i in range(self.settings.workers)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _work(self) -> None:
        offline = self.settings.scenario is Scenario.OFFLINE
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if not offline:  # Server: batch whatever else is already waiting, up to batch_size
                while len(chunk) < self.settings.batch_size:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)  # leave the stop signal for this or another worker
                        break
                    chunk = chunk + more
            self._complete(chunk, time.perf_counter_ns() if offline else None)

    def _complete(self, items: list[WorkItem], latency_from_ns: int | None) -> None:
        """Serve ``items`` and report every one of them to LoadGen, whatever happens."""
        measurements = self._measurements
        failed: set[int] = set()
        try:
            failed = self.pipeline.serve(items, measurements, shared=self._inline)
        except BaseException as exc:
            measurements.note_error(exc, len(items))
            failed = {item.response_id for item in items}
            raise
        finally:
            done = time.perf_counter_ns()
            lg.QuerySamplesComplete([lg.QuerySampleResponse(item.response_id, 0, 0) for item in items])
            for item in items:
                start = item.issued_ns if latency_from_ns is None else latency_from_ns
                measurements.latency.record(done - start, error=item.response_id in failed)
            if latency_from_ns is None:
                _record_queries(items, done, failed, measurements.query_latency)
            measurements.note_complete(done, len(items))


def _record_queries(items: list[WorkItem], done_ns: int, failed: set[int], recorder: LatencyRecorder) -> None:
    """One query latency per distinct issue time (a Server batch may hold several queries)."""
    by_issue: dict[int, bool] = {}
    for item in items:
        by_issue[item.issued_ns] = by_issue.get(item.issued_ns, False) or item.response_id in failed
    for issued_ns, had_error in by_issue.items():
        recorder.record(done_ns - issued_ns, error=had_error)


def read_loadgen_summary(log_dir: Path) -> dict[str, str]:
    """``key: value`` lines of ``mlperf_log_summary.txt`` (results and additional stats). A key
    with no value on its line (``Early Stopping Result:``, ``Recommendations:``) takes the
    ``* ...`` lines under it, joined: LoadGen's reasons and advice for an INVALID run."""
    path = log_dir / "mlperf_log_summary.txt"
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    heading: str | None = None
    for line in text.splitlines():
        if line.startswith("Test Parameters Used"):
            break
        stripped = line.strip()
        if stripped.startswith("*"):
            if heading is not None:
                item = stripped.lstrip("* ").strip()
                fields[heading] = f"{fields[heading]} {item}".strip()
            continue
        key, sep, value = line.partition(":")
        heading = None
        if sep and key.strip() and not value.strip():
            heading = key.strip()
            fields.setdefault(heading, "")
        elif sep and key.strip() and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return {key: value for key, value in fields.items() if value}


def _no_op(_: list[int]) -> None:
    """QSL load/unload: the samples are always in memory."""
