"""The terminal side of a run: a rich progress display while it runs, tables when it is done.

rich reads ``[...]`` as markup, so every text that comes from the user or from an error (labels,
which hold the model name, messages, paths) goes through :func:`escape` first.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from edgeinfer.bench.loading import ConfigurationSpec
from edgeinfer.bench.report import BenchReport, ConfigurationResult
from edgeinfer.bench.results import overhead_p90


class RichProgress:
    """A :class:`~edgeinfer.bench.session.SessionProgress` drawing one bar over the configurations."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def started(self, spec: ConfigurationSpec, index: int, total: int) -> None:
        if self._task is None:
            self._task = self._progress.add_task("bench", total=total, label=escape(spec.label), phase="")
        self._progress.update(self._task, completed=index, label=escape(spec.label), phase="starting")

    def phase(self, spec: ConfigurationSpec, text: str) -> None:
        self._progress.update(self._task, phase=escape(text))

    def finished(self, result: ConfigurationResult) -> None:
        self._progress.advance(self._task)
        if result.status == "ok":
            ss = result.scenario("SingleStream")
            detail = f"SingleStream p90 {ss.latency.p90_ms:.2f} ms" if ss else "done"
            self.console.print(f"[green]✓[/] {escape(result.label)}: {detail}")
        else:
            self.console.print(
                f"[yellow]–[/] {escape(result.label)}: {result.status}: {escape(result.message)}"
            )


def print_report(console: Console, report: BenchReport) -> None:
    """Summary table, per-scenario table and speed-ups."""
    console.print(_summary(report))
    console.print(_scenarios(report))
    for line in _invalid_runs(report):
        console.print(line)
    if report.speedups:
        console.print(_speedups(report))


def _summary(report: BenchReport) -> Table:
    table = Table(title="End to end: encoded image → labelled prediction (ms)", title_justify="left")
    table.add_column("configuration", no_wrap=True)
    for name in (
        "SS p50",
        "SS p90",
        "SS p99",
        "Offline/s",
        "model p50",
        "CPU ms/inf",
        "RSS MB",
        "load ms",
        "1st ms",
        "overhead×",
        "top-1=",
    ):
        table.add_column(name, justify="right")
    for c in report.configurations:
        label = escape(
            c.label if c.runtime_resolved in (None, c.runtime) else f"{c.label} → {c.runtime_resolved}"
        )
        if c.status != "ok":
            table.add_row(label, f"[yellow]{c.status}[/]", *[""] * 10)
            continue
        ss = c.scenario("SingleStream")
        offline = max((r.samples_per_s for r in c.scenarios if r.scenario == "Offline"), default=None)
        res = ss.resources if ss else c.resources
        agree = c.extra.get("top1_agreement_with_baseline")
        table.add_row(
            label,
            _f(ss.latency.p50_ms if ss else None),
            _f(ss.latency.p90_ms if ss else None),
            _f(ss.latency.p99_ms if ss else None),
            _f(offline, 1),
            _f(c.model_only.latency.p50_ms if c.model_only else None),
            _f(ss.cpu_ms_per_inference if ss else None),
            _f(res.rss_peak_mb if res else None, 0),
            _f(c.cold_start.load_ms if c.cold_start else None, 0),
            _f(c.cold_start.first_inference_ms if c.cold_start else None, 1),
            _f(overhead_p90(c)),
            _agreement_cell(c, agree),
        )
    return table


def _agreement_cell(config: ConfigurationResult, agree: object) -> str:
    if config.extra.get("baseline") == config.label:
        return "base"  # what the others are compared with
    return f"{agree:.0%}" if isinstance(agree, float) else "-"  # "-": nothing to compare (or Null)


def _scenarios(report: BenchReport) -> Table:
    table = Table(title="Scenarios through MLPerf LoadGen (latency in ms)", title_justify="left")
    table.add_column("configuration", no_wrap=True)
    table.add_column("scenario", no_wrap=True)
    for name in ("samples", "errors", "samples/s", "p50", "p90", "p99", "p99.9", "max", "CPU %", "LoadGen"):
        table.add_column(name, justify="right")
    for c in report.configurations:
        for r in c.scenarios:
            lat = r.query_latency if r.scenario in ("MultiStream", "Server") else r.latency
            table.add_row(
                escape(c.label),
                _scenario_name(r.scenario, r.batch_size, r.target_qps),
                str(r.samples),
                f"[red]{r.errors}[/]" if r.errors else "0",
                _f(r.samples_per_s, 1),
                _f(lat.p50_ms),
                _f(lat.p90_ms),
                _f(lat.p99_ms),
                _f(lat.p999_ms),
                _f(lat.max_ms),
                _f(r.resources.process_cpu_percent_mean if r.resources else None, 0),
                "" if r.loadgen is None else ("VALID" if r.loadgen.valid else "[yellow]INVALID[/]"),
            )
    return table


def _invalid_runs(report: BenchReport) -> list[str]:
    """One line per run LoadGen called INVALID, with its reason, and what to do about it."""
    lines = []
    for c in report.configurations:
        for r in c.scenarios:
            if r.loadgen is not None and not r.loadgen.valid:
                name = _scenario_name(r.scenario, r.batch_size, r.target_qps)
                why = escape(r.loadgen.why_invalid())
                lines.append(f"[yellow]INVALID[/] {escape(c.label)} {name}: {why}")
    if lines:
        lines.append(
            "  (the figures are measured all the same; --duration and --min-queries make runs longer, "
            "--mlperf takes MLPerf's official minimums)"
        )
    return lines


def _scenario_name(scenario: str, batch_size: int, target_qps: float | None) -> str:
    if scenario == "Server":
        return f"Server @ {target_qps:.1f} QPS" if target_qps else "Server (no rate within bound)"
    if scenario == "Offline":
        return f"Offline b{batch_size}"
    return scenario


def _speedups(report: BenchReport) -> Table:
    """One row per configuration, one column per figure: the ratio, then the value behind it."""
    baseline = report.speedups[0].baseline
    figures = list(dict.fromkeys(s.figure for s in report.speedups))
    table = Table(
        title=f"Speed-up over {escape(baseline)}, same run and inputs (> 1: better)", title_justify="left"
    )
    table.add_column("configuration", no_wrap=True)
    for figure in figures:
        table.add_column(figure, justify="right")
    cells: dict[str, dict[str, str]] = {}
    for s in report.speedups:
        colour = "green" if s.ratio >= 1 else "red"
        cells.setdefault(s.label, {})[s.figure] = f"[{colour}]{s.ratio:.2f}×[/] ({_f(s.value)})"
    for label, row in cells.items():
        table.add_row(escape(label), *[row.get(figure, "") for figure in figures])
    return table


def _f(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"
