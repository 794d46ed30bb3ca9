"""Publish each frame's result to MQTT: one topic per stream, a JSON payload.

Uses paho-mqtt 2.x with its network thread (``loop_start``). When the broker is down at the start
or goes away mid-run, paho reconnects with exponential backoff (``reconnect_min_s`` doubling up to
``reconnect_max_s``) while the pipeline keeps processing. Results produced while the broker is
unreachable are not queued (they would arrive stale); they are counted as unpublished. So are
those produced while the broker is connected but has acknowledged nothing for ``stall_s`` (a hung
broker or a black-holed link, which TCP and MQTT's keepalive take tens of seconds to notice: paho
would queue a thousand results and deliver them seconds late). A result counts as published only
when the broker acknowledged it (QoS 1 PUBACK; QoS 0: written to the socket), so ``published +
unpublished == results`` after ``flush``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from edgeinfer.errors import InvalidInput
from edgeinfer.streams.events import EventQueue
from edgeinfer.streams.messages import FrameResult, StreamEvent
from edgeinfer.streams.sinks.base import SinkReport


@dataclass(frozen=True)
class MqttOptions:
    """Where and how to publish. ``topic_prefix``/<stream> is each stream's topic."""

    host: str
    port: int = 1883
    topic_prefix: str = "edgeinfer"
    qos: int = 1
    tls: bool = False
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    max_inflight: int = 64
    max_queued: int = 1000
    stall_s: float = 2.0  # no acknowledgement for this long: stalled, results are not queued

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("MQTT host is empty; use mqtt://HOST[:PORT][/TOPIC_PREFIX]")
        if not 0 < self.port < 65536:
            raise ValueError(f"MQTT port must be 1..65535, got {self.port}")
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {self.qos}")
        if any(c in self.topic_prefix for c in "+#") or not self.topic_prefix.strip("/"):
            raise ValueError(f"topic prefix {self.topic_prefix!r} must be non-empty, without + or #")
        if not 1 <= self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 1 <= reconnect_min_s <= reconnect_max_s")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttOptions:
        """``mqtt://[user[:password]@]host[:port][/topic/prefix]`` (``mqtts://`` for TLS)."""
        from edgeinfer.streams.sources import redact_uri

        shown = redact_uri(url)  # no password in messages
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an IPv6 host without its closing bracket
            raise InvalidInput(f"bad MQTT URL {shown!r}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise InvalidInput(f"MQTT URL {shown!r} must start with mqtt:// or mqtts://")
        try:
            port = parts.port
            options = cls(
                host=parts.hostname or "",
                port=(8883 if parts.scheme == "mqtts" else 1883) if port is None else port,
                topic_prefix=parts.path.strip("/") or "edgeinfer",
                tls=parts.scheme == "mqtts",
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                **overrides,
            )
        except ValueError as exc:
            raise InvalidInput(f"bad MQTT URL {shown!r}: {exc}") from exc
        return options


class MqttSink:
    """Publishes results; reconnects in the background; counts what it could not publish."""

    name = "mqtt"

    def __init__(self, options: MqttOptions, events: EventQueue | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.options = options
        self._events = events
        self._cond = threading.Condition()
        self._connected = False
        self._closing = False
        self._ever_connected = False
        self._told_unreachable = False
        self._told_refused = ""  # the refusal already reported since the last connection
        self._attempted = 0
        self._refused_offline = 0
        self._refused_full = 0
        self._handed = 0
        self._acked = 0
        self._waiting: dict[int, float] = {}  # message id -> when it was handed, until acknowledged
        self._acked_early: set[int] = set()  # acknowledged before handle recorded its id
        self._stalled = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"edgeinfer-{uuid.uuid4().hex[:12]}", clean_session=True
        )
        if options.username:
            client.username_pw_set(options.username, options.password)
        if options.tls:
            client.tls_set()
        client.reconnect_delay_set(options.reconnect_min_s, options.reconnect_max_s)
        client.max_inflight_messages_set(options.max_inflight)
        client.max_queued_messages_set(options.max_queued)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(options.host, options.port, options.keepalive_s)
        client.loop_start()

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    @property
    def published(self) -> int:
        """Results the broker has acknowledged so far."""
        with self._cond:
            return self._acked

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until the broker accepted us (for callers that want it before starting)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._connected, timeout_s)

    def topic(self, stream: str) -> str:
        return f"{self.options.topic_prefix.strip('/')}/{stream}"

    def handle(self, result: FrameResult) -> None:
        import paho.mqtt.client as mqtt

        payload = json.dumps(result.to_dict(), separators=(",", ":"))
        with self._cond:
            self._attempted += 1
            if not self._connected or self._stalling():
                self._refused_offline += 1
                return
        info = self._client.publish(self.topic(result.stream), payload, qos=self.options.qos)
        with self._cond:
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._handed += 1
                if info.mid in self._acked_early:
                    self._acked_early.discard(info.mid)
                else:
                    self._waiting[info.mid] = time.monotonic()
            elif info.rc == mqtt.MQTT_ERR_NO_CONN:
                self._refused_offline += 1
            else:
                self._refused_full += 1

    def _stalling(self) -> bool:
        """Whether the oldest result handed over has waited ``stall_s`` for its acknowledgement
        (under ``self._cond``); says so once when it starts."""
        oldest = min(self._waiting.values(), default=None)
        stalled = oldest is not None and time.monotonic() - oldest > self.options.stall_s
        if stalled and not self._stalled:
            self._emit(
                "warning",
                "mqtt_stalled",
                f"the broker at {self.options.host}:{self.options.port} has acknowledged nothing for "
                f"{self.options.stall_s:g} s; results meanwhile are counted as unpublished",
            )
        self._stalled = stalled
        return stalled

    def handle_event(self, event: StreamEvent) -> None:
        """Events stay local (console, JSON lines); only results go to the broker."""

    def flush(self, timeout_s: float) -> SinkReport:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._acked < self._handed and self._connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            acked, attempted = self._acked, self._attempted
            offline, full = self._refused_offline, self._refused_full
            in_flight = self._handed - self._acked
            never = attempted > 0 and not self._ever_connected
        if never:  # the output failed as a whole, not for a moment: an error (exit code 1)
            self._emit(
                "error",
                "mqtt_never_connected",
                f"no result was published: the broker at {self.options.host}:{self.options.port} was never "
                "reached during the run",
            )
        parts = [f"{acked} published to {self.options.host}:{self.options.port}"]
        if offline:
            parts.append(f"{offline} not sent while the broker was unreachable or stalled")
        if full:
            parts.append(f"{full} not sent because the outgoing queue was full")
        if in_flight:
            parts.append(f"{in_flight} sent but never acknowledged")
        return SinkReport(self.name, acked, attempted - acked, "; ".join(parts))

    def close(self, summary: dict[str, object] | None) -> None:
        with self._cond:
            self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks (its network thread) ------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:  # told once per reason: paho retries, and the broker says it again
            with self._cond:
                tell = self._told_refused != str(reason)
                self._told_refused = str(reason)
            if tell:
                self._emit(
                    "error",
                    "mqtt_refused",
                    f"broker refused the connection: {reason}; retrying with backoff "
                    f"({self.options.reconnect_min_s}-{self.options.reconnect_max_s} s), "
                    "results meanwhile are counted as unpublished",
                )
            return
        with self._cond:
            again = self._ever_connected
            self._connected = self._ever_connected = True
            self._told_unreachable = False
            self._told_refused = ""
            # a new session: what waited on the old one is not waited for (it may never be acked)
            self._waiting.clear()
            self._acked_early.clear()
            self._cond.notify_all()
        where = f"{self.options.host}:{self.options.port}"
        self._emit("info", "mqtt_connected", f"{'reconnected' if again else 'connected'} to {where}")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            was = self._connected and not self._closing
            self._connected = False
            self._cond.notify_all()
        if was:
            self._emit(
                "warning",
                "mqtt_disconnected",
                f"broker went away ({reason}); reconnecting with backoff, "
                "results meanwhile are counted as unpublished",
            )

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._cond:
            tell = not self._told_unreachable
            self._told_unreachable = True
        if tell:
            self._emit(
                "warning",
                "mqtt_unreachable",
                f"cannot reach the broker at {self.options.host}:{self.options.port}; retrying with backoff "
                f"({self.options.reconnect_min_s}-{self.options.reconnect_max_s} s), processing continues",
            )

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            self._acked += 1
            if self._waiting.pop(mid, None) is None:
                self._acked_early.add(mid)
            self._cond.notify_all()

    def _emit(self, level: Any, kind: str, message: str) -> None:
        if self._events is not None:
            self._events.emit("mqtt", level, kind, message)
