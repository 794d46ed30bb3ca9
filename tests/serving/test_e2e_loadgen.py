"""``edgeinfer loadgen`` against the real server: closed and open loop, both transports, a valid report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeinfer.bench.report import read_report
from edgeinfer.cli.main import main
from edgeinfer.serving.loadgen.scrape import parse_metrics
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.e2e


def _loadgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeinfer.cli.main", "loadgen", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_closed_loop_over_http_writes_a_bench_report(server: ServerProcess, tmp_path: Path) -> None:
    result = _loadgen(
        f"http://{server.http_url}", "--concurrency", "1,2", "--duration", "1", "--warmup", "0.3",
        "--report", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table_lines = [line for line in result.stderr.splitlines() if "│" in line]
    assert table_lines and all("…" not in line for line in table_lines)  # a pipe: no cut-off columns
    report = read_report(tmp_path / "report.json")
    assert report.kind == "loadgen"
    assert (tmp_path / "report.html").stat().st_size > 1000
    (config,) = report.configurations
    single, double = config.scenarios
    assert (single.scenario, double.scenario, double.workers) == ("SingleStream", "Concurrent", 2)
    for scenario in (single, double):
        assert scenario.errors == 0
        assert scenario.samples > 0 and scenario.samples_per_s > 0
        assert 0 < scenario.latency.p50_ms <= scenario.latency.p99_ms
        assert scenario.resources is not None and scenario.resources.rss_peak_mb > 50
        assert scenario.settings["server"]["mean_batch_size"] >= 1
        cores = scenario.settings["server"]["cpu_cores"]  # the server's own, from its /metrics
        resources = scenario.resources
        assert cores >= 1 and resources.process_cpu_percent_of_machine == pytest.approx(
            resources.process_cpu_percent_mean / cores
        )
    assert len(report.samples.digest) == 64  # the schema's digest, as bench and compare write it
    page = (tmp_path / "report.html").read_text()
    assert "Concurrent: sample latency" in page  # every level plotted, not only LoadGen's scenarios
    assert "answered p99 ms" in page and "measured by the client" in page
    assert "LoadGen issuing" not in page and "Cold start and warm-up" not in page  # bench's, not here


def test_open_loop_over_grpc_counts_deadline_errors_by_kind(server: ServerProcess, tmp_path: Path) -> None:
    result = _loadgen(
        f"grpc://{server.grpc_url}", "--metrics-url", server.http_url, "--rate", "40", "--poisson",
        "--duration", "1", "--warmup", "0.2", "--timeout-ms", "0.5", "--report", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (scenario,) = read_report(tmp_path / "report.json").configurations[0].scenarios
    assert scenario.scenario == "Server" and scenario.target_qps == 40
    assert scenario.errors == scenario.samples > 0  # 0.5 ms is never enough: every request refused at once
    # rates count every completed request, as the schema says; the answered ones are apart
    assert scenario.samples_per_s == pytest.approx(scenario.samples / scenario.duration_s, rel=0.01)
    assert scenario.settings["answered_per_s"] == 0 and scenario.settings["cpu_ms_per_answered"] is None
    assert scenario.cpu_ms_per_inference is not None and scenario.cpu_ms_per_inference > 0
    assert set(scenario.settings["errors_by_kind"]) == {"deadline_exceeded"}
    assert scenario.latency.errors == scenario.samples
    lag = scenario.settings["send_lag"]  # the client's own delay, kept apart from the server's
    assert lag["count"] == scenario.samples and 0 <= lag["p50_ms"] <= lag["p99_ms"] < 1000
    server_side = scenario.settings["server"]
    assert server_side["e2e_count"] >= scenario.samples  # the server's own e2e histogram, scraped
    assert any(bound == 0.25 for bound, _ in server_side["e2e_buckets"])


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    result = _loadgen("http://127.0.0.1:9", "--duration", "0.2", "--warmup", "0.1", "--report", str(tmp_path))
    assert result.returncode == 3
    assert "cannot load http://127.0.0.1:9" in result.stderr


@pytest.mark.parametrize("where", ["grpc", "nothing"])
def test_a_metrics_url_that_is_not_the_servers_http_is_a_clear_error(
    server: ServerProcess, tmp_path: Path, where: str
) -> None:
    """It was a traceback (the gRPC port) or blamed the target URL (a closed port)."""
    port = server.grpc_url.rsplit(":", 1)[1] if where == "grpc" else "9"
    result = _loadgen(
        f"http://{server.http_url}", "--duration", "0.3", "--warmup", "0",
        "--metrics-url", f"127.0.0.1:{port}", "--report", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    why = "closed before an HTTP answer (a gRPC port?)" if where == "grpc" else "refused"
    assert f"cannot read the server's figures from http://127.0.0.1:{port}/metrics: " in result.stderr
    assert why in result.stderr and "--metrics-url none" in result.stderr
    assert not (tmp_path / "report.json").exists()


def test_parse_metrics_sums_every_series() -> None:
    text = (
        "# HELP x\nprocess_cpu_seconds_total 1.5\n"
        'edgeinfer_batch_size_sum{model="a"} 10.0\nedgeinfer_batch_size_sum{model="b"} 5.0\n'
        "process_resident_memory_bytes 1.048576e+08\nunrelated 3\n"
    )
    assert parse_metrics(text) == {
        "process_cpu_seconds_total": 1.5,
        "edgeinfer_batch_size_sum": 15.0,
        "process_resident_memory_bytes": 104857600.0,
    }


def test_parse_metrics_for_one_model_leaves_the_others_out() -> None:
    text = (
        "process_cpu_seconds_total 1.5\nedgeinfer_cpu_cores 2.0\n"
        'edgeinfer_batch_size_sum{model="a"} 10.0\nedgeinfer_batch_size_sum{model="b"} 5.0\n'
        'edgeinfer_request_seconds_count{model="ab",protocol="http"} 7.0\n'
        'edgeinfer_request_seconds_count{model="a",protocol="http"} 3.0\n'
    )
    assert parse_metrics(text, "a") == {  # each loadgen of a two-model server counted both
        "process_cpu_seconds_total": 1.5,
        "edgeinfer_cpu_cores": 2.0,
        "edgeinfer_batch_size_sum": 10.0,
        "edgeinfer_request_seconds_count": 3.0,
    }


def test_parse_metrics_keeps_the_end_to_end_buckets_per_bound() -> None:
    text = (
        'edgeinfer_request_seconds_bucket{model="a",protocol="http",le="0.25"} 90.0\n'
        'edgeinfer_request_seconds_bucket{model="b",protocol="http",le="0.25"} 5.0\n'
        'edgeinfer_request_seconds_bucket{model="a",protocol="http",le="+Inf"} 100.0\n'
        'edgeinfer_request_seconds_count{model="a",protocol="http"} 100.0\n'
    )
    assert parse_metrics(text) == {
        "edgeinfer_request_seconds_bucket|0.25": 95.0,
        "edgeinfer_request_seconds_bucket|+Inf": 100.0,
        "edgeinfer_request_seconds_count": 100.0,
    }


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--rate", "inf", "--rate must be a finite number > 0, got inf"),
        ("--rate", "nan", "--rate must be a finite number > 0, got nan"),
        ("--duration", "nan", "--duration must be a finite number > 0, got nan"),
        ("--duration", "0", "--duration must be a finite number > 0, got 0"),
        ("--duration", "-1", "--duration must be a finite number > 0, got -1"),
        ("--warmup", "nan", "--warmup must be a finite number >= 0, got nan"),
        ("--warmup", "-2", "--warmup must be a finite number >= 0, got -2"),
        ("--timeout-ms", "-5", "--timeout-ms must be a finite number > 0, got -5"),
    ],
)
def test_numbers_a_run_cannot_honour_are_refused_up_front(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # in-process: refused before any connection (the target has no server) or report
    argv = ["loadgen", "http://127.0.0.1:9", "--duration", "1", option, value, "--report", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"edgeinfer: error: {message}\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--poisson"], "--poisson shapes an open loop's arrivals: give --rate too"),
        (["--rate", "5", "-c", "4"], "--concurrency sets a closed loop's clients and --rate an open loop's"),
    ],
)
def test_options_that_would_be_ignored_are_refused(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["loadgen", "http://127.0.0.1:9", *options, "--report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgeinfer: error: ") and message in err and err.count("\n") == 1, err


def test_a_bad_image_stops_the_run_over_grpc_as_over_http(server: ServerProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    for url in (f"http://{server.http_url}", f"grpc://{server.grpc_url}"):
        result = _loadgen(
            url, "--metrics-url", "none", "-c", "1", "--duration", "1", "--warmup", "0",
            "--images", str(bad), "--report", str(tmp_path / "out"),
        )  # fmt: skip
        assert result.returncode == 3, (url, result.stderr)
        assert "warm-up request failed (invalid_input)" in result.stderr, result.stderr


def test_a_target_port_out_of_range_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadgen", "http://127.0.0.1:99999", "--duration", "1"]) == 2
    assert capsys.readouterr().err.startswith("edgeinfer: error: target must look like http://HOST:PORT")


def test_unreachable_grpc_server_is_a_clear_error_as_over_http(tmp_path: Path) -> None:
    for mode in (["-c", "1"], ["--rate", "20"]):
        result = _loadgen(
            "grpc://127.0.0.1:9", *mode, "--duration", "1", "--warmup", "0", "--report", str(tmp_path)
        )
        assert result.returncode == 3, result.stderr
        assert "cannot load grpc://127.0.0.1:9: warm-up request failed (connection)" in result.stderr


def test_a_metrics_url_may_be_an_ipv6_address() -> None:
    from edgeinfer.cli.loadgen import _metrics_address
    from edgeinfer.errors import InvalidInput
    from edgeinfer.serving.loadgen.clients import Target

    target = Target.parse("grpc://[::1]:8001", "m")
    assert (target.host, target.port) == ("::1", 8001)
    assert _metrics_address("[::1]:8000", target) == ("::1", 8000)
    assert _metrics_address("http://127.0.0.1:8000/", target) == ("127.0.0.1", 8000)
    for bad in ("[::1:8000", "host:99999", "host", "host:port"):
        with pytest.raises(InvalidInput, match="--metrics-url must be HOST:PORT"):
            _metrics_address(bad, target)
