"""The report's figures, drawn with matplotlib and returned as inline SVG text.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global backend or style
changes), so rendering a report never disturbs an application that also uses matplotlib. Every
function returns ``None`` when there is nothing to draw, so the page shows only plots with data.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from edgeinfer.bench.report import ConfigurationResult, ScenarioResult
from edgeinfer.bench.stats import LatencySummary

STAGE_COLOURS = {"decode": "#4C78A8", "preprocess": "#F58518", "infer": "#54A24B", "postprocess": "#B279A2"}
# Tableau 10: ten distinct hues; beyond ten, lines change dash (see ``dash``).
PALETTE = (
    "#4E79A7",
    "#F28E2B",
    "#59A14F",
    "#E15759",
    "#76B7B2",
    "#EDC948",
    "#B07AA1",
    "#FF9DA7",
    "#9C755F",
    "#BAB0AC",
)
DASHES = ("-", "--", ":", "-.")
# Where a phase name sits on the timeline: two rows, so that short phases side by side stay readable.
PHASE_LABEL_ROWS = (0.97, 0.89)
PHASE_LABEL_PT = 7
_ID_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')
_plot_numbers = itertools.count(1)
WIDTH_IN = 9.0
STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def dash(index: int) -> str:
    return DASHES[(index // len(PALETTE)) % len(DASHES)]


def _outside_legend(ax: Axes, count: int) -> None:
    """Beside the plot when there are many series, inside it when there are few."""
    if count > 4:
        ax.legend(fontsize=7.5, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8, frameon=False, loc="best")  # where it covers the fewest points


def latency_cdf(series: Sequence[tuple[str, LatencySummary]], title: str) -> str | None:
    """Latency CDFs on one plot; the y axis spreads the tail (p90, p99, p99.9) evenly."""
    drawn = [(label, s) for label, s in series if s.count and s.cdf]
    if not drawn:
        return None
    with _figure(3.4) as fig:
        ax = fig.add_subplot()
        for i, (label, summary) in enumerate(drawn):
            points = [p for p in summary.cdf if p[1] < 1.0]
            ys = [-math.log10(1.0 - p[1]) for p in points]
            ax.plot(
                [p[0] for p in points],
                ys,
                color=colour(i),
                linestyle=dash(i),
                linewidth=1.6,
                label=f"{label} (n={summary.count})",
            )
            ax.plot(
                [summary.max_ms], [max(ys[-1], 3.0) if ys else 0.0], marker="o", markersize=3, color=colour(i)
            )
        ax.set_yticks([0.0, math.log10(2.0), 1.0, 2.0, 3.0], ["min", "p50", "p90", "p99", "p99.9"])
        ax.set_xscale("log")
        _log_ms(ax)
        ax.set_xlabel("latency (ms, log scale); dot: maximum")
        ax.set_title(title, loc="left", fontsize=10)
        _outside_legend(ax, len(drawn))
        return _svg(fig)


def latency_histograms(series: Sequence[tuple[str, LatencySummary]], title: str) -> str | None:
    """One small histogram (log-spaced bins) per configuration, sharing the x axis."""
    drawn = [(label, s) for label, s in series if s.count and s.histogram]
    if not drawn:
        return None
    columns = min(2, len(drawn))
    rows = math.ceil(len(drawn) / columns)
    with _figure(2.3 * rows + 0.5) as fig:
        axes = fig.subplots(rows, columns, squeeze=False, sharex=True)
        for i, (label, summary) in enumerate(drawn):
            ax: Axes = axes[i // columns][i % columns]
            lefts = [b[0] for b in summary.histogram]
            widths = [b[1] - b[0] for b in summary.histogram]
            ax.bar(lefts, [b[2] for b in summary.histogram], width=widths, align="edge", color=colour(i))
            ax.axvline(summary.p50_ms, color="#333", linewidth=0.9, linestyle="--")
            ax.axvline(summary.p99_ms, color="#C00", linewidth=0.9, linestyle=":")
            ax.set_xscale("log")
            _log_ms(ax)
            ax.set_title(
                f"{label}: p50 {summary.p50_ms:.2f}, p99 {summary.p99_ms:.2f} ms", fontsize=8.5, loc="left"
            )
            ax.set_ylabel("samples", fontsize=8)
            ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        for j in range(len(drawn), rows * columns):
            axes[j // columns][j % columns].set_visible(False)
        fig.supxlabel("latency (ms, log scale); dashed: p50, dotted: p99", fontsize=8.5)
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
        return _svg(fig)


def stage_breakdown(rows: Sequence[tuple[str, ScenarioResult]]) -> str | None:
    """Mean time per sample in each stage, stacked, one bar per configuration."""
    drawn = [(label, r) for label, r in rows if r.samples and r.stages]
    if not drawn:
        return None
    with _figure(0.45 * len(drawn) + 1.5) as fig:
        ax = fig.add_subplot()
        labels = [label for label, _ in drawn]
        lefts = [0.0] * len(drawn)
        for stage, stage_colour in STAGE_COLOURS.items():
            widths = [r.stages[stage].mean_ms if stage in r.stages else 0.0 for _, r in drawn]
            ax.barh(labels, widths, left=lefts, color=stage_colour, label=stage, height=0.6)
            lefts = [a + b for a, b in zip(lefts, widths, strict=True)]
        for y, (_, result) in enumerate(drawn):
            ax.plot([result.latency.mean_ms], [y], marker="|", color="black", markersize=16)
        ax.invert_yaxis()
        ax.set_xlabel("mean ms per sample; black tick: mean end-to-end latency")
        ax.set_title("Where the time goes (SingleStream)", loc="left", fontsize=10)
        fig.legend(ncols=4, fontsize=8, frameon=False, loc="outside lower center")
        return _svg(fig)


def throughput_scaling(configurations: Sequence[ConfigurationResult]) -> str | None:
    """Offline samples/s against batch size (one line per configuration) and against threads."""
    by_batch: list[tuple[str, list[tuple[int, float]]]] = []
    by_threads: dict[str, list[tuple[int, float]]] = {}
    for config in configurations:
        points = sorted((r.batch_size, r.samples_per_s) for r in config.scenarios if r.scenario == "Offline")
        if not points:
            continue
        by_batch.append((config.label, points))
        if config.threads is not None:
            # the runtime that ran: under auto, two thread counts may have opened different ones
            resolved = config.runtime_resolved or config.runtime
            ran = resolved if resolved == config.runtime else f"{config.runtime} ({resolved})"
            key = f"{ran}/{config.precision}"
            by_threads.setdefault(key, []).append((config.threads, max(p[1] for p in points)))
    show_threads = any(len(v) > 1 for v in by_threads.values())
    show_batch = any(len(p) > 1 for _, p in by_batch)
    if not (show_threads or show_batch):
        return None
    panels = int(show_batch) + int(show_threads)
    with _figure(3.0 * panels) as fig:
        axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
        if show_batch:
            ax = axes[0]
            for i, (label, points) in enumerate(by_batch):
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    marker="o",
                    color=colour(i),
                    linestyle=dash(i),
                    label=label,
                )
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel("batch size")
            ax.set_ylabel("samples/s (Offline)")
            ax.set_title("Throughput vs batch size", loc="left", fontsize=10)
            _outside_legend(ax, len(by_batch))
        if show_threads:
            ax = axes[-1]
            for i, (key, points) in enumerate(sorted(by_threads.items())):
                points.sort()
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    marker="s",
                    color=colour(i),
                    linestyle=dash(i),
                    label=key,
                )
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
            ax.set_xlabel("intra-op threads")
            ax.set_ylabel("best samples/s (Offline)")
            ax.set_title("Throughput vs threads", loc="left", fontsize=10)
            _outside_legend(ax, len(by_threads))
        return _svg(fig)


def resource_timeline(configurations: Sequence[ConfigurationResult]) -> str | None:
    """Process CPU (%) and RSS (MB) over each configuration's run, phases shaded and named."""
    drawn = [c for c in configurations if c.timeline is not None and c.timeline.t_s]
    if not drawn:
        return None
    with _figure(2.1 * len(drawn) + 0.5) as fig:
        axes = fig.subplots(len(drawn), 1, squeeze=False)
        for i, config in enumerate(drawn):
            _timeline_panel(axes[i][0], config)
        proxies = [
            Line2D([], [], color="#4C78A8", linewidth=1.0, label="process CPU % (100 = one core)"),
            Line2D([], [], color="#999", linewidth=0.8, linestyle=":", label="machine CPU %, all processes"),
            Line2D([], [], color="#E45756", linewidth=1.4, label="process RSS MB (right axis)"),
        ]
        fig.legend(handles=proxies, ncols=3, fontsize=8, frameon=False, loc="outside lower center")
        interval = drawn[0].timeline.interval_ms if drawn[0].timeline else 0
        axes[-1][0].set_xlabel(f"seconds since the configuration started (sampled every {interval} ms)")
        return _svg(fig)


