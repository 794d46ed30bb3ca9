"""Light clients for load generation: every microsecond a client spends is counted in the latency.

The HTTP client is a bare keep-alive HTTP/1.1 connection on asyncio streams (one per concurrent
stream), sending the v2 binary request, or the raw image to ``/v1/.../classify``. The gRPC client is
one grpc.aio channel with the generated stub. Both raise :class:`RequestFailed` with an error kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.loadgen.workload import Sample
from edgeinfer.serving.settings import host_port

Transport = Literal["http", "grpc"]
Endpoint = Literal["infer", "classify"]

_HTTP_KINDS = {
    400: "invalid_input", 401: "unauthenticated", 404: "not_found", 408: "timeout", 413: "too_large",
    429: "overloaded", 500: "internal", 502: "upstream", 503: "not_ready", 504: "deadline_exceeded",
}  # fmt: skip
# the same kinds for the status codes the server's gRPC side answers them with (serving/grpc/errors.py)
_GRPC_KINDS = {
    "INVALID_ARGUMENT": "invalid_input", "UNAUTHENTICATED": "unauthenticated", "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "overloaded", "DEADLINE_EXCEEDED": "deadline_exceeded", "UNAVAILABLE": "not_ready",
    "INTERNAL": "internal",
}  # fmt: skip


class RequestFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    transport: Transport
    host: str
    port: int
    model: str
    endpoint: Endpoint = "infer"
    api_key: str | None = None
    timeout_ms: float | None = None
    top_k: int = 5

    @classmethod
    def parse(cls, url: str, model: str, **options: Any) -> Target:
        """``http://host:port`` or ``grpc://host:port`` (a bare ``host:port`` is HTTP)."""
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            port = parts.port
        except ValueError:  # an unclosed [IPv6 bracket; a port not a number, or out of range
            parts, port = urlsplit(""), None
        if parts.scheme not in ("http", "grpc") or not parts.hostname or not port:
            raise InvalidInput(
                f"target must look like http://HOST:PORT or grpc://HOST:PORT (port 1-65535), got {url!r}"
            )
        return cls(parts.scheme, parts.hostname, port, model, **options)  # type: ignore[arg-type]


class Client(Protocol):
    async def send(self, sample: Sample) -> None: ...

    async def abandon(self) -> None:
        """A request was given up (client timeout): leave nothing half-done for the next one."""

    async def close(self) -> None: ...


def _infer_header(model_output: str, sample: Sample, top_k: int) -> tuple[bytes, bytes]:
    """The v2 JSON header and binary data for one image (BYTES) or one tensor (FP32)."""
    if sample.tensor is not None:
        raw = sample.tensor.astype("<f4").tobytes()
        tensor: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [1, *sample.tensor.shape]}
    else:
        raw = struct.pack("<I", len(sample.data)) + sample.data
        tensor = {"name": "image", "datatype": "BYTES", "shape": [1]}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    output = {"name": model_output, "parameters": {"classification": top_k, "binary_data": False}}
    return json.dumps({"inputs": [tensor], "outputs": [output]}).encode(), raw


