"""The HTTP adapter: a raw ASGI application over the data plane.

No framework: the routes are few and fixed, and each framework layer measured costs latency on a
2-core box (see docs/SERVING.md). It runs under any ASGI server; ``edgeinfer serve`` uses uvicorn
with httptools and uvloop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from edgeinfer.errors import EdgeInferError, InvalidInput, NotFound
from edgeinfer.serving.auth import ApiKeyGuard
from edgeinfer.serving.codecs import rest as codec
from edgeinfer.serving.codecs import rest_extensions as extensions
from edgeinfer.serving.dataplane import DataPlane
from edgeinfer.serving.deadlines import TIMEOUT_HEADER, timeout_from_header
from edgeinfer.serving.metrics import CONTENT_TYPE as METRICS_TYPE
from edgeinfer.serving.rest.body import BodyReads, ClientDisconnected, read_body
from edgeinfer.serving.rest.errors import (
    MethodNotAllowed,
    UnsupportedMediaType,
    error_headers,
    error_payload,
    status_of,
)
from edgeinfer.serving.rest.hangup import unless_hung_up
from edgeinfer.serving.routing import RoutedClassifyResponse, route_headers
from edgeinfer.serving.settings import ServeSettings

log = logging.getLogger("edgeinfer.serving.rest")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]
PROTOCOL = "http"


@dataclass
class Request:
    scope: Scope
    receive: Receive
    headers: dict[str, str]
    arrival_ns: int
    model: str = ""
    version: str | None = None


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: bytes = codec.JSON_TYPE
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[["RestApp", Request], Awaitable[Response]]


class RestApp:
    """ASGI 3 application: ``http`` requests and the ``lifespan`` protocol."""

    def __init__(
        self,
        plane: DataPlane,
        settings: ServeSettings,
        on_startup: Hook | None = None,
        on_shutdown: Hook | None = None,
    ) -> None:
        self.plane = plane
        self.settings = settings
        self._guard = ApiKeyGuard(settings.api_key)
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self.body_reads = BodyReads()  # the server cuts them when it starts to stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, _headers(scope), time.monotonic_ns())
        head = scope["method"] == "HEAD"  # a GET without its body, as HTTP has it
        inference = False
        try:
            handler, guarded = _route("GET" if head else scope["method"], scope["path"], request)
            if guarded:
                self._guard.check(request.headers.get("authorization"), request.headers.get("x-api-key"))
            inference = handler in _INFERENCE
            response = await handler(self, request)
        except ClientDisconnected:
            return
        except asyncio.CancelledError:
            if self.plane.draining:  # a second signal cut the drain short: nobody to answer or blame
                return
            raise
        except Exception as exc:
            response = self._failed(request, exc, inference=inference)
        await _send(send, response, with_body=not head)

    def _failed(self, request: Request, exc: Exception, *, inference: bool) -> Response:
        """The error answer (a bug as kind ``internal``: answer 500, keep serving); counted for the
        request's model when it was an inference request (an authorized infer or classify), as
        gRPC counts them: metadata, readiness and statistics calls are not inferences."""
        if not isinstance(exc, EdgeInferError):
            log.exception("unhandled error on %s %s", request.scope["method"], request.scope["path"])
            exc = EdgeInferError(f"internal error: {exc!r}")
        if inference and request.model:
            self.plane.count_failure(request.model, PROTOCOL, exc, request.arrival_ns)
        return Response(error_payload(exc), status_of(exc), headers=error_headers(exc))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- handlers -------------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return _health(self.plane.live(), "live")

    async def ready(self, request: Request) -> Response:
        return _health(self.plane.ready(), "ready")

    async def server_metadata(self, request: Request) -> Response:
        return Response(codec.encode_server_metadata(self.plane.server_metadata()))

    async def model_metadata(self, request: Request) -> Response:
        return Response(
            codec.encode_model_metadata(self.plane.model_metadata(request.model, request.version))
        )

    async def model_config(self, request: Request) -> Response:
        return Response(
            extensions.encode_model_config(self.plane.model_config(request.model, request.version))
        )

    async def model_statistics(self, request: Request) -> Response:
        stats = self.plane.model_statistics(request.model or None, request.version)
        return Response(extensions.encode_model_statistics(stats))

    async def repository_index(self, request: Request) -> Response:
        ready_only = extensions.decode_repository_index_request(await self._body(request))
        return Response(extensions.encode_repository_index(self.plane.repository_index(ready_only)))

    async def model_ready(self, request: Request) -> Response:
        return _health(self.plane.model_ready(request.model, request.version), "ready")

    async def infer(self, request: Request) -> Response:
        self.plane.check_model(request.model, request.version)
        body = await self._body(request)
        header_length = request.headers.get(codec.HEADER_LENGTH)
        try:
            length = None if header_length is None else int(header_length)
        except ValueError:
            raise InvalidInput(
                f"Inference-Header-Content-Length must be a number, got {header_length!r}"
            ) from None
        infer_request = codec.decode_infer_request(
            body,
            model=request.model,
            version=request.version,
            header_length=length,
            header_timeout_ns=timeout_from_header(request.headers.get(TIMEOUT_HEADER)),
            arrival_ns=request.arrival_ns,
        )
        response = await unless_hung_up(
            request.receive, self.plane.infer(infer_request, PROTOCOL, _peer(request.scope))
        )
        encoded = codec.encode_infer_response(response)
        headers = route_headers(response.parameters) if response.parameters else []
        if encoded.header_length is not None:
            headers.append((codec.HEADER_LENGTH.encode(), str(encoded.header_length).encode()))
        return Response(encoded.body, content_type=encoded.content_type, headers=headers)

    async def classify(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.lower().startswith(("multipart/", "application/json", "text/")):  # any case
            raise UnsupportedMediaType(
                f"send the raw image bytes as the body (curl --data-binary @photo.jpg), not {content_type}"
            )
        top_k = _query_int(request.scope, "top_k", self.settings.top_k)
        self.plane.check_model(request.model)
        body = await self._body(request)
        work = self.plane.classify(
            request.model,
            body,
            top_k,
            protocol=PROTOCOL,
            arrival_ns=request.arrival_ns,
            timeout_ns=timeout_from_header(request.headers.get(TIMEOUT_HEADER)),
            peer=_peer(request.scope),
        )
        result = await unless_hung_up(request.receive, work)
        headers = route_headers(result.parameters) if isinstance(result, RoutedClassifyResponse) else []
        return Response(codec.encode_classify_response(result), headers=headers)

    async def metrics(self, request: Request) -> Response:
        return Response(self.plane.metrics.exposition(), content_type=METRICS_TYPE.encode())

    async def _body(self, request: Request) -> bytes:
        return await read_body(
            request.receive,
            request.headers,
            self.settings.max_request_bytes,
            self.settings.body_timeout_s,
            self.body_reads,
        )


_INFERENCE: tuple[Handler, ...] = (RestApp.infer, RestApp.classify)


def _route(method: str, path: str, request: Request) -> tuple[Handler, bool]:
    """The handler for a path and whether it needs the API key; sets the request's model/version."""
    if "//" in path:  # an empty segment would shift the others: /versions//infer is no version
        raise NotFound(f"no route {path}: it has an empty path segment")
    parts = [p for p in path.split("/") if p]
    handler: Handler | None = None
    allowed = "GET"
    if parts == ["v2", "health", "live"]:
        return _only(method, "GET", RestApp.live, path), False
    if parts == ["v2", "health", "ready"]:
        handler = RestApp.ready
    elif parts == ["v2"]:
        handler = RestApp.server_metadata
    elif parts == ["metrics"]:
        handler = RestApp.metrics
    elif parts == ["v2", "models", "stats"]:
        handler = RestApp.model_statistics
    elif parts == ["v2", "repository", "index"]:
        handler, allowed = RestApp.repository_index, "POST"
    elif len(parts) >= 3 and parts[:2] == ["v2", "models"]:
        handler, allowed = _model_route(parts[2:], request)
    elif len(parts) == 4 and parts[:2] == ["v1", "models"] and parts[3] == "classify":
        request.model = parts[2]
        handler, allowed = RestApp.classify, "POST"
    if handler is None:
        raise NotFound(f"no route {path}; see GET /v2 and /v2/models/{{name}} for what this server offers")
    return _only(method, allowed, handler, path), True


