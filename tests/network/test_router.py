"""The hybrid router with the real engine, the real server and the real link, cut in every way."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.engine.engine import Engine
from edgeinfer.errors import InvalidInput, Overloaded
from edgeinfer.network.backends import Answer, CloudBackend, EdgeBackend
from edgeinfer.network.client import CloudError, KServeClient
from edgeinfer.network.processes import LinkProcess, ServerProcess, free_port
from edgeinfer.network.profiles import LinkProfile
from edgeinfer.network.router import REASON_CODES, HybridRouter, Routed, RouterSettings
from tests.network.servers import ScriptedCloud

pytestmark = pytest.mark.e2e
FAST_LINK = LinkProfile("fast", rtt_ms=4.0)
FAST_PROBES = {"probe_interval_s": 0.1, "first_backoff_s": 0.2, "probe_timeout_ms": 300.0}


def make_router(
    engine: Engine | None, url: str | None, tmp: Path | None = None, **settings: object
) -> HybridRouter:
    edge = EdgeBackend(engine) if engine is not None else None
    cloud = CloudBackend(KServeClient(url), "mobilenet_v2") if url else None
    log = tmp / "decisions.jsonl" if tmp else None
    return HybridRouter(RouterSettings(**settings), edge, cloud, log_path=log)  # type: ignore[arg-type]


async def burst(
    router: HybridRouter, images: list[bytes], count: int, deadline_ms: float | None = None
) -> list[Routed]:
    """``count`` requests at once: more than the device can run at a time, so a backlog forms."""
    return list(
        await asyncio.gather(
            *(router.classify(images[i % len(images)], deadline_ms=deadline_ms) for i in range(count))
        )
    )


def served(results: list[Routed]) -> Counter[str]:
    return Counter(r.decision.served_by for r in results)


@pytest.fixture
def link(cloud: ServerProcess, tmp_path: Path) -> Iterator[LinkProcess]:
    with LinkProcess(FAST_LINK, ("127.0.0.1", cloud.port), tmp_path / "link.log") as running:
        running.wait_ready()
        yield running


def test_policies_edge_and_cloud_give_the_engines_answer(
    engine: Engine, cloud: ServerProcess, jpegs: list[bytes]
) -> None:
    async def go() -> tuple[list[Routed], list[Routed]]:
        on_edge = make_router(engine, None, policy="edge")
        in_cloud = make_router(None, cloud.url, policy="cloud")
        await in_cloud.start()
        try:
            return [await on_edge.classify(j) for j in jpegs], [await in_cloud.classify(j) for j in jpegs]
        finally:
            await on_edge.close()
            await in_cloud.close()

    edge, remote = asyncio.run(go())
    for jpeg, a, b in zip(jpegs, edge, remote, strict=True):
        expected = engine.infer(engine.preprocess(engine.decode(jpeg))[np.newaxis])[0]
        np.testing.assert_allclose(a.probabilities, expected, atol=1e-6)
        np.testing.assert_allclose(b.probabilities, expected, atol=1e-5)
    assert {r.decision.reason for r in edge} == {"policy edge"}
    assert served(remote) == {"cloud": len(jpegs)} and all(r.decision.bytes_sent > 0 for r in remote)
    assert set(edge[0].stages_ns) == {"decode", "preprocess", "infer"}


def test_cloud_policy_reports_a_refused_cloud_as_a_clear_error(jpegs: list[bytes]) -> None:
    async def go() -> HybridRouter:
        router = make_router(None, f"http://127.0.0.1:{free_port()}", policy="cloud")
        await router.start()
        try:
            with pytest.raises(CloudError, match="cannot connect") as caught:
                await router.classify(jpegs[0])
            assert caught.value.reason == "refused"
            return router
        finally:
            await router.close()

    router = asyncio.run(go())
    assert router.stats.cloud_failures == {"refused": 1}
    assert router.decisions[-1].served_by == "cloud-failed"


def test_auto_offloads_part_of_a_backlog(
    engine: Engine, link: LinkProcess, jpegs: list[bytes], tmp_path: Path
) -> None:
    async def go() -> list[Routed]:
        router = make_router(engine, link.url, tmp_path, policy="auto")
        await router.start()
        try:
            await burst(router, jpegs, 4)  # learn both sides
            return await burst(router, jpegs, 16)
        finally:
            await router.close()

    results = asyncio.run(go())
    counts = served(results)
    assert counts["edge"] > 0 and counts["cloud"] > 0, counts
    assert any("backlog" in r.decision.reason for r in results)
    for result in results:  # every answer is the model's, whichever side ran it
        assert result.probabilities.shape == (1000,) and abs(float(result.probabilities.sum()) - 1) < 1e-3
    log = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert len(log) == 20 and '"served_by"' in log[0]


def test_an_image_the_cloud_cannot_decode_does_not_close_the_cloud(
    engine: Engine, cloud: ServerProcess, jpegs: list[bytes]
) -> None:
    async def go() -> HybridRouter:
        router = make_router(engine, cloud.url, policy="auto")
        await router.start()
        try:
            with pytest.raises(InvalidInput):  # the device's own verdict on the image, after the cloud's 400
                await router.classify(b"not an image at all")
            routed = await router.classify(jpegs[0])
            assert routed.decision.reason_code in REASON_CODES and routed.decision.reason_code != "cloud_down"
            return router
        finally:
            await router.close()

    router = asyncio.run(go())
    assert router.stats.cloud_failures == {"http_400": 1} and router.stats.fallbacks == 1
    assert router.cloud_up


def test_auto_falls_back_when_the_link_is_cut_and_recovers(
    engine: Engine, cloud: ServerProcess, jpegs: list[bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()

    async def go() -> tuple[list[Routed], list[Routed], list[Routed], HybridRouter]:
        first = LinkProcess(FAST_LINK, ("127.0.0.1", cloud.port), tmp_path / "a.log", port=port)
        first.wait_ready()
        router = make_router(engine, f"http://127.0.0.1:{port}", policy="auto", **FAST_PROBES)
        await router.start()
        try:
            await burst(router, jpegs, 4)
            cut_mid_run = asyncio.get_running_loop().run_in_executor(None, first.kill)
            during = await burst(router, jpegs, 16)
            await cut_mid_run
            after = await burst(router, jpegs, 8)
            with LinkProcess(FAST_LINK, ("127.0.0.1", cloud.port), tmp_path / "b.log", port=port) as second:
                second.wait_ready()
                for _ in range(50):
                    if router.cloud_up:
                        break
                    await asyncio.sleep(0.1)
                recovered = await burst(router, jpegs, 16)
            return during, after, recovered, router
        finally:
            await router.close()
            first.stop()

    during, after, recovered, router = asyncio.run(go())
    assert len(during) == 16 and len(after) == 8 and len(recovered) == 16  # no request lost
    assert all(r.probabilities.shape == (1000,) for r in during + after + recovered)
    assert served(after) == {"edge": 8}
    assert any("cloud down" in r.decision.reason for r in after)
    assert router.stats.recoveries >= 1
    assert served(recovered)["cloud"] > 0
    said = [r.getMessage() for r in caplog.records if r.name == "edgeinfer.network"]
    assert any(m.startswith("cloud down (") for m in said) and any("cloud up again" in m for m in said)


def test_auto_detects_a_stalled_link(engine: Engine, link: LinkProcess, jpegs: list[bytes]) -> None:
    async def go() -> tuple[list[Routed], HybridRouter]:
        router = make_router(engine, link.url, policy="auto", **FAST_PROBES)
        await router.start()
        try:
            await burst(router, jpegs, 4)
            link.pause()  # SIGSTOP: connections stay open, nothing moves
            try:
                stalled = await asyncio.wait_for(burst(router, jpegs, 16), timeout=20)
            finally:
                link.resume()
            return stalled, router
        finally:
            await router.close()

    stalled, router = asyncio.run(go())
    assert len(stalled) == 16 and served(stalled) == {"edge": 16}
    assert router.stats.cloud_failures["timeout"] >= 1
    assert all(r.decision.latency_ms < 5000 for r in stalled)


@pytest.mark.parametrize("behaviour", ["garbage", "bad-json", "slow"])
def test_auto_treats_broken_answers_as_failures(engine: Engine, jpegs: list[bytes], behaviour: str) -> None:
    broken = ScriptedCloud(behaviour, delay_s=3.0)

    async def go() -> tuple[Routed, HybridRouter]:
        router = make_router(
            engine, f"http://127.0.0.1:{broken.address[1]}", policy="auto", cloud_timeout_ms=400.0
        )
        await router.start()
        try:
            return await router.classify(jpegs[0]), router  # the first goes to the cloud to explore
        finally:
            await router.close()

    try:
        result, router = asyncio.run(go())
    finally:
        broken.close()
    expected = {"garbage": "malformed", "bad-json": "malformed", "slow": "timeout"}[behaviour]
    assert result.decision.route == "cloud" and result.decision.served_by == "edge"
    assert result.decision.fallback == expected
    assert router.stats.cloud_failures == {expected: 1} and router.stats.fallbacks == 1
    assert result.probabilities.shape == (1000,)


def test_auto_respects_deadlines_and_the_bandwidth_cap(
    engine: Engine, cloud: ServerProcess, jpegs: list[bytes], tmp_path: Path
) -> None:
    slow_link = LinkProfile("slow", rtt_ms=300.0)  # no cloud answer can come back within 200 ms
    with LinkProcess(slow_link, ("127.0.0.1", cloud.port), tmp_path / "slow.log") as link:
        link.wait_ready()

        async def go() -> tuple[list[Routed], list[Routed]]:
            router = make_router(engine, link.url, policy="auto")
            capped = make_router(engine, link.url, policy="auto", bandwidth_cap_mbps=0.01)
            await router.start()
            await capped.start()
            try:
                await burst(router, jpegs, 2)
                one_by_one = [await router.classify(j, deadline_ms=200.0) for j in jpegs]
                return one_by_one, await burst(capped, jpegs, 6)
            finally:
                await router.close()
                await capped.close()

        deadline, cap = asyncio.run(go())
    assert served(deadline) == {"edge": len(jpegs)}
    assert all("only edge meets the 200 ms deadline" in r.decision.reason for r in deadline)
    assert all(r.decision.met_deadline for r in deadline)
    assert served(cap) == {"edge": 6} and all("bandwidth cap" in r.decision.reason for r in cap)


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidInput):
        RouterSettings(policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        RouterSettings(bandwidth_cap_mbps=0)
    with pytest.raises(InvalidInput, match="engine"):
        HybridRouter(RouterSettings(policy="auto"), None, None)
    with pytest.raises(InvalidInput, match="cloud URL"):
        HybridRouter(RouterSettings(policy="cloud"), None, None)


class FullEdge:
    """A device whose queue is always full: every run is refused, as the server's batcher does."""

    name = "edge"

    def __init__(self) -> None:
        self.refused = 0

    async def run(self, image: bytes, timeout_ms: float | None = None) -> Answer:
        self.refused += 1
        raise Overloaded("queue full", retry_after_s=0.5)

    def predict_ms(self) -> float | None:
        return 1.0  # looks fast, so auto plans the edge once the cloud has an estimate

    def close(self) -> None:
        pass


