"""``edgeinfer link``: a TCP proxy that emulates a network path in both directions.

This kernel has no ``netem``, so the path is emulated in user space. For each direction the proxy
reads what one side sends, cuts it into segments, paces them through the direction's
:class:`TokenBucket` (shared by every connection, as a real access link is), stamps each with its
arrival time (one-way delay + jitter + loss recovery) and hands it to a per-connection
:class:`DelayLine` that writes it out at that time, in order. A new connection pays one round
trip before its first byte moves (the SYN / SYN-ACK exchange a real client would wait for).

One asyncio loop serves every connection. Timers use :class:`PreciseSelector`, because the
default epoll selector rounds every timeout up to a whole millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeinfer.errors import InvalidInput
from edgeinfer.network.profiles import MSS_BYTES, LinkProfile
from edgeinfer.network.shaping import (
    NS_PER_MS,
    DelayLine,
    PathDelay,
    Timer,
    TokenBucket,
    sleep_until_ns,
)

READ_BYTES = 65536
MAX_SEGMENT_BYTES = 32768
#: Bytes one direction of one connection may hold in flight before the proxy stops reading.
MIN_IN_FLIGHT_BYTES = 1 << 20


class PreciseSelector(selectors.EpollSelector):
    """An epoll selector whose timeouts have microsecond, not millisecond, resolution.

    ``epoll_wait`` takes whole milliseconds and CPython rounds up, so every timer fires up to
    1 ms late. Waiting on the epoll descriptor itself with ``select()`` (microsecond timeout)
    and then collecting events without blocking keeps epoll's scaling and fixes the timers.
    """

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0 and self.fileno() < 1024:
            select.select([self.fileno()], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop with precise timers, for ``asyncio.Runner(loop_factory=...)``."""
    return asyncio.SelectorEventLoop(PreciseSelector())


