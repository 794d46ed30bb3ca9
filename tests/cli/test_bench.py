"""``edgeinfer bench`` as a user runs it: real processes, real model, a report that opens in a browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from edgeinfer.bench.report import read_report
from edgeinfer.bench.scenarios import Expectations, Scenario, loadgen_settings
from edgeinfer.bench.session import BenchRequest
from edgeinfer.cli.bench import build_request, skipped_combinations
from edgeinfer.cli.main import build_parser, main
from edgeinfer.models.repository import ModelRepository

QUICK = (
    "--duration",
    "0.5",
    "--min-queries",
    "10",
    "--warmup",
    "0.2",
    "--model-only",
    "0.2",
    "--samples",
    "12",
)


def edgeinfer(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEINFER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "edgeinfer.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def built_home(repo: ModelRepository) -> Path:
    repo.get("mobilenet_v2", "fp32")
    return repo.root


@pytest.fixture(scope="module")
def report_dir(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run: ONNX Runtime and Null, each in its own fresh process, two scenarios."""
    out = tmp_path_factory.mktemp("bench-report")
    done = edgeinfer(
        "bench", "--runtime", "ort,null", "--threads", "1", "--report", str(out), *QUICK, home=built_home
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SingleStream" in done.stdout and "report.json" in done.stdout
    return out


@pytest.mark.slow
@pytest.mark.e2e
def test_isolated_run_writes_a_complete_report(report_dir: Path) -> None:
    report = read_report(report_dir / "report.json")
    labels = [c.label for c in report.configurations]
    assert labels == ["onnxruntime/fp32/t1", "null/fp32/t1"]
    for config in report.configurations:
        assert config.status == "ok", config.message
        assert [s.scenario for s in config.scenarios] == ["SingleStream", "Offline"]
        cold = config.cold_start
        assert cold is not None and cold.process_start_to_first_prediction_ms is not None
        assert cold.process_start_to_first_prediction_ms > cold.load_ms + cold.first_inference_ms
        assert config.resources is not None and config.resources.process_rss_peak_mb > 20
    ort, null = report.configurations
    # Each configuration had its own process: the Null one never loaded ONNX Runtime's model.
    assert null.resources is not None and ort.resources is not None
    assert ort.extra.get("baseline") == ort.label  # the baseline (no Keras ran): not compared with itself
    assert "top1_agreement_with_baseline" not in ort.extra | null.extra  # nor are the Null runtime's zeros
    assert report.samples is not None and report.samples.count == 12
    assert "onnxruntime" in report.versions and "mlcommons-loadgen" in report.versions
    assert report.machine.get("cpu_model")
    assert (
        report_dir / "loadgen" / "onnxruntime_fp32_t1" / "SingleStream" / "mlperf_log_summary.txt"
    ).is_file()


@pytest.mark.slow
@pytest.mark.e2e
def test_report_renders_in_headless_chromium(report_dir: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/setup-system installs it)")
    shot = report_dir / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1200,3000",
                (report_dir / "report.html").as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert shot.is_file(), done.stderr
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        grey = image.convert("L")
        # The page has content all the way down: text, tables and plots, not a blank or error page.
        for top in range(0, 3000, 750):
            band = ImageStat.Stat(grey.crop((0, top, 1200, top + 750)))
            assert band.stddev[0] > 10, f"band at {top}px is blank"


def test_in_process_null_run(built_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "--home",
            str(built_home),
            "--runtime",
            "null",
            "--threads",
            "1",
            "--in-process",
            "--scenario",
            "single-stream",
            "--report",
            str(tmp_path),
            *QUICK,
        ]
    )
    assert code == 0
    assert "null/fp32/t1" in capsys.readouterr().out
    report = read_report(tmp_path / "report.json")
    assert report.settings["isolated_processes"] is False
    assert report.configurations[0].cold_start is not None
    assert (tmp_path / "report.html").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "batchy"], "unknown scenario"),
        (["--runtime", "tensorrt"], "unknown runtime"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--threads", "abc"], "--threads expects whole numbers, got 'abc'"),
        (["--batch-size", "two"], "--batch-size expects whole numbers"),
        (["--batch-size", "0"], "--batch-size values must be between 1 and 1024"),
        # before: accepted, and half a minute later "nothing was measured: MemoryError"
        (
            ["--batch-size", "1,100000000"],
            "--batch-size values must be between 1 and 1024, got '1,100000000'",
        ),
        (["--duration", "0"], "--duration must be > 0"),
        (["--mlperf", "--max-duration", "5"], "--max-duration (5) must be 0 (no limit) or at least"),
        # NaN passes every "x <= 0" test: refused up front, not when the results are written
        (["--warmup", "nan"], "--warmup must be a finite number"),
        (["--duration", "nan"], "--duration must be a finite number"),
        (["--max-duration", "inf"], "--max-duration must be a finite number"),
        (["--latency-bound-ms", "nan"], "--latency-bound-ms must be a finite number"),
        (["--target-qps", "inf"], "--target-qps must be a finite number"),
        (["--model-only=-inf"], "--model-only must be a finite number"),
        (["--precision", "fp64"], "unknown precision 'fp64'; choose from fp32, fp16, int8"),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--samples", "-3"], "--samples must be >= 1"),
        (["--interval-ms", "0"], "--interval-ms must be >= 10"),
        (["--top-k", "0"], "--top-k must be >= 1"),
        (["--runtime", "keras", "--precision", "int8"], "nothing to run: keras/int8 is skipped"),
        # past these, LoadGen's 64-bit fields overflow mid-run: refused before anything runs
        (["--seed=-1"], "--seed must be >= 0, got -1"),
        (["--seed", str(2**64)], "--seed must be at most"),
        (["--duration", "1e300"], "--duration must be at most 604800"),
        (["--target-qps", "1e300"], "--target-qps must be at most 1e+06"),
        (["--latency-bound-ms", "1e300"], "--latency-bound-ms must be at most"),
        (["--model", "nosuch"], "unknown model 'nosuch'; known here:"),
        (["--model", "../x"], "'../x' is not a model name"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bench", "--report", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing is created for a run that cannot start


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_report_path_that_cannot_be_a_folder_is_refused_before_the_run(
    below: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert main(["bench", "--runtime", "null", "--report", str(afile / below)]) == 2
    err = capsys.readouterr().err
    assert "--report" in err and len(err.strip().splitlines()) == 1, err


def request_for(report: Path, *args: str) -> BenchRequest:
    return build_request(build_parser().parse_args(["bench", "--report", str(report), *args]))


def test_the_report_folder_is_created_up_front(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    request_for(out)
    assert out.is_dir()


def test_repeated_list_items_run_once(tmp_path: Path) -> None:
    args = ("-b", "2,2,4", "-p", "fp32,FP32", "-t", "1,1", "-s", "offline,Offline", "-r", "ort,onnx")
    request = request_for(tmp_path, *args)
    assert request.options.batch_sizes == (2, 4)
    assert request.precisions == ("fp32",) and request.threads == (1,)
    assert [s.scenario for s in request.options.scenarios] == [Scenario.OFFLINE]


def test_mlperf_settings_hold_what_loadgen_is_told(tmp_path: Path) -> None:
    args = ("--mlperf", "-s", "multi-stream,server", "--latency-bound-ms", "100", "--samples-per-query", "4")
    request = request_for(tmp_path, *args, "--duration", "5")
    multi, server = request.options.scenarios
    assert (multi.min_duration_s, multi.min_query_count) == (600.0, 662)  # official floors kept
    assert multi.multi_stream_samples_per_query == 4 and server.server_latency_bound_ms == 100.0
    expect = Expectations(sample_latency_ns=10_000_000, samples_per_s=100.0)
    for settings in (multi, server):
        ts = loadgen_settings(settings, expect, sample_count=1024, target_qps=10.0)
        assert ts.min_duration_ms == settings.min_duration_s * 1000
        assert ts.min_query_count == settings.min_query_count
        assert ts.multi_stream_samples_per_query == settings.multi_stream_samples_per_query
        assert ts.server_target_latency_ns == settings.server_latency_bound_ms * 1e6
    official = request_for(tmp_path, "--mlperf", "-s", "multi-stream,server")
    multi, server = official.options.scenarios
    assert multi.multi_stream_samples_per_query == 8 and server.server_latency_bound_ms == 15.0


def test_nothing_measured_exits_nonzero_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    (home / "models" / "ghost").mkdir(parents=True)  # a model folder with no build in it
    args = ["--home", str(home), "--runtime", "null", "--samples", "2", "--report", str(tmp_path / "out")]
    assert main(["bench", "--model", "ghost", *args]) == 1
    err = capsys.readouterr().err
    assert "nothing was measured" in err and "'ghost' was imported" in err


def test_a_skipped_combination_is_said_on_stderr(tmp_path: Path) -> None:
    request = request_for(tmp_path, "-r", "keras,null", "-p", "fp32,int8")
    assert skipped_combinations(request) == [
        "keras/int8 is skipped: Keras, the blog's path, runs its FP32 weights only"
    ]
