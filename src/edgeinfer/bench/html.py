"""Render a :class:`~edgeinfer.bench.report.BenchReport` as one self-contained HTML page.

No network: styles are inline and plots are inline SVG. Tables come first (the numbers), then the
plots, then the details a careful reader checks (LoadGen verdicts, Server search, machine, versions).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from edgeinfer.bench import plots
from edgeinfer.bench.report import BenchReport, ConfigurationResult, ScenarioResult
from edgeinfer.bench.results import overhead_p90

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;
  color:#1d2330;background:#f3f4f6}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:34px 0 8px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}
.meta{color:#5b6472;font-size:13px}.meta code{font-size:12px;color:#1d2330}
table{border-collapse:collapse;margin:8px 0 4px;font-size:12.5px;width:100%}
th,td{padding:4px 7px;border-bottom:1px solid #eceef1;vertical-align:bottom}
th{background:#f0f2f5;font-weight:600;text-align:right;white-space:normal;line-height:1.2}
td{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.t,th.t{text-align:left}
tr.bad td{color:#8a1c1c}.ok{color:#17723a;font-weight:600}.no{color:#b42318;font-weight:600}
.better{color:#17723a;font-weight:600}.worse{color:#b42318}.dim{color:#8a919c;font-size:11.5px}
figure{margin:16px 0}figure svg{max-width:100%;height:auto}
.note{color:#5b6472;font-size:12.5px;margin:2px 0 10px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:13px}
dl.kv dt{color:#5b6472}dl.kv dd{margin:0;overflow-wrap:anywhere}
.wrap{overflow-x:auto}
"""


def render_html(report: BenchReport) -> str:
    configs = list(report.configurations)
    ok = [c for c in configs if c.status == "ok"]
    served = report.kind == "loadgen"  # a server measured from its client: no engine, no LoadGen
    parts = [
        _header(report),
        _section("Summary", _summary_table(configs), _LOADGEN_SUMMARY_NOTE if served else _SUMMARY_NOTE),
        _section("Speed-ups", _speedup_table(report), _speedup_note(report)) if report.speedups else "",
        _section("Plots", _plots(ok)),
        _section(
            "Every scenario",
            _scenario_table(ok, answered=served),
            _LOADGEN_SCENARIO_NOTE if served else _SCENARIO_NOTE,
        ),
        _server_section(ok),
        _section("Cold start and warm-up", _cold_table(ok), _COLD_NOTE),
        _section("Run", _run_details(report)),
    ]
    body = "\n".join(p for p in parts if p)
    title = html.escape(report.title)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title>'
        f"<style>{CSS}</style></head><body><main>\n{body}\n</main></body></html>\n"
    )


_SUMMARY_NOTE = (
    "End-to-end latency per sample: encoded image bytes in, labelled top-k prediction out, in process. "
    "SingleStream p90 is MLPerf's SingleStream metric. CPU ms per inference and RSS are for the "
    "SingleStream window (a run without SingleStream: RSS is the configuration's highest). Engine "
    "overhead: Engine.classify p90 over the p90 of runtime.run + decode + preprocess added up call by "
    "call, the two alternated sample by sample in one loop (the model-only phase); 1.0 means the "
    "engine adds nothing. Top-1 = baseline: share of the samples whose "
    "top-1 class matches the baseline configuration's. Failed requests are counted and kept in every "
    "statistic."
)
_SCENARIO_NOTE = (
    "Latency: from LoadGen issuing the query to the SUT completing it (Server: includes queueing; "
    "Offline: from the start of the sample's batch). Query latency is MultiStream's metric (all the "
    "query's samples). Model-only is the runtime call alone on one preprocessed sample."
)
_LOADGEN_SUMMARY_NOTE = (
    "Latency per request, measured by the client: from sending it (closed loop) or from its scheduled "
    "arrival (open loop) to the last byte of the answer. Failed requests are counted and kept in every "
    "statistic, so a run with many fast refusals shows low percentiles: the answered requests' own "
    "figures are in the next table. CPU and RSS are the server's, from its /metrics (RSS: during "
    "the SingleStream level, or the highest of any level where there is none)."
)
_LOADGEN_SCENARIO_NOTE = (
    "SingleStream: one closed-loop client; Concurrent: that many; Server: Poisson arrivals at the "
    "offered rate. Latencies in ms, every request; 'answered' columns: the requests that got an answer."
)
_COLD_NOTE = (
    "Load: opening the built model on the runtime (runtime import included). First inference: the first "
    "classify after loading. Process start to first prediction: a fresh interpreter started by the "
    "benchmark, until its first labelled prediction. Warm-up work is excluded from every other figure."
)