def _timeline_panel(ax: Axes, config: ConfigurationResult) -> None:
    timeline = config.timeline
    assert timeline is not None
    end = timeline.t_s[-1]
    marks = [m for m in timeline.marks if m[1] != "end"]
    row_ends = [-math.inf] * len(PHASE_LABEL_ROWS)  # where each row's last label ends, in seconds
    for j, (start, name) in enumerate(marks):
        stop = marks[j + 1][0] if j + 1 < len(marks) else end
        if j % 2:
            ax.axvspan(start, stop, color="#000", alpha=0.045, linewidth=0)
        x = start + end * 0.005
        right = x + _text_width_s(ax, name, end)
        row = next((r for r, taken in enumerate(row_ends) if taken < x), None)
        if row is None or right > end:
            continue  # no room: the shading still shows the phase
        row_ends[row] = right
        ax.text(
            x,
            PHASE_LABEL_ROWS[row],
            name,
            transform=ax.get_xaxis_transform(),
            fontsize=PHASE_LABEL_PT,
            va="top",
            ha="left",
            color="#444",
        )
    machine = [float(sum(row)) for row in timeline.system_cpu_percent_per_core]
    if machine and len(machine) == len(timeline.t_s):
        ax.plot(
            timeline.t_s, machine, color="#999", linewidth=0.8, linestyle=":", label="machine, all processes"
        )
    ax.plot(timeline.t_s, timeline.process_cpu_percent, color="#4C78A8", linewidth=1.0, label="this process")
    ax.set_ylabel("CPU %", color="#4C78A8", fontsize=8)
    ax.set_ylim(0, max(100.0, *timeline.process_cpu_percent, *machine) * 1.25)
    ax.set_xlim(0, end)
    twin = ax.twinx()
    twin.plot(timeline.t_s, timeline.rss_mb, color="#E45756", linewidth=1.4)
    twin.set_ylabel("RSS MB", color="#E45756", fontsize=8)
    twin.set_ylim(0, max(timeline.rss_mb) * 1.3)
    twin.grid(False)
    twin.spines["right"].set_visible(True)
    ax.set_title(config.label, loc="left", fontsize=9)


