"""Edge-only and ``auto`` in alternating open-loop windows, in one process, on one emulated profile.

``edgeinfer compare`` runs the policies one after the other under overload; on a shared machine the
device's speed can drift between those windows. This runs them as E A E A ... (and ``C``: ``auto``
with a bandwidth cap so small that nothing is offloaded, i.e. the router's own machinery alone),
each on a fresh link, and prints per window the device's CPU per inference and stage means, so a
slower window can be told from a slower policy.

    flock /tmp/cpu.lock python benchmarks/network/alternate_windows.py --profile 3g --order EACEAE

The device (this process) runs on CPU 0, the stand-in cloud server and the link on CPU 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from edgeinfer.engine.engine import Engine
from edgeinfer.network.backends import CloudBackend, EdgeBackend
from edgeinfer.network.client import KServeClient
from edgeinfer.network.compare import drive_router, load_images
from edgeinfer.network.drive import Load, Trace
from edgeinfer.network.processes import LinkProcess, ServerProcess
from edgeinfer.network.profiles import PROFILES
from edgeinfer.network.router import HybridRouter, RouterSettings

DEVICE_CPUS, CLOUD_CPUS = {0}, {1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="3g", choices=sorted(PROFILES))
    parser.add_argument(
        "--order", default="EAEA", help="windows: E edge-only, A auto, C auto offloading nothing"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="Poisson arrivals per second")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of arrivals per window")
    parser.add_argument("--seed", type=int, default=0, help="arrival seed, the same for every window")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="alternate-"))
    os.sched_setaffinity(0, DEVICE_CPUS)
    images, _ = load_images(10, 0)
    profile = PROFILES[args.profile]
    print(f"profile {args.profile}, {args.rate:g}/s for {args.duration:g} s a window, logs in {logs}")
    with (
        ServerProcess(
            "mobilenet_v2", logs / "server.log", runtime="onnxruntime", threads=1, cpus=CLOUD_CPUS
        ) as server,
        Engine.load("mobilenet_v2", runtime="onnxruntime", threads=1) as engine,
    ):
        server.wait_ready()
        for index, kind in enumerate(args.order):
            target = ("127.0.0.1", server.port)
            with LinkProcess(profile, target, logs / f"link-{index}.log", seed=0, cpus=CLOUD_CPUS) as link:
                link.wait_ready()
                offload = kind in "AC"
                settings = RouterSettings(
                    policy="auto" if offload else "edge", bandwidth_cap_mbps=1e-6 if kind == "C" else None
                )
                cloud = CloudBackend(KServeClient(link.url), "mobilenet_v2") if offload else None
                router = HybridRouter(settings, EdgeBackend(engine), cloud)
                # The same seeded arrivals (times and images) in every window: under overload the p90
                # follows the number of arrivals, so windows are compared on identical traffic.
                load = Load(args.duration, rate_per_s=args.rate, seed=args.seed)
                trace = drive_router(router, images, load)
                print(kind, summary(trace), flush=True)


def summary(trace: Trace) -> str:
    latencies = sorted(trace.latencies_ns)
    p50, p90 = latencies[len(latencies) // 2] / 1e6, latencies[int(len(latencies) * 0.9)] / 1e6
    stages = {
        name: round(statistics.mean(values) / 1e6, 2)
        for name, values in trace.stages_ns.items()
        if name in ("decode", "preprocess", "infer")
    }
    served: dict[str, int] = {}
    for decision in trace.decisions:
        served[decision.served_by] = served.get(decision.served_by, 0) + 1
    return (
        f"n {trace.count} p50 {p50:.0f} ms p90 {p90:.0f} ms, device CPU {trace.cpu_ms / trace.count:.1f} ms "
        f"per inference, window {trace.duration_s:.1f} s, stage means ms {stages}, served {served}"
    )


if __name__ == "__main__":
    main()
