"""The terminal side of a run: a rich progress display while it runs, tables when it is done."""

from __future__ import annotations

from typing import Any

from rich.console import Console
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
            self._task = self._progress.add_task("bench", total=total, label=spec.label, phase="")
        self._progress.update(self._task, completed=index, label=spec.label, phase="starting")

    def phase(self, spec: ConfigurationSpec, text: str) -> None:
        self._progress.update(self._task, phase=text)

    def finished(self, result: ConfigurationResult) -> None:
        self._progress.advance(self._task)
        if result.status == "ok":
            ss = result.scenario("SingleStream")
            detail = f"SingleStream p90 {ss.latency.p90_ms:.2f} ms" if ss else "done"
            self.console.print(f"[green]✓[/] {result.label}: {detail}")
        else:
            self.console.print(f"[yellow]–[/] {result.label}: {result.status}: {result.message}")


def print_report(console: Console, report: BenchReport) -> None:
    """Summary table, per-scenario table and speed-ups."""
    console.print(_summary(report))
    console.print(_scenarios(report))
    if report.speedups:
        console.print(_speedups(report))


def _summary(report: BenchReport) -> Table:
    table = Table(
        title="edgeinfer bench: end to end, encoded image → labelled prediction", title_justify="left"
    )
    for name in (
        "configuration",
        "runtime",
        "SS p50 ms",
        "SS p90 ms",
        "SS p99 ms",
        "Offline /s",
        "model-only p50",
        "CPU ms/inf",
        "RSS peak MB",
        "load ms",
        "first ms",
        "overhead×",
        "top-1 agree",
    ):
        table.add_column(name, justify="left" if name in ("configuration", "runtime") else "right")
    for c in report.configurations:
        if c.status != "ok":
            table.add_row(c.label, f"[yellow]{c.status}[/]", *[""] * 11)
            continue
        ss = c.scenario("SingleStream")
        offline = max((r.samples_per_s for r in c.scenarios if r.scenario == "Offline"), default=None)
        res = ss.resources if ss else c.resources
        agree = c.extra.get("top1_agreement_with_baseline")
        table.add_row(
            c.label,
            c.runtime_resolved or c.runtime,
            _f(ss.latency.p50_ms if ss else None),
            _f(ss.latency.p90_ms if ss else None),
            _f(ss.latency.p99_ms if ss else None),
            _f(offline, 1),
            _f(c.model_only.latency.p50_ms if c.model_only else None),
            _f(ss.cpu_ms_per_inference if ss else None),
            _f(res.rss_peak_mb if res else None, 0),
            _f(c.cold_start.load_ms if c.cold_start else None, 0),
            _f(c.cold_start.first_inference_ms if c.cold_start else None, 1),
            _f(c.engine_overhead.ratio_p90 if c.engine_overhead else None),
            f"{agree:.0%}" if isinstance(agree, float) else "",
        )
    return table


def _scenarios(report: BenchReport) -> Table:
    table = Table(title="Scenarios (LoadGen)", title_justify="left")
    for name in (
        "configuration",
        "scenario",
        "batch",
        "samples",
        "errors",
        "samples/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "CPU %",
        "LoadGen",
    ):
        table.add_column(name, justify="left" if name in ("configuration", "scenario") else "right")
    for c in report.configurations:
        for r in c.scenarios:
            lat = r.query_latency if r.scenario in ("MultiStream", "Server") else r.latency
            scenario = r.scenario
            if r.scenario == "Server":
                scenario += f" @ {r.target_qps:.1f} QPS" if r.target_qps else " (no rate met the bound)"
            verdict = "" if r.loadgen is None else ("VALID" if r.loadgen.valid else "INVALID")
            table.add_row(
                c.label,
                scenario,
                str(r.batch_size),
                str(r.samples),
                f"[red]{r.errors}[/]" if r.errors else "0",
                _f(r.samples_per_s, 1),
                _f(lat.p50_ms),
                _f(lat.p90_ms),
                _f(lat.p99_ms),
                _f(lat.p999_ms),
                _f(lat.max_ms),
                _f(r.resources.process_cpu_percent_mean if r.resources else None, 0),
                verdict,
            )
    return table


def _speedups(report: BenchReport) -> Table:
    baseline = report.speedups[0].baseline
    table = Table(
        title=f"Speed-up against {baseline} (same run, same inputs; > 1 is better)", title_justify="left"
    )
    for name in ("configuration", "figure", "value", "baseline", "speed-up"):
        table.add_column(name, justify="left" if name in ("configuration", "figure") else "right")
    for s in report.speedups:
        colour = "green" if s.ratio >= 1 else "red"
        table.add_row(s.label, s.figure, _f(s.value), _f(s.baseline_value), f"[{colour}]{s.ratio:.2f}×[/]")
    return table


def _f(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"
