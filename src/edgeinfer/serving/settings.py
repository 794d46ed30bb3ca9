"""The server's configuration: one frozen object, from a TOML file with command-line overrides.

A TOML file holds the same names as the fields below, at the top level or under ``[serve]``::

    models = ["mobilenet_v2"]
    host = "127.0.0.1"
    http_port = 8000
    max_batch_size = 8
    max_queue_delay_us = 2000

With ``offload = "auto"`` (or ``"cloud"``) and a ``cloud_url``, image requests are routed per request
between this server's own batcher and a KServe v2 server in the cloud (see docs/SERVING.md).

The API key never appears in the file or on the command line: it comes from ``api_key_file`` or the
``EDGEINFER_API_KEY`` environment variable.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import SplitResult, urlsplit

from edgeinfer.errors import InvalidInput, NotFound
from edgeinfer.system.threads import usable_cores

API_KEY_ENV = "EDGEINFER_API_KEY"
_PATH_FIELDS = ("api_key_file", "repository")
_OPTIONAL_INT_FIELDS = ("threads", "decode_threads")
OFFLOAD_POLICIES = ("edge", "cloud", "auto")


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``edgeinfer serve`` can be told. Units are in the names."""

    models: tuple[str, ...] = ("mobilenet_v2",)
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    grpc_enabled: bool = True
    runtime: str = "auto"
    precision: str | None = None  # None: fp32, or an imported model's one build
    max_batch_size: int = 8
    max_queue_delay_us: int = 2000
    max_queue_size: int = 64
    idle_fast_path: bool = True
    prefetch_batches: bool = True
    instances: int = 1
    threads: int | None = None
    decode_threads: int | None = None
    default_timeout_ms: float = 2000.0
    max_request_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    body_timeout_s: float = 30.0
    shutdown_timeout_s: float = 10.0
    warmup_runs: int = 2
    top_k: int = 5
    repository: Path | None = None
    api_key_file: Path | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)
    log_level: str = "warning"
    streams: tuple[str, ...] = ()
    stream_fps: float | None = None
    offload: str = "edge"
    cloud_url: str | None = None
    cloud_model: str | None = None
    bandwidth_cap_mbps: float | None = None
    cloud_timeout_ms: float = 5000.0

    def __post_init__(self) -> None:
        _check_types(self)
        if not self.models:
            raise InvalidInput("serve at least one model (--model NAME)")
        if len(set(self.models)) != len(self.models):
            raise InvalidInput(f"a model is listed twice in {list(self.models)}")
        for name in ("http_port", "grpc_port"):
            port = getattr(self, name)
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise InvalidInput(f"{name} must be in 0..65535 (0: any free port), got {port}")
        if self.grpc_enabled and self.http_port == self.grpc_port != 0:
            raise InvalidInput(f"http_port and grpc_port are both {self.http_port}: give each its own port")
        _at_least(self, 1, "max_batch_size", "max_queue_size", "instances", "max_request_bytes",
                  "max_image_bytes", "max_image_pixels", "warmup_runs", "top_k")  # fmt: skip
        _at_least(self, 0, "max_queue_delay_us")
        for name in ("threads", "decode_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(f"{name} must be >= 1 (or unset for automatic), got {value}")
        for name, most in _LONGEST.items():
            value = getattr(self, name)
            if value is not None and not 0 < value <= most:  # NaN and infinity fail too
                unit = "ms" if name.endswith("_ms") else "s" if name.endswith("_s") else ""
                raise InvalidInput(
                    f"{name} must be positive and at most {most:g} {unit}, got {value}".strip()
                )
        self._check_streams()
        self._check_offload()
        if self.max_queue_size < self.max_batch_size:
            raise InvalidInput(
                f"max_queue_size ({self.max_queue_size}) must be at least "
                f"max_batch_size ({self.max_batch_size})"
            )
        self._check_cores()

    def _check_cores(self) -> None:
        cores = usable_cores()
        if self.instances > cores:
            raise InvalidInput(f"instances ({self.instances}) is more than the {cores} usable cores")
        if self.instances * len(self.models) > cores:
            raise InvalidInput(
                f"{len(self.models)} models x {self.instances} instances is more than the {cores} usable "
                "cores; lower --instances or serve fewer models"
            )
        wanted = len(self.models) * self.instances * (self.threads or 1)
        if self.threads is not None and wanted > cores:
            raise InvalidInput(
                f"models x instances x threads = {len(self.models)} x {self.instances} x {self.threads} = "
                f"{wanted} is more than the {cores} usable cores; lower --threads or --instances"
            )

    @property
    def threads_per_instance(self) -> int:
        """Compute threads of each instance: as set, or the usable cores shared out evenly among
        every model's instances (one model took them all, and a second could not start)."""
        if self.threads is not None:
            return self.threads
        return max(1, usable_cores() // (self.instances * len(self.models)))

    @property
    def decode_workers(self) -> int:
        return self.decode_threads if self.decode_threads is not None else usable_cores()

    @classmethod
    def load(
        cls, config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> ServeSettings:
        """Defaults, then the TOML file, then ``overrides`` (None values are ignored), then the API key."""
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_read_toml(config_file))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        _check_names(values, config_file)
        values = _coerce(values)
        if "api_key" in values:
            raise InvalidInput(
                "give the API key in a file (api_key_file) or in $EDGEINFER_API_KEY, not inline"
            )
        values["api_key"] = _read_api_key(values.get("api_key_file"))
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidInput(f"bad server setting: {exc}") from None

    def _check_streams(self) -> None:
        if self.stream_fps is not None and not self.stream_fps > 0:
            raise InvalidInput(
                f"stream_fps must be positive (or unset for each source's own rate), got {self.stream_fps}"
            )

    def _check_offload(self) -> None:
        if self.offload not in OFFLOAD_POLICIES:
            raise InvalidInput(f"offload must be one of {', '.join(OFFLOAD_POLICIES)}, got {self.offload!r}")
        if self.offload != "edge" and not self.cloud_url:
            raise InvalidInput(
                f"offload {self.offload!r} needs the cloud server: give --cloud-url http://HOST:PORT"
            )
        if self.cloud_url is not None:
            parts = urlsplit(self.cloud_url)
            if parts.scheme != "http" or not parts.hostname or _port(parts) is None:
                raise InvalidInput(
                    f"cloud_url must be http://HOST:PORT of a KServe v2 server, got {self.cloud_url!r}"
                )
            if _port(parts) == self.http_port and _is_this_host(parts.hostname, self.host):
                raise InvalidInput(
                    f"cloud_url {self.cloud_url} is this server itself: offloading to it would loop"
                )
        if self.cloud_model is not None and len(self.models) > 1:
            raise InvalidInput("cloud_model renames one model; with several models each keeps its own name")
        if self.bandwidth_cap_mbps is not None and not self.bandwidth_cap_mbps > 0:
            raise InvalidInput(
                f"bandwidth_cap_mbps must be positive (or unset for no cap), got {self.bandwidth_cap_mbps}"
            )
        if not self.cloud_timeout_ms > 0:
            raise InvalidInput(f"cloud_timeout_ms must be positive, got {self.cloud_timeout_ms}")

    def replace(self, **changes: Any) -> ServeSettings:
        return dataclasses.replace(self, **changes)


_BOOL_FIELDS = ("grpc_enabled", "idle_fast_path", "prefetch_batches")
_TEXT_FIELDS = ("host", "runtime", "offload", "log_level")
_OPTIONAL_TEXT_FIELDS = ("precision", "cloud_url", "cloud_model")
_NUMBER_FIELDS = ("default_timeout_ms", "body_timeout_s", "shutdown_timeout_s", "cloud_timeout_ms")
_OPTIONAL_NUMBER_FIELDS = ("stream_fps", "bandwidth_cap_mbps")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _check_types(settings: ServeSettings) -> None:
    """Each setting of the type it is read as: a config file's ``idle_fast_path = "false"`` (a
    string, and true) or ``default_timeout_ms = true`` (a 1 ms deadline) was taken as it came."""

    def refuse(name: str, what: str, value: object) -> NoReturn:
        raise InvalidInput(f"{name} must be {what}, got {value!r}")

    for name in _BOOL_FIELDS:
        if not isinstance(getattr(settings, name), bool):
            refuse(name, "true or false", getattr(settings, name))
    for name in (*_TEXT_FIELDS, *_OPTIONAL_TEXT_FIELDS):
        value = getattr(settings, name)
        if not isinstance(value, str) and not (value is None and name in _OPTIONAL_TEXT_FIELDS):
            refuse(name, "a string", value)
    for name in (*_NUMBER_FIELDS, *_OPTIONAL_NUMBER_FIELDS):
        value = getattr(settings, name)
        if (value is None and name in _OPTIONAL_NUMBER_FIELDS) or _is_number(value):
            continue
        refuse(name, "a number", value)
    for name in _OPTIONAL_INT_FIELDS:
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            refuse(name, "a whole number (or unset for automatic)", value)
    if settings.log_level.lower() not in LOG_LEVELS:
        refuse("log_level", f"one of {', '.join(LOG_LEVELS)}", settings.log_level)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _at_least(settings: ServeSettings, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidInput(f"{name} must be an integer >= {minimum}, got {value!r}")


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:  # not a number, or out of range
        return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"server config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"cannot read server config {path}: {exc}") from None
    table = document.get("serve", document)
    if not isinstance(table, dict):
        raise InvalidInput(f"{path}: [serve] must be a table")
    outside = sorted(set(document) - {"serve"}) if "serve" in document else []
    if outside:  # they were dropped without a word (a port set there was never used)
        raise InvalidInput(f"{path}: {', '.join(outside)} outside the [serve] table; put every setting in it")
    return dict(table)


def _check_names(values: Mapping[str, Any], source: Path | None) -> None:
    known = {f.name for f in dataclasses.fields(ServeSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in {source}" if source else ""
        raise InvalidInput(f"unknown server setting(s) {unknown}{where}; known: {', '.join(sorted(known))}")


def _string_tuple(value: Any, message: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) and item for item in items):
        raise InvalidInput(f"{message}, got {value!r}")
    return tuple(items)


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for name, what in (("models", "model names"), ("streams", "sources (files, URLs, devices)")):
        if name in out:
            out[name] = _string_tuple(out[name], f"{name} must be a list of {what}")
    for name in _PATH_FIELDS:
        if name in out and not isinstance(out[name], Path):
            out[name] = Path(str(out[name])).expanduser()
    for name in _OPTIONAL_INT_FIELDS:
        if type(out.get(name)) is int and out[name] == 0:  # 0: automatic (not false, not 0.0)
            out[name] = None
    for name in ("default_timeout_ms", "body_timeout_s", "shutdown_timeout_s", "stream_fps",
                 "bandwidth_cap_mbps", "cloud_timeout_ms"):  # fmt: skip
        if name in out and isinstance(out[name], int) and not isinstance(out[name], bool):
            out[name] = float(out[name])
    return out


# The longest each time may be: finite, so that a deadline is a number (infinity crashed every
# request without its own timeout), and long past any sensible use.
_LONGEST = {
    "default_timeout_ms": 24 * 3600 * 1000.0,
    "body_timeout_s": 3600.0,
    "shutdown_timeout_s": 3600.0,
    "cloud_timeout_ms": 3600 * 1000.0,
}


def host_port(host: str, port: int) -> str:
    """``host:port`` as addresses and Host headers write it: an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _read_api_key(path: Path | None) -> str | None:
    if path is not None:
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise NotFound(f"cannot read the API key file {path}: {exc.strerror}") from None
        if not key:
            raise InvalidInput(f"the API key file {path} is empty")
        return key
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None


def _is_this_host(hostname: str, bound: str) -> bool:
    """Whether ``hostname`` names the address this server listens on (loopback or every address)."""
    local = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
    return hostname == bound or (hostname in local and bound in local)
