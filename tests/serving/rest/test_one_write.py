"""The transport under ``edgeinfer serve``'s HTTP protocol: a response head and its body in one write."""

from __future__ import annotations

import asyncio
from typing import Any

from edgeinfer.serving.rest.one_write import HeadHoldingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return f"info:{name}"


def _wrapped() -> tuple[HeadHoldingTransport, RecordingTransport]:
    inner = RecordingTransport()
    return HeadHoldingTransport(inner, asyncio.get_running_loop()), inner  # type: ignore[arg-type]


def test_a_head_and_its_body_leave_in_one_write() -> None:
    asyncio.run(_test_a_head_and_its_body_leave_in_one_write())


async def _test_a_head_and_its_body_leave_in_one_write() -> None:
    transport, inner = _wrapped()
    transport.write(HEAD)
    assert inner.writes == []
    transport.write(b"{}")
    assert inner.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert inner.writes == [HEAD + b"{}"]


def test_a_head_with_no_body_goes_out_at_the_end_of_the_step() -> None:
    asyncio.run(_test_a_head_with_no_body_goes_out_at_the_end_of_the_step())


async def _test_a_head_with_no_body_goes_out_at_the_end_of_the_step() -> None:
    transport, inner = _wrapped()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert inner.writes == []
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_other_writes_pass_at_once_and_close_sends_what_is_held() -> None:
    asyncio.run(_test_other_writes_pass_at_once_and_close_sends_what_is_held())


async def _test_other_writes_pass_at_once_and_close_sends_what_is_held() -> None:
    transport, inner = _wrapped()
    transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad")  # head and body together
    transport.write(bytearray(b"chunk"))
    assert inner.writes == [b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nbad", b"chunk"]
    transport.write(HEAD)
    transport.close()
    assert inner.writes[-1] == HEAD and inner.closed
    assert transport.get_extra_info("peername") == "info:peername"  # everything else is the transport's


def test_the_invalid_request_warning_is_logged_once_a_minute_with_a_count() -> None:
    import logging

    from edgeinfer.serving.rest.one_write import _RateLimited

    limit = _RateLimited("Invalid HTTP request received.", interval_s=60.0)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, (), None)

    shown = [limit.filter(record("Invalid HTTP request received.")) for _ in range(500)]
    assert shown == [True] + [False] * 499  # a scanner's 500 garbage requests: one line
    assert limit.filter(record("Something else.")) is True
    limit._last -= 61  # a minute later
    later = record("Invalid HTTP request received.")
    assert limit.filter(later) and later.getMessage().endswith("(499 more since the last one logged)")
