"""Where stream results go: JSON lines, MQTT (and the annotated video, ``streams.annotate``)."""

from edgeinfer.streams.sinks.base import Sink, SinkReport
from edgeinfer.streams.sinks.jsonl import JsonlSink

__all__ = ["JsonlSink", "Sink", "SinkReport"]
