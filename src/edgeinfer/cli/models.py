"""``edgeinfer models``: list, build, import and remove models in the local repository."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeinfer.cli.common import add_repository_arg, repository
from edgeinfer.errors import IntegrityError
from edgeinfer.models.quality import GateSettings
from edgeinfer.models.recipes import INT8_RECIPES, outdated
from edgeinfer.models.repository import CONFIG_FILE, PRECISIONS, ModelRepository, StoredModel
from edgeinfer.models.zoo import ZOO


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "models", help="the model zoo and local repository"
    )
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    listing = commands.add_parser("list", help="zoo models, what is built, formats and sizes")
    listing.add_argument("--verbose", "-v", action="store_true", help="origin, licence and checksums too")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_repository_arg(listing)
    listing.set_defaults(handler=run_list)

    build = commands.add_parser("build", help="build a zoo model into the local repository")
    build.add_argument("name", help=f"one of: {', '.join(sorted(ZOO))}")
    build.add_argument("--precision", "-p", default="fp32", choices=PRECISIONS)
    build.add_argument("--force", action="store_true", help="rebuild even if an intact build exists")
    build.add_argument(
        "--recipe",
        choices=tuple(INT8_RECIPES),
        default=None,
        help="INT8 only: fast (default: every layer it can in int8) or accurate (the first convolution "
        "and the last residual stream in FP32, biases corrected layer by layer: closer to FP32, up to "
        "10%% slower, a build of "
        "1-1.5 minutes); a different recipe from the stored one rebuilds, and so does a build an older "
        "edgeinfer made with an earlier version of its recipe",
    )
    add_repository_arg(build)
    build.set_defaults(handler=run_build)

    remove = commands.add_parser("remove", help="delete a built model")
    remove.add_argument("name")
    remove.add_argument("--precision", "-p", default=None, choices=PRECISIONS, help="default: all builds")
    add_repository_arg(remove)
    remove.set_defaults(handler=run_remove)

    try:
        from edgeinfer.cli import models_import
    except ModuleNotFoundError:
        return
    models_import.register(commands)


def run_build(args: argparse.Namespace) -> int:
    repo = repository(args)
    before = _config_identity(repo, args.name, args.precision)
    stored = repo.build(args.name, args.precision, force=args.force, recipe=args.recipe)
    note = f"; {_quality_text(_build_row(stored))}" if stored.config.quality else ""
    done = "already built" if before is not None and before == _config_identity(
        repo, args.name, args.precision
    ) else "built"  # fmt: skip
    print(
        f"{done} {stored.config.name} {stored.config.precision}: {stored.path} "
        f"({stored.size_bytes / 1e6:.1f} MB{note})"
    )
    return 0


def _config_identity(repo: ModelRepository, name: str, precision: str) -> tuple[int, int] | None:
    """Which stored config file is in place (a build installs a new one)."""
    try:
        found = (repo.model_dir(name, precision) / CONFIG_FILE).stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


def run_remove(args: argparse.Namespace) -> int:
    repository(args).remove(args.name, args.precision)
    print(f"removed {args.name}{' ' + args.precision if args.precision else ''}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    repo = repository(args)
    rows = [_describe(repo, name) for name in repo.names()]
    if args.json:
        print(json.dumps({"repository": str(repo.root), "models": rows}, indent=2))
        return 0
    table = Table(title=escape(f"models ({repo.root})"), title_justify="left")
    for column in ("model", "source", "built", "format", "size MB", "quality"):
        table.add_column(column)
    for row in rows:
        builds = row["builds"]
        table.add_row(
            row["name"],
            row["source"],
            ", ".join(b["precision"] for b in builds) or "-",
            ", ".join(sorted({b["format"] for b in builds})) or "-",
            ", ".join("-" if b["size_mb"] is None else f"{b['size_mb']:.1f}" for b in builds) or "-",
            ", ".join(_quality_text(b) for b in builds if b.get("quality") or b.get("damaged")) or "-",
        )
        if args.verbose:
            for key in ("description", "origin", "license", "weights_sha256"):
                if row.get(key):
                    table.add_row("", escape(f"  {key}: {row[key]}"), "", "", "", "")
            for build in builds:
                table.add_row("", escape(f"  {build['precision']}: {_build_details(build)}"), "", "", "", "")
    Console().print(table)
    return 0


def _build_details(build: dict[str, Any]) -> str:
    """One build's file, checksum and gate settings, for ``--verbose``."""
    if build.get("damaged") and "path" not in build:
        return f"DAMAGED: {build['damaged']}"
    parts = [build["path"], f"sha256 {build['file_sha256']}"]
    quality = build.get("quality")
    if quality:
        parts.append(f"gate: top-1 >= {quality['threshold']:.2%} of decisive held-out images")
    if build.get("recipe"):
        parts.append(f"recipe {build['recipe']}")
    return "; ".join(parts)


