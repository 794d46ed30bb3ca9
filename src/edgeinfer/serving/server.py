"""One server process: HTTP (uvicorn + httptools + uvloop) and gRPC (grpc.aio) on one event loop.

Start-up: listen first (live, not ready), then load and warm every model; ready only after that.
Shutdown on SIGTERM/SIGINT: readiness turns false and new requests are refused at once, requests
already accepted finish, then the listeners, batchers and runtimes close; the whole takes at most
about ``shutdown_timeout_s`` (plus a second of slack).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Generator
from types import FrameType

import uvicorn

from edgeinfer.errors import EdgeInferError
from edgeinfer.serving.dataplane import DataPlane, EngineLoader, load_engines
from edgeinfer.serving.metrics import ServerMetrics
from edgeinfer.serving.rest.app import RestApp
from edgeinfer.serving.routing import OffloadFactory
from edgeinfer.serving.settings import ServeSettings, host_port

log = logging.getLogger("edgeinfer.serving")

# The runtimes may start helper processes while gRPC's threads run; gRPC's fork handlers are only
# needed by children that go on using gRPC, which ours never do.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


class InferenceServer:
    """Owns the data plane and both transports for the life of the process."""

    def __init__(
        self,
        settings: ServeSettings,
        loader: EngineLoader = load_engines,
        offload_factory: OffloadFactory | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ServerMetrics()
        self.plane = DataPlane(settings, self.metrics, loader, offload_factory)
        self.app = RestApp(self.plane, settings, on_startup=self.startup, on_shutdown=self.shutdown)
        self.grpc = None
        if settings.grpc_enabled:
            from edgeinfer.serving.grpc.servicer import GrpcServer

            self.grpc = GrpcServer(self.plane, settings)
        self.load_error: EdgeInferError | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._uvicorn: _Uvicorn | None = None
        self._stop_requested_ns: int | None = None
        self.streams = None
        if settings.streams:
            from edgeinfer.serving.streaming import ServerStreams, StreamSettings

            wanted = StreamSettings(settings.streams, settings.stream_fps)
            self.streams = ServerStreams(wanted, self.metrics.registry)

    # -- lifespan hooks (called by the ASGI server) ---------------------------------------------

    async def startup(self) -> None:
        if self.grpc is not None:
            await self.grpc.start()
        self._load_task = asyncio.create_task(self._load(), name="load-models")

    async def shutdown(self) -> None:
        self.begin_shutdown()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.streams is not None:
            await asyncio.to_thread(self.streams.stop)
        if self.grpc is not None:
            await self.grpc.stop(self._time_left_s())
        await self.plane.close()

    def begin_shutdown(self) -> None:
        if self._stop_requested_ns is None:
            self._stop_requested_ns = time.monotonic_ns()
        self.plane.begin_shutdown()

    async def _load(self) -> None:
        try:
            await self.plane.load()
        except EdgeInferError as exc:
            self.load_error = exc
            log.error("cannot serve: %s", exc)
            self._request_exit()
        except Exception as exc:
            self.load_error = EdgeInferError(f"loading the models failed: {exc!r}")
            log.exception("loading the models failed")
            self._request_exit()
        else:
            if self.streams is not None:
                self.streams.start(self.plane.engine(self.settings.models[0]))
            host = self.settings.host
            log.info(
                "ready: http://%s%s", host_port(host, await self._http_port()),
                f", grpc {host_port(host, self.grpc.port)}" if self.grpc else "",
            )  # fmt: skip

    async def _http_port(self) -> int:
        """The port HTTP listens on: the one the system picked for ``--http-port 0``, once uvicorn
        has bound it (it binds right after the lifespan start-up that began the load)."""
        for _ in range(500):
            servers = self._uvicorn.servers if self._uvicorn is not None and self._uvicorn.started else []
            for server in servers:
                for sock in server.sockets:
                    return int(sock.getsockname()[1])
            if self._uvicorn is None:
                break
            await asyncio.sleep(0.01)
        return self.settings.http_port

    def _request_exit(self) -> None:
        self.begin_shutdown()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    def _time_left_s(self) -> float:
        if self._stop_requested_ns is None:
            return self.settings.shutdown_timeout_s
        spent = (time.monotonic_ns() - self._stop_requested_ns) / 1e9
        return max(0.5, self.settings.shutdown_timeout_s - spent)

    # -- running --------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until a signal; the exit code is 0, or the load error's when models failed to load."""
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.http_port,
            loop=_best("uvloop", "uvloop", "asyncio"),
            http=_http_protocol(self.settings.body_timeout_s),
            lifespan="on",
            access_log=False,
            log_level=self.settings.log_level,
            timeout_graceful_shutdown=max(1, int(self.settings.shutdown_timeout_s)),
            server_header=False,
        )
        busy = lambda: self.plane.in_flight > 0  # noqa: E731 - read when the signal comes
        self._uvicorn = _Uvicorn(
            config,
            self.begin_shutdown,
            busy=busy,
            drain_s=self.settings.shutdown_timeout_s,
            on_drain=self.app.body_reads.cut,  # a stalled client's body is not waited for
        )
        self._uvicorn.run()
        if self.load_error is not None:
            return self.load_error.exit_code
        if not self._uvicorn.started:
            return 1  # could not bind or start (uvicorn logged why)
        return 0


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that tells us when a signal arrives and exits 0 after a graceful stop.

    On the first signal the server stops admitting (ready false, new requests 503) but keeps
    listening while admitted requests finish, at most ``drain_s``, so that a client arriving then
    is told to go elsewhere rather than refused a connection; then uvicorn closes its listener
    and stops. A second signal stops at once.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_signal: Callable[[], None],
        *,
        busy: Callable[[], bool],
        drain_s: float,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_signal = on_signal
        self._on_drain = on_drain  # on the loop, when the drain starts
        self._busy = busy
        self._drain_s = drain_s
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_signal()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving yet (or any more): stop as uvicorn does
            loop = None
        if loop is None or self._draining is not None or not self.started:
            super().handle_exit(sig, frame)
            if self._draining is not None:  # a second signal: stop now, not after the drain
                self.force_exit = True
            return
        # from a signal handler: hand the loop its task through its thread-safe door
        loop.call_soon_threadsafe(self._start_draining, loop, sig, frame)

    def _start_draining(self, loop: asyncio.AbstractEventLoop, sig: int, frame: FrameType | None) -> None:
        if self._on_drain is not None:
            self._on_drain()
        if self._draining is None:
            self._draining = loop.create_task(self._exit_when_idle(sig, frame), name="drain")

    async def _exit_when_idle(self, sig: int, frame: FrameType | None) -> None:
        deadline = time.monotonic() + self._drain_s
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Like uvicorn's own, minus re-raising the signal afterwards: a graceful stop exits 0.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _http_protocol(head_timeout_s: float) -> type[asyncio.Protocol] | str:
    """httptools with one write per answer and limits on request heads (see ``rest/one_write.py``),
    a head given ``head_timeout_s`` to arrive; else uvicorn's h11."""
    try:
        from edgeinfer.serving.rest.one_write import OneWriteHttpToolsProtocol
    except ImportError:
        return "h11"
    return type("HttpProtocol", (OneWriteHttpToolsProtocol,), {"head_timeout_s": head_timeout_s})


def _best(module: str, name: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return name
