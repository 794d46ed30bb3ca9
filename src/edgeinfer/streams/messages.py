"""What flows between the stream components: captured frames, results and events.

All timestamps are ``time.monotonic_ns()`` values (one clock for the whole process); durations are
differences of them. ``capture_unix_ns`` is wall-clock time for consumers on other machines only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np

from edgeinfer.engine import Prediction


@dataclass(frozen=True)
class RawFrame:
    """One decoded picture as a source hands it over, before pacing and timestamping.

    ``pts_s`` is the media time in seconds from the start of the source (it keeps growing across
    ``--loop`` restarts); ``decode_ns`` is how long reading and decoding this picture took.
    """

    rgb: np.ndarray
    pts_s: float
    decode_ns: int


@dataclass(frozen=True)
class Frame:
    """A frame captured on a stream: the pixels and when they became available.

    ``sample`` is the model input when the capture thread already preprocessed the frame
    (``preprocess_ns`` is what that took, after ``capture_ns``); otherwise the pipeline does it.
    """

    stream: str
    seq: int
    rgb: np.ndarray
    capture_ns: int
    capture_unix_ns: int
    decode_ns: int
    sample: np.ndarray | None = None
    preprocess_ns: int = 0


@dataclass(frozen=True)
class StageTimes:
    """Where a frame's capture-to-prediction time went, in nanoseconds.

    ``wait_ns``: time in the latest-frame slot until the scheduler picked the frame into a batch
    (after preprocessing when the capture thread does it); ``infer_ns`` is the
    whole batch's inference (shared by its frames). ``decode_ns`` happened before capture and is
    not part of the latency.
    """

    decode_ns: int
    wait_ns: int
    preprocess_ns: int
    infer_ns: int
    postprocess_ns: int

    def as_ms(self) -> dict[str, float]:
        return {
            "decode_ms": self.decode_ns / 1e6,
            "wait_ms": self.wait_ns / 1e6,
            "preprocess_ms": self.preprocess_ns / 1e6,
            "infer_ms": self.infer_ns / 1e6,
            "postprocess_ms": self.postprocess_ns / 1e6,
        }


@dataclass(frozen=True)
class FrameResult:
    """The prediction for one frame with its capture-to-prediction latency."""

    frame: Frame
    predictions: tuple[Prediction, ...]
    done_ns: int
    stages: StageTimes
    batch_size: int

    @property
    def stream(self) -> str:
        return self.frame.stream

    @property
    def top(self) -> Prediction:
        return self.predictions[0]

    @property
    def latency_ns(self) -> int:
        return self.done_ns - self.frame.capture_ns

    def to_dict(self) -> dict[str, object]:
        """The JSON payload (JSON lines and MQTT share it)."""
        return {
            "type": "frame",
            "stream": self.frame.stream,
            "seq": self.frame.seq,
            "label": self.top.label,
            "index": self.top.index,
            "score": round(self.top.score, 6),
            "top_k": [
                {"index": p.index, "label": p.label, "score": round(p.score, 6)} for p in self.predictions
            ],
            "capture_ns": self.frame.capture_ns,
            "capture_unix_ns": self.frame.capture_unix_ns,
            "latency_ms": round(self.latency_ns / 1e6, 3),
            "stages": {k: round(v, 3) for k, v in self.stages.as_ms().items()},
            "batch_size": self.batch_size,
        }


class StreamStatus(StrEnum):
    """Where a stream is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"


Level = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class StreamEvent:
    """Something a person should read: a source that failed, ended or stalled, a frame rejected,
    a broker that went away. ``kind`` is stable for machines, ``message`` is for people."""

    stream: str
    level: Level
    kind: str
    message: str
    at_ns: int

    def to_dict(self) -> dict[str, object]:
        return {
            "type": "event",
            "stream": self.stream,
            "level": self.level,
            "kind": self.kind,
            "message": self.message,
            "at_ns": self.at_ns,
        }
