from __future__ import annotations

import pytest

from edgeinfer.errors import InvalidInput
from edgeinfer.network.profiles import PROFILES, LinkProfile, get_profile, parse_profiles


def test_builtin_profiles_carry_sources_and_the_issue_figures() -> None:
    assert {"wifi", "5g", "lte", "3g"} <= set(PROFILES)
    lte = get_profile("LTE")
    assert 44 <= lte.rtt_ms <= 66 and lte.up_mbps == 6.3  # Opensignal, USA, 2019
    assert get_profile("5g").up_mbps == pytest.approx(21.08)  # Ookla, Q3 2021 global median
    for profile in PROFILES.values():
        assert profile.source and profile.name


def test_overrides_replace_figures_and_say_so() -> None:
    custom = get_profile("lte").with_overrides(rtt_ms=80, loss_pct=1.5)
    assert (custom.rtt_ms, custom.loss_pct, custom.up_mbps) == (80, 1.5, 6.3)
    assert custom.name == "lte+custom" and "rtt_ms=80" in custom.source
    assert get_profile("lte").with_overrides() is get_profile("lte")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rtt_ms": -1},
        {"rtt_ms": float("nan")},
        {"rtt_ms": 1, "up_mbps": 0},
        {"rtt_ms": 1, "loss_pct": 100},
        # finite but past any network: they overflowed the link's timers and buffers
        {"rtt_ms": 1e308},
        {"rtt_ms": 1, "jitter_ms": 1e307},
        {"rtt_ms": 1, "up_mbps": 1e308},
        {"rtt_ms": 1, "down_mbps": 2e6},
    ],
)
def test_bad_figures_are_rejected_with_a_clear_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        LinkProfile(name="bad", **kwargs)


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(InvalidInput, match="wifi"):
        parse_profiles("lte,satellite")
    with pytest.raises(InvalidInput):
        parse_profiles(" , ")
    assert [p.name for p in parse_profiles("wifi, 3g")] == ["wifi", "3g"]


def test_a_profile_named_twice_is_listed_once_where_it_first_appears() -> None:
    """Twice would measure it twice under one label, overwriting its logs."""
    assert [p.name for p in parse_profiles("lte,LOOPBACK,loopback, Lte,wifi")] == ["lte", "loopback", "wifi"]


def test_rto_and_transfer_model() -> None:
    assert get_profile("lte").rto_ms == 200  # Linux floor
    assert get_profile("3g").rto_ms == 300 + 4 * 20
    lte = get_profile("lte")
    # 63,000 bytes up at 6.3 Mb/s is 80 ms, 2,130 bytes down at 21.3 Mb/s is 0.8 ms, plus one RTT.
    assert lte.transfer_ms(63_000, 2_130) == pytest.approx(55 + 80 + 0.8)
