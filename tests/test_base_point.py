"""The `base_point` obligation (an ERCOT CLR's SCED base point): mining follows kw up and down.

Policy rules on a site small enough to check by hand, the book's supersede and validation rules, and the
wire's refusals at the edge. The replay of a base-point sequence is in test_replay.py.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

import pytest

from mullet.daemon.fleet.config import parse_fleet_config
from mullet.daemon.fleet.dispatcher import FleetDispatcher
from mullet.daemon.records.report import EventRecord, compute_report
from mullet.daemon.records.report_render import render
from mullet.drivers.protocol import GridEvent, WireError, decode
from mullet.policies.model import (
    GroupSpec,
    Obligation,
    Plan,
    PolicyMemory,
    PolicySettings,
    SiteSnapshot,
    SiteSpec,
    TenantSpec,
)
from mullet.policies.obligations import Decision, ObligationBook
from mullet.policies.plan import compute_plan
from mullet.policies.scoring import Sample, rule_for

NOW_S = 1_800_000_000.0

# Four 1000 kW groups that take power targets down to 300 kW (sleeping at 20 kW), least efficient first
# in merit order g1..g4; one AI tenant reserving 2000 kW, 1000 kW of it flexible. Interconnect 10 MW:
# the site limit leaves mining 8000 kW, more than the 4000 kW it can draw.


def _site(**settings: object) -> SiteSpec:
    groups = tuple(
        GroupSpec(
            f"g{i}",
            rated_kw=1000,
            efficiency_j_per_th=30.0 - i,
            priority=10,
            sleep_kw=20,
            supports_power_target=True,
            min_power_kw=300,
            break_even_usd_per_mwh=50.0,
        )
        for i in range(1, 5)
    )
    return SiteSpec(
        interconnect_kw=10_000,
        safety_margin_kw=0,
        base_load_kw=0,
        groups=groups,
        tenants=(TenantSpec("ai", reserved_kw=2000, headroom_kw=0, flexible_kw=1000),),
        settings=PolicySettings(**settings),  # type: ignore[arg-type]
    )


def _readings(site: SiteSpec, unknown: tuple[str, ...] = (), price: float | None = None) -> SiteSnapshot:
    groups: dict[str, float | None] = {
        g.group_id: None if g.group_id in unknown else 900.0 for g in site.groups
    }
    return SiteSnapshot(6000.0, {"ai": 1900.0}, groups, price)


def _point(kw: float, event_id: str = "bp-1", start: float = 0.0) -> Obligation:
    return Obligation(event_id, "base_point", kw=kw, start_s=start, end_s=None, program="CLR")


def _follow(
    site: SiteSpec, points: list[Obligation], memory: PolicyMemory, start: float, for_s: float
) -> list[Plan]:
    """A plan every 5 s, each fed the last one's memory."""
    plans: list[Plan] = []
    now = start
    while now <= start + for_s:
        plans.append(compute_plan(site, _readings(site), points, now, memory))
        memory = plans[-1].memory
        now += 5.0
    return plans


def _by_group(plan: Plan) -> dict[str, tuple[str, float | None]]:
    return {d.group_id: (d.mode, d.power_kw) for d in plan.decisions}


def test_a_falling_base_point_sheds_to_it_with_partial_targets_and_sleep() -> None:
    site = _site()
    plan = compute_plan(site, _readings(site), [_point(2500)], 10.0)
    # 1500 kW too much: g1 cannot go below 300 kW by 1500, so it sleeps (980 off); g2 takes the 520 left.
    assert _by_group(plan) == {
        "g1": ("curtail", None),
        "g2": ("run", 480.0),
        "g3": ("run", None),
        "g4": ("run", None),
    }
    assert plan.mining_planned_kw == plan.mining_budget_kw == 2500.0
    assert plan.binding_constraint == "base_point 'bp-1' (CLR)"
    assert plan.site_limit_kw == 10_000 and plan.mining_max_kw == 8000.0  # the site's own limit, unchanged
    assert "under base_point 'bp-1' (CLR)" in plan.decisions[0].reason
    assert any("mining follows base point 'bp-1' (CLR) at 2500 kW" in r for r in plan.reasons)
    assert any("'bp-1' (CLR)" in r for r in plan.reasons)
    assert all(t.power_cap_kw is None for t in plan.tenants)


