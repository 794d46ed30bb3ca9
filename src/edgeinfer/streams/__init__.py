"""Real-time streams: sources on their own threads, latest-frame scheduling, fair cross-stream
batches on one engine, per-frame capture-to-prediction latency, JSON lines / MQTT / annotated video.

PyAV (video) and paho-mqtt (MQTT) are the ``streams`` extra; they are imported only when used.
"""

from edgeinfer.streams.config import CaptureOptions, PipelineOptions
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.messages import Frame, FrameResult, RawFrame, StageTimes, StreamEvent, StreamStatus
from edgeinfer.streams.pipeline import RunSummary, StreamEngine, StreamPipeline
from edgeinfer.streams.scheduler import FrameScheduler
from edgeinfer.streams.sources import (
    ArraySource,
    BadFrame,
    FolderSource,
    Source,
    VideoSource,
    check_frame,
    open_source,
    stream_names,
)
from edgeinfer.streams.stats import StreamSnapshot, StreamStats

__all__ = [
    "ArraySource",
    "BadFrame",
    "CaptureOptions",
    "EventQueue",
    "FolderSource",
    "Frame",
    "FrameResult",
    "FrameScheduler",
    "PipelineOptions",
    "RawFrame",
    "RunSummary",
    "Source",
    "StageTimes",
    "StreamEngine",
    "StreamEvent",
    "StreamPipeline",
    "StreamSnapshot",
    "StreamStats",
    "StreamStatus",
    "VideoSource",
    "check_frame",
    "open_source",
    "stream_names",
]
