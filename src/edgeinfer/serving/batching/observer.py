"""What a batcher reports as it works; the metrics module implements it, tests may record it."""

from __future__ import annotations

from typing import Literal, Protocol

RejectReason = Literal["queue_full", "deadline"]


class BatchObserver(Protocol):
    def on_batch(self, size: int, compute_ns: int) -> None:
        """A batch of ``size`` samples ran in ``compute_ns``."""

    def on_queued(self, queue_ns: int) -> None:
        """A request waited ``queue_ns`` in the queue before its batch started."""

    def on_rejected(self, reason: RejectReason) -> None:
        """A request was refused at admission."""

    def on_deadline_missed(self) -> None:
        """An admitted request was failed because it could no longer finish in time."""


class NullObserver:
    def on_batch(self, size: int, compute_ns: int) -> None:
        pass

    def on_queued(self, queue_ns: int) -> None:
        pass

    def on_rejected(self, reason: RejectReason) -> None:
        pass

    def on_deadline_missed(self) -> None:
        pass
