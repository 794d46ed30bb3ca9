"""A small KServe v2 (Open Inference Protocol) HTTP client for the cloud path.

Keep-alive HTTP/1.1 on asyncio streams, requests and responses in Triton's binary tensor data
extension, so an image or tensor travels as raw bytes. It speaks to ``edgeinfer serve`` and to
Triton alike. It counts every byte it sends and receives and times each request, and it turns
every way a remote can fail (refused, reset, stalled, malformed, an error status) into a
:class:`CloudError` whose ``reason`` says which, so callers can count and fall back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from edgeinfer.errors import InvalidInput, UpstreamError
from edgeinfer.serving.settings import host_port

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "FP64": np.dtype("<f8"),
    "UINT8": np.dtype("u1"),
    "INT8": np.dtype("i1"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}


class CloudError(UpstreamError):
    """The remote server could not be used for this request.

    ``reason`` is one of ``refused``, ``timeout``, ``reset``, ``malformed``, ``http_<status>``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class InferResult:
    """What came back, with the costs of getting it.

    ``encode_ns``: building the request body. ``total_ns``: from the first byte written to the
    last byte read. ``first_byte_ns``: from the first byte written to the response's status line.
    """

    outputs: dict[str, np.ndarray]
    bytes_sent: int
    bytes_received: int
    encode_ns: int
    total_ns: int
    first_byte_ns: int
    new_connection: bool
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