class HttpClient:
    """One keep-alive connection; not shared between concurrent requests."""

    def __init__(self, target: Target, output_name: str = "probabilities") -> None:
        self.target = target
        self._output = output_name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        auth = f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else ""
        timeout = f"Edgeinfer-Timeout-Ms: {target.timeout_ms:g}\r\n" if target.timeout_ms else ""
        self._common = f"Host: {host_port(target.host, target.port)}\r\n{auth}{timeout}".encode()
        self._cache: dict[int, bytes] = {}  # by sample: two files may share a name

    def _request(self, sample: Sample) -> bytes:
        cached = self._cache.get(id(sample))
        if cached is not None:
            return cached
        model = self.target.model
        if self.target.endpoint == "classify":
            path, body = f"/v1/models/{model}/classify?top_k={self.target.top_k}", sample.data
            extra = b"Content-Type: image/jpeg\r\n"
        else:
            header, raw = _infer_header(self._output, sample, self.target.top_k)
            path, body = f"/v2/models/{model}/infer", header + raw
            extra = (
                f"Inference-Header-Content-Length: {len(header)}\r\n"
                "Content-Type: application/octet-stream\r\n"
            ).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode()
            + self._common
            + extra
            + b"\r\n"
        )
        self._cache[id(sample)] = head + body
        return head + body

    async def send(self, sample: Sample) -> None:
        payload = self._request(sample)
        reused = self._writer is not None
        try:
            status, headers, body = await self._exchange(payload)
        except asyncio.IncompleteReadError as exc:
            await self.close()
            if not (reused and not exc.partial):
                raise RequestFailed("connection", f"{type(exc).__name__}: {exc}") from None
            # The server closed an idle keep-alive connection as this request went out (not one
            # byte of an answer came back): send it once more on a new connection, as HTTP
            # clients do; the time it took stays in the request's latency.
            try:
                status, headers, body = await self._exchange(payload)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as again:
                await self.close()
                raise RequestFailed("connection", f"{type(again).__name__}: {again}") from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise RequestFailed("connection", f"{type(exc).__name__}: {exc}") from None
        if headers.get("connection", "").lower() == "close":
            await self.close()
        if status != 200:
            kind = _HTTP_KINDS.get(status, f"http_{status}")
            raise RequestFailed(kind, body[:200].decode("utf-8", "replace"))

    async def abandon(self) -> None:
        await self.close()  # an answer may still arrive on it: a new connection for the next request

    async def _exchange(self, payload: bytes) -> tuple[int, Mapping[str, str], bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port)
        assert self._reader is not None
        self._writer.write(payload)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head)
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, Mapping[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return status, headers


class GrpcClient:
    """A grpc.aio channel; safe to share between concurrent requests."""

    def __init__(self, target: Target, output_name: str = "probabilities") -> None:
        import grpc

        from edgeinfer.serving.grpc import grpc_predict_v2_pb2 as pb
        from edgeinfer.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

        self.target = target
        self._grpc = grpc
        self._pb = pb
        self._output = output_name
        self._channel = grpc.aio.insecure_channel(
            host_port(target.host, target.port),
            options=[
                ("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20),
            ],
        )
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]
        metadata = []
        if target.api_key:
            metadata.append(("authorization", f"Bearer {target.api_key}"))
        if target.timeout_ms:
            metadata.append(("edgeinfer-timeout-ms", f"{target.timeout_ms:g}"))
        self._metadata = tuple(metadata)
        self._cache: dict[int, Any] = {}  # by sample: two files may share a name

    def _request(self, sample: Sample) -> Any:
        cached = self._cache.get(id(sample))
        if cached is not None:
            return cached
        pb = self._pb
        message = pb.ModelInferRequest(model_name=self.target.model)
        if sample.tensor is not None:
            message.inputs.add(name="input", datatype="FP32", shape=[1, *sample.tensor.shape])
            message.raw_input_contents.append(sample.tensor.astype("<f4").tobytes())
        else:
            message.inputs.add(name="image", datatype="BYTES", shape=[1])
            message.raw_input_contents.append(struct.pack("<I", len(sample.data)) + sample.data)
        output = message.outputs.add(name=self._output)
        output.parameters["classification"].int64_param = self.target.top_k
        self._cache[id(sample)] = message
        return message

    async def send(self, sample: Sample) -> None:
        try:
            await self._stub.ModelInfer(self._request(sample), metadata=self._metadata)
        except self._grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            raise RequestFailed(self._kind(exc.code(), exc.trailing_metadata(), details), details) from None

    def _kind(self, code: Any, trailing: Any, details: str = "") -> str:
        """The error kind, named as over HTTP; UNAVAILABLE without a connected channel is no server
        there ("connection", as the HTTP client says), not a server that answered it is unavailable
        (not ready); an edgeinfer server's UNAVAILABLE for a failed upstream says so in its trailing
        metadata ("upstream", HTTP's 502); RESOURCE_EXHAUSTED from gRPC's own message-size limit
        (no server kind with it) is a request too large (HTTP's 413), not a full queue."""
        grpc = self._grpc
        connected = self._channel.get_state() == grpc.ChannelConnectivity.READY
        metadata = tuple(trailing or ())
        if code == grpc.StatusCode.UNAVAILABLE and not connected:
            return "connection"
        if code == grpc.StatusCode.UNAVAILABLE and ("edgeinfer-error-kind", "upstream") in metadata:
            return "upstream"
        from_server = any(key == "edgeinfer-error-kind" for key, _ in metadata)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and not from_server and "larger than max" in details:
            return "too_large"
        return _GRPC_KINDS.get(code.name, str(code.name.lower()))

    async def abandon(self) -> None:
        return None  # the timed-out call was cancelled; the channel is shared and stays open

    async def close(self) -> None:
        await self._channel.close()


def make_client(target: Target) -> Client:
    return HttpClient(target) if target.transport == "http" else GrpcClient(target)
