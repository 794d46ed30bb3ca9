"""Error kinds to HTTP status codes: the only place the REST adapter decides a status."""

from __future__ import annotations

from edgeinfer.errors import (
    DeadlineExceeded,
    EdgeInferError,
    ImageTooLarge,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    Unauthenticated,
    UpstreamError,
)
from edgeinfer.serving.batching.batcher import retry_after_header
from edgeinfer.serving.codecs.rest import error_body


class BodyTooLarge(InvalidInput):
    """A request body over ``max_request_bytes``."""

    kind = "too_large"


class BodyTimeout(InvalidInput):
    """A request body that did not arrive in full within ``body_timeout_s``."""

    kind = "body_timeout"


class BodyCutOff(NotReady):
    """A body still arriving when the server began to stop (503; the rest of it must not be read
    as the next request: the connection closes)."""


class MethodNotAllowed(InvalidInput):
    """A method a route does not take; ``allow`` is the one it does."""

    kind = "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class UnsupportedMediaType(InvalidInput):
    kind = "unsupported_media_type"


# Most specific first: the first class in an error's MRO found here decides.
_STATUS: dict[type[EdgeInferError], int] = {
    BodyTooLarge: 413,
    BodyTimeout: 408,
    MethodNotAllowed: 405,
    UnsupportedMediaType: 415,
    ImageTooLarge: 413,
    InvalidInput: 400,
    Unauthenticated: 401,
    NotFound: 404,
    Overloaded: 429,
    DeadlineExceeded: 504,
    NotReady: 503,
    UpstreamError: 502,
}


def status_of(error: EdgeInferError) -> int:
    for cls in type(error).__mro__:
        status = _STATUS.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


def error_headers(error: EdgeInferError) -> list[tuple[bytes, bytes]]:
    if isinstance(error, Overloaded):
        return [(b"retry-after", retry_after_header(error.retry_after_s).encode())]
    if isinstance(error, Unauthenticated):
        return [(b"www-authenticate", b'Bearer realm="edgeinfer"')]
    if isinstance(error, MethodNotAllowed):
        return [(b"allow", error.allow.encode())]
    if isinstance(error, (BodyTooLarge, BodyTimeout, BodyCutOff)):
        # the rest of the body may still come; it must not be read as the next request
        return [(b"connection", b"close")]
    return []


def error_payload(error: EdgeInferError) -> bytes:
    if isinstance(error, Overloaded):
        return error_body(str(error), kind=error.kind, retry_after_s=round(error.retry_after_s, 3))
    return error_body(str(error), kind=error.kind)