def _model_route(rest: list[str], request: Request) -> tuple[Handler | None, str]:
    request.model = rest[0]
    tail = rest[1:]
    if len(tail) >= 2 and tail[0] == "versions":
        request.version = tail[1]
        tail = tail[2:]
    if not tail:
        return RestApp.model_metadata, "GET"
    if tail == ["ready"]:
        return RestApp.model_ready, "GET"
    if tail == ["config"]:
        return RestApp.model_config, "GET"
    if tail == ["stats"]:
        return RestApp.model_statistics, "GET"
    if tail == ["infer"]:
        return RestApp.infer, "POST"
    return None, "GET"


def _only(method: str, allowed: str, handler: Handler, path: str) -> Handler:
    if method != allowed:
        raise MethodNotAllowed(f"{path} takes {allowed}, not {method}", allow=allowed)
    return handler


def _health(ok: bool, what: str) -> Response:
    # the protocol: "A 200 status code indicates true and a 4xx status code indicates false" (Triton: 400)
    return Response(codec.dumps({what: ok}), 200 if ok else 400)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _peer(scope: Scope) -> object | None:
    """The client's connection, when it cannot have two requests in flight (HTTP/1.x, no pipelining
    by any client we know of); None for HTTP/2 or an unknown address."""
    client = scope.get("client")
    if client is None or scope.get("http_version") not in ("1.0", "1.1"):
        return None
    return tuple(client)


def _query_int(scope: Scope, name: str, default: int) -> int:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer, got {values[-1]!r}") from None


async def _send(send: Send, response: Response, *, with_body: bool = True) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body if with_body else b""})