def test_a_rising_base_point_is_followed_within_the_restore_ramp() -> None:
    site = _site(restore_ramp_kw_per_min=600.0, restore_stagger_s=60.0)
    down = compute_plan(site, _readings(site), [_point(2500)], 10.0)
    up = [_point(2500), _point(3800, "bp-2", start=300.0)]
    plans = _follow(site, up, down.memory, 300.0, for_s=240.0)
    first = plans[0]
    assert first.binding_constraint == "base_point 'bp-2' (CLR)"  # the latest start wins
    assert 2500.0 < first.mining_planned_kw <= 2500.0 + 600.0  # a restore, within the minute's ramp
    for earlier, later in zip(plans, plans[12:], strict=False):  # never more than the ramp in 60 s
        assert later.mining_planned_kw - earlier.mining_planned_kw <= 600.0 + 1e-6
    assert plans[-1].mining_planned_kw == 3800.0  # reached once the ramp allows
    partial = [d for p in plans for d in p.decisions if d.power_kw is not None and ": restored" in d.reason]
    assert partial  # a sleeping group restarted at a partial target, as the ramp allowed


def test_economics_is_suspended_while_a_base_point_is_in_force() -> None:
    site = _site(economics_enabled=True)
    readings = _readings(site, price=500.0)  # far above every group's break-even
    plain = compute_plan(site, readings, [], 10.0)
    assert set(plain.curtailed()) == {"g1", "g2", "g3", "g4"}
    plan = compute_plan(site, readings, [_point(3500)], 10.0)
    assert plan.mining_planned_kw == 3500.0 and plan.curtailed() == ()  # g1 at a 500 kW target
    assert any(r.startswith("economics suspended: base point 'bp-1' in force") for r in plan.reasons)


def test_a_base_point_never_caps_ai_even_beside_an_obligation_allowing_ai_flex() -> None:
    site = _site()
    loose = Obligation("eea", "limit", kw=9000, start_s=0.0, end_s=None, allows_ai_flex=True)
    plan = compute_plan(site, _readings(site), [loose, _point(0)], 10.0)
    assert set(plan.curtailed()) == {"g1", "g2", "g3", "g4"}
    assert plan.feasible  # within the site's limits; the 80 kW asleep are a deviation, said so
    assert any(r.startswith("base point not met: mining planned 80 kW") for r in plan.reasons)
    assert all(t.power_cap_kw is None for t in plan.tenants)
    assert plan.ai_allowance_kw == 2000.0


def test_a_concurrent_limit_still_blocks_restores() -> None:
    site = _site()
    down = compute_plan(site, _readings(site), [_point(2500)], 10.0)
    limit = Obligation("ers", "limit", kw=9500, start_s=0.0, end_s=None, program="ERS-30")
    plan = compute_plan(
        site, _readings(site), [_point(2500), _point(3800, "bp-2", 300.0), limit], 300.0, down.memory
    )
    assert plan.mining_planned_kw == 2500.0
    assert "held, no restore while obligation 'ers' is active" in plan.decisions[0].reason


def test_unknown_telemetry_under_a_base_point_counts_at_rated_and_blocks_restores() -> None:
    site = _site()
    plan = compute_plan(site, _readings(site, unknown=("g2",)), [_point(2500)], 10.0)
    # g2 counts at its rated 1000 kW asleep or not: g1 sleeps and g2 (unknown, no target) sleeps too.
    assert (
        plan.decisions[1].mode == "curtail"
        and "telemetry unknown: counted at rated" in plan.decisions[1].reason
    )
    up = compute_plan(site, _readings(site, unknown=("g2",)), [_point(4000, "bp-2", 20.0)], 20.0, plan.memory)
    assert "no restore while group g2 unknown" in up.decisions[0].reason


# ---- the book ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    id: str
    kind: Literal["limit", "reduce", "base_point", "cancel"] = "base_point"
    kw: float | None = 8000.0
    start: float | None = None
    end: float | None = None
    program: str = "CLR"
    allow_ai_flex: bool = False
    trip_stage: int | None = None


