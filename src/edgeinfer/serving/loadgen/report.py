"""Load runs as the benchmark report schema (``report.json`` + ``report.html``, kind ``loadgen``).

Scenario names: ``SingleStream`` (one closed-loop client), ``Concurrent`` (N closed-loop clients,
``workers`` = N) and ``Server`` (open-loop arrivals, ``target_qps`` = the offered rate).
``samples``, ``samples_per_s`` and ``cpu_ms_per_inference`` count every completed request, as the
schema says (a failed one too); ``settings`` adds the answered requests' rate and CPU
(``answered_per_s``, ``cpu_ms_per_answered``), the latency of answered and of failed requests
separately and the errors by kind (an open loop's arrivals the client could not send,
``client_overflow``, are among them and in ``not_sent``, but have no latency).
The server's resources come from sampling its ``/metrics``: ``process_rss_peak_mb`` is the highest
RSS sampled (the kernel's high-water mark is not exported), and ``process_cpu_percent_of_machine``
divides by the server's own cores (``edgeinfer_cpu_cores``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from edgeinfer import __version__
from edgeinfer.bench.report import BenchReport, ConfigurationResult, SampleSet, ScenarioResult, utc_now
from edgeinfer.bench.resources import ResourceSummary
from edgeinfer.bench.samples import samples_digest
from edgeinfer.bench.stats import LatencyRecorder, LatencySummary
from edgeinfer.serving.loadgen.clients import Target
from edgeinfer.serving.loadgen.runner import RunResult
from edgeinfer.serving.loadgen.workload import Sample


def scenario_name(result: RunResult) -> str:
    if result.mode == "open":
        return "Server"
    return "SingleStream" if result.level == 1 else "Concurrent"


def _brief(summary: LatencySummary) -> dict[str, Any]:
    """A summary without its plot points, for the settings dictionary."""
    values = dataclasses.asdict(summary)
    for key in ("cdf", "histogram", "hdr"):
        values.pop(key)
    return values


def scenario_result(result: RunResult) -> ScenarioResult:
    every = result.all_latency.summary()
    duration = max(result.duration_s, 1e-9)
    server = result.server
    resources = None
    if server is not None:
        resources = ResourceSummary(
            duration_s=server.duration_s,
            cpu_ms=server.cpu_ms,
            process_cpu_percent_mean=server.cpu_percent_mean,
            process_cpu_percent_of_machine=server.cpu_percent_mean / (server.cpu_cores or 1),
            system_cpu_percent_per_core_mean=(),
            rss_peak_mb=server.rss_peak_mb,
            rss_steady_mb=server.rss_end_mb,
            process_rss_peak_mb=server.rss_peak_mb,
            samples=len(server.rss_timeline),
        )
    settings: dict[str, Any] = {
        "mode": result.mode,
        "errors_by_kind": dict(result.errors),
        "not_sent": result.unsent,
        "latency_answered": _brief(result.ok_latency.summary()),
        "latency_failed": _brief(result.failed_latency.summary()),
        "send_lag": _brief(result.send_lag.summary()) if result.send_lag.count else None,
        "answered_per_s": result.ok / duration,
        "cpu_ms_per_answered": (server.cpu_ms / result.ok) if server is not None and result.ok else None,
    }
    if result.mode == "closed":
        settings["concurrency"] = int(result.level)
    else:
        settings["offered_qps"] = result.level
    if server is not None:
        settings["server"] = dataclasses.asdict(server)
    return ScenarioResult(
        scenario=scenario_name(result),
        batch_size=1,
        workers=int(result.level) if result.mode == "closed" else 0,
        samples=result.completed,
        queries=result.completed,
        errors=sum(result.errors.values()),
        duration_s=round(result.duration_s, 3),
        samples_per_s=result.completed / duration,
        queries_per_s=result.completed / duration,
        latency=every,
        query_latency=every,
        stages={},
        infer_call=LatencyRecorder().summary(),
        cpu_ms_per_inference=(
            (server.cpu_ms / result.completed) if server is not None and result.completed else None
        ),
        resources=resources,
        target_qps=result.level if result.mode == "open" else None,
        error_messages=tuple(
            f"{kind} x{result.errors[kind]}: {msg}" for kind, msg in result.messages.items()
        ),
        settings=settings,
    )


def build_report(
    target: Target,
    *,
    results: Sequence[RunResult],
    samples: Sequence[Sample],
    settings: dict[str, Any],
    seed: int,
    machine: dict[str, Any],
    versions: dict[str, str],
) -> BenchReport:
    what = "tensor" if samples and samples[0].tensor is not None else "jpeg"
    label = f"{target.transport} {target.endpoint} {what}"
    config = ConfigurationResult(
        label=label,
        status="ok",
        model=target.model,
        runtime=f"server at {target.transport}://{target.host}:{target.port}",
        precision="server's",
        threads=None,
        scenarios=tuple(scenario_result(r) for r in results),
    )
    sample_set = SampleSet(
        count=len(samples),
        seed=seed,
        digest=samples_digest(samples),
        total_bytes=sum(len(s.data) for s in samples),
        names=tuple(s.name for s in samples),
        encoding=samples[0].encoding if samples else "original",  # the images sent (or preprocessed)
    )
    return BenchReport(
        kind="loadgen",
        title=f"edgeinfer loadgen: {target.model} over {target.transport}",
        created_utc=utc_now(),
        edgeinfer_version=__version__,
        command=tuple(sys.argv),
        machine=machine,
        versions=versions,
        settings=settings,
        configurations=(config,),
        samples=sample_set,
        notes=(
            "Latency is measured by the client from sending (closed loop) or from the scheduled arrival "
            "(open loop) to the last byte of the answer; warm-up excluded; errors stay in the latency "
            "figures and are counted by kind.",
            "samples/s and CPU per inference count every completed request, failed ones too (answered "
            "ones alone: settings answered_per_s, cpu_ms_per_answered). Server CPU and RSS come from "
            "the server's /metrics.",
        ),
    )