def _text_width_s(ax: Axes, text: str, span_s: float) -> float:
    """About how many seconds of a ``span_s``-wide axis the phase label ``text`` covers."""
    axes_pt = ax.get_position().width * ax.get_figure().get_figwidth() * 72  # type: ignore[union-attr]
    text_pt = (len(text) + 1) * PHASE_LABEL_PT * 0.62  # sans-serif: about 0.6 em a character
    return span_s * text_pt / max(axes_pt, 1.0)


def _log_ms(ax: Axes) -> None:
    """Label a log axis 0.5, 1, 2, 5, 10, 20... in plain numbers, without crowded minor labels."""
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


@contextmanager
def _figure(height_in: float) -> Iterator[Figure]:
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        yield Figure(figsize=(WIDTH_IN, height_in), layout="constrained")


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]  # drop the XML prologue and DOCTYPE: the SVG goes inline
    return unique_ids(svg, f"p{next(_plot_numbers)}-")


def unique_ids(svg: str, prefix: str) -> str:
    """``svg`` with ``prefix`` on every element id and every reference to one.

    matplotlib numbers ids per figure (``figure_1``, ``axes_1``...), so several SVGs inline in one
    page would repeat them, which is invalid HTML and lets one plot's clip path apply to another's.
    """
    ids = set(re.findall(r'\bid="([^"]+)"', svg))

    def prefixed(match: re.Match[str]) -> str:
        name = match.group(2)
        return match.group(1) + (prefix + name if name in ids else name)

    return _ID_REFERENCE.sub(prefixed, svg)
