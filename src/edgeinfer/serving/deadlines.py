"""Where a request's time budget comes from.

A client may give a timeout as
- the request parameter ``timeout`` in microseconds (Triton's name and unit; tritonclient's
  ``infer(..., timeout=)`` sends it),
- the request parameter ``timeout_ms`` in milliseconds,
- the HTTP header / gRPC metadata ``edgeinfer-timeout-ms`` in milliseconds,
- a gRPC deadline.
When several are given the tightest wins; with none, the server's default applies.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.protocol import ParamValue

TIMEOUT_HEADER = "edgeinfer-timeout-ms"
NS_PER_MS = 1_000_000
NS_PER_US = 1_000


def timeout_from_parameters(parameters: Mapping[str, ParamValue]) -> int | None:
    """The tightest timeout in the request parameters, in nanoseconds (None: none given)."""
    found: list[int] = []
    micros = parameters.get("timeout")
    if micros is not None:
        if isinstance(micros, bool) or not isinstance(micros, int) or micros < 0:
            raise InvalidInput('parameter "timeout" is in microseconds and must be a non-negative integer')
        if micros > 3_600_000_000:  # as timeout_ms and the header: at most an hour
            raise InvalidInput(f'parameter "timeout" is over an hour ({micros} us); give at most 3600000000')
        if micros > 0:  # Triton: 0 means "no timeout given"
            found.append(micros * NS_PER_US)
    millis = parameters.get("timeout_ms")
    if millis is not None:
        found.append(_millis_to_ns(millis, 'parameter "timeout_ms"'))
    return min(found) if found else None


def timeout_from_header(value: str | None) -> int | None:
    """The ``edgeinfer-timeout-ms`` header or metadata value, in nanoseconds."""
    if value is None:
        return None
    try:
        millis = float(value)
    except ValueError:
        raise InvalidInput(
            f"header {TIMEOUT_HEADER} must be a number of milliseconds, got {value!r}"
        ) from None
    return _millis_to_ns(millis, f"header {TIMEOUT_HEADER}")


def _millis_to_ns(value: ParamValue, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidInput(f"{where} must be a positive number of milliseconds, got {value!r}")
    if value > 3_600_000:
        raise InvalidInput(f"{where} is over an hour ({value} ms); give at most 3600000")
    return int(value * NS_PER_MS)
