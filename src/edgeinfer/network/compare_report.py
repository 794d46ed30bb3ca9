"""A comparison run as the shared benchmark report schema (``kind="edge-cloud"``).

Each measured path becomes a :class:`~edgeinfer.bench.report.ConfigurationResult` whose one scenario
holds its latency distribution and stages; ``extra`` carries what is particular to this tool: the
path and profile, bytes per inference, the stage means (server-side ones from the server's
``/metrics``, upload and download modelled from the profile and labelled so), the speed-up
adjustment, the router's decisions. ``settings["crossover"]`` holds the analytical model.
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from edgeinfer import __version__
from edgeinfer.bench.report import (
    BenchReport,
    ConfigurationResult,
    SampleSet,
    ScenarioResult,
    to_json,
    utc_now,
)
from edgeinfer.bench.session import machine_facts
from edgeinfer.bench.stats import LatencySummary, empty_summary, summarize_ns
from edgeinfer.bench.versions import package_versions
from edgeinfer.network.compare import CompareRun, PathResult
from edgeinfer.network.crossover import CrossoverModel

KIND = "edge-cloud"
SPEEDUPS_DRAWN = (1.0, 4.0, 16.0)


def _mean(values: list[int] | list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def stage_means_ms(result: PathResult) -> dict[str, float]:
    """Mean ms per stage: what was timed, and for a path measured alone against a server whose
    ``/metrics`` we read, the round trip split into server stages, modelled upload and download
    (from the profile) and the residual (measured minus both; negative when the model overshoots)."""
    trace = result.trace
    means = {name: statistics.fmean(v) / 1e6 for name, v in trace.stages_ns.items() if v}
    remote = means.pop("remote", None)
    server = result.server
    if remote is None:
        return means
    if server is None or server.request_ms is None:
        means["cloud round trip (measured)"] = remote
        return means
    for name, value in (("server decode+preprocess", server.prepare_ms), ("server queue", server.queue_ms),
                        ("server compute", server.compute_ms)):  # fmt: skip
        if value is not None:
            means[name] = value
    modelled = 0.0
    profile = result.profile
    if profile is not None:
        up = _mean(trace.bytes_sent) or 0.0
        down = _mean(trace.bytes_received) or 0.0
        up_ms = 0.0 if profile.up_mbps is None else up * 8 / (profile.up_mbps * 1e3)
        down_ms = 0.0 if profile.down_mbps is None else down * 8 / (profile.down_mbps * 1e3)
        means["upload (modelled)"] = profile.one_way_delay_ms + up_ms
        means["download (modelled)"] = profile.one_way_delay_ms + down_ms
        modelled = means["upload (modelled)"] + means["download (modelled)"]
    # The server's own clock starts when a request's head arrives, so its request time includes
    # the upload of the body: only its decode, queue and compute are subtracted here.
    server_work = sum(v for v in (server.prepare_ms, server.queue_ms, server.compute_ms) if v is not None)
    means["residual (HTTP, proxy, client)"] = remote - server_work - modelled
    return means


def _server_work_ms(result: PathResult) -> float | None:
    """The server's decode + preprocess + compute per request: what a faster cloud would shorten.
    A tensor upload has no server-side decode (``prepare_ms`` is None): its work is the compute."""
    server = result.server
    if server is None or server.compute_ms is None:
        return None
    return (server.prepare_ms or 0.0) + server.compute_ms


def _configuration(run: CompareRun, result: PathResult) -> ConfigurationResult:
    trace = result.trace
    ok = [ns for ns, failed in zip(trace.latencies_ns, trace.failed, strict=True) if not failed]
    latency = summarize_ns(trace.latencies_ns) if trace.latencies_ns else empty_summary()
    latency = _with_errors(latency, sum(trace.failed))
    stages = {name: summarize_ns(values) for name, values in trace.stages_ns.items() if values}
    count = max(trace.count, 1)
    device_cpu_ms = trace.cpu_ms + float(result.extra.get("server_cpu_ms") or 0.0)  # type: ignore[arg-type]
    scenario = ScenarioResult(
        scenario="SingleStream" if run.settings.load.rate_per_s is None else "Server",
        batch_size=1,
        workers=1,
        samples=trace.count,
        queries=trace.count,
        errors=sum(trace.failed),
        duration_s=trace.duration_s,
        samples_per_s=trace.count / trace.duration_s if trace.duration_s else 0.0,  # completed, as the schema
        queries_per_s=trace.count / trace.duration_s if trace.duration_s else 0.0,
        latency=latency,
        query_latency=latency,
        stages=stages,
        infer_call=stages.get("infer", empty_summary()),
        cpu_ms_per_inference=device_cpu_ms / count,
        resources=None,
        target_qps=run.settings.load.rate_per_s,
        error_messages=tuple(trace.error_messages[:10]),
    )
    extra: dict[str, Any] = {
        "path": result.path,
        "upload": result.upload,
        "profile": asdict(result.profile) if result.profile else None,
        "bytes_sent_per_inference": _mean(trace.bytes_sent),
        "bytes_received_per_inference": _mean(trace.bytes_received),
        "stage_means_ms": stage_means_ms(result),
        "device_cpu_ms_per_inference": device_cpu_ms / count,
        "device_rss_mb": trace.rss_mb,
        "errors_by_kind": dict(trace.errors),
        "router": result.router_stats,
        "served": dict(Counter(d.served_by for d in trace.decisions)),
        "reasons": _reason_counts(result),
        **result.extra,
    }
    if result.server is not None:
        extra["server_work"] = asdict(result.server)
    work = _server_work_ms(result)
    speedup = run.settings.cloud_speedup
    if result.path == "cloud" and work is not None and speedup != 1.0 and trace.latencies_ns:
        saved = work * (1 - 1 / speedup)
        extra["speedup_adjusted"] = {
            "speedup": speedup,
            "saved_ms": saved,
            "mean_ms": latency.mean_ms - saved,
            "p50_ms": latency.p50_ms - saved,
            "p90_ms": latency.p90_ms - saved,
            "p99_ms": latency.p99_ms - saved,
        }
    return ConfigurationResult(
        label=result.label,
        status="ok" if ok else "failed",
        model=run.settings.model,
        runtime=run.edge_runtime if result.path == "edge" else "remote",
        precision=run.settings.precision or "fp32",
        threads=run.settings.threads,
        message="; ".join(trace.error_messages[:3]),
        scenarios=(scenario,),
        extra=extra,
    )


def _with_errors(summary: LatencySummary, errors: int) -> LatencySummary:
    return replace(summary, errors=errors)


def _reason_counts(result: PathResult) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for decision in result.trace.decisions:
        counts[decision.reason.split(":")[0]] += 1
        if decision.fallback:
            counts[f"fallback after {decision.fallback}"] += 1
    return dict(counts.most_common(12))


def policy_comparison(run: CompareRun) -> list[dict[str, Any]]:
    """Per profile: p50/p90/p99 of edge-only, cloud-only and auto, and the router's targets at p90
    (no more than 10 % worse than the better single policy; strictly better than both)."""
    rows = []
    for profile in run.settings.profiles:
        found = {
            r.path: r
            for r in run.results
            if r.profile == profile and r.path in ("edge-only", "cloud-only", "auto")
        }
        if len(found) < 3:
            continue
        p = {path: summarize_ns(r.trace.latencies_ns) for path, r in found.items()}
        best_single = min(p["edge-only"].p90_ms, p["cloud-only"].p90_ms)
        rows.append({
            "profile": profile.name,
            "paired": found["auto"].extra.get("paired"),
            **{f"{path}_{q}_ms": getattr(p[path], f"{q}_ms") for path in p for q in ("p50", "p90", "p99")},
            "auto_vs_best_p90": p["auto"].p90_ms / best_single,
            "within_10_percent": p["auto"].p90_ms <= 1.1 * best_single,
            "strictly_better": p["auto"].p90_ms < best_single,
            "auto_served": dict(Counter(d.served_by for d in found["auto"].trace.decisions)),
            "errors": {path: sum(r.trace.failed) for path, r in found.items()},
        })  # fmt: skip
    return rows


def crossover_model(run: CompareRun) -> CrossoverModel | None:
    """The model's inputs from the measured edge and edge-server paths and the JPEG cloud path."""
    by_path = {r.path: r for r in run.results if r.path in ("edge", "edge-server")}
    edge, local = by_path.get("edge"), by_path.get("edge-server")
    if edge is None or local is None or local.server is None or not edge.trace.latencies_ns:
        return None
    server_ms = sum(
        v or 0.0 for v in (local.server.prepare_ms, local.server.queue_ms, local.server.compute_ms)
    )
    local_ms = statistics.fmean(local.trace.latencies_ns) / 1e6
    return CrossoverModel(
        edge_ms=statistics.fmean(edge.trace.latencies_ns) / 1e6,
        server_ms=server_ms,
        overhead_ms=max(0.0, local_ms - server_ms),
        up_bytes=_mean(local.trace.bytes_sent) or 0.0,
        down_bytes=_mean(local.trace.bytes_received) or 0.0,
    )


