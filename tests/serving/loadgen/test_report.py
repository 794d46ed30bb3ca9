"""The load generator's report says what it sent: its samples' encoding, count and digest."""

from __future__ import annotations

from pathlib import Path

from edgeinfer.bench.report import BenchReport
from edgeinfer.bench.samples import BENCH_PHOTOS, load_samples, samples_digest
from edgeinfer.serving.loadgen.clients import Target
from edgeinfer.serving.loadgen.report import build_report
from edgeinfer.serving.loadgen.workload import Sample, as_tensors, file_samples, photo_samples


def _report(samples: list[Sample]) -> BenchReport:
    return build_report(
        Target.parse("http://127.0.0.1:8000", "mobilenet_v2"),
        results=[],
        samples=samples,
        settings={},
        seed=0,
        machine={},
        versions={},
    )


def test_the_bundled_photos_are_reported_as_the_jpeg_they_were_sent_as(photos: dict[str, Path]) -> None:
    """docs/REPORT_SCHEMA.md: "jpeg" is photos re-encoded as a camera sends them (quality 90)."""
    sent = photo_samples(2)
    assert all(s.data[:2] == b"\xff\xd8" for s in sent)  # JPEG, whatever the shipped file was
    report = _report(sent)
    assert report.samples is not None and report.samples.encoding == "jpeg"
    tensors = _report(as_tensors(sent, "mobilenet_v2"))  # preprocessed here from the same JPEGs
    assert tensors.samples is not None and tensors.samples.encoding == "jpeg"
    assert tensors.samples.digest == report.samples.digest
    assert tensors.configurations[0].label.endswith(" tensor")


def test_image_files_given_are_reported_as_sent_unchanged(photos: dict[str, Path]) -> None:
    report = _report(file_samples([photos["chelsea"]]))  # a PNG, sent as it is
    assert report.samples is not None and report.samples.encoding == "original"
    assert report.samples.names == (photos["chelsea"].name,)


def test_the_photos_are_benchs_so_the_same_inputs_give_the_same_digest(photos: dict[str, Path]) -> None:
    """bench's natural photos only (no textures, charts or logos), the same bytes as bench sends."""
    sent = _report(photo_samples(8)).samples
    benched = load_samples(8, encoding="jpeg")
    assert sent is not None and sent.digest == samples_digest(benched)
    assert sent.names == tuple(s.name for s in benched)
    assert {name.split(".")[0] for name in sent.names} <= set(BENCH_PHOTOS)