def test_a_base_point_supersedes_the_last_and_is_validated_like_a_limit() -> None:
    book: ObligationBook[Request] = ObligationBook(interconnect_kw=13_000, max_event_kw_factor=2.0)
    limit = Request("ers", kind="limit", program="ERS-30")
    book.apply(limit, book.decide(limit, now_s=NOW_S, site_power_kw=None), NOW_S)
    first = Request("bp-1")
    decision = book.decide(first, now_s=NOW_S, site_power_kw=None)  # no meter needed: no baseline
    assert decision.accepted and decision.obligation is not None
    assert decision.obligation.kind == "base_point" and decision.obligation.baseline_kw is None
    assert book.apply(first, decision, NOW_S) == []
    second = Request("bp-2", kw=5000.0)
    assert book.apply(second, book.decide(second, now_s=NOW_S + 300, site_power_kw=None), NOW_S + 300) == [
        "bp-1"
    ]
    assert set(book.obligations) == {"ers", "bp-2"}
    assert "bp-1" not in book.cancelled and book.history() == 1
    # A retry of the superseded one is a duplicate and does not reinstate it.
    again = book.decide(first, now_s=NOW_S + 301, site_power_kw=None)
    assert again.duplicate and book.apply(first, again, NOW_S + 301) == [] and "bp-1" not in book.obligations
    assert book.decide(Request("bp-3", kw=None), now_s=NOW_S, site_power_kw=None).code == "kw_missing"
    assert book.decide(Request("bp-3", kw=-1.0), now_s=NOW_S, site_power_kw=None).code == "kw_negative"
    assert book.decide(Request("bp-3", kw=30_000.0), now_s=NOW_S, site_power_kw=None).code == "kw_absurd"
    flex = book.decide(Request("bp-4", allow_ai_flex=True), now_s=NOW_S, site_power_kw=None)
    assert flex.obligation is not None and not flex.obligation.allows_ai_flex


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"trip_stage": 1}, "base_point takes no trip_stage"),
        ({"allow_ai_flex": True}, "never allows AI flex"),
    ],
)
def test_the_wire_refuses_a_base_point_with_a_trip_stage_or_ai_flex(
    extra: dict[str, object], needle: str
) -> None:
    body = {"v": 1, "id": "bp-1", "kind": "base_point", "kw": 8000, "program": "CLR", **extra}
    with pytest.raises(WireError) as refused:
        decode(GridEvent, json.dumps(body).encode())
    assert refused.value.reason == "invalid_field" and needle in refused.value.detail
    assert decode(GridEvent, b'{"v":1,"id":"bp-1","kind":"base_point","kw":8000}').kind == "base_point"


def test_the_fleet_dispatcher_refuses_a_portfolio_base_point() -> None:
    config = parse_fleet_config(
        {"fleet": {"fleet_id": "pf-bp"}, "mqtt": {"url": "mqtt://127.0.0.1:1"}, "sites": [{"site_id": "s1"}]}
    )
    fleet = FleetDispatcher(config)
    accepted, code, reason = fleet._decide(GridEvent(id="pf-bp", kind="base_point", kw=5000.0), NOW_S)
    assert (accepted, code) == (False, "not_splittable") and "cannot be split across sites" in reason
    assert fleet.portfolio is None


def test_a_report_on_a_base_point_says_it_is_not_scored_and_gives_no_performance_factor() -> None:
    obligation = Obligation("bp-1", "base_point", kw=8000.0, start_s=NOW_S, end_s=None, program="CLR")
    event = {"v": 1, "id": "bp-1", "kind": "base_point", "kw": 8000.0, "program": "CLR"}
    record = EventRecord(event, dataclasses.asdict(obligation), NOW_S, NOW_S + 300, "superseded")
    samples = [Sample(NOW_S + t, 14_000.0) for t in range(-1800, 301, 60)]
    report = compute_report(record, samples, [], rule_for("CLR"), rule_for("CLR").baseline, now_s=NOW_S + 300)
    assert report.performance_factor is None and report.intervals == []
    assert "not scored by the ERS baseline method" in report.verdict[0]
    for fmt in ("json", "csv", "html"):
        assert "bp-1" in render(report, fmt)  # every rendering copes with the missing figures
    assert json.loads(render(report, "json"))["performance_factor"] is None


