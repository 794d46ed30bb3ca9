"""The data plane's view of its models for Triton's repository index and statistics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgeinfer.errors import InvalidInput, NotReady
from edgeinfer.serving.dataplane import DataPlane
from edgeinfer.serving.settings import ServeSettings

MODEL = "mobilenet_v2"


def test_repository_index_and_statistics_follow_the_models_state(edgeinfer_home: Path) -> None:
    """Loading: the index says UNAVAILABLE (loading) and statistics are not ready; loaded: READY;
    draining: UNAVAILABLE (shutting down), statistics still readable."""
    plane = DataPlane(ServeSettings(runtime="null", threads=1, warmup_runs=1, grpc_port=0))
    assert [(m.name, m.state, m.reason) for m in plane.repository_index()] == [
        (MODEL, "UNAVAILABLE", "loading")
    ]
    assert plane.repository_index(ready_only=True) == []
    with pytest.raises(NotReady):
        plane.model_statistics(MODEL)

    async def main() -> None:
        await plane.load()
        try:
            assert [(m.name, m.version, m.state) for m in plane.repository_index()] == [(MODEL, "1", "READY")]
            assert plane.model_statistics() == plane.model_statistics(MODEL, "1")
            with pytest.raises(InvalidInput, match="version was given without a model"):
                plane.model_statistics(None, "1")
            plane.begin_shutdown()
            assert [(m.state, m.reason) for m in plane.repository_index()] == [
                ("UNAVAILABLE", "shutting down")
            ]
            assert plane.model_statistics(MODEL)[0].name == MODEL
        finally:
            await plane.close()

    asyncio.run(main())