def parse_address(text: str, *, what: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:port"`` for IPv6) as a tuple; a clear error otherwise."""
    written, sep, port_text = text.strip().rpartition(":")
    bracketed = written.startswith("[") and written.endswith("]")
    host = written[1:-1] if bracketed else written
    if (
        not sep
        or not host
        or "[" in host
        or "]" in host
        or (":" in host and not bracketed)  # an IPv6 address needs its brackets ([::1]:9000)
        or not port_text.isdigit()
        or not 0 <= int(port_text) <= 65535
    ):
        raise InvalidInput(
            f"{what} must look like HOST:PORT (e.g. 127.0.0.1:9000 or [::1]:9000), got {text!r}"
        )
    return host, int(port_text)


@dataclass
class LinkStats:
    """What the link carried since it started."""

    connections: int = 0
    active: int = 0
    refused: int = 0
    resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    losses_up: int = 0
    losses_down: int = 0

    def snapshot(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Direction:
    """One direction of the path: its pacer and its delay model (shared by all connections)."""

    bucket: TokenBucket
    delay: PathDelay
    segment_bytes: int = MAX_SEGMENT_BYTES
    in_flight_bytes: int = MIN_IN_FLIGHT_BYTES

    def configure(
        self,
        rate_bytes_per_s: float | None,
        one_way_ms: float,
        jitter_sd_ms: float,
        loss_pct: float,
        rto_ms: float,
    ) -> None:
        self.bucket.set_rate(rate_bytes_per_s)
        self.delay.base_ns = round(one_way_ms * NS_PER_MS)
        self.delay.jitter_sd_ns = jitter_sd_ms * NS_PER_MS
        self.delay.loss_prob = loss_pct / 100
        self.delay.rto_ns = round(rto_ms * NS_PER_MS)
        if rate_bytes_per_s is None:
            self.segment_bytes = MAX_SEGMENT_BYTES
            self.in_flight_bytes = MIN_IN_FLIGHT_BYTES
        else:
            # About 2 ms of bytes a segment (at least one MSS): smooth pacing at any rate, and
            # few enough timers that the proxy keeps up on a busy machine.
            self.segment_bytes = int(min(MAX_SEGMENT_BYTES, max(MSS_BYTES, rate_bytes_per_s / 500)))
            bdp = rate_bytes_per_s * (one_way_ms + 4 * jitter_sd_ms + rto_ms) / 1000
            self.in_flight_bytes = int(max(MIN_IN_FLIGHT_BYTES, 2 * bdp))


@dataclass(eq=False)
class _Connection:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class LinkProxy:
    """The emulated link: listen on one address, forward every connection to ``target``."""

    def __init__(
        self,
        profile: LinkProfile,
        target: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        seed: int | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        rng = random.Random(seed)
        self.target = target
        self.listen = listen
        self.connect_timeout_s = connect_timeout_s
        self.stats = LinkStats()
        self._up = _Direction(TokenBucket(None), PathDelay(0, rng=random.Random(rng.random())))
        self._down = _Direction(TokenBucket(None), PathDelay(0, rng=random.Random(rng.random())))
        self._rng = rng
        self.profile = profile
        self.set_profile(profile)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._timer = Timer()

    def set_profile(self, profile: LinkProfile) -> None:
        """Switch the path's figures; open connections feel the change from their next segment."""
        self.profile = profile
        jitter_one_way = profile.jitter_ms / math.sqrt(2)  # two directions make the RTT's deviation
        for direction, rate in ((self._up, profile.up_bytes_per_s), (self._down, profile.down_bytes_per_s)):
            direction.configure(
                rate, profile.one_way_delay_ms, jitter_one_way, profile.loss_pct, profile.rto_ms
            )

    @property
    def address(self) -> tuple[str, int]:
        """The address actually bound (the port is known after :meth:`start` when 0 was asked)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the link is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._handle, self.listen[0], self.listen[1], limit=READ_BYTES, reuse_address=True
            )
        except OSError as exc:
            raise InvalidInput(f"cannot listen on {self.listen[0]}:{self.listen[1]}: {exc.strerror}") from exc

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            for writer in conn.writers:
                _abort(writer)
            for task in conn.tasks:
                task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        accepted_ns = time.monotonic_ns()
        self.stats.connections += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        _no_delay(client_writer)
        try:
            target_reader, target_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target, limit=READ_BYTES), timeout=self.connect_timeout_s
            )
        except (OSError, TimeoutError):
            self.stats.refused += 1
            _abort(client_writer)  # the client sees a reset, as it would a refused connection
            return
        _no_delay(target_writer)
        # SYN and SYN-ACK cross the path before the client's first byte may leave.
        handshake_ns = self._up.delay.sample(0, accepted_ns) + self._down.delay.sample(0, accepted_ns)
        conn = _Connection(writers=[client_writer, target_writer])
        self._connections.add(conn)
        self.stats.active += 1
        up = asyncio.create_task(
            self._carry(client_reader, target_writer, self._up, "up", accepted_ns + handshake_ns)
        )
        down = asyncio.create_task(self._carry(target_reader, client_writer, self._down, "down", 0))
        conn.tasks = [up, down]
        try:
            done, _ = await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(not t.cancelled() and t.exception() is not None for t in done):
                self.stats.resets += 1
                for writer in conn.writers:
                    _abort(writer)
                for task in conn.tasks:
                    task.cancel()
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self.stats.active -= 1
            self._connections.discard(conn)
            for writer in conn.writers:
                writer.close()

    async def _carry(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: _Direction,
        name: str,
        not_before_ns: int,
    ) -> None:
        """Move one direction's bytes: read, pace, delay, deliver in order; half-close at EOF."""
        line = DelayLine(direction.in_flight_bytes)
        deliver = asyncio.create_task(_deliver(line, writer, self._timer))
        try:
            while True:
                asked_ns = time.monotonic_ns()
                data = await reader.read(READ_BYTES)
                if not data or deliver.done():
                    break
                await sleep_until_ns(not_before_ns)
                step = direction.segment_bytes
                segments = [data[i : i + step] for i in range(0, len(data), step)]
                # One segment is booked at a time, so a connection never holds more than one segment
                # of the shared link (a dead one leaves no phantom queue behind). If the bytes were
                # already waiting when asked for, the sender never let the link idle: the train goes
                # on from where the link was, however late this wake-up is.
                waiting = time.monotonic_ns() - asked_ns < 200_000
                for i, segment in enumerate(segments):
                    release_ns = direction.bucket.reserve(
                        len(segment), time.monotonic_ns(), backlog=waiting or i > 0
                    )
                    await self._timer.sleep_until(release_ns)
                    losses_before = direction.delay.losses
                    line.put(release_ns + direction.delay.sample(len(segment), release_ns), segment)
                    self._count(name, len(segment), direction.delay.losses - losses_before)
                    await line.wait_for_room()
            line.close()
            await deliver
        finally:
            if not deliver.done():
                deliver.cancel()
            elif not deliver.cancelled():
                deliver.exception()  # retrieved: a client that went away is not the link's error

    def _count(self, name: str, nbytes: int, losses: int) -> None:
        if name == "up":
            self.stats.bytes_up += nbytes
            self.stats.losses_up += losses
        else:
            self.stats.bytes_down += nbytes
            self.stats.losses_down += losses


async def _deliver(line: DelayLine, writer: asyncio.StreamWriter, timer: Timer) -> None:
    try:
        while (data := await line.get(timer)) is not None:
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
    finally:
        line.discard()  # wake a producer waiting for room if we stopped early


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a refused or broken connection looks."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class BackgroundLink:
    """A :class:`LinkProxy` on its own thread and event loop, for use from synchronous code.

    >>> with BackgroundLink(get_profile("lte"), ("127.0.0.1", 8000)) as link:
    ...     url = f"http://{link.address[0]}:{link.address[1]}"
    """

    def __init__(
        self,
        profile: LinkProfile,
        target: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        *,
        seed: int | None = None,
    ) -> None:
        self.proxy = LinkProxy(profile, target, listen, seed=seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edgeinfer-link", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.proxy.address

    def set_profile(self, profile: LinkProfile) -> None:
        self._call(lambda: self.proxy.set_profile(profile))

    def __enter__(self) -> BackgroundLink:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=5)

    def _call(self, fn: Callable[[], None]) -> None:
        if self._loop is None:
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(timeout=5)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.proxy.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.proxy.close()