def _header(report: BenchReport) -> str:
    machine = report.machine
    cpu = machine.get("cpu_model", "unknown CPU")
    cores = machine.get("usable_cores") or machine.get("logical_cores", "?")
    flags = ", ".join(machine.get("isa_flags", []) or [])
    ram = machine.get("ram_total_mb")
    os_name = machine.get("os", "")
    command = " ".join(report.command)
    return (
        f"<h1>{html.escape(report.title)}</h1>"
        f'<p class="meta">{html.escape(report.created_utc)} UTC · edgeinfer '
        f"{html.escape(report.edgeinfer_version)} · {html.escape(str(cpu))}, {cores} cores"
        f"{f', {ram / 1024:.1f} GiB RAM' if isinstance(ram, int | float) else ''}"
        f"{f' · {html.escape(flags)}' if flags else ''}{f' · {html.escape(str(os_name))}' if os_name else ''}"
        f"<br><code>{html.escape(command)}</code></p>"
    )


def _section(title: str, content: str, note: str = "") -> str:
    if not content:
        return ""
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<h2>{html.escape(title)}</h2>{note_html}{content}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], row_classes: Sequence[str] = ()) -> str:
    """A table whose text columns align left and number columns right."""
    grid = [list(row) for row in rows]
    text = {j for row in grid for j, value in enumerate(row) if isinstance(value, str | Raw)}
    head = "".join(_tag("th", html.escape(h), j in text) for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(grid):
        css = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        cells = "".join(_tag("td", _cell(v), j in text) for j, v in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    return f'<div class="wrap"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _tag(name: str, content: str, is_text: bool) -> str:
    return f'<{name} class="t">{content}</{name}>' if is_text else f"<{name}>{content}</{name}>"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, Raw):
        return value.html
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return html.escape(str(value))


class Raw:
    """Already-escaped HTML for a table cell."""

    def __init__(self, markup: str) -> None:
        self.html = markup


def _summary_table(configs: Sequence[ConfigurationResult]) -> str:
    rows, classes = [], []
    for c in configs:
        ss = c.scenario("SingleStream")
        offline = [r for r in c.scenarios if r.scenario == "Offline"]
        failed_share = sum(r.errors for r in c.scenarios) / max(sum(r.samples for r in c.scenarios), 1)
        best_offline = max((r.samples_per_s for r in offline), default=None)
        label = c.label if c.runtime_resolved in (None, c.runtime) else f"{c.label} → {c.runtime_resolved}"
        rows.append(
            [
                label
                if c.status == "ok"
                else Raw(f'{html.escape(label)} <span class="no">{c.status}</span>'),
                ss.latency.p50_ms if ss else None,
                ss.latency.p90_ms if ss else None,
                ss.latency.p99_ms if ss else None,
                best_offline,
                c.model_only.latency.p50_ms if c.model_only else None,
                ss.cpu_ms_per_inference if ss else None,
                _rss_peak_mb(c),
                c.cold_start.load_ms if c.cold_start else None,
                (c.model_size_bytes / 2**20) if c.model_size_bytes else None,
                overhead_p90(c),
                _agreement(c),
                _errors(c),
            ]
        )
        classes.append("" if c.status == "ok" and failed_share <= 0.05 else "bad")  # over 5% failed: red
    headers = [
        "configuration",
        "SS p50 ms",
        "SS p90 ms",
        "SS p99 ms",
        "Offline /s",
        "model-only p50 ms",
        "CPU ms/inf",
        "RSS peak MB",
        "load ms",
        "model MB",
        "engine overhead ×",
        "top-1 = baseline",
        "errors",
    ]
    table = _table(headers, rows, classes)
    problems = [c for c in configs if c.status != "ok"]
    if problems:
        items = "".join(f"<li><b>{html.escape(c.label)}</b>: {html.escape(c.message)}</li>" for c in problems)
        table += f'<ul class="note">{items}</ul>'
    return table


def _rss_peak_mb(config: ConfigurationResult) -> float | None:
    """The SingleStream window's peak RSS; without SingleStream, the highest of the configuration's
    (its whole run, or its scenarios': a load generator's report has only those)."""
    ss = config.scenario("SingleStream")
    if ss is not None and ss.resources is not None:
        return ss.resources.rss_peak_mb
    peaks = [r.resources.rss_peak_mb for r in config.scenarios if r.resources is not None]
    if config.resources is not None:
        peaks.append(config.resources.rss_peak_mb)
    return max(peaks, default=None)


def _agreement(config: ConfigurationResult) -> str | None:
    if config.extra.get("baseline") == config.label:
        return "baseline"
    agree = config.extra.get("top1_agreement_with_baseline")
    return f"{agree:.0%}" if isinstance(agree, float) else None


def _errors(config: ConfigurationResult) -> int | None:
    return sum(r.errors for r in config.scenarios) if config.status == "ok" else None


def _speedup_table(report: BenchReport) -> str:
    """One row per configuration, one column per figure: the ratio, with the value behind it."""
    figures = list(dict.fromkeys(s.figure for s in report.speedups))
    cells: dict[str, dict[str, Raw]] = {}
    for s in report.speedups:
        css = "better" if s.ratio >= 1 else "worse"
        cells.setdefault(s.label, {})[s.figure] = Raw(
            f'<span class="{css}">{s.ratio:.2f}×</span> <span class="dim">{_cell(s.value)}</span>'
        )
    rows = [[label, *[row.get(f) for f in figures]] for label, row in cells.items()]
    return _table(["configuration", *figures], rows)


def _speedup_note(report: BenchReport) -> str:
    first = report.speedups[0]
    baselines = {s.figure: s.baseline_value for s in report.speedups}
    values = "; ".join(f"{figure} {_cell(value)}" for figure, value in baselines.items())
    return (
        f"Against {first.baseline} ({values}), measured in this run on the same inputs. "
        "Above 1× is better; the grey number is the configuration's own value."
    )


def _plots(configs: Sequence[ConfigurationResult]) -> str:
    figures: list[str | None] = []
    known = {"SingleStream": False, "MultiStream": True, "Server": True, "Offline": False}  # query latency?
    present = dict.fromkeys(r.scenario for c in configs for r in c.scenarios)  # loadgen's Concurrent too
    for scenario, use_query in [*known.items(), *((name, False) for name in present if name not in known)]:
        series = []
        for c in configs:
            for r in c.scenarios:
                if r.scenario == scenario:
                    suffix = {"Offline": f" b{r.batch_size}", "Concurrent": f" x{r.workers}"}.get(
                        scenario, ""
                    )
                    series.append((c.label + suffix, r.query_latency if use_query else r.latency))
        what = "query latency" if use_query else "sample latency, end to end"
        figures.append(plots.latency_cdf(series, f"{scenario}: {what}"))
        if scenario == "SingleStream":
            figures.append(plots.latency_histograms(series, "SingleStream latency histograms"))
    model_only = [(c.label, c.model_only.latency) for c in configs if c.model_only]
    figures.append(plots.latency_cdf(model_only, "Model only: the runtime call on a preprocessed sample"))
    figures.append(
        plots.stage_breakdown(
            [(c.label, r) for c in configs for r in c.scenarios if r.scenario == "SingleStream"]
        )
    )
    figures.append(plots.throughput_scaling(configs))
    figures.append(plots.resource_timeline(configs))
    return "".join(f"<figure>{svg}</figure>" for svg in figures if svg)


def _scenario_table(configs: Sequence[ConfigurationResult], *, answered: bool = False) -> str:
    """Every scenario's figures; ``answered``: with the answered requests' p50 and p99 apart (loadgen)."""
    rows, classes = [], []
    for c in configs:
        for r in c.scenarios:
            lat = r.query_latency if r.scenario == "MultiStream" else r.latency
            alone = r.settings.get("latency_answered") or {}
            apart = [alone.get("p50_ms"), alone.get("p99_ms")] if answered else []
            rows.append(
                [
                    c.label,
                    _scenario_name(r),
                    r.batch_size,
                    r.samples,
                    r.queries,
                    r.errors,
                    r.duration_s,
                    r.samples_per_s,
                    lat.p50_ms,
                    lat.p90_ms,
                    lat.p95_ms,
                    lat.p99_ms,
                    lat.p999_ms,
                    lat.max_ms,
                    *apart,
                    r.resources.process_cpu_percent_mean if r.resources else None,
                    r.cpu_ms_per_inference,
                    *([] if answered else [_verdict(r)]),
                ]
            )
            classes.append("bad" if r.errors else "")
    headers = [
        "configuration",
        "scenario",
        "batch",
        "samples",
        "queries",
        "errors",
        "duration s",
        "samples/s",
        "p50 ms",
        "p90 ms",
        "p95 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        *(["answered p50 ms", "answered p99 ms"] if answered else []),
        "CPU %",
        "CPU ms/inf",
        *([] if answered else ["LoadGen"]),
    ]
    invalid = [
        f"<li>{html.escape(f'{c.label} {_scenario_name(r)}: {r.loadgen.why_invalid()}')}</li>"
        for c in configs
        for r in c.scenarios
        if r.loadgen is not None and not r.loadgen.valid
    ]
    why = (
        f'<p class="note">LoadGen called {len(invalid)} run(s) INVALID (the figures are measured all the '
        'same; longer runs or MLPerf\'s official minimums make them valid):</p><ul class="note">'
        + "".join(invalid)
        + "</ul>"
        if invalid
        else ""
    )
    return _table(headers, rows, classes) + why


def _scenario_name(result: ScenarioResult) -> str:
    if result.scenario != "Server":
        return result.scenario
    if result.target_qps:
        return f"Server @ {result.target_qps:g} QPS"
    return "Server (no rate met the bound)"


def _verdict(result: ScenarioResult) -> Raw | None:
    lg = result.loadgen
    if lg is None:
        return None
    text = "VALID" if lg.valid else "INVALID"
    title = lg.why_invalid() or "all constraints met"
    css = "ok" if lg.valid else "no"
    return Raw(f'<span class="{css}" title="{html.escape(title)}">{text}</span>')


def _server_section(configs: Sequence[ConfigurationResult]) -> str:
    rows = []
    for c in configs:
        for r in c.scenarios:
            for t in r.server_search:
                rows.append(
                    [
                        c.label,
                        t.target_qps,
                        t.achieved_qps,
                        t.p99_ms,
                        t.errors,
                        Raw(
                            '<span class="ok">yes</span>'
                            if t.met_latency_bound
                            else '<span class="no">no</span>'
                        ),
                    ]
                )
    if not rows:
        return ""
    bound = next(
        (
            r.settings.get("server_latency_bound_ms")
            for c in configs
            for r in c.scenarios
            if r.scenario == "Server"
        ),
        None,
    )
    note = f"Poisson arrivals at each target rate; the bound is p99 query latency <= {bound} ms."
    return _section(
        "Server: search for the highest QPS within the latency bound",
        _table(["configuration", "target QPS", "achieved QPS", "p99 ms", "errors", "within bound"], rows),
        note,
    )


def _cold_table(configs: Sequence[ConfigurationResult]) -> str:
    """Loading, first inference, warm-up and memory per configuration; empty (no section) when no
    configuration has any of them (a server measured from outside)."""
    if not any(c.cold_start or c.warmup or c.resources for c in configs):
        return ""
    rows = []
    for c in configs:
        cold, warm = c.cold_start, c.warmup
        rows.append(
            [
                c.label,
                cold.load_ms if cold else None,
                cold.first_inference_ms if cold else None,
                cold.process_start_to_first_prediction_ms if cold else None,
                cold.compiled_cache if cold else None,
                warm.samples if warm else None,
                warm.duration_s if warm else None,
                c.resources.rss_peak_mb if c.resources else None,
                c.resources.rss_steady_mb if c.resources else None,
                c.resources.process_rss_peak_mb if c.resources else None,
            ]
        )
    headers = [
        "configuration",
        "load ms",
        "first inference ms",
        "process start → first prediction ms",
        "compiled model",
        "warm-up samples",
        "warm-up s",
        "RSS peak MB",
        "RSS steady MB",
        "process peak RSS MB",
    ]
    return _table(headers, rows)


def _run_details(report: BenchReport) -> str:
    machine = {k: v for k, v in report.machine.items() if k != "runtimes"}
    blocks = [
        "<h3>Machine</h3>" + _kv(machine),
        "<h3>Versions</h3>" + _kv(report.versions),
        "<h3>Settings</h3>" + _kv(report.settings),
    ]
    if report.samples:
        s = report.samples
        blocks.append(
            "<h3>Samples</h3>"
            + _kv(
                {
                    "count": s.count,
                    "encoding": s.encoding,
                    "seed": s.seed,
                    "sha256 of all samples": s.digest,
                    "total bytes": s.total_bytes,
                    "names": ", ".join(s.names[:20]) + (" …" if len(s.names) > 20 else ""),
                }
            )
        )
    if report.notes:
        blocks.append(
            "<h3>Notes</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>"
        )
    return "".join(blocks)


def _kv(values: dict[str, Any]) -> str:
    items = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(plain_value(v))}</dd>" for k, v in values.items()
    )
    return f'<dl class="kv">{items}</dl>'


def plain_value(value: Any) -> str:
    """A value as report.json writes it (null, true, {"key": ...}); text and lists of it unquoted."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(plain_value(v) for v in value)
    return json.dumps(value, default=str)
