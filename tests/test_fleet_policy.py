"""The fleet split (policies/fleet.py): properties over random fleets, and the flexibility a site offers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mullet.policies.fleet import SiteOffer, deliverable_kw, site_flex, split_obligation
from mullet.policies.model import GroupDecision, GroupSpec, SiteSnapshot, SiteSpec

SLEEP_S = 5.0
kw = st.floats(min_value=0.0, max_value=500_000.0, allow_nan=False)
maybe_kw = st.one_of(st.none(), kw)


@st.composite
def offers(draw: st.DrawFn) -> list[SiteOffer]:
    count = draw(st.integers(min_value=0, max_value=12))
    return [
        SiteOffer(
            site_id=f"s{i}",
            online=draw(st.booleans()),
            fast_path_kw=draw(maybe_kw),
            graceful_kw=draw(maybe_kw),
            firmware_sleep_s=SLEEP_S,
            ceiling_kw=draw(st.one_of(st.none(), kw)),
        )
        for i in range(count)
    ]


deadlines = st.sampled_from([0.25, 0.5, 4.99, 5.0, 300.0, 1800.0])


@given(offers(), kw, deadlines)
def test_shares_sum_to_the_obligation_when_feasible(sites: list[SiteOffer], ask_kw: float, deadline_s: float):
    split = split_obligation(ask_kw, deadline_s, sites)
    total_kw = math.fsum(deliverable_kw(o, deadline_s) for o in sites)
    assert split.feasible == (total_kw >= ask_kw)
    if split.feasible:
        assert math.fsum(split.shares_kw.values()) == pytest.approx(ask_kw, rel=1e-9, abs=1e-6)
        assert split.shortfall_kw == 0.0
    else:
        assert split.shortfall_kw == pytest.approx(ask_kw - total_kw)
        assert split.shares_kw == split.capacity_kw  # everything each has, and a reason saying short
        assert any("short by" in r for r in split.reasons)


@given(offers(), kw, deadlines)
def test_no_site_gets_more_than_it_can_shed(sites: list[SiteOffer], ask_kw: float, deadline_s: float):
    split = split_obligation(ask_kw, deadline_s, sites)
    assert set(split.shares_kw) == {o.site_id for o in sites}
    for offer in sites:
        share_kw = split.shares_kw[offer.site_id]
        assert 0.0 <= share_kw <= deliverable_kw(offer, deadline_s)
        if offer.ceiling_kw is not None:
            assert share_kw <= offer.ceiling_kw


@given(offers(), kw, deadlines)
def test_an_offline_or_unknown_site_gets_nothing(sites: list[SiteOffer], ask_kw: float, deadline_s: float):
    split = split_obligation(ask_kw, deadline_s, sites)
    for offer in sites:
        known = offer.graceful_kw if deadline_s >= SLEEP_S else offer.fast_path_kw
        if not offer.online or known is None:
            assert split.shares_kw[offer.site_id] == 0.0


@given(offers(), st.floats(min_value=1.0, max_value=100_000.0), deadlines)
def test_feasible_shares_are_proportional_to_capacity(
    sites: list[SiteOffer], ask_kw: float, deadline_s: float
):
    split = split_obligation(ask_kw, deadline_s, sites)
    total_kw = math.fsum(split.capacity_kw.values())
    if not split.feasible:
        return
    for site_id, share_kw in split.shares_kw.items():
        assert share_kw == pytest.approx(ask_kw * split.capacity_kw[site_id] / total_kw, rel=1e-6, abs=1e-3)


def test_deadline_class_picks_the_fast_path_below_firmware_sleep() -> None:
    fleet = [
        SiteOffer("a", True, fast_path_kw=1000.0, graceful_kw=4000.0, firmware_sleep_s=SLEEP_S),
        SiteOffer("b", True, fast_path_kw=0.0, graceful_kw=2000.0, firmware_sleep_s=SLEEP_S),
        SiteOffer("c", False, fast_path_kw=9000.0, graceful_kw=9000.0, firmware_sleep_s=SLEEP_S),
    ]
    ffr = split_obligation(600.0, 0.25, fleet)
    assert ffr.shares_kw == {"a": 600.0, "b": 0.0, "c": 0.0}
    ers = split_obligation(3000.0, 1800.0, fleet)
    assert ers.shares_kw == {"a": 2000.0, "b": 1000.0, "c": 0.0}
    assert "c: offline, nothing" in ers.reasons
    short = split_obligation(7000.0, 1800.0, fleet)
    assert not short.feasible and short.shortfall_kw == 1000.0


def test_bad_input_is_refused_not_split() -> None:
    site = SiteOffer("a", True, 1.0, 1.0, SLEEP_S)
    with pytest.raises(ValueError, match="obligation_kw"):
        split_obligation(math.nan, 10.0, [site])
    with pytest.raises(ValueError, match="offered twice"):
        split_obligation(1.0, 10.0, [site, site])


def test_site_flex_counts_measured_draw_above_sleep_and_armed_groups_for_the_fast_path() -> None:
    site = SiteSpec(
        interconnect_kw=10_000.0,
        safety_margin_kw=0.0,
        base_load_kw=0.0,
        groups=(
            GroupSpec("g1", rated_kw=500.0, efficiency_j_per_th=20.0, priority=1, sleep_kw=10.0),
            GroupSpec("g2", rated_kw=500.0, efficiency_j_per_th=20.0, priority=1, sleep_kw=10.0),
            GroupSpec("g3", rated_kw=500.0, efficiency_j_per_th=20.0, priority=1, sleep_kw=10.0),
        ),
        tenants=(),
    )
    snapshot = SiteSnapshot(site_power_kw=1500.0, tenant_power_kw={}, group_power_kw={"g1": 490.0, "g2": 5.0})
    decisions = (
        GroupDecision("g1", "run", None, "run", trip_stage=1),
        GroupDecision("g2", "curtail", None, "curtail"),
        GroupDecision("g3", "run", None, "run", trip_stage=1),  # unknown telemetry: counts nothing
    )
    flex = site_flex(site, snapshot, decisions, SLEEP_S)
    assert (flex.site_kw, flex.fast_path_kw, flex.graceful_kw) == (1500.0, 480.0, 480.0)


def test_controllers_ignore_commands_from_a_deposed_leader() -> None:
    """Fencing (drivers/group_command.py): once a controller has seen epoch 7, epoch 6 cannot command it."""
    from mullet.drivers.group_command import GroupCommand
    from mullet.drivers.protocol import GroupSetpoint, Trip, decode, encode

    command = GroupCommand()
    assert command.apply(GroupSetpoint(seq=10, mode="run", trip_stage=1, ts=1.0, epoch=6))
    assert command.apply(GroupSetpoint(seq=11, mode="curtail", ts=2.0, epoch=7))  # the new leader
    late = GroupSetpoint(seq=12, mode="run", trip_stage=1, ts=3.0, epoch=6)  # the old leader, late
    assert not command.apply(late)
    assert (command.mode, command.seq_applied, command.epoch, command.fenced) == ("curtail", 11, 7, 1)
    assert command.apply(GroupSetpoint(seq=13, mode="run", trip_stage=1, ts=4.0, epoch=7))
    assert not command.trip(1, epoch=6) and command.mode == "run"
    assert command.trip(1, epoch=7) and command.mode == "curtail"
    # Without a lease there is no epoch: not fenced, and v1 bytes carry no epoch field at all.
    assert command.apply(GroupSetpoint(seq=14, mode="run", ts=5.0))
    assert b"epoch" not in encode(GroupSetpoint(seq=14, mode="run", ts=5.0))
    assert decode(Trip, encode(Trip(seq=15, stage=1, ts=6.0, epoch=9))).epoch == 9
