"""Fixtures for the network tests: the real engine, real photos as JPEG, and a real cloud server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeinfer.engine.engine import Engine
from edgeinfer.network.processes import ServerProcess

RUNTIME = "onnxruntime"


@pytest.fixture(scope="package")
def engine(edgeinfer_home: Path) -> Iterator[Engine]:
    """The device's engine (one thread: the other core is the stand-in cloud's)."""
    with Engine.load("mobilenet_v2", runtime=RUNTIME, threads=1) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def jpegs(photos: dict[str, Path]) -> list[bytes]:
    """Real photos as a camera hands them over (JPEG), the same the comparison streams."""
    from edgeinfer.network.compare import load_images

    images, _ = load_images(4, seed=0)
    return images


@pytest.fixture(scope="package")
def cloud(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``edgeinfer serve`` as the stand-in cloud, shared by the client and router tests."""
    log = tmp_path_factory.mktemp("cloud") / "server.log"
    with ServerProcess("mobilenet_v2", log, runtime=RUNTIME, threads=1) as server:
        server.wait_ready()
        yield server
