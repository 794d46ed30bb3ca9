"""One exception hierarchy for the whole package.

Kinds are transport-neutral; the REST and gRPC adapters map them to status codes.
Every message should say what went wrong and, where possible, how to fix it.
"""

from __future__ import annotations


class EdgeInferError(Exception):
    """Base of every error edgeinfer raises on purpose."""

    kind = "internal"
    exit_code = 1


class InvalidInput(EdgeInferError):
    """The caller sent something we cannot use (bad image, wrong shape, bad JSON...)."""

    kind = "invalid_input"
    exit_code = 2


class ImageTooLarge(InvalidInput):
    """An image above the pixel limit (decompression-bomb guard) or the byte limit."""

    kind = "too_large"


class NotFound(EdgeInferError):
    """A model, version, file or other named thing does not exist."""

    kind = "not_found"
    exit_code = 3


class ModelNotFound(NotFound):
    """A model name that is neither in the zoo nor in the local repository."""


class RuntimeUnavailable(EdgeInferError):
    """A runtime that is not installed or cannot run this model format."""

    kind = "unavailable"
    exit_code = 4


class IntegrityError(EdgeInferError):
    """A checkpoint or model file whose checksum does not match what we expect."""

    kind = "integrity"
    exit_code = 5


class UnsafeCheckpoint(IntegrityError):
    """A pickle that asks for a global or opcode outside the state-dict allow-list."""


class StorageError(EdgeInferError):
    """A model repository or other folder edgeinfer must write to that cannot be written."""

    kind = "storage"
    exit_code = 7


class QualityGateFailed(EdgeInferError):
    """A build (for example INT8) that does not reach its accuracy threshold."""

    kind = "quality_gate"
    exit_code = 6


class NotReady(EdgeInferError):
    """A model or server that is still loading or is shutting down."""

    kind = "not_ready"


class Overloaded(EdgeInferError):
    """The queue is full; retry after ``retry_after_s``."""

    kind = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(EdgeInferError):
    """A request that cannot finish (or did not finish) before its deadline."""

    kind = "deadline_exceeded"


class Unauthenticated(EdgeInferError):
    """A missing or wrong API key."""

    kind = "unauthenticated"


class UpstreamError(EdgeInferError):
    """A remote (cloud) server that refused, stalled or answered nonsense."""

    kind = "upstream"


class CloudTimedOut(DeadlineExceeded):
    """A request the server sent to its cloud (offload policy ``cloud``) was not answered in time."""

    kind = "upstream_timeout"


def in_batch(error: EdgeInferError, index: int, count: int) -> EdgeInferError:
    """``error``, said of image ``index`` (from 0) of a batch of ``count``: its message starts
    ``image i: `` when there are several, so that a client knows which one to fix."""
    if count > 1:
        error.args = (f"image {index}: {error}", *error.args[1:])
    return error
