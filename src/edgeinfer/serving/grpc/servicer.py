"""The gRPC adapter: ``inference.GRPCInferenceService`` over the data plane, on grpc.aio."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc

from edgeinfer.errors import EdgeInferError
from edgeinfer.serving.auth import ApiKeyGuard
from edgeinfer.serving.dataplane import DataPlane
from edgeinfer.serving.deadlines import TIMEOUT_HEADER, timeout_from_header
from edgeinfer.serving.grpc import convert, convert_extensions
from edgeinfer.serving.grpc import grpc_predict_v2_pb2 as pb
from edgeinfer.serving.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from edgeinfer.serving.grpc.errors import code_of, trailing_metadata
from edgeinfer.serving.settings import ServeSettings, host_port

log = logging.getLogger("edgeinfer.serving.grpc")
PROTOCOL = "grpc"
T = TypeVar("T")
Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpc ships no type hints


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, plane: DataPlane, guard: ApiKeyGuard) -> None:
        self.plane = plane
        self.guard = guard

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.plane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return await self._guarded(context, lambda: pb.ServerReadyResponse(ready=self.plane.ready()))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return await self._guarded(
            context,
            lambda: pb.ModelReadyResponse(
                ready=self.plane.model_ready(request.name, request.version or None)
            ),
        )

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return await self._guarded(
            context, lambda: convert.server_metadata_to_proto(self.plane.server_metadata())
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        return await self._guarded(
            context,
            lambda: convert.model_metadata_to_proto(
                self.plane.model_metadata(request.name, request.version or None)
            ),
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        return await self._guarded(
            context,
            lambda: convert_extensions.model_config_to_proto(
                self.plane.model_config(request.name, request.version or None)
            ),
        )

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        return await self._guarded(
            context,
            lambda: convert_extensions.statistics_to_proto(
                self.plane.model_statistics(request.name or None, request.version or None)
            ),
        )

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        return await self._guarded(
            context,
            lambda: convert_extensions.repository_index_to_proto(self.plane.repository_index(request.ready)),
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        arrival_ns = time.monotonic_ns()
        metadata = _metadata(context)
        try:
            self.guard.check(metadata.get("authorization"), metadata.get("x-api-key"))
        except EdgeInferError as exc:  # not an authorized inference: not counted, as over HTTP
            await _abort(context, exc)
        try:
            self.plane.check_model(request.model_name, request.model_version or None)
            remaining_s = context.time_remaining()
            deadline_ns = int(remaining_s * 1e9) if remaining_s is not None else None
            infer_request = convert.request_from_proto(
                request,
                arrival_ns=arrival_ns,
                extra_timeouts_ns=(timeout_from_header(metadata.get(TIMEOUT_HEADER)), deadline_ns),
            )
            response = await self.plane.infer(infer_request, PROTOCOL)
            return convert.response_to_proto(response)
        except Exception as exc:
            if not isinstance(exc, EdgeInferError):
                log.exception("unhandled error in ModelInfer")
                exc = EdgeInferError(f"internal error: {exc!r}")
            self.plane.count_failure(request.model_name, PROTOCOL, exc, arrival_ns)
            await _abort(context, exc)

    async def _guarded(self, context: Context, answer: Callable[[], T] | Callable[[], Awaitable[T]]) -> T:
        try:
            metadata = _metadata(context)
            self.guard.check(metadata.get("authorization"), metadata.get("x-api-key"))
            result: Any = answer()
            return result  # type: ignore[no-any-return]
        except EdgeInferError as exc:
            await _abort(context, exc)


def _metadata(context: Context) -> dict[str, str]:
    pairs = context.invocation_metadata() or ()
    return {key.lower(): value for key, value in pairs if isinstance(value, str)}


async def _abort(context: Context, error: EdgeInferError) -> NoReturn:
    await context.abort(code_of(error), str(error), trailing_metadata(error))
    raise AssertionError("context.abort returned")  # pragma: no cover


class GrpcServer:
    """A grpc.aio server on the same event loop as the HTTP server (created in ``start``, on that loop)."""

    def __init__(self, plane: DataPlane, settings: ServeSettings) -> None:
        self.settings = settings
        self._servicer = InferenceServicer(plane, ApiKeyGuard(settings.api_key))
        self._server: Any = None
        self.port = 0

    async def start(self) -> None:
        limit = self.settings.max_request_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer, server)  # type: ignore[no-untyped-call]
        address = host_port(self.settings.host, self.settings.grpc_port)
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {address} (port in use?)")
        await server.start()
        self._server = server

    async def stop(self, grace_s: float) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
