"""Reading an HTTP request body from ASGI, within a size limit and a time limit.

A declared ``Content-Length`` over the limit is refused before a byte is read; a body that grows
past it (chunked, or a lying length) is refused as soon as it does. ``Content-Encoding: gzip`` or
``deflate`` (tritonclient's request compression) is inflated within the same limit. When the
server starts to stop, the reads still waiting for a client's body end at once with 503
(:class:`BodyReads`): the drain must not wait for a stalled client.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.rest.errors import BodyCutOff, BodyTimeout, BodyTooLarge

Receive = Any


class ClientDisconnected(Exception):
    """The client went away before its body arrived; there is nobody to answer."""


class BodyReads:
    """The body reads under way; :meth:`cut` ends the ones still waiting (on the event loop)."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Timeout] = set()
        self.cut_off = False

    def cut(self) -> None:
        self.cut_off = True
        if self._waiting:
            now = asyncio.get_running_loop().time()
            for deadline in self._waiting:
                deadline.reschedule(now)


async def read_body(
    receive: Receive,
    headers: dict[str, str],
    limit_bytes: int,
    timeout_s: float,
    reads: BodyReads | None = None,
) -> bytes:
    declared = headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise InvalidInput(f"Content-Length must be a number of bytes, got {declared!r}") from None
        if length > limit_bytes:
            raise BodyTooLarge(f"request body of {length} bytes is over the limit of {limit_bytes} bytes")
    if reads is not None and reads.cut_off:  # a read begun after the stop began is not waited for
        raise BodyCutOff("the server is shutting down; send the request again elsewhere")
    waiting = reads._waiting if reads is not None else set()
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            waiting.add(deadline)
            try:
                raw = await _receive_all(receive, limit_bytes)
            finally:
                waiting.discard(deadline)
    except TimeoutError:
        if reads is not None and reads.cut_off:
            raise BodyCutOff("the server is shutting down; send the request again elsewhere") from None
        raise BodyTimeout(
            f"the request body did not arrive in full within {timeout_s:g} s (truncated body?)"
        ) from None
    return _inflate(raw, headers.get("content-encoding"), limit_bytes)


async def _receive_all(receive: Receive, limit_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge(f"request body is over the limit of {limit_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _inflate(raw: bytes, encoding: str | None, limit_bytes: int) -> bytes:
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return raw
    name = encoding.strip().lower()
    if name not in ("gzip", "deflate"):
        raise InvalidInput(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    parts: list[bytes] = []
    size = 0
    rest = raw
    while True:  # gzip may hold several members one after the other (RFC 1952), as gzip -d reads
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if name == "gzip" else zlib.MAX_WBITS)
        try:
            out = inflater.decompress(rest, limit_bytes + 1 - size)
        except zlib.error as exc:
            raise InvalidInput(f"the {name} request body is corrupt: {exc}") from None
        size += len(out)
        parts.append(out)
        if size > limit_bytes or inflater.unconsumed_tail:
            raise BodyTooLarge(f"the {name} request body inflates past the limit of {limit_bytes} bytes")
        if not inflater.eof:
            raise InvalidInput(f"the {name} request body is truncated")
        rest = inflater.unused_data
        if not rest.strip(b"\x00"):  # the end, or zero padding (which gzip -d ignores too)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if name == "deflate" or not rest.startswith(b"\x1f\x8b"):
            raise InvalidInput(
                f"the {name} request body has {len(rest)} bytes after its compressed data; send only the "
                "compressed body"
            )
