"""MQTT against a real Mosquitto broker: every message checked, broker down and killed mid-run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edgeinfer.engine import Engine
from edgeinfer.errors import InvalidInput
from edgeinfer.models.repository import ModelRepository
from edgeinfer.streams import CaptureOptions, PipelineOptions, RunSummary, StreamPipeline, open_source
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.sinks.mqtt import MqttOptions, MqttSink
from tests.streams.conftest import Broker, Clip, Subscriber
from tests.streams.test_pipeline import CATS, Recorder

pytestmark = pytest.mark.e2e
PAYLOAD_KEYS = {
    "stream",
    "seq",
    "label",
    "index",
    "score",
    "top_k",
    "capture_ns",
    "capture_unix_ns",
    "latency_ms",
}


@pytest.fixture(scope="module")
def engine(repo: ModelRepository) -> Iterator[Engine]:
    with Engine.load("mobilenet_v2", runtime="onnxruntime", repository=repo) as loaded:
        loaded.warmup((1, 2))
        yield loaded


def pipeline(
    engine: Engine, clips: dict[str, Clip], sink: MqttSink, events: EventQueue, **options: Any
) -> tuple[StreamPipeline, Recorder]:
    capture = CaptureOptions(fps=15, loop=bool(options.get("duration_s")))
    recorder = Recorder()
    built = StreamPipeline(
        engine,
        [(name, open_source(str(clip.path), capture)) for name, clip in clips.items()],
        capture=capture,
        options=PipelineOptions(**options),
        sinks=[sink, recorder],
        events=events,
    )
    return built, recorder


def check_message(topic: str, payload: dict[str, Any], recorder: Recorder) -> None:
    """One received message: right topic, complete payload, and it is a result the pipeline made."""
    assert payload.keys() >= PAYLOAD_KEYS, payload
    assert topic == f"edgeinfer-test/{payload['stream']}"
    made = {(r.stream, r.frame.seq): r for r in recorder.results}
    result = made[(payload["stream"], payload["seq"])]
    assert payload["label"] == result.top.label and payload["capture_ns"] == result.frame.capture_ns
    assert payload["latency_ms"] == pytest.approx(result.latency_ns / 1e6, abs=0.001)


def test_every_result_reaches_the_subscriber(
    engine: Engine, broker: Broker, subscriber: Subscriber, coffee_clip: Clip, cat_clip: Clip
) -> None:
    events = EventQueue()
    sink = MqttSink(MqttOptions.from_url(broker.url), events)
    assert sink.wait_connected(5)
    pipe, recorder = pipeline(engine, {"coffee": coffee_clip, "cat": cat_clip}, sink, events)
    summary = pipe.run()
    (report,) = [r for r in summary.sinks if r.sink == "mqtt"]
    processed = sum(s.processed for s in summary.streams)
    assert processed == len(recorder.results) > 10
    assert (report.delivered, report.undelivered) == (processed, 0)
    received = subscriber.wait_for(processed)
    assert len(received) == processed and not subscriber.bad
    for topic, payload in received:
        check_message(topic, payload, recorder)
    assert {(p["stream"], p["seq"]) for _, p in received} == {
        (r.stream, r.frame.seq) for r in recorder.results
    }
    cat_labels = [p["label"] for _, p in received if p["stream"] == "cat"]
    assert sum(label in CATS for label in cat_labels) >= 0.9 * len(cat_labels)


@pytest.mark.slow
def test_a_broker_that_is_down_at_the_start_is_retried_and_processing_goes_on(
    engine: Engine, broker_down: Broker, coffee_clip: Clip
) -> None:
    events = EventQueue()
    sink = MqttSink(MqttOptions.from_url(broker_down.url, reconnect_max_s=1), events)
    pipe, recorder = pipeline(engine, {"coffee": coffee_clip}, sink, events, duration_s=4.0)
    summary_box: list[RunSummary] = []
    runner = threading.Thread(target=lambda: summary_box.append(pipe.run()))
    runner.start()
    time.sleep(1.2)  # processing without a broker
    assert not sink.connected and len(recorder.results) > 5
    broker_down.start()
    subscriber = Subscriber(broker_down.port, "edgeinfer-test")
    try:
        runner.join(30)
        (summary,) = summary_box
        (report,) = [r for r in summary.sinks if r.sink == "mqtt"]
        processed = summary.streams[0].processed
        assert report.delivered > 0 and report.undelivered > 0
        assert report.delivered + report.undelivered == processed
        assert "while the broker was unreachable" in report.detail
        kinds = [e.kind for e in recorder.events if e.stream == "mqtt"]
        assert kinds[0] == "mqtt_unreachable" and "mqtt_connected" in kinds
        received = subscriber.wait_for(report.delivered, timeout_s=5)
        assert received and not subscriber.bad
        for topic, payload in received:
            check_message(topic, payload, recorder)
    finally:
        subscriber.close()


def test_a_broker_never_reached_in_the_whole_run_is_an_error(
    engine: Engine, broker_down: Broker, coffee_clip: Clip
) -> None:
    """Processing goes on without it, but an output that delivered nothing at all failed: one error,
    so the run's exit code says so (a broker down for a while is a warning)."""
    events = EventQueue()
    sink = MqttSink(MqttOptions.from_url(broker_down.url, reconnect_max_s=1), events)
    pipe, recorder = pipeline(engine, {"coffee": coffee_clip}, sink, events, duration_s=1.5)
    summary = pipe.run()
    (report,) = [r for r in summary.sinks if r.sink == "mqtt"]
    assert report.delivered == 0 and report.undelivered == summary.streams[0].processed > 0
    kinds = [(e.level, e.kind) for e in recorder.events if e.stream == "mqtt"]
    assert ("error", "mqtt_never_connected") in kinds and summary.errors >= 1


