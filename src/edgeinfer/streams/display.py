"""The terminal: a live table of every stream (rich), event lines, and the end-of-run summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from edgeinfer.streams.messages import StreamEvent
from edgeinfer.streams.pipeline import RunSummary
from edgeinfer.streams.stats import StreamSnapshot

_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}
_STATUS_STYLE = {"running": "green", "stalled": "yellow", "failed": "red", "ended": "dim", "stopped": "dim"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def stream_table(snapshots: Sequence[StreamSnapshot], title: str, live: bool = True) -> Table:
    """One row per stream: status, rates, drops, latency percentiles, jitter, last label."""
    table = Table(title=title, title_justify="left", expand=False)
    for column in (
        "stream",
        "status",
        "in fps",
        "out fps",
        "dropped",
        "p50 ms",
        "p99 ms",
        "jitter ms",
        "top-1",
    ):
        table.add_column(column, justify="left" if column in ("stream", "status", "top-1") else "right")
    for s in snapshots:
        fps_out = s.recent_fps if live else s.achieved_fps
        drop = f"{s.dropped} ({s.drop_rate:.1%})"
        if s.rejected or s.failed:
            drop += f" +{s.rejected + s.failed} bad"
        label = f"{s.last_label} {s.last_score:.0%}" if s.last_label and s.last_score is not None else "-"
        style = _STATUS_STYLE.get(s.status, "")
        table.add_row(
            escape(s.stream),
            f"[{style}]{s.status}[/{style}]" if style else s.status,
            f"{s.capture_fps:.1f}",
            f"{fps_out:.1f}",
            drop,
            _ms(s.latency_p50_ms),
            _ms(s.latency_p99_ms),
            _ms(s.jitter_ms),
            escape(label),
        )
    return table


def event_line(event: StreamEvent) -> str:
    """Markup for one event; the stream's name and the message are shown as they are (a file
    named ``a[b].mp4`` is not markup)."""
    return f"[{_STYLE[event.level]}]{event.level}[/]: {escape(event.stream)}: {escape(event.message)}"


class ConsoleReporter:
    """Shows the live table while the run lasts (when ``live``) and prints every event."""

    def __init__(
        self, snapshots: Callable[[], list[StreamSnapshot]], console: Console | None = None, live: bool = True
    ) -> None:
        self.console = console or Console(stderr=True)
        self._snapshots = snapshots
        self._live: Live | None = (
            Live(get_renderable=self._render, console=self.console, refresh_per_second=2, transient=True)
            if live
            else None
        )

    def _render(self) -> Table:
        return stream_table(self._snapshots(), "edgeinfer stream (Ctrl-C to stop)")

    def event(self, event: StreamEvent) -> None:
        self.console.print(event_line(event), highlight=False, soft_wrap=True)

    def __enter__(self) -> ConsoleReporter:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()


def print_summary(summary: RunSummary, console: Console) -> None:
    """The end-of-run table, the sinks' delivery reports and the problem count."""
    title = (
        f"{len(summary.streams)} streams, {summary.duration_s:.1f} s, "
        f"{summary.batches} batches (mean {summary.mean_batch_size:.2f} frames)"
    )
    console.print(stream_table(summary.streams, title, live=False))
    for s in summary.streams:
        console.print(
            f"{escape(s.stream)}: captured {s.captured} = processed {s.processed} + dropped {s.dropped}"
            f" + rejected {s.rejected} + failed {s.failed}"
            + (f"; {s.decimated} skipped by rate conversion" if s.decimated else ""),
            highlight=False,
            soft_wrap=True,
        )
    for report in summary.sinks:
        console.print(
            escape(
                f"{report.sink}: {report.delivered} delivered, {report.undelivered} not ({report.detail})"
            ),
            highlight=False,
            soft_wrap=True,
        )
    if summary.errors or summary.warnings:
        console.print(f"{summary.errors} errors, {summary.warnings} warnings (see the messages above)")