def _crossover_settings(run: CompareRun, model: CrossoverModel | None) -> dict[str, Any]:
    if model is None:
        return {}
    speedups = sorted({*SPEEDUPS_DRAWN, run.settings.cloud_speedup})
    rows = []
    for profile in run.settings.profiles:
        rows.append(
            {
                "profile": profile.name,
                "rtt_ms": profile.rtt_ms,
                "up_mbps": profile.up_mbps,
                "down_mbps": profile.down_mbps,
                "predicted_cloud_ms": {f"{s:g}x": model.for_profile(profile, s) for s in speedups},
                "breakeven_up_mbps": {
                    f"{s:g}x": model.breakeven_up_mbps(profile.rtt_ms, s, profile.down_mbps) for s in speedups
                },
            }
        )
    return {
        "model": asdict(model),
        "speedups": speedups,
        "max_rtt_ms": {f"{s:g}x": model.max_rtt_ms(s) for s in speedups},
        "profiles": rows,
    }


def build_report(run: CompareRun, command: tuple[str, ...] = ()) -> BenchReport:
    settings = run.settings
    model = crossover_model(run)
    notes = [
        (
            f"The cloud was a stand-in: edgeinfer serve on this same machine ({run.cloud_url}), reached "
            "through the emulated link; "
            + ("on its own CPUs (below)." if run.cloud_cpus else "its compute ran on the device's own cores.")
        )
        if run.same_machine
        else f"The cloud was the remote server at {run.cloud_url}, reached through the emulated link.",
        (
            f"Cloud compute speed-up {settings.cloud_speedup:g}x applied to the cloud paths' server work "
            "(decode + preprocess + compute, from the server's /metrics; a tensor upload's is its compute "
            "alone) in the columns marked 'adjusted'; the measured figures are shown unchanged beside them. "
            "The policy comparison (edge-only, cloud-only, auto) is as measured: the router's choices are "
            "not replayed at another speed."
        )
        if settings.cloud_speedup != 1.0
        else "No cloud speed-up applied (factor 1): cloud figures are as measured.",
        "Upload and download stages are modelled from the profile (one-way delay + bytes / rate); every "
        "other stage is measured. Requests ran on warm keep-alive connections (the TCP handshake of the "
        "first one is not in the figures).",
        *run.notes,
    ]
    return BenchReport(
        kind=KIND,
        title=f"Edge vs cloud: {settings.model} on {', '.join(p.name for p in settings.profiles)}",
        created_utc=utc_now(),
        edgeinfer_version=__version__,
        command=command or tuple(sys.argv),
        machine=machine_facts(),
        versions=package_versions(),
        settings={
            "model": settings.model,
            "runtime": settings.runtime,
            "edge_runtime": run.edge_runtime,
            "precision": settings.precision or "fp32",
            "threads": settings.threads,
            "load": asdict(settings.load),
            "uploads": list(settings.uploads),
            "policies": list(settings.policies),
            "cloud_url": run.cloud_url,
            "same_machine": run.same_machine,
            "cloud_speedup": settings.cloud_speedup,
            "device_cpus": sorted(run.device_cpus) if run.device_cpus else None,
            "cloud_cpus": sorted(run.cloud_cpus) if run.cloud_cpus else None,
            "bandwidth_cap_mbps": settings.bandwidth_cap_mbps,
            "profiles": [asdict(p) for p in settings.profiles],
            "split": settings.split,
            "crossover": _crossover_settings(run, model),
            "split_points": run.split_points,
            "policy_comparison": policy_comparison(run),
        },
        configurations=tuple(_configuration(run, r) for r in run.results),
        samples=_sample_set(run),
        notes=tuple(notes),
    )


def _sample_set(run: CompareRun) -> SampleSet:
    import hashlib

    digest = hashlib.sha256()
    for data in run.images:
        digest.update(hashlib.sha256(data).digest())
    return SampleSet(
        len(run.images),
        run.settings.seed,
        digest.hexdigest(),
        sum(map(len, run.images)),
        tuple(run.image_names),
        encoding="jpeg",  # load_images: what a camera sends
    )


def write(report: BenchReport, out_dir: Path) -> tuple[Path, Path]:
    """``report.json`` (the shared schema) and ``report.html`` (this tool's page) in ``out_dir``."""
    from edgeinfer.network.compare_html import render

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "report.json", out / "report.html")
    for path, text in zip(paths, (to_json(report), render(report)), strict=True):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return paths
