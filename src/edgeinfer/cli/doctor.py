"""``edgeinfer doctor``: what this machine is and which runtimes it has."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from edgeinfer.cli.common import add_repository_arg, repository
from edgeinfer.system.machine import MachineInfo, collect, int8_products_saturate


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor", help="CPU model, cores, ISA flags, RAM, installed runtimes and versions"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_repository_arg(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    info = collect()
    repo = repository(args)
    if args.json:
        payload: dict[str, Any] = {
            **info.to_dict(),
            "int8_weight_bits": _int8_weight_bits(),
            "model_repository": str(repo.root),
        }
        print(json.dumps(payload, indent=2))
        return 0
    _print(info, str(repo.root))
    return 0


def _print(info: MachineInfo, repo_root: str) -> None:
    console = Console()
    bits = _int8_weight_bits()
    machine = Table(title="machine", title_justify="left", show_header=False)
    machine.add_column(style="bold")
    machine.add_column()
    rows = {
        "CPU": f"{info.cpu_model} ({info.architecture})",
        "cores": f"{info.physical_cores} physical, {info.logical_cores} logical, {info.usable_cores} usable "
        f"(CPUs {', '.join(map(str, info.affinity_cpus))})",
        "ISA": ", ".join(info.isa_flags) or "none of note",
        "INT8 builds": f"{bits}-bit weights"
        + (" (int8 products are summed in 16 bits here and would saturate with 8)" if bits < 8 else ""),
        "RAM": f"{info.ram_total_mb / 1024:.1f} GiB ({info.ram_available_mb / 1024:.1f} GiB available)",
        "OS": f"{info.os}, kernel {info.kernel}",
        "Python": info.python_version,
        "models": repo_root,
    }
    for key, value in rows.items():
        machine.add_row(key, value)
    console.print(machine)
    runtimes = Table(title="runtimes", title_justify="left")
    for column in ("runtime", "installed", "version", "formats"):
        runtimes.add_column(column)
    for runtime in info.runtimes:
        runtimes.add_row(
            runtime.name,
            "yes" if runtime.installed else "no",
            runtime.version or "-",
            ", ".join(runtime.formats),
        )
    console.print(runtimes)


def _int8_weight_bits() -> int:
    """What the named INT8 recipes quantize weights to on this CPU (``models/recipes.py``)."""
    return 7 if int8_products_saturate() else 8
