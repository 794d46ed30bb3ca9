"""Timeouts a request may carry: Triton's microseconds parameter, milliseconds, the header."""

from __future__ import annotations

import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.deadlines import timeout_from_parameters


def test_every_timeout_is_at_most_an_hour_in_any_unit() -> None:
    assert timeout_from_parameters({"timeout": 3_600_000_000}) == 3_600 * 10**9
    for micros in (3_600_000_001, 10**19, 2**62):  # was taken: a deadline of centuries
        with pytest.raises(InvalidInput, match=r"parameter \"timeout\" is over an hour"):
            timeout_from_parameters({"timeout": micros})
    with pytest.raises(InvalidInput, match="over an hour"):
        timeout_from_parameters({"timeout_ms": 1e300})
