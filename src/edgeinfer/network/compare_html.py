"""The edge-against-cloud report page: tables, latency distributions, bytes, and the crossover map.

Self-contained HTML (inline CSS from :mod:`edgeinfer.bench.html`, inline SVG plots drawn with
matplotlib's object API, as :mod:`edgeinfer.bench.plots` does). The crossover map draws the
analytical model (where offloading wins, per cloud speed-up) with the measured profiles on it.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from edgeinfer.bench.html import CSS, plain_value
from edgeinfer.bench.plots import STYLE, colour, latency_cdf
from edgeinfer.bench.report import BenchReport, ConfigurationResult
from edgeinfer.network.crossover import CrossoverModel


def render(report: BenchReport) -> str:
    configs = [c for c in report.configurations if c.scenarios]
    crossover = report.settings.get("crossover") or {}
    parts = [
        f"<h1>{html.escape(report.title)}</h1>",
        f'<p class="meta">{html.escape(report.created_utc)} UTC · edgeinfer '
        f"{html.escape(report.edgeinfer_version)}"
        f" · {html.escape(str(report.machine.get('cpu_model', '')))}<br><code>"
        f"{html.escape(' '.join(report.command))}</code></p>",
        "".join(f'<p class="note"><b>{html.escape(n)}</b></p>' for n in report.notes),
        _section("Summary", _summary_table(configs, report.settings.get("cloud_speedup", 1.0))),
        _section("Where the time goes (mean ms per stage)", _stage_table(configs)),
        _section("Latency distributions", "".join(_figure_html(s) for s in _cdfs(configs))),
        _section("Bytes per inference", _figure_html(_bytes_plot(configs))),
        _section("Crossover: when offloading wins", _crossover_html(crossover, configs)),
        _section("Edge-only, cloud-only and auto (p90 targets)", _policy_table(report)),
        _section("Hybrid router decisions", _router_table(configs)),
        _section("Split computing", _split_html(report)),
        _section(
            "Run",
            _kv(
                {
                    "settings": {
                        k: v
                        for k, v in report.settings.items()
                        if k not in ("crossover", "split_points", "profiles")
                    },
                    "machine": report.machine,
                    "versions": report.versions,
                }
            ),
        ),
    ]
    body = "\n".join(p for p in parts if p)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(report.title)}</title><style>{CSS}</style></head><body><main>\n{body}\n"
        "</main></body></html>\n"
    )


# -- tables -------------------------------------------------------------------------------------


def _summary_table(configs: Sequence[ConfigurationResult], speedup: float) -> str:
    headers = [
        "path",
        "n",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "img/s",
        "up KB/inf",
        "down KB/inf",
        "device CPU ms/inf",
        "device RSS MB",
    ]
    adjusted = speedup != 1.0
    if adjusted:
        headers += [f"adjusted p50 ({speedup:g}x cloud)", f"adjusted p90 ({speedup:g}x cloud)"]
    rows = []
    for config in configs:
        s, x = config.scenarios[0], config.extra
        row: list[Any] = [
            config.label,
            s.samples,
            s.errors,
            s.latency.p50_ms,
            s.latency.p90_ms,
            s.latency.p99_ms,
            s.samples_per_s,
            _kb(x.get("bytes_sent_per_inference")),
            _kb(x.get("bytes_received_per_inference")),
            x.get("device_cpu_ms_per_inference"),
            x.get("device_rss_mb"),
        ]
        if adjusted:
            adj = x.get("speedup_adjusted") or {}
            row += [adj.get("p50_ms"), adj.get("p90_ms")]
        rows.append(row)
    return _table(headers, rows)


def _stage_table(configs: Sequence[ConfigurationResult]) -> str:
    names: list[str] = []
    for config in configs:
        names += [n for n in config.extra.get("stage_means_ms", {}) if n not in names]
    rows = [
        [c.label, *[c.extra.get("stage_means_ms", {}).get(n) for n in names], c.scenarios[0].latency.mean_ms]
        for c in configs
    ]
    return _table(["path", *names, "end to end"], rows) if names else ""


def _router_table(configs: Sequence[ConfigurationResult]) -> str:
    rows = []
    for config in configs:
        if config.extra.get("path") != "auto":
            continue
        router = config.extra.get("router", {})
        rows.append(
            [
                config.label,
                _kv_text(config.extra.get("served", {})),
                router.get("fallbacks"),
                _kv_text(router.get("cloud_failures", {})),
                router.get("recoveries"),
                _kv_text(config.extra.get("reasons", {})),
            ]
        )
    headers = ["run", "served by", "fallbacks", "cloud failures", "recoveries", "reasons"]
    return _table(headers, rows) if rows else ""


def _policy_table(report: BenchReport) -> str:
    rows = report.settings.get("policy_comparison") or []
    if not rows:
        return ""
    headers = [
        "profile",
        "edge-only p50",
        "edge-only p90",
        "cloud-only p50",
        "cloud-only p90",
        "auto p50",
        "auto p90",
        "auto p90 / best",
        "within 10 %",
        "better than both",
        "auto served by",
    ]
    body = [[r["profile"], r["edge-only_p50_ms"], r["edge-only_p90_ms"], r["cloud-only_p50_ms"],
             r["cloud-only_p90_ms"], r["auto_p50_ms"], r["auto_p90_ms"], r["auto_vs_best_p90"],
             "yes" if r["within_10_percent"] else "NO", "yes" if r["strictly_better"] else "no",
             _kv_text(r["auto_served"])] for r in rows]  # fmt: skip
    paired = rows[0].get("paired")
    note = (
        "Closed loop: the three policies took turns request by request on the same link, so the machine's "
        "busy moments fell on all alike."
        if paired
        else "Open loop: each policy carried the whole offered load in turn, with the same arrival times."
    )
    return f'<p class="note">{html.escape(note)}</p>' + _table(headers, body)


def _split_html(report: BenchReport) -> str:
    points = report.settings.get("split_points") or []
    measured = [p for p in points if p.get("measured_p50_ms") is not None]
    if not measured:
        return ""
    headers = [
        "profile",
        "cut",
        "after node",
        "tensor",
        "transport",
        "bytes up",
        "head ms",
        "tail ms",
        "predicted ms",
        "measured p50 ms",
        "max |diff| vs unsplit",
        "top-1 agree",
    ]
    keys = (
        "profile",
        "cut",
        "node",
        "shape",
        "transport",
        "bytes",
        "head_ms",
        "tail_ms",
        "predicted_ms",
        "measured_p50_ms",
        "max_abs_diff",
        "top1_agreement",
    )
    note = (
        "Predicted: device head + RTT + upload of the cut tensor + download + cloud tail, from per-layer "
        "profiles scaled to the measured device inference. The plot shows the prediction for every cut "
        "(best transport at each) and the measured split; report.json holds every cut and transport."
    )
    plot = _figure_html(_split_plot(points, measured))
    return f'<p class="note">{html.escape(note)}</p>{plot}' + _table(
        headers, [[p.get(k) for k in keys] for p in measured]
    )


def _split_plot(points: list[dict[str, Any]], measured: list[dict[str, Any]]) -> str | None:
    fig = _new_figure(3.2)
    ax = fig.add_subplot()
    profiles = list(dict.fromkeys(p["profile"] for p in points))
    for i, name in enumerate(profiles):
        best: dict[int, float] = {}
        for p in points:
            if p["profile"] == name and "measured_p50_ms" not in p:
                best[p["cut"]] = min(best.get(p["cut"], float("inf")), p["predicted_ms"])
        cuts = sorted(best)
        ax.plot(cuts, [best[c] for c in cuts], color=colour(i), linewidth=1.4, label=f"predicted, {name}")
        for p in measured:
            if p["profile"] == name:
                ax.plot(
                    p["cut"],
                    p["measured_p50_ms"],
                    marker="D",
                    color=colour(i),
                    markersize=7,
                    label=f"measured cut {p['cut']} {p['transport']}, {name}",
                )
    ax.set_yscale("log")
    ax.set_xlabel("cut index (0: send the input tensor; last: all on the device)")
    ax.set_ylabel("latency ms (log scale)")
    ax.legend(fontsize=7.5, frameon=False)
    return _svg(fig)


# -- plots --------------------------------------------------------------------------------------


def _cdfs(configs: Sequence[ConfigurationResult]) -> list[str | None]:
    profiles: list[str] = []
    for config in configs:
        name = (config.extra.get("profile") or {}).get("name")
        if name and name not in profiles:
            profiles.append(name)
    local = [c for c in configs if c.extra.get("profile") is None]
    figures = []
    for name in profiles or [""]:
        chosen = local + [c for c in configs if (c.extra.get("profile") or {}).get("name") == name]
        series = [(c.label, c.scenarios[0].latency) for c in chosen]
        figures.append(latency_cdf(series, f"End-to-end latency, {name or 'local'}"))
    return figures


def _bytes_plot(configs: Sequence[ConfigurationResult]) -> str | None:
    seen: dict[str, tuple[float, float]] = {}
    for config in configs:
        x = config.extra
        key = f"{x.get('path')} {x.get('upload') or ''}".strip()
        if x.get("bytes_sent_per_inference") and key not in seen:
            seen[key] = (
                x["bytes_sent_per_inference"] / 1e3,
                (x.get("bytes_received_per_inference") or 0) / 1e3,
            )
    if not seen:
        return None
    fig = _new_figure(2.6)
    ax = fig.add_subplot()
    labels = list(seen)
    ys = np.arange(len(labels))
    # dots, not bars: a bar's length on a log axis starts at an arbitrary limit and means nothing
    for offset, column, name in ((-0.15, 0, "sent (up)"), (0.15, 1, "received (down)")):
        values = [seen[k][column] for k in labels]
        ax.plot(values, ys + offset, "o", color=colour(column), label=name)
        for value, y in zip(values, ys + offset, strict=True):
            ax.annotate(f"{value:,.1f}", (value, y), xytext=(6, -3), textcoords="offset points", fontsize=7.5)
    ax.set_yticks(ys, labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.set_xscale("log")
    every = [v for pair in seen.values() for v in pair if v > 0]
    ax.set_xlim(min(every) / 2, max(every) * 4)
    ax.set_xlabel("KB per inference (log scale)")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return _svg(fig)


def _crossover_html(crossover: dict[str, Any], configs: Sequence[ConfigurationResult]) -> str:
    if not crossover:
        return ""
    model = CrossoverModel(**crossover["model"])
    note = (
        f"Model: cloud = RTT + {model.overhead_ms:.1f} ms overhead + {model.server_ms:.1f} ms server work / "
        f"speed-up + {model.up_bytes / 1e3:.1f} KB up and {model.down_bytes / 1e3:.1f} KB down at the link's "
        f"rates, against {model.edge_ms:.1f} ms on the device (all measured means). Left: shaded, offloading "
        "wins; markers: the profiles, filled where the measured cloud mean beat the device. Right: the "
        "model's cloud latency beside the measured one for each profile."
    )
    rows = [
        [
            r["profile"],
            r["rtt_ms"],
            r["up_mbps"],
            *[r["predicted_cloud_ms"].get(f"{s:g}x") for s in crossover["speedups"]],
            *[r["breakeven_up_mbps"].get(f"{s:g}x") for s in crossover["speedups"]],
        ]
        for r in crossover["profiles"]
    ]
    headers = [
        "profile",
        "RTT ms",
        "up Mb/s",
        *[f"model cloud ms ({s:g}x)" for s in crossover["speedups"]],
        *[f"break-even up Mb/s ({s:g}x)" for s in crossover["speedups"]],
    ]
    return (
        f'<p class="note">{html.escape(note)}</p>'
        + _figure_html(_crossover_plot(model, crossover, configs))
        + _table(headers, rows)
    )


def _crossover_plot(
    model: CrossoverModel, crossover: dict[str, Any], configs: Sequence[ConfigurationResult]
) -> str:
    fig = _new_figure(3.6)
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    rtts = np.linspace(0, max(400.0, *[r["rtt_ms"] * 1.3 for r in crossover["profiles"]]), 200)
    for i, speedup in enumerate(crossover["speedups"]):
        ups = [model.breakeven_up_mbps(float(r), speedup) for r in rtts]
        xs = [u for u in ups if u is not None]
        ys = [r for r, u in zip(rtts, ups, strict=True) if u is not None]
        if xs and max(ys) >= 1.0:  # a curve below 1 ms would be drawn under the axis: left out
            ax.plot(xs, ys, color=colour(i), linewidth=1.6, label=f"break-even, cloud {speedup:g}x")
            ax.fill_betweenx(ys, xs, 1e4, color=colour(i), alpha=0.07)
    measured = _measured_cloud(configs)
    for j, row in enumerate(crossover["profiles"]):
        if row["up_mbps"] is None:
            continue
        won = measured.get(row["profile"], (None, False))[1]
        ax.plot(
            row["up_mbps"],
            row["rtt_ms"],
            marker="o",
            markersize=7,
            color="#222",
            markerfacecolor="#222" if won else "white",
        )
        ax.annotate(
            row["profile"],
            (row["up_mbps"], row["rtt_ms"]),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize=8,
        )
        predicted = model.cloud_ms(row["rtt_ms"], row["up_mbps"], row.get("down_mbps"))  # as in report.json
        bx.bar(j - 0.2, predicted, width=0.38, color=colour(0), label="model" if j == 0 else None)
        got = measured.get(row["profile"], (None, False))[0]
        if got is not None:
            bx.bar(j + 0.2, got, width=0.38, color=colour(1), label="measured" if j == 0 else None)
    ax.set_xscale("log")
    ax.set_xlim(0.1, 1e4)
    ax.set_ylim(0, rtts[-1] * 1.1)  # room above the highest profile for its label
    ax.set_xlabel("uplink (Mb/s, log scale)")
    ax.set_ylabel("round-trip time (ms)")
    # legends below the plots: inside, they covered profile markers and bars
    ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    bx.axhline(model.edge_ms, color="#333", linestyle="--", linewidth=1, label="device")
    bx.set_xticks(range(len(crossover["profiles"])), [r["profile"] for r in crossover["profiles"]])
    bx.set_ylabel("cloud JPEG latency, mean ms (speed-up 1)")
    bx.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3)
    return _svg(fig)


def _measured_cloud(configs: Sequence[ConfigurationResult]) -> dict[str, tuple[float | None, bool]]:
    edge = next((c for c in configs if c.extra.get("path") == "edge"), None)
    edge_ms = edge.scenarios[0].latency.mean_ms if edge else None
    found: dict[str, tuple[float | None, bool]] = {}
    for config in configs:
        x = config.extra
        if x.get("path") == "cloud" and x.get("upload") == "jpeg" and x.get("profile"):
            mean = config.scenarios[0].latency.mean_ms
            found[x["profile"]["name"]] = (mean, edge_ms is not None and mean < edge_ms)
    return found


# -- helpers ------------------------------------------------------------------------------------


def _new_figure(height_in: float) -> Figure:
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        return Figure(figsize=(9.0, height_in), layout="constrained")


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):  # type: ignore[arg-type]
        fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.find("<svg") :]


def _figure_html(svg: str | None) -> str:
    return f"<figure>{svg}</figure>" if svg else ""


def _section(title: str, content: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{content}" if content else ""


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<div class="wrap"><table><tr>{head}</tr>{body}</table></div>'


def _cell(value: Any) -> str:
    if value is None:
        return "<td>–</td>"
    if isinstance(value, float):
        return f"<td>{value:,.3f}</td>" if abs(value) < 10 else f"<td>{value:,.1f}</td>"
    if isinstance(value, int):
        return f"<td>{value}</td>"
    return f'<td class="t">{html.escape(str(value))}</td>'


def _kb(value: float | None) -> float | None:
    return None if value is None else value / 1e3


def _kv_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in values.items())


def _kv(groups: dict[str, dict[str, Any]]) -> str:
    parts = []
    for title, values in groups.items():
        items = "".join(
            f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(plain_value(v))}</dd>" for k, v in values.items()
        )  # as report.json writes them (null, true), as the bench page does
        parts.append(f"<h3>{html.escape(title)}</h3><dl class='kv'>{items}</dl>")
    return "".join(parts)
