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
can be parsed the same way; the connection then closes, as uvicorn's does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.rest.errors import error_payload

_HEAD_START = b"HTTP/1."
_HEAD_END = b"\r\n\r\n"


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` over a :class:`HeadHoldingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request, with a JSON body (``{"error", "kind"}``)."""
        body = error_payload(InvalidInput(f"malformed HTTP request: {msg.rstrip('.')}"))
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()


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
