"""The comparison's report built from measured paths, without running them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeinfer.network.compare import CompareRun, CompareSettings, PathResult
from edgeinfer.network.compare_report import build_report
from edgeinfer.network.drive import Trace
from edgeinfer.network.processes import ServerWork
from edgeinfer.network.profiles import get_profile


def _server_work(*, decoded: bool) -> ServerWork:
    """What the server's /metrics give for 10 requests of 8 ms compute, 3 ms decode + preprocess
    for a JPEG upload; a tensor upload is never decoded, so its prepare family does not move."""
    after = {
        "edgeinfer_request_seconds_count": 10.0,
        "edgeinfer_request_seconds_sum": 0.12,
        "edgeinfer_queue_seconds_count": 10.0,
        "edgeinfer_queue_seconds_sum": 0.0,
        "edgeinfer_batch_size_count": 10.0,
        "edgeinfer_batch_size_sum": 10.0,
        "edgeinfer_compute_seconds_count": 10.0,
        "edgeinfer_compute_seconds_sum": 0.08,
    }
    if decoded:
        after |= {"edgeinfer_prepare_seconds_count": 10.0, "edgeinfer_prepare_seconds_sum": 0.03}
    return ServerWork.between({}, after)


def _run(tmp_path: Path, speedup: float) -> CompareRun:
    lte = get_profile("lte")
    settings = CompareSettings(profiles=(lte,), out_dir=tmp_path, cloud_speedup=speedup, samples=1)
    run = CompareRun(settings, images=[b"\xff\xd8jpeg"], image_names=["chelsea.png.jpg"])
    for upload in ("jpeg", "tensor"):
        trace = Trace(latencies_ns=[20_000_000] * 10, failed=[False] * 10, duration_s=0.2)
        run.results.append(PathResult("cloud", trace, lte, upload, _server_work(decoded=upload == "jpeg")))
    return run


def test_the_speedup_scales_a_tensor_uploads_compute_too(tmp_path: Path) -> None:
    report = build_report(_run(tmp_path, speedup=4.0), ("edgeinfer", "compare"))
    by_label = {c.label: c.extra for c in report.configurations}
    jpeg, tensor = by_label["cloud · jpeg · lte"], by_label["cloud · tensor · lte"]
    assert tensor["server_work"]["prepare_ms"] is None  # nothing decoded on the server
    # decode + preprocess + compute for the JPEG, the compute alone for the tensor; 3/4 of it saved
    assert jpeg["speedup_adjusted"]["saved_ms"] == pytest.approx((3 + 8) * 0.75)
    assert tensor["speedup_adjusted"]["saved_ms"] == pytest.approx(8 * 0.75)
    assert tensor["speedup_adjusted"]["p50_ms"] == pytest.approx(20 - 6, rel=0.01)
    assert any("a tensor upload's is its compute alone" in note for note in report.notes)


def test_no_speedup_no_adjusted_figures(tmp_path: Path) -> None:
    report = build_report(_run(tmp_path, speedup=1.0), ("edgeinfer", "compare"))
    assert all("speedup_adjusted" not in c.extra for c in report.configurations)