def test_urls_that_cannot_be_parsed_and_passwords_in_messages() -> None:
    with pytest.raises(InvalidInput, match=r"bad MQTT URL 'mqtt://\[::1/t'"):
        MqttOptions.from_url("mqtt://[::1/t")
    with pytest.raises(InvalidInput, match=r"'ftp://user:\*\*\*@host/t' must start with mqtt://") as refused:
        MqttOptions.from_url("ftp://user:s3cret@host/t")
    assert "s3cret" not in str(refused.value)


@pytest.mark.slow
def test_a_refusing_broker_is_reported_once_and_retried_until_it_accepts(broker_down: Broker) -> None:
    broker_down.allow_anonymous(False)  # no user is known: every connection is refused
    broker_down.start()
    events = EventQueue()
    sink = MqttSink(MqttOptions.from_url(broker_down.url, reconnect_max_s=1), events)
    try:
        time.sleep(3.5)  # three or four refusals at 1 s backoff
        assert not sink.connected
        refused = [e for e in events.drain() if e.kind == "mqtt_refused"]
        assert len(refused) == 1 and "Not authorized" in refused[0].message  # told once, not per retry
        assert "retrying" in refused[0].message
        broker_down.kill()
        broker_down.allow_anonymous(True)
        broker_down.start()
        assert sink.wait_connected(10)  # still retrying
        kinds = [e.kind for e in events.drain()]  # (a retry during the restart: mqtt_unreachable)
        assert kinds[-1] == "mqtt_connected" and "mqtt_refused" not in kinds
    finally:
        sink.close(None)


def _run_until_published(
    engine: Engine, clips: dict[str, Clip], sink: MqttSink, events: EventQueue
) -> tuple[threading.Thread, list[RunSummary], Recorder]:
    """A 5 s run of ``clips`` on a thread of its own, returned once the broker acknowledged 10
    results: its thread, where its summary will be, and what it recorded."""
    pipe, recorder = pipeline(engine, clips, sink, events, duration_s=5.0)
    summary_box: list[RunSummary] = []
    runner = threading.Thread(target=lambda: summary_box.append(pipe.run()))
    runner.start()
    deadline = time.monotonic() + 10
    while sink.published < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    return runner, summary_box, recorder


