"""Server settings: every time is a finite positive number, and addresses write IPv6 in brackets."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.settings import ServeSettings, host_port


@pytest.mark.parametrize(
    "name", ["default_timeout_ms", "body_timeout_s", "shutdown_timeout_s", "cloud_timeout_ms"]
)
@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -1.0, 1e300])
def test_a_time_that_is_not_a_finite_positive_number_is_refused(name: str, value: float) -> None:
    # infinity once passed, and every request without its own timeout then failed with a 500
    with pytest.raises(InvalidInput, match=f"{name} must be positive and at most"):
        ServeSettings(models=("mobilenet_v2",), **{name: value})  # type: ignore[arg-type]


def test_times_from_a_toml_file_are_checked_too(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text("default_timeout_ms = inf\n")
    with pytest.raises(InvalidInput, match=r"default_timeout_ms must be positive and at most 8\.64e"):
        ServeSettings.load(config)


def test_host_port_brackets_ipv6_literals() -> None:
    assert host_port("127.0.0.1", 8001) == "127.0.0.1:8001"
    assert host_port("::1", 8001) == "[::1]:8001"
    assert host_port("[::1]", 8001) == "[::1]:8001"
    assert host_port("edge-box.local", 80) == "edge-box.local:80"


def test_the_cores_are_shared_out_among_every_models_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeinfer.serving import settings as module

    monkeypatch.setattr(module, "usable_cores", lambda: 4)
    two = ("mobilenet_v2", "efficientnet_lite0")
    assert ServeSettings(models=("mobilenet_v2",)).threads_per_instance == 4
    assert ServeSettings(models=two).threads_per_instance == 2  # was 4 each: the second never started
    assert ServeSettings(models=two, instances=2).threads_per_instance == 1
    with pytest.raises(
        InvalidInput, match=r"models x instances x threads = 2 x 1 x 4 = 8 is more than the 4"
    ):
        ServeSettings(models=two, threads=4)
    with pytest.raises(InvalidInput, match="2 models x 3 instances is more than the 4 usable cores"):
        ServeSettings(models=two, instances=3)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('idle_fast_path = "false"', "idle_fast_path must be true or false, got 'false'"),
        ('prefetch_batches = "no"', "prefetch_batches must be true or false"),
        ('grpc_enabled = "false"', "grpc_enabled must be true or false"),
        ("default_timeout_ms = true", "default_timeout_ms must be a number, got True"),
        ('shutdown_timeout_s = "5"', "shutdown_timeout_s must be a number, got '5'"),
        ("decode_threads = 1.5", "decode_threads must be a whole number (or unset for automatic), got 1.5"),
        ("threads = true", "threads must be a whole number (or unset for automatic), got True"),
        ("threads = false", "threads must be a whole number"),
        ('log_level = "verbose"', "log_level must be one of debug, info, warning, error, critical"),
        ("runtime = 3", "runtime must be a string, got 3"),
        ("host = 5", "host must be a string, got 5"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_refused(tmp_path: Path, line: str, message: str) -> None:
    """Before, each was taken as it came: "false" was true, true a 1 ms deadline, 1.5 threads..."""
    config = tmp_path / "serve.toml"
    config.write_text(line + "\n")
    with pytest.raises(InvalidInput, match=re.escape(message)):
        ServeSettings.load(config)


def test_settings_outside_the_serve_table_are_refused(tmp_path: Path) -> None:
    """Before, with a [serve] table, the keys above it were dropped without a word."""
    config = tmp_path / "serve.toml"
    config.write_text("http_port = 18610\ngrpc_port = 18611\n\n[serve]\nmax_batch_size = 4\n")
    with pytest.raises(InvalidInput, match=r"grpc_port, http_port outside the \[serve\] table"):
        ServeSettings.load(config)
    config.write_text('[serve]\nmax_batch_size = 4\nlog_level = "INFO"\nthreads = 0\n')
    loaded = ServeSettings.load(config)
    assert (loaded.max_batch_size, loaded.log_level, loaded.threads) == (4, "INFO", None)


def test_one_port_for_both_listeners_is_refused_unless_grpc_is_off() -> None:
    """Before, the second listener failed to bind after start-up (exit 3, uvicorn's message)."""
    with pytest.raises(InvalidInput, match="http_port and grpc_port are both 9000"):
        ServeSettings(http_port=9000, grpc_port=9000)
    assert ServeSettings(http_port=9000, grpc_port=9000, grpc_enabled=False).http_port == 9000
    assert ServeSettings(http_port=0, grpc_port=0).grpc_port == 0  # each any free port
