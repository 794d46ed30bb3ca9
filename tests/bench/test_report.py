"""The report schema: JSON round trip, versioning, and a self-contained HTML page."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from edgeinfer.bench.compare import speedups
from edgeinfer.bench.report import (
    SCHEMA_VERSION,
    BenchReport,
    ConfigurationResult,
    SampleSet,
    from_dict,
    read_report,
    to_dict,
    utc_now,
    write_report,
)
from edgeinfer.errors import IntegrityError


def make_report(configs: list[ConfigurationResult]) -> BenchReport:
    return BenchReport(
        kind="bench",
        title="test report <&>",
        created_utc=utc_now(),
        edgeinfer_version="0.1.0",
        command=("edgeinfer", "bench"),
        machine={"cpu_model": "test cpu", "usable_cores": 2, "isa_flags": ["AVX2"]},
        versions={"python": "3.11"},
        settings={"scenarios": [{"scenario": "SingleStream"}]},
        configurations=tuple(configs),
        samples=SampleSet(12, 0, "ab" * 32, 1234, ("chelsea.png",)),
        speedups=speedups(configs),
        notes=("a note",),
    )


@pytest.fixture(scope="module")
def report(null_result: ConfigurationResult) -> BenchReport:
    second = replace(null_result, label="null/fp32/t2", threads=2)
    missing = ConfigurationResult(
        "keras/fp32/t1", "unavailable", "mobilenet_v2", "keras", "fp32", 1, message="keras is not installed"
    )
    return make_report([null_result, second, missing])


def test_json_round_trip_is_lossless(report: BenchReport, tmp_path: Path) -> None:
    paths = write_report(report, tmp_path / "out")
    raw = json.loads(paths.json.read_text())
    assert raw["schema"] == "edgeinfer.bench.report" and raw["schema_version"] == SCHEMA_VERSION
    again = read_report(paths.json)
    assert again == report
    assert json.loads(json.dumps(to_dict(from_dict(BenchReport, raw)))) == raw


def test_other_schema_versions_are_refused(report: BenchReport, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    raw = to_dict(report)
    raw["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match="version"):
        read_report(path)
    path.write_text("{not json")
    with pytest.raises(IntegrityError, match="cannot read report"):
        read_report(path)


def test_html_is_self_contained_and_shows_the_numbers(report: BenchReport, tmp_path: Path) -> None:
    html = write_report(report, tmp_path).html.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "test report &lt;&amp;&gt;" in html  # escaped
    # Nothing is fetched: no scripts, stylesheets, images or fonts from anywhere.
    assert not re.search(r"<script|<link|<img|@import|url\((?!#)", html)  # url(#id): inside the SVG
    assert not re.search(r"(src|href)=\"https?:", html)
    assert html.count("<svg") >= 4  # CDFs, histograms, stage breakdown, throughput, timeline
    for text in (
        "SingleStream",
        "Offline",
        "Where the time goes",
        "Throughput vs batch size",
        "keras is not installed",
        "unavailable",
        "a note",
        "test cpu",
    ):
        assert text in html, text
    ss = report.configurations[0].scenario("SingleStream")
    assert ss is not None
    p90 = ss.latency.p90_ms
    assert (f"{p90:,.3f}" if p90 < 10 else f"{p90:,.1f}") in html  # as the summary table rounds it


def test_write_report_creates_the_directory_and_replaces_files(report: BenchReport, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    first = write_report(report, out)
    second = write_report(replace(report, title="second"), out)
    assert first == second
    assert "second" in second.html.read_text()
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]


def test_the_cold_start_says_whether_a_compiled_model_was_imported(
    report: BenchReport, tmp_path: Path
) -> None:
    first = report.configurations[0]
    assert first.cold_start is not None
    imported = replace(first, cold_start=replace(first.cold_start, compiled_cache="loaded"))
    changed = replace(report, configurations=(imported, *report.configurations[1:]))
    paths = write_report(changed, tmp_path)
    assert ">compiled model</th>" in paths.html.read_text()
    assert ">loaded</td>" in paths.html.read_text()
    assert read_report(paths.json).configurations[0].cold_start.compiled_cache == "loaded"  # type: ignore[union-attr]


def test_the_page_says_why_loadgen_called_a_run_invalid(report: BenchReport, tmp_path: Path) -> None:
    invalid = [r for c in report.configurations for r in c.scenarios if r.loadgen and not r.loadgen.valid]
    assert invalid  # the fixture's runs are far too short for LoadGen
    page = write_report(report, tmp_path).html.read_text()
    assert f"LoadGen called {len(invalid)} run(s) INVALID" in page
    assert html.escape(invalid[0].loadgen.why_invalid()) in page  # type: ignore[union-attr]


def test_html_settings_read_as_json(report: BenchReport, tmp_path: Path) -> None:
    settings = {
        "repository": None,
        "isolated_processes": True,
        "scenarios": [{"scenario": "Offline", "mlperf": False}],
    }
    html = write_report(replace(report, settings=settings), tmp_path).html.read_text()
    assert "<dd>null</dd>" in html and "<dd>true</dd>" in html
    assert "{&quot;scenario&quot;: &quot;Offline&quot;, &quot;mlperf&quot;: false}" in html
    assert "None" not in html and "False" not in html


def test_inline_svgs_do_not_share_element_ids(report: BenchReport, tmp_path: Path) -> None:
    html = write_report(report, tmp_path).html.read_text()
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert ids and len(ids) == len(set(ids))
    for ref in re.findall(r'url\(#([^)]+)\)|href="#([^"]+)"', html):
        assert (ref[0] or ref[1]) in ids  # every reference still finds its element


def test_timeline_phase_labels_do_not_overlap(null_result: ConfigurationResult) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edgeinfer.bench.plots import _timeline_panel

    timeline = null_result.timeline
    assert timeline is not None
    end = timeline.t_s[-1]
    names = ("warm-up", "SingleStream", "MultiStream", "Server @ 58.1 QPS", "Offline-b1", "model-only")
    starts = (0.0, 0.1, 0.16, 0.22, 0.28, 0.9)  # short phases side by side, as in the audit's report
    config = replace(
        null_result,
        timeline=replace(timeline, marks=tuple((s * end, n) for s, n in zip(starts, names, strict=True))),
    )
    fig = Figure(figsize=(9.0, 2.0), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    _timeline_panel(fig.add_subplot(), config)
    canvas.draw()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts]
    assert len(boxes) >= 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_the_summary_shows_a_peak_rss_without_a_singlestream_run(null_result: ConfigurationResult) -> None:
    """A load generator's report with only open-loop levels has its RSS in those levels alone;
    before, its summary showed none."""
    from edgeinfer.bench.html import _rss_peak_mb

    ss = null_result.scenario("SingleStream")
    assert ss is not None and ss.resources is not None
    assert _rss_peak_mb(null_result) == ss.resources.rss_peak_mb
    levels = [
        replace(ss, scenario="Server", resources=replace(ss.resources, rss_peak_mb=peak))
        for peak in (300.0, 420.5)
    ]
    served = replace(null_result, scenarios=tuple(levels), resources=None)
    assert _rss_peak_mb(served) == 420.5
    assert _rss_peak_mb(replace(served, scenarios=())) is None