def test_replaying_the_journal_rows_through_apply_gives_the_same_book() -> None:
    """daemon/site/recovery.py applies each journaled grid_event as Decision(True, "recovered", ...)."""
    live: ObligationBook[Request] = ObligationBook(interconnect_kw=13_000, max_event_kw_factor=2.0)
    rows = []
    for n, kw in enumerate((8000.0, 5000.0, 9000.0)):
        event = Request(f"bp-{n}", kw=kw)
        decision = live.decide(event, now_s=NOW_S + 300 * n, site_power_kw=None)
        live.apply(event, decision, NOW_S + 300 * n)
        rows.append((event, decision.obligation, NOW_S + 300 * n))
    recovered: ObligationBook[Request] = ObligationBook(interconnect_kw=13_000, max_event_kw_factor=2.0)
    for event, obligation, wall_s in rows:
        recovered.apply(event, Decision(True, "recovered", obligation=obligation), wall_s)
    assert recovered.obligations == live.obligations and list(recovered.obligations) == ["bp-2"]
    assert recovered.history() == live.history() == 2 and recovered.cancelled == live.cancelled == set()


def _mixed_site() -> SiteSpec:
    """Two whole groups (no power target, 600 kW) shed first, two partial ones (1000 kW, down to 300
    kW) shed last and restored first: the layout where merit order alone misses a base point by up to a
    whole group's draw."""
    whole = tuple(
        GroupSpec(f"w{i}", rated_kw=600, efficiency_j_per_th=30.0 - i, priority=10, sleep_kw=10)
        for i in (1, 2)
    )
    partial = tuple(
        GroupSpec(
            f"p{i}",
            rated_kw=1000,
            efficiency_j_per_th=20.0 - i,
            priority=10,
            sleep_kw=20,
            supports_power_target=True,
            min_power_kw=300,
        )
        for i in (1, 2)
    )
    return SiteSpec(
        interconnect_kw=10_000,
        safety_margin_kw=0,
        base_load_kw=0,
        groups=whole + partial,
        tenants=(TenantSpec("ai", reserved_kw=2000, headroom_kw=0),),
        settings=PolicySettings(deadband_kw=50.0, restore_ramp_kw_per_min=60_000.0, restore_stagger_s=1.0),
    )


def _mining_kw(site: SiteSpec, plan: Plan) -> float:
    by_id = {g.group_id: g for g in site.groups}
    return sum(
        by_id[d.group_id].sleep_kw if d.mode == "curtail" else d.power_kw or by_id[d.group_id].rated_kw
        for d in plan.decisions
    )


def test_a_base_point_between_whole_groups_is_met_by_trimming_the_partial_ones() -> None:
    """3200 kW of mining, base point 2900: sleeping w1 would shed 590 kW for 300 asked; the partial
    groups are trimmed by 300 instead. Then base point 2300 and back up to 3000: within the deadband of
    it each time, never a whole group's draw away."""
    site = _mixed_site()
    snapshot = SiteSnapshot(5200.0, {"ai": 2000.0}, dict.fromkeys(("w1", "w2", "p1", "p2"), 800.0))
    memory = PolicyMemory()
    for step, (kw, slept) in enumerate(((2900.0, set()), (2300.0, {"w1"}), (3000.0, set()))):
        plan, trimmed = None, False
        for second in range(0, 120, 5):  # restores take a few plans (min off-times, the ramp)
            now = NOW_S + 1000 * step + second
            plan = compute_plan(site, snapshot, [_point(kw, f"bp-{step}", NOW_S)], now, memory)
            memory = plan.memory
            trimmed |= any("partial, trimmed" in d.reason for d in plan.decisions)
        assert plan is not None
        mining_kw = _mining_kw(site, plan)
        assert kw - 2 * 50.0 <= mining_kw <= kw, (kw, mining_kw, plan.decisions)
        assert set(plan.curtailed()) == slept, plan.decisions
        assert trimmed
