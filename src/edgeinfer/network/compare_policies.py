"""Edge-only, cloud-only and ``auto`` on the same link: the hybrid router's targets, measured fairly.

Closed loop, the three take turns request by request (:func:`~edgeinfer.network.drive.drive_paired`),
so a busy moment of the shared machine falls on all of them alike. Open loop (``--rate``), each
gets the whole offered load in turn, with the same seeded arrival times, because a queue only
forms when one policy carries all of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgeinfer.network.backends import CloudBackend, EdgeBackend, Engineish
from edgeinfer.network.client import KServeClient
from edgeinfer.network.compare import MEASURE_TIMEOUT_MS, CompareRun, PathResult, drive_router, target_of
from edgeinfer.network.drive import Trace, drive_paired
from edgeinfer.network.processes import LinkProcess, ServerProcess, ServerWork
from edgeinfer.network.profiles import LinkProfile
from edgeinfer.network.router import HybridRouter, Policy, RouterSettings

POLICY_PATHS: dict[Policy, str] = {"edge": "edge-only", "cloud": "cloud-only", "auto": "auto"}


def run_policy_paths(run: CompareRun, engine: Engineish, local: ServerProcess, logs: Path) -> None:
    for profile in run.settings.profiles:
        before = local.metrics() if run.same_machine else None
        if run.settings.load.rate_per_s is None:
            with _link(run, profile, logs, "paired") as link:
                routers = [
                    _router(run, engine, link.url, p, profile=profile, logs=logs) for p in POLICY_PATHS
                ]
                traces = asyncio.run(_paired(routers, run))
        else:  # each policy on a fresh link: a queue left by the one before must not be inherited
            routers, traces = [], []
            for policy in POLICY_PATHS:
                with _link(run, profile, logs, policy) as link:
                    routers.append(_router(run, engine, link.url, policy, profile=profile, logs=logs))
                    traces.append(drive_router(routers[-1], run.images, run.settings.load))
        server = ServerWork.between(before, local.metrics()) if before is not None else None
        for router, trace in zip(routers, traces, strict=True):
            path = POLICY_PATHS[router.settings.policy]
            upload = None if path == "edge-only" else "jpeg"
            result = PathResult(path, trace, profile, upload, None, router.stats.as_dict())
            result.extra["paired"] = run.settings.load.rate_per_s is None
            result.extra["cloud_estimate"] = router.cloud_estimate.snapshot().__dict__
            if server is not None:
                result.extra["server_work_all_policies"] = server.__dict__
            run.results.append(result)


def _link(run: CompareRun, profile: LinkProfile, logs: Path, name: str) -> LinkProcess:
    link = LinkProcess(
        profile,
        target_of(run.cloud_url),
        logs / f"link-{name}-{profile.name}.log",
        seed=run.settings.seed,
        cpus=run.cloud_cpus,
    )
    try:
        link.wait_ready()
    except BaseException:
        link.stop()
        raise
    return link


def _router(
    run: CompareRun, engine: Engineish, url: str, policy: Policy, *, profile: LinkProfile, logs: Path
) -> HybridRouter:
    settings = RouterSettings(
        policy=policy,
        bandwidth_cap_mbps=run.settings.bandwidth_cap_mbps if policy == "auto" else None,
        cloud_timeout_ms=MEASURE_TIMEOUT_MS if policy == "cloud" else RouterSettings().cloud_timeout_ms,
    )
    edge = EdgeBackend(engine) if policy != "cloud" else None
    cloud = CloudBackend(KServeClient(url), run.settings.model) if policy != "edge" else None
    log = logs / f"decisions-{policy}-{profile.name}.jsonl" if policy == "auto" else None
    return HybridRouter(settings, edge, cloud, log_path=log)


async def _paired(routers: list[HybridRouter], run: CompareRun) -> list[Trace]:
    for router in routers:
        await router.start()
    try:
        return await drive_paired(routers, run.images, run.settings.load)
    finally:
        for router in routers:
            await router.close()