def _full_edge_router(url: str, **settings: object) -> tuple[FullEdge, HybridRouter]:
    edge = FullEdge()
    cloud = CloudBackend(KServeClient(url), "mobilenet_v2")
    return edge, HybridRouter(RouterSettings(**{**FAST_PROBES, **settings}), edge, cloud)  # type: ignore[arg-type]


def test_auto_sends_what_the_full_device_refuses_to_the_cloud(
    engine: Engine, cloud: ServerProcess, jpegs: list[bytes]
) -> None:
    async def go() -> tuple[list[Routed], FullEdge, HybridRouter]:
        edge, router = _full_edge_router(cloud.url, policy="auto")
        await router.start()
        try:
            return [await router.classify(j, deadline_ms=5000) for j in jpegs], edge, router
        finally:
            await router.close()

    results, edge, router = asyncio.run(go())
    assert served(results) == {"cloud": len(jpegs)}  # no request refused, none lost
    spilled = [r for r in results if r.decision.reason_code == "edge_full"]
    assert len(spilled) == edge.refused >= len(jpegs) - 1  # the first may explore the cloud directly
    assert router.stats.spills == len(spilled) and "queue full" in spilled[0].decision.reason
    for jpeg, r in zip(jpegs, results, strict=True):
        expected = engine.infer(engine.preprocess(engine.decode(jpeg))[np.newaxis])[0]
        np.testing.assert_allclose(r.probabilities, expected, atol=1e-5)


