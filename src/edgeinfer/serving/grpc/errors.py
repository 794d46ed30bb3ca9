"""Error kinds to gRPC status codes: the only place the gRPC adapter decides a status."""

from __future__ import annotations

import grpc

from edgeinfer.errors import (
    DeadlineExceeded,
    EdgeInferError,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    Unauthenticated,
    UpstreamError,
)
from edgeinfer.serving.batching.batcher import retry_after_header

_CODES: dict[type[EdgeInferError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    UpstreamError: grpc.StatusCode.UNAVAILABLE,
}


def code_of(error: EdgeInferError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _CODES.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def trailing_metadata(error: EdgeInferError) -> tuple[tuple[str, str], ...]:
    """``edgeinfer-error-kind`` names the error as the REST body's ``kind`` does (NotReady and
    UpstreamError share UNAVAILABLE; a client tells them apart by it); Overloaded adds Retry-After."""
    kind = (("edgeinfer-error-kind", error.kind),)
    if isinstance(error, Overloaded):
        return (*kind, ("retry-after", retry_after_header(error.retry_after_s)))
    return kind