@pytest.mark.slow
def test_a_broker_killed_mid_run_is_reconnected_and_the_gap_is_counted(
    engine: Engine, broker: Broker, subscriber: Subscriber, coffee_clip: Clip, cat_clip: Clip
) -> None:
    events = EventQueue()
    sink = MqttSink(MqttOptions.from_url(broker.url, reconnect_max_s=1), events)
    assert sink.wait_connected(5)
    clips = {"coffee": coffee_clip, "cat": cat_clip}
    runner, summary_box, recorder = _run_until_published(engine, clips, sink, events)
    broker.kill()  # SIGKILL: no goodbye to anyone
    before_kill = subscriber.wait_for(0)
    time.sleep(1.0)
    broker.start()  # same port
    after = Subscriber(broker.port, "edgeinfer-test")
    try:
        runner.join(30)
        (summary,) = summary_box
        (report,) = [r for r in summary.sinks if r.sink == "mqtt"]
        processed = sum(s.processed for s in summary.streams)
        assert report.delivered + report.undelivered == processed
        assert report.undelivered > 0 and report.delivered > len(before_kill)
        kinds = [e.kind for e in recorder.events if e.stream == "mqtt"]
        assert "mqtt_disconnected" in kinds
        assert any(e.kind == "mqtt_connected" and "reconnected" in e.message for e in recorder.events)
        assert all(s.status == "stopped" for s in summary.streams)  # the streams never stopped
        received_after = after.wait_for(1, timeout_s=5)
        assert received_after and not after.bad and not subscriber.bad
        for topic, payload in [*before_kill, *received_after]:
            check_message(topic, payload, recorder)
    finally:
        after.close()


def test_mqtt_urls_are_parsed_and_bad_ones_refused() -> None:
    options = MqttOptions.from_url("mqtt://user:p%40ss@broker.local:1884/site/cams")
    assert (options.host, options.port, options.topic_prefix) == ("broker.local", 1884, "site/cams")
    assert (options.username, options.password, options.tls) == ("user", "p@ss", False)
    assert MqttOptions.from_url("mqtts://h").port == 8883
    assert MqttOptions.from_url("mqtt://h").topic_prefix == "edgeinfer"
    for bad in ("http://h", "mqtt://", "mqtt://h:99999", "mqtt://h:0", "mqtt://h/a/+/b"):
        with pytest.raises(InvalidInput):
            MqttOptions.from_url(bad)


def test_a_hung_broker_is_noticed_and_results_are_not_queued_to_arrive_late(
    engine: Engine, broker: Broker, subscriber: Subscriber, coffee_clip: Clip, cat_clip: Clip
) -> None:
    """A broker that stops answering (SIGSTOP: its connections stay open) went unnoticed until the
    keepalive ran out: paho queued every result and delivered them seconds late, all counted as
    published. Now, once nothing has been acknowledged for ``stall_s``, results are counted
    unpublished and not queued; publishing resumes when the broker does."""
    import signal

    events = EventQueue()
    sink = MqttSink(MqttOptions.from_url(broker.url, stall_s=0.5), events)
    assert sink.wait_connected(5)
    clips = {"coffee": coffee_clip, "cat": cat_clip}
    runner, summary_box, recorder = _run_until_published(engine, clips, sink, events)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic_ns()
    time.sleep(2.0)
    broker.proc.send_signal(signal.SIGCONT)
    runner.join(30)
    (summary,) = summary_box
    (report,) = [r for r in summary.sinks if r.sink == "mqtt"]
    assert report.undelivered > 0 and "stalled" in report.detail
    assert "mqtt_stalled" in [e.kind for e in recorder.events if e.stream == "mqtt"]
    received = subscriber.wait_for(report.delivered, timeout_s=5)
    # results captured well after the broker hung (past stall_s and a margin) were not queued
    hung = [r for r in recorder.results if stopped_at + 1.0e9 < r.frame.capture_ns < stopped_at + 1.8e9]
    sent = {(payload["stream"], payload["seq"]) for _, payload in received}
    assert hung and not any((r.stream, r.frame.seq) in sent for r in hung)