def test_a_refusal_stands_when_the_cloud_cannot_take_it(cloud: ServerProcess, jpegs: list[bytes]) -> None:
    """Policy edge, a cloud that is down, a deadline the cloud cannot meet: the client gets the 429."""

    async def refusal(url: str, *, teach: bool, deadline_ms: float | None, **settings: object) -> int:
        _, router = _full_edge_router(url, **settings)
        await router.start()
        try:
            if teach:  # one answer from the cloud, so it has an estimate to compare with the deadline
                await router.classify(jpegs[0], deadline_ms=5000)
            with pytest.raises(Overloaded, match="queue full"):
                await router.classify(jpegs[0], deadline_ms=deadline_ms)
            return router.stats.spills
        finally:
            await router.close()

    async def go() -> None:
        # policy edge never offloads, not even a refused request
        assert await refusal(cloud.url, teach=False, deadline_ms=None, policy="edge") == 0
        # nothing listens there: the first probe marks the cloud down
        down = f"http://127.0.0.1:{free_port()}"
        assert await refusal(down, teach=False, deadline_ms=5000, policy="auto") == 0
        # no cloud answers within 0.5 ms: refusing at once beats a late answer
        assert await refusal(cloud.url, teach=True, deadline_ms=0.5, policy="auto") == 0

    asyncio.run(go())


