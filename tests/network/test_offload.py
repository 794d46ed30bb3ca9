"""The engine with an offload policy, from synchronous code, against the real server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from edgeinfer.engine.engine import Engine
from edgeinfer.network.client import CloudError
from edgeinfer.network.offload import OffloadingEngine
from edgeinfer.network.processes import ServerProcess, free_port

pytestmark = pytest.mark.e2e


def test_auto_answers_like_the_engine_from_many_threads(
    engine: Engine, cloud: ServerProcess, jpegs: list[bytes]
) -> None:
    expected = [engine.classify(j).predictions[0].index for j in jpegs]
    with (
        OffloadingEngine(engine, policy="auto", cloud_url=cloud.url) as classifier,
        ThreadPoolExecutor(4) as pool,
    ):
        results = list(pool.map(lambda i: classifier.classify(jpegs[i % len(jpegs)], top_k=3), range(12)))
        stats = classifier.stats
        decisions = classifier.decisions
    assert [r.predictions[0].index for r in results] == [expected[i % len(jpegs)] for i in range(12)]
    assert all(len(r.predictions) == 3 and r.decision.reason for r in results)
    assert stats.requests == 12 and sum(stats.served.values()) == 12 and len(decisions) == 12


def test_edge_needs_no_cloud_and_cloud_reports_its_failures(engine: Engine, jpegs: list[bytes]) -> None:
    with OffloadingEngine(engine, policy="edge") as on_device:
        assert on_device.classify(jpegs[0]).decision.served_by == "edge"
    with OffloadingEngine(engine, policy="cloud", cloud_url=f"http://127.0.0.1:{free_port()}") as remote:
        with pytest.raises(CloudError) as caught:
            remote.classify(jpegs[0])
        assert caught.value.reason == "refused"
        assert remote.stats.cloud_failures == {"refused": 1}
