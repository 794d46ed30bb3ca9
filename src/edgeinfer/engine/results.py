"""What the engine returns: labelled predictions and per-stage timings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    """One class with its probability."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class StageTimings:
    """Nanoseconds spent in each stage of one classify call."""

    decode_ns: int
    preprocess_ns: int
    infer_ns: int
    postprocess_ns: int

    @property
    def total_ns(self) -> int:
        return self.decode_ns + self.preprocess_ns + self.infer_ns + self.postprocess_ns

    def as_ms(self) -> dict[str, float]:
        return {
            "decode_ms": self.decode_ns / 1e6,
            "preprocess_ms": self.preprocess_ns / 1e6,
            "infer_ms": self.infer_ns / 1e6,
            "postprocess_ms": self.postprocess_ns / 1e6,
            "total_ms": self.total_ns / 1e6,
        }


@dataclass(frozen=True)
class Classification:
    """The top-k predictions for one image and how long each stage took."""

    predictions: tuple[Prediction, ...]
    timings: StageTimings

    @property
    def top(self) -> Prediction:
        return self.predictions[0]
