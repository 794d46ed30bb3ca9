"""The terminal display: user and error text is printed as it is, never read as rich markup."""

from __future__ import annotations

import io

from rich.console import Console

from edgeinfer.bench.console import RichProgress, print_report
from edgeinfer.bench.loading import ConfigurationSpec
from edgeinfer.bench.report import ConfigurationResult
from tests.bench.test_report import make_report


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def test_messages_keep_their_brackets() -> None:
    term, out = console()
    spec = ConfigurationSpec("mobilenet[/b]", "keras", "fp32", 1)
    message = "model 'mobilenet[/b]' is not in the zoo; pip install 'edgeinfer[keras]'"
    missing = ConfigurationResult(spec.label, "unavailable", spec.model, "keras", "fp32", 1, message=message)
    with RichProgress(term) as progress:
        progress.started(spec, 0, 1)
        progress.phase(spec, "[ONNXRuntimeError] [/b] warm-up")
        progress.finished(missing)
    print_report(term, make_report([missing]))
    assert message in out.getvalue()


def test_top1_agreement_is_a_dash_without_another_configuration(null_result: ConfigurationResult) -> None:
    term, out = console()
    print_report(term, make_report([null_result]))
    row = next(line for line in out.getvalue().splitlines() if line.startswith("│ null/fp32/t1"))
    assert row.rstrip(" │").endswith("-") and "%" not in row


def test_an_invalid_run_is_explained_under_the_table(null_result: ConfigurationResult) -> None:
    from dataclasses import replace

    from edgeinfer.bench.report import LoadGenResult

    verdict = LoadGenResult(
        "SingleStream",
        valid=False,
        metric="90th percentile latency (ns)",
        metric_value=1.0,
        constraints={"min_duration": True, "early_stopping": False},
        fields={"Early Stopping Result": "Need to process at least 662 queries [sic]."},
    )
    first = replace(null_result.scenarios[0], loadgen=verdict)
    report = make_report([replace(null_result, scenarios=(first, *null_result.scenarios[1:]))])
    term, out = console()
    print_report(term, report)
    text = out.getvalue()
    why = "unmet: early stopping; Need to process at least 662 queries [sic]."
    assert f"INVALID null/fp32/t1 SingleStream: {why}" in text
    assert "--mlperf takes MLPerf's official minimums" in text
    valid = tuple(
        replace(r, loadgen=replace(r.loadgen, valid=True)) if r.loadgen else r for r in null_result.scenarios
    )
    term, out = console()
    print_report(term, make_report([replace(null_result, scenarios=valid)]))
    assert "INVALID" not in out.getvalue() and "official minimums" not in out.getvalue()
