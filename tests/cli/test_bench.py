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
from edgeinfer.cli.main import main
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
    assert ort.extra["top1_agreement_with_baseline"] == 1.0
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
        (["--threads", "0"], "threads must be >= 1"),
        (["--batch-size", "two"], "invalid literal"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bench", "--report", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
