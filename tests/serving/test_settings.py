"""Server settings: every time is a finite positive number, and addresses write IPv6 in brackets."""

from __future__ import annotations

import math
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
