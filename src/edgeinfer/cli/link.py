"""``edgeinfer link``: run the emulated network path (a TCP proxy) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from edgeinfer.errors import InvalidInput
from edgeinfer.network.link import LinkProxy, new_event_loop, parse_address
from edgeinfer.network.profiles import PROFILES, LinkProfile, get_profile


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "link",
        help="emulate a network path (delay, jitter, bandwidth, loss) as a TCP proxy",
        description=(
            "Forward TCP connections from --listen to --target through an emulated network path. "
            "Start from a built-in profile and override any figure. Profiles: "
            + ", ".join(f"{p.name} ({p.describe().split(': ', 1)[1]})" for p in PROFILES.values())
        ),
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:9000", help="HOST:PORT to accept on (default %(default)s)"
    )
    parser.add_argument("--target", help="HOST:PORT to forward to, e.g. the cloud server 127.0.0.1:8000")
    parser.add_argument("--profile", default="loopback", help="built-in profile: " + ", ".join(PROFILES))
    parser.add_argument("--rtt-ms", type=float, help="round-trip time of a small packet, ms")
    parser.add_argument("--jitter-ms", type=float, help="standard deviation of the round-trip time, ms")
    parser.add_argument("--up-mbps", type=float, help="uplink rate (device to cloud), Mb/s")
    parser.add_argument("--down-mbps", type=float, help="downlink rate (cloud to device), Mb/s")
    parser.add_argument(
        "--loss",
        type=_percent,
        metavar="PCT",
        help="per cent of TCP segments lost (each costs a retransmission timeout), e.g. 0.5",
    )
    parser.add_argument("--seed", type=int, help="seed the jitter and loss draws (reproducible runs)")
    parser.add_argument(
        "--list-profiles", action="store_true", help="print the built-in profiles and sources"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="measure the emulated RTT and rates of the --profile list (e.g. wifi,5g,lte,3g) and exit",
    )
    parser.set_defaults(handler=run)


def _percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"loss must be a percentage in [0, 100), got {text!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"loss must be a percentage in [0, 100), got {text!r}")
    return value


def profile_from_args(args: argparse.Namespace) -> LinkProfile:
    """The profile named by ``--profile`` with any figures given on the command line."""
    return get_profile(args.profile).with_overrides(
        rtt_ms=args.rtt_ms,
        jitter_ms=args.jitter_ms,
        up_mbps=args.up_mbps,
        down_mbps=args.down_mbps,
        loss_pct=args.loss,
    )


def run(args: argparse.Namespace) -> int:
    if args.list_profiles:
        for profile in PROFILES.values():
            print(profile.describe())
            print(f"    source: {profile.source}")
        return 0
    if args.check:
        return _check(args)
    if not args.target:
        raise InvalidInput("--target HOST:PORT is required (where the emulated path leads)")
    profile = profile_from_args(args)
    proxy = LinkProxy(
        profile,
        target=parse_address(args.target, what="--target"),
        listen=parse_address(args.listen, what="--listen"),
        seed=args.seed,
    )
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve(proxy))
    print(json.dumps({"link_stats": proxy.stats.snapshot()}), file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from edgeinfer.network.linkcheck import check_profiles
    from edgeinfer.network.profiles import parse_profiles

    profiles = [
        p.with_overrides(rtt_ms=args.rtt_ms, up_mbps=args.up_mbps, down_mbps=args.down_mbps)
        for p in parse_profiles(args.profile)
    ]
    print(f"{'profile':10s} {'RTT ms':>16s} {'up Mb/s':>18s} {'down Mb/s':>20s}   (target -> measured)")
    results = check_profiles(profiles)
    for r in results:
        up = "-" if r.up_mbps is None else f"{r.up_mbps:g} -> {r.measured_up_mbps:.2f}"
        down = "-" if r.down_mbps is None else f"{r.down_mbps:g} -> {r.measured_down_mbps:.2f}"
        print(f"{r.profile:10s} {f'{r.rtt_ms:g} -> {r.measured_rtt_ms:.2f}':>16s} {up:>18s} {down:>20s}")
    worst = max((abs(e) for r in results for e in r.errors().values()), default=0.0)
    print(f"largest error: {100 * worst:.1f} % (jitter and loss off while measuring)")
    return 0


async def _serve(proxy: LinkProxy) -> None:
    await proxy.start()
    host, port = proxy.address
    target_host, target_port = proxy.target
    print(
        f"edgeinfer link: {host}:{port} -> {target_host}:{target_port} | {proxy.profile.describe()}",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()
