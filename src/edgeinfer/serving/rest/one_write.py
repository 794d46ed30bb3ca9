"""uvicorn's httptools protocol, sending each answer's head and body in one write.

uvicorn writes the status line and headers as soon as the application starts its response and the
body in a second write: two ``send`` system calls, and two packets, for every answer. On a small
VM a system call that wakes the waiting client costs tens of microseconds, so a one-client request
paid for it twice. Here the transport holds back a lone response head until the next write (the
body, which follows at once) and sends both together; a head with nothing after it (the answer to
``HEAD``, ``100 Continue``) goes out at the end of the current event-loop step, and anything held
goes out before the connection closes.

It also answers a request the HTTP parser cannot read (a malformed request line, header or chunk)
with the server's JSON error body instead of uvicorn's plain text, so that every 400 a client gets
can be parsed the same way; the connection then closes, as uvicorn's does (and uvicorn's warning
for it is logged once a minute at most, with a count: a port scanner must not fill the log).

And it guards what uvicorn's httptools protocol leaves open: a request line and headers over
``max_head_bytes`` are refused with 431 (httptools joins a header value piece by piece, at a cost
that grows with the square of its length, on the event loop: one client sending an endless header
stalled every other and grew the process by hundreds of MB), and a connection whose request line
and headers have not all arrived within ``head_timeout_s`` is closed (408 when part of them came):
idle and half-sent connections were held forever, one file descriptor each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.rest.errors import BodyTimeout, BodyTooLarge, error_payload

_HEAD_START = b"HTTP/1."
_HEAD_END = b"\r\n\r\n"


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` over a :class:`HeadHoldingTransport`, with a size limit and a time
    limit on each request's line and headers (the server sets ``head_timeout_s`` from its
    ``body_timeout_s``)."""

    max_head_bytes = 64 * 1024
    head_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]
        if _INVALID_REQUESTS not in self.logger.filters:
            self.logger.addFilter(_INVALID_REQUESTS)
        self._head_bytes: int | None = 0  # bytes of the request head read so far; None: past it
        self._head_tail = b""  # the head's last bytes read (its end may straddle two reads)
        self._head_ended = False  # a head was completed in the chunk being parsed
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is None:
            super().data_received(data)
            return
        if self._head_timer is None:
            self._arm_head_timer()  # the first bytes of a request after a kept-alive answer
        if self._head_overflows(data):  # refused before the parser reads any of it
            self._refuse(431, _HeadTooLarge(
                f"the request line and headers are over {self.max_head_bytes} bytes"
            ))  # fmt: skip
            return
        self._head_ended = False
        super().data_received(data)
        if self._head_bytes is None or self.transport.is_closing():
            return
        # still reading a head: count this chunk, unless a request ended in it (the next head's
        # start, after it, is then left uncounted: at most one read's worth)
        if self._head_ended:
            self._head_bytes, self._head_tail = 0, b""
        else:
            self._head_bytes += len(data)
            self._head_tail = (self._head_tail + data)[-(len(_HEAD_END) - 1) :]

    def _head_overflows(self, data: bytes) -> bool:
        """Whether the head being read ends past ``max_head_bytes`` (or not at all) with ``data``:
        its blank line must end within the bytes it has left, whether it comes in one read or in
        many (before, a head that came whole in one read was never measured)."""
        left = self.max_head_bytes - (self._head_bytes or 0)
        return len(data) > left and _HEAD_END not in self._head_tail + data[: max(0, left)]

    def on_headers_complete(self) -> None:
        self._head_bytes, self._head_ended, self._head_tail = None, True, b""
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0  # what comes next is the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request, with a JSON body (``{"error", "kind"}``)."""
        self._refuse(400, InvalidInput(f"malformed HTTP request: {msg.rstrip('.')}"))

    def _refuse(self, status: int, error: InvalidInput) -> None:
        """Answer ``status`` with the JSON error body and close the connection."""
        self._cancel_head_timer()
        body = error_payload(error)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._head_bytes is None:
            return
        if self._head_bytes == 0:
            self.transport.close()  # a connection that never said anything: nobody to answer
            return
        self._refuse(
            408, BodyTimeout(f"the request line and headers did not arrive within {self.head_timeout_s:g} s")
        )


class _HeadTooLarge(BodyTooLarge):
    """A request line and headers over the limit (kind ``too_large``, status 431)."""


class _RateLimited(logging.Filter):
    """uvicorn's "Invalid HTTP request received." warning, at most once per ``interval_s``, saying
    how many there were since the last one."""

    def __init__(self, message: str, interval_s: float = 60.0) -> None:
        super().__init__()
        self.message, self.interval_s = message, interval_s
        self._last = -float("inf")
        self._since = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != self.message:
            return True
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._since += 1
            return False
        if self._since:
            record.msg = f"{self.message} ({self._since} more since the last one logged)"
            record.args = ()
        self._last, self._since = now, 0
        return True


_INVALID_REQUESTS = _RateLimited("Invalid HTTP request received.")


class HeadHoldingTransport:
    """A transport wrapper that joins a response head with the write after it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif isinstance(data, bytes) and data.startswith(_HEAD_START) and data.endswith(_HEAD_END):
            self._held = data
            self._loop.call_soon(self.flush)  # in case nothing follows it in this step
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