class SlowMoment:
    """A remote that answers in 5 ms, except the requests listed in ``slow``, which take 400 ms:
    well past the stall time-out (3 x the 5 ms learnt + 100, at least 250 ms)."""

    name = "cloud"

    def __init__(self, slow: set[int]) -> None:
        self.slow = slow
        self.calls = 0

    def upload_bytes(self, image: bytes) -> int:
        return len(image)

    async def run(self, image: bytes, timeout_s: float) -> Answer:
        self.calls += 1
        delay_s = 0.4 if self.calls in self.slow else 0.005
        if delay_s > timeout_s:
            await asyncio.sleep(timeout_s)
            raise CloudError("timeout", f"no answer within {timeout_s * 1e3:.0f} ms")
        await asyncio.sleep(delay_s)
        return Answer(np.zeros(1000, np.float32), {"remote": int(delay_s * 1e9)}, bytes_sent=len(image))

    async def probe(self, timeout_s: float) -> float:
        return 0.5

    async def close(self) -> None:
        pass


def test_a_spill_waits_out_a_slow_cloud_instead_of_refusing() -> None:
    """The device refuses everything; the fourth request meets a slow moment of the cloud. Cut
    short at the stall time-out it would become the 429 it was spilled to avoid: it is answered,
    late. With a deadline, the deadline still ends the wait (and the request gets the 429)."""

    async def go(deadline_ms: float | None) -> tuple[list[Routed | Overloaded], HybridRouter]:
        remote = SlowMoment(slow={4})
        router = HybridRouter(RouterSettings(policy="auto", **FAST_PROBES), FullEdge(), remote)  # type: ignore[arg-type]
        await router.start()
        results: list[Routed | Overloaded] = []
        try:
            for _ in range(6):
                try:
                    results.append(await router.classify(b"x" * 20_000, deadline_ms=deadline_ms))
                except Overloaded as exc:
                    results.append(exc)
            return results, router
        finally:
            await router.close()

    waited, router = asyncio.run(go(None))
    assert all(isinstance(r, Routed) and r.decision.served_by == "cloud" for r in waited), waited
    slow = waited[3]
    assert isinstance(slow, Routed) and slow.decision.latency_ms >= 390
    assert slow.decision.reason_code == "edge_full" and router.cloud_up
    cut, _ = asyncio.run(go(300.0))
    assert all(isinstance(r, Routed) for r in cut[:3])
    assert isinstance(cut[3], Overloaded) and "the cloud failed too (timeout)" in str(cut[3])


class FifoUplink:
    """A remote behind one FIFO uplink of ``ms_per_byte``, plus a fixed 5 ms: no network needed."""

    name = "cloud"

    def __init__(self, ms_per_byte: float) -> None:
        self.ms_per_byte = ms_per_byte
        self._busy_until = 0.0

    def upload_bytes(self, image: bytes) -> int:
        return len(image)

    async def run(self, image: bytes, timeout_s: float) -> Answer:
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._busy_until)
        self._busy_until = start + len(image) * self.ms_per_byte / 1e3
        sent = loop.time()
        await asyncio.sleep(self._busy_until - sent + 0.005)
        elapsed_ns = int((loop.time() - sent) * 1e9)
        return Answer(np.zeros(1000, np.float32), {"remote": elapsed_ns}, bytes_sent=len(image))

    async def probe(self, timeout_s: float) -> float:
        return 0.5

    async def close(self) -> None:
        pass


def test_the_uplink_is_learnt_from_the_bytes_each_request_waited_behind() -> None:
    """A big image goes first, small ones queue behind it: against their own size alone the small
    ones look slow and the big one fast (a falling line); against the bytes ahead plus their own the
    true rate shows."""
    ms_per_byte = 0.0004  # 20 Mb/s
    uplink = FifoUplink(ms_per_byte)
    router = HybridRouter(RouterSettings(policy="cloud", **FAST_PROBES), None, uplink)  # type: ignore[arg-type]

    async def go() -> None:
        await router.start()
        try:
            for _ in range(6):
                big = asyncio.create_task(router.classify(b"b" * 60_000))
                await asyncio.sleep(0)  # the big one is on the uplink first
                await asyncio.gather(big, *(router.classify(b"s" * 8_000) for _ in range(4)))
        finally:
            await router.close()

    asyncio.run(go())
    learnt = router.cloud_estimate.up_mbps
    assert learnt is not None and 14 < learnt < 27, learnt  # the true 20 Mb/s, within the 5 ms noise