def cloud_address(url: str) -> tuple[str, int]:
    """HOST and PORT of ``http://HOST:PORT`` (or ``HOST:PORT``); InvalidInput for anything else,
    a port out of range or an unparsable host included."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError:  # a port out of range, an IPv6 host without its closing bracket
        port = None
        parts = None
    if parts is None or parts.scheme != "http" or not parts.hostname or port is None:
        raise InvalidInput(f"the cloud URL must look like http://HOST:PORT (port 1-65535), got {url!r}")
    return parts.hostname, port


class KServeClient:
    """One remote server. Safe for concurrent use: each request borrows its own connection."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 3.0,
        api_key: str | None = None,
        max_idle_connections: int = 8,
    ) -> None:
        self.host, self.port = cloud_address(url)
        self._netloc = host_port(self.host, self.port)  # an IPv6 host in brackets
        self.url = f"http://{self._netloc}"
        self.connect_timeout_s = connect_timeout_s
        self._auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self._idle: list[_Connection] = []
        self._max_idle = max_idle_connections

    # -- requests -------------------------------------------------------------------------------

    async def infer_image(
        self, model: str, image: bytes, *, timeout_s: float, output: str | None = None
    ) -> InferResult:
        """Send one encoded image as the BYTES input ``image``; the server decodes it."""
        started = time.perf_counter_ns()
        raw = struct.pack("<I", len(image)) + image
        spec = {
            "name": "image",
            "datatype": "BYTES",
            "shape": [1],
            "parameters": {"binary_data_size": len(raw)},
        }
        body, header_len = _body([spec], [raw], output, timeout_s)
        return await self._infer(model, body, header_len, timeout_s, time.perf_counter_ns() - started)

    async def infer_tensor(
        self,
        model: str,
        name: str,
        array: np.ndarray,
        *,
        timeout_s: float,
        output: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> InferResult:
        """Send one tensor (FP32, FP16, UINT8...) as raw little-endian bytes."""
        started = time.perf_counter_ns()
        datatype = next((k for k, v in _DTYPES.items() if v == array.dtype.newbyteorder("<")), None)
        if datatype is None:
            raise InvalidInput(f"cannot send a {array.dtype} tensor; use one of {sorted(_DTYPES)}")
        raw = np.ascontiguousarray(array, dtype=_DTYPES[datatype]).tobytes()
        spec: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": list(array.shape),
            "parameters": {"binary_data_size": len(raw), **(parameters or {})},
        }
        body, header_len = _body([spec], [raw], output, timeout_s)
        return await self._infer(model, body, header_len, timeout_s, time.perf_counter_ns() - started)

    async def ready(self, *, timeout_s: float = 2.0) -> float:
        """``GET /v2/health/ready``; returns the round trip in ms (a light probe of the path).

        On a new connection the first exchange also pays for setting the connection up, so the
        probe is repeated on the now open connection: the figure is the path's round trip.
        """
        request = f"GET /v2/health/ready HTTP/1.1\r\nHost: {self._netloc}\r\n{self._auth}\r\n".encode()
        for _ in range(2):
            status, _, _, (_, total_ns, new, _) = await self._exchange(request, timeout_s)
            if status != 200:
                raise CloudError(f"http_{status}", f"{self.url} is not ready (HTTP {status})")
            if not new:
                break
        return total_ns / 1e6

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.writer.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    # -- plumbing -------------------------------------------------------------------------------

    async def _infer(
        self, model: str, body: bytes, header_len: int, timeout_s: float, encode_ns: int
    ) -> InferResult:
        head = (
            f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {self._netloc}\r\n{self._auth}"
            f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {header_len}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        status, headers, payload, (first_byte_ns, total_ns, new, received) = await self._exchange(
            head + body, timeout_s
        )
        if status != 200:
            raise CloudError(f"http_{status}", f"{self.url} answered HTTP {status}: {_error_text(payload)}")
        outputs, parameters = _decode_response(payload, headers.get("inference-header-content-length"))
        return InferResult(
            outputs, len(head) + len(body), received, encode_ns, total_ns, first_byte_ns, new, parameters
        )

    async def _exchange(
        self, request: bytes, timeout_s: float
    ) -> tuple[int, dict[str, str], bytes, tuple[int, int, bool, int]]:
        conn, new = await self._connection(timeout_s)
        keep = False
        try:
            async with asyncio.timeout(timeout_s):
                start = time.perf_counter_ns()
                conn.writer.write(request)
                head = await conn.reader.readuntil(b"\r\n\r\n")
                first_byte = time.perf_counter_ns() - start
                status, headers = _parse_head(head)
                length = _content_length(headers)
                payload = await conn.reader.readexactly(length)
                total = time.perf_counter_ns() - start
            connection = headers.get("connection", "").lower()  # HTTP/1.0 closes unless asked not to
            keep = connection == "keep-alive" if head.startswith(b"HTTP/1.0") else connection != "close"
            return status, headers, payload, (first_byte, total, new, len(head) + length)
        except TimeoutError:
            raise CloudError(
                "timeout", f"{self.url} did not answer within {timeout_s * 1e3:.0f} ms"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            raise CloudError("reset", f"the connection to {self.url} broke: {type(exc).__name__}") from None
        except asyncio.LimitOverrunError:
            raise CloudError(
                "malformed", f"{self.url} sent an HTTP head over {MAX_HEAD_BYTES} bytes"
            ) from None
        finally:
            self._release(conn, keep)

    async def _connection(self, timeout_s: float) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                return conn, False
            conn.writer.close()
        try:
            async with asyncio.timeout(min(timeout_s, self.connect_timeout_s)):
                reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
        except TimeoutError:
            raise CloudError("timeout", f"connecting to {self.url} timed out") from None
        except OSError as exc:
            raise CloudError("refused", f"cannot connect to {self.url}: {exc.strerror or exc}") from None
        return _Connection(reader, writer), True

    def _release(self, conn: _Connection, keep: bool) -> None:
        if keep and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.writer.transport.abort()


def _body(
    specs: list[dict[str, Any]], raws: list[bytes], output: str | None, timeout_s: float
) -> tuple[bytes, int]:
    # "timeout" (microseconds, Triton's name) tells the server how long this client will wait,
    # so a slow upload is not refused by the server's default deadline.
    document: dict[str, Any] = {"inputs": specs, "parameters": {"timeout": max(1, int(timeout_s * 1e6))}}
    if output is not None:
        document["outputs"] = [{"name": output, "parameters": {"binary_data": True}}]
    else:
        document["parameters"]["binary_data_output"] = True
    header = json.dumps(document, separators=(",", ":")).encode()
    return header + b"".join(raws), len(header)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise CloudError("malformed", f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _content_length(headers: dict[str, str]) -> int:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise CloudError(
            "malformed", "chunked responses are not supported; the server must send Content-Length"
        )
    text = headers.get("content-length", "0")
    if not text.isdigit() or int(text) > MAX_BODY_BYTES:
        raise CloudError("malformed", f"bad Content-Length {text!r}")
    return int(text)


def _error_text(payload: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(payload).get("error", ""))[:300]
    return payload[:200].decode("utf-8", "replace")


def _decode_response(
    payload: bytes, header_length: str | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The v2 response body (JSON, or JSON header + binary data) to named arrays."""
    try:
        split = len(payload) if header_length is None else int(header_length)
        if not 0 <= split <= len(payload):
            raise ValueError(
                f"Inference-Header-Content-Length {split} is past the body's {len(payload)} bytes"
            )
        document = json.loads(payload[:split])
        binary = memoryview(payload)[split:]
        outputs: dict[str, np.ndarray] = {}
        offset = 0
        for item in document["outputs"]:
            shape = tuple(int(d) for d in item["shape"])
            dtype = _DTYPES[item["datatype"]]
            size = (item.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                array = np.frombuffer(binary[offset : offset + int(size)], dtype=dtype).reshape(shape)
                offset += int(size)
            else:
                array = np.asarray(item["data"], dtype=dtype).reshape(shape)
            outputs[str(item["name"])] = array
        if offset != len(binary):
            raise ValueError(f"{len(binary) - offset} bytes of binary data left over")
        return outputs, dict(document.get("parameters") or {})
    except (ValueError, KeyError, TypeError) as exc:
        raise CloudError("malformed", f"the inference response does not parse: {exc}") from None