def _quality_text(build: dict[str, Any]) -> str:
    if build.get("damaged"):
        return f"{build['precision']}: DAMAGED ({build['damaged']})"
    q = build["quality"]
    verdict = "ok" if q["passed"] else "REFUSED"
    labels = [build["recipe"]] if build.get("recipe") else []
    if build.get("outdated"):
        labels.append("outdated")
    recipe = f" ({', '.join(labels)})" if labels else ""
    every = q.get("all_images_top1_agreement")
    every_text = "" if every is None else f", {every:.2%} of all"
    decisive = f"top-1 {q['top1_agreement']:.2%} of {q['images']} decisive{every_text}"
    return f"{build['precision']}{recipe}: {decisive} vs fp32 ({verdict})"


def _describe(repo: ModelRepository, name: str) -> dict[str, Any]:
    builds: list[StoredModel] = []
    rows: list[dict[str, Any]] = []
    for precision in PRECISIONS:
        try:
            stored = repo.find(name, precision)
        except IntegrityError as exc:  # an unreadable config: listed as damaged, not fatal to the list
            rows.append({"precision": precision, "format": "?", "size_mb": None, "damaged": str(exc)})
            continue
        if stored is not None:
            builds.append(stored)
            rows.append(_build_row(stored))
    entry = ZOO.get(name)
    row: dict[str, Any] = {
        "name": name,
        "source": f"{entry.distribution} {entry.source_version()}" if entry else "imported",
        "builds": rows,
    }
    if entry is not None:
        row.update(
            description=entry.description,
            origin=entry.origin,
            license=entry.license,
            weights_sha256=entry.weights_sha256,
        )
    elif builds:
        provenance = builds[0].config.provenance
        row.update(
            origin=provenance.origin, license=provenance.license, weights_sha256=provenance.source_sha256
        )
    return row


def _build_row(stored: StoredModel) -> dict[str, Any]:
    config = stored.config
    quality = config.quality
    details = config.extra.get("quality", {})  # what the build measured beyond the gate
    # judged as loading it would be now: by the gate's threshold as configured, not as at build time
    threshold = GateSettings.from_env().min_top1_agreement
    try:
        stored.verify()
        damaged = None
    except IntegrityError as exc:
        damaged = str(exc)
    try:
        size_mb: float | None = round(stored.size_bytes / 1e6, 2)
    except OSError:
        size_mb = None
    return {
        "precision": config.precision,
        "format": config.format,
        "path": str(Path(stored.path)),
        "size_mb": size_mb,
        "damaged": damaged,
        "file_sha256": config.file_sha256,
        "recipe": details.get("recipe_name"),
        "outdated": outdated(config),
        "quality": None
        if quality is None
        else {
            "top1_agreement": quality.top1_agreement,
            "top5_overlap": quality.top5_overlap,
            "images": quality.images,
            "all_images_top1_agreement": details.get("all_images_top1_agreement"),
            "threshold": threshold,
            "passed": quality.top1_agreement >= threshold,
            "threshold_at_build": quality.threshold,
        },
    }
