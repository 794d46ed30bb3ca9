"""LoneClient: one keep-alive HTTP connection alone may run inline; anyone else ends that a while."""

from __future__ import annotations

from edgeinfer.serving.lone_client import LoneClient

S = 1_000_000_000


def test_one_connection_alone_is_a_lone_client() -> None:
    lone = LoneClient(window_s=1.0)
    assert lone.seen(("127.0.0.1", 5000), now_ns=10 * S)
    assert lone.seen(("127.0.0.1", 5000), now_ns=10 * S + 1)


def test_a_second_connection_ends_it_for_the_window() -> None:
    lone = LoneClient(window_s=1.0)
    lone.seen(("127.0.0.1", 5000), now_ns=10 * S)
    assert not lone.seen(("127.0.0.1", 5001), now_ns=10 * S + 1)  # a newcomer: not alone
    assert not lone.seen(("127.0.0.1", 5000), now_ns=int(10.5 * S))  # both may be sending
    assert lone.seen(("127.0.0.1", 5000), now_ns=12 * S)  # the newcomer went quiet for the window


def test_an_unknown_or_multiplexed_peer_is_never_alone_and_crowds_the_others() -> None:
    lone = LoneClient(window_s=1.0)
    assert not lone.seen(None, now_ns=10 * S)  # gRPC (HTTP/2) or no address
    assert not lone.seen(("127.0.0.1", 5000), now_ns=int(10.2 * S))
    assert lone.seen(("127.0.0.1", 5000), now_ns=int(11.1 * S))
