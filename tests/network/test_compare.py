"""``edgeinfer compare`` end to end: real server, real link, real split tail, the report read back."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgeinfer.bench.report import read_report
from edgeinfer.cli.compare import build_settings
from edgeinfer.cli.main import build_parser
from edgeinfer.engine.engine import Engine
from edgeinfer.errors import InvalidInput


def _compare(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "edgeinfer.cli.main",
        "compare",
        "--runtime",
        "onnxruntime",
        "--threads",
        "1",
        "--report",
        str(out),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.e2e
@pytest.mark.slow
def test_compare_measures_every_path_and_writes_the_report(
    engine: Engine, tmp_path: Path, photos: dict[str, Path]
) -> None:
    done = _compare(
        tmp_path,
        "--profile",
        "lte",
        "--duration",
        "1",
        "--min-requests",
        "3",
        "--samples",
        "3",
        "--policy",
        "edge,cloud,auto",
        "--upload",
        "jpeg,tensor",
        "--split",
        "98",
        "--cloud-speedup",
        "4",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = read_report(tmp_path / "report.json")
    assert report.kind == "edge-cloud"
    by_label = {c.label: c for c in report.configurations}
    split_labels = [label for label in by_label if label.startswith("split · cut 98 ")]
    assert len(split_labels) == 1 and split_labels[0].endswith(" · lte")
    assert set(by_label) - set(split_labels) == {
        "edge",
        "edge-server · jpeg",
        "cloud · jpeg · lte",
        "cloud · tensor · lte",
        "edge-only · lte",
        "cloud-only · jpeg · lte",
        "auto · jpeg · lte",
    }
    for config in report.configurations:
        scenario = config.scenarios[0]
        assert scenario.errors == 0 and scenario.samples >= 3, config.label
        if "server_work" in config.extra:  # the server's own figures leave the warm-up out, too
            assert config.extra["server_work"]["requests"] == scenario.samples, config.label
            assert config.extra["router"]["requests"] == scenario.samples, config.label
    assert report.samples is not None and report.samples.encoding == "jpeg"  # what was sent
    assert all(name.endswith(".jpg") for name in report.samples.names)
    jpeg, tensor = by_label["cloud · jpeg · lte"].extra, by_label["cloud · tensor · lte"].extra
    assert tensor["bytes_sent_per_inference"] > 3 * 224 * 224 * 4 > jpeg["bytes_sent_per_inference"]
    assert "upload (modelled)" in jpeg["stage_means_ms"] and "server compute" in jpeg["stage_means_ms"]
    assert jpeg["speedup_adjusted"]["speedup"] == 4.0
    assert jpeg["speedup_adjusted"]["p50_ms"] < by_label["cloud · jpeg · lte"].scenarios[0].latency.p50_ms
    assert any("same machine" in note for note in report.notes)
    # The analytical model against what was measured on the same link.
    crossover = report.settings["crossover"]
    predicted = crossover["profiles"][0]["predicted_cloud_ms"]["1x"]
    assert crossover["profiles"][0]["down_mbps"] is not None  # the page's bars use it, as the figure does
    measured = by_label["cloud · jpeg · lte"].scenarios[0].latency.mean_ms
    assert predicted == pytest.approx(measured, rel=0.3)
    split = [p for p in report.settings["split_points"] if "measured_p50_ms" in p]
    assert len(split) == 1 and split[0]["cut"] == 98
    assert split[0]["top1_agreement"] == "3/3" and split[0]["max_abs_diff"] < 0.05
    page = (tmp_path / "report.html").read_text()
    assert "Crossover" in page and "Split computing" in page and "<svg" in page
    assert "<dd>None</dd>" not in page and "<dd>True</dd>" not in page  # settings as report.json has them
    decisions = (tmp_path / "logs" / "decisions-auto-lte.jsonl").read_text().splitlines()
    assert decisions and "reason" in json.loads(decisions[0])
    (policies,) = report.settings["policy_comparison"]
    assert policies["paired"] and policies["auto_p90_ms"] > 0 and "within_10_percent" in policies
    assert "Edge-only, cloud-only and auto" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "sometimes"], "--policy"),
        (["--profile", "satellite"], "unknown network profile"),
        (["--split", "11"], "not a cut point"),
        (["--cloud-speedup", "0"], "cloud-speedup"),
        (["--cloud-speedup", "inf"], "--cloud-speedup must be a finite number > 0"),
        (["--duration", "nan"], "--duration must be a finite number > 0"),
        (["--rate", "nan"], "--rate must be a finite number > 0"),
        (["--deadline-ms", "-5"], "--deadline-ms must be a finite number > 0"),
        (["--threads", "0"], "at least 1"),
        (["--samples", "100000"], "--samples must be 1..2000"),
        (["--cloud-url", "http://127.0.0.1:99999", "--policy", "cloud"], "must look like http://HOST:PORT"),
        (["--cloud-url", "http://[::1", "--policy", "auto"], "must look like http://HOST:PORT"),
    ],
)
def test_compare_rejects_bad_arguments_before_measuring(
    engine: Engine, tmp_path: Path, args: list[str], message: str
) -> None:
    done = _compare(tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "report.json").exists()


def test_repeated_profiles_uploads_and_policies_run_once_in_the_order_given(tmp_path: Path) -> None:
    repeated = [
        "--profile",
        "loopback,LOOPBACK",
        "--upload",
        "JPEG,tensor,jpeg",
        "--policy",
        "Cloud,edge,cloud",
    ]
    args = build_parser().parse_args(["compare", *repeated, "--report", str(tmp_path)])
    settings = build_settings(args)
    assert [p.name for p in settings.profiles] == ["loopback"]
    assert settings.uploads == ("jpeg", "tensor")
    assert settings.policies == ("cloud", "edge")


@pytest.mark.parametrize("uploads", ["", ",", " , "])
def test_an_empty_upload_list_is_refused(tmp_path: Path, uploads: str) -> None:
    """Before, it was accepted and the cloud path was silently not measured."""
    args = build_parser().parse_args(["compare", "--upload", uploads, "--report", str(tmp_path)])
    with pytest.raises(InvalidInput, match=r"unknown upload \(none\); choose from jpeg, tensor"):
        build_settings(args)


@pytest.mark.parametrize("policy", ["cloud", "auto"])  # auto measures cloud-only too
def test_an_unreachable_cloud_url_is_refused_before_measuring(
    engine: Engine, tmp_path: Path, policy: str
) -> None:
    done = _compare(tmp_path, "--cloud-url", "http://127.0.0.1:9", "--policy", policy)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "--cloud-url http://127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "report.json").exists()


class _FailingCloud(http.server.BaseHTTPRequestHandler):
    """A cloud that says it is ready and then answers every inference 503."""

    def do_GET(self) -> None:  # http.server calls these by name
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b'{"error": "the accelerator fell off the bus"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_path_that_failed_every_request_makes_the_run_exit_1(engine: Engine, tmp_path: Path) -> None:
    cloud = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingCloud)
    threading.Thread(target=cloud.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{cloud.server_address[1]}"
        done = _compare(
            tmp_path, "--profile", "lte", "--duration", "0.5", "--min-requests", "2", "--samples", "2",
            "--policy", "edge,cloud", "--upload", "jpeg", "--cloud-url", url,
        )  # fmt: skip
    finally:
        cloud.shutdown()
        cloud.server_close()
    assert done.returncode == 1, done.stderr[-3000:]
    assert "every request on cloud · jpeg · lte failed" in done.stderr and "Traceback" not in done.stderr
    assert "every request on edge" not in done.stderr  # the paths that worked are not blamed
    report = read_report(tmp_path / "report.json")  # written all the same, errors and all
    by_label = {c.label: c for c in report.configurations}
    assert by_label["cloud · jpeg · lte"].scenarios[0].errors >= 2
    assert by_label["edge"].scenarios[0].errors == 0


def test_a_report_folder_that_cannot_be_written_is_refused_before_measuring(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    done = _compare(tmp_path, "--policy", "edge", "--report", str(afile / "rep"))
    assert done.returncode == 2 and "--report" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.e2e
def test_sigterm_stops_the_run_and_its_processes(
    engine: Engine, tmp_path: Path, photos: dict[str, Path]
) -> None:
    import signal
    import time

    import psutil

    command = [
        sys.executable,
        "-m",
        "edgeinfer.cli.main",
        "compare",
        "--runtime",
        "onnxruntime",
        "--threads",
        "1",
        "--profile",
        "lte",
        "--duration",
        "30",
        "--report",
        str(tmp_path),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and len(children) < 2:  # the server and a link are up
            children = psutil.Process(proc.pid).children()
            time.sleep(0.2)
        assert len(children) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
