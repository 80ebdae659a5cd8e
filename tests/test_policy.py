"""The rules of the policy engine (issue 3), one scenario each, in plain words.

The random-site properties (budget, firm AI, min on/off, ramp, determinism, stale data) are in
test_policy_properties.py; here every rule is shown on a site small enough to check by hand.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from mullet.policies.economics import break_even_usd_per_mwh
from mullet.policies.model import (
    GroupMemory,
    GroupSpec,
    Obligation,
    Plan,
    PolicyMemory,
    PolicySettings,
    SiteSnapshot,
    SiteSpec,
    TenantSpec,
    TripStage,
)
from mullet.policies.plan import compute_plan, merit_order, tenant_allowance_kw
from mullet.policies.plan_timers import next_change_s

# --------------------------------------------------------------------------------------------------
# A four-group site: two S21 groups (17.5 J/TH, one at a higher operator priority), an S19 XP-class
# group (21.5 J/TH) and an old S19 group (29.5 J/TH); one AI tenant reserving 2 MW with 300 kW headroom.
# Mining budget with no obligation: 6000 - 100 margin - 200 base - (2000 + 300) AI = 3400 kW.


def _groups(**overrides: dict[str, object]) -> tuple[GroupSpec, ...]:
    """The four groups, with changes per group (new_lo=... for new-lo)."""
    specs = {
        "old": GroupSpec("old", rated_kw=600, efficiency_j_per_th=29.5, priority=10, sleep_kw=12),
        "mid": GroupSpec("mid", rated_kw=650, efficiency_j_per_th=21.5, priority=10, sleep_kw=13),
        "new-lo": GroupSpec("new-lo", rated_kw=700, efficiency_j_per_th=17.5, priority=10, sleep_kw=14),
        "new-hi": GroupSpec("new-hi", rated_kw=700, efficiency_j_per_th=17.5, priority=50, sleep_kw=14),
    }
    for group_id, changes in overrides.items():
        key = group_id.replace("_", "-")
        specs[key] = replace(specs[key], **changes)  # type: ignore[arg-type]
    return tuple(specs.values())


def _site(
    groups: tuple[GroupSpec, ...] | None = None,
    tenants: tuple[TenantSpec, ...] | None = None,
    interconnect_kw: float = 6000.0,
    safety_margin_kw: float = 100.0,
    base_load_kw: float = 200.0,
    **settings: object,
) -> SiteSpec:
    return SiteSpec(
        interconnect_kw=interconnect_kw,
        safety_margin_kw=safety_margin_kw,
        base_load_kw=base_load_kw,
        groups=_groups() if groups is None else groups,
        tenants=(TenantSpec("ai-a", reserved_kw=2000, headroom_kw=300),) if tenants is None else tenants,
        settings=PolicySettings(**settings),  # type: ignore[arg-type]
    )


def _readings(
    site: SiteSpec,
    site_kw: float | None = 5000.0,
    tenants: dict[str, float | None] | None = None,
    unknown_groups: tuple[str, ...] = (),
    price: float | None = None,
) -> SiteSnapshot:
    """Fresh readings for everything (groups at their rated kW) unless said otherwise."""
    tenant_kw: dict[str, float | None] = {t.tenant_id: t.reserved_kw * 0.95 for t in site.tenants}
    tenant_kw.update(tenants or {})
    group_kw: dict[str, float | None] = {
        g.group_id: None if g.group_id in unknown_groups else g.rated_kw for g in site.groups
    }
    return SiteSnapshot(site_kw, tenant_kw, group_kw, price)


def _memory(*entries: tuple[str, str, float | None, float]) -> PolicyMemory:
    """(group, mode, power target, since) for each group a previous plan commanded."""
    return PolicyMemory({g: GroupMemory(mode, power, since) for g, mode, power, since in entries})  # type: ignore[arg-type]


def _limit(
    kw: float, event_id: str = "ev-1", start: float = 0.0, end: float | None = None, **kw_: object
) -> Obligation:
    return Obligation(event_id, "limit", kw=kw, start_s=start, end_s=end, **kw_)  # type: ignore[arg-type]


def _reasons(plan: Plan) -> dict[str, str]:
    return {d.group_id: d.reason for d in plan.decisions}


def _powers(plan: Plan) -> dict[str, float | None]:
    return {d.group_id: d.power_kw for d in plan.decisions}


def _follow(
    site: SiteSpec,
    readings: SiteSnapshot,
    obligations: list[Obligation],
    memory: PolicyMemory,
    start: float,
    for_s: float = 60.0,
    every_s: float = 5.0,
) -> list[Plan]:
    """The supervisory loop: a plan every `every_s` from `start`, each fed the last one's memory."""
    plans: list[Plan] = []
    now = start
    while now <= start + for_s:
        plans.append(compute_plan(site, readings, obligations, now, memory))
        memory = plans[-1].memory
        now += every_s
    return plans


def _back_at(plans: list[Plan]) -> dict[str, float]:
    """When each group was last brought back to full power in these plans."""
    back: dict[str, float] = {}
    for previous, plan in itertools.pairwise(plans):
        was = {d.group_id: d for d in previous.decisions}
        for d in plan.decisions:
            if (
                d.mode == "run"
                and d.power_kw is None
                and (was[d.group_id].mode, was[d.group_id].power_kw) != ("run", None)
            ):
                back[d.group_id] = plan.computed_at_s
    return back


# --------------------------------------------------------------------------------------------------
# Budget: the tightest constraint wins and the plan names it.


def test_with_no_obligation_everything_runs_and_the_interconnect_is_the_binding_limit() -> None:
    site = _site()
    plan = compute_plan(site, _readings(site), [], now=100.0)
    assert plan.curtailed() == ()
    assert plan.feasible
    assert plan.site_limit_kw == 6000.0
    assert plan.binding_constraint == "interconnect (6000 kW)"
    # 6000 - 100 margin - 200 base - (2000 reserve + 300 headroom)
    assert plan.mining_budget_kw == 3400.0
    assert plan.mining_planned_kw == 2650.0
    assert any(
        "mining budget 3400 kW = limit - margin 100 - base 200 - AI allowance 2300" in r for r in plan.reasons
    )


def test_a_limit_obligation_below_the_interconnect_binds_and_the_plan_names_it() -> None:
    site = _site()
    plan = compute_plan(site, _readings(site), [_limit(4000.0, program="ERS-10")], now=10.0)
    assert plan.site_limit_kw == 4000.0
    assert plan.binding_constraint == "limit 'ev-1' (ERS-10)"
    assert plan.mining_budget_kw == 1400.0
    assert plan.active_obligations == ("ev-1",)
    assert plan.reasons[0] == "limit 4000 kW from limit 'ev-1' (ERS-10)"


def test_a_limit_above_the_interconnect_leaves_the_interconnect_binding() -> None:
    site = _site()
    plan = compute_plan(site, _readings(site), [_limit(9000.0)], now=10.0)
    assert plan.binding_constraint == "interconnect (6000 kW)"
    assert plan.active_obligations == ("ev-1",)


def test_a_reduce_obligation_binds_at_the_baseline_fixed_at_acceptance_minus_the_reduction() -> None:
    site = _site()
    reduce = Obligation(
        "ev-2", "reduce", kw=1500.0, start_s=0.0, end_s=None, baseline_kw=5500.0, program="ERS-30"
    )
    # The site draws less now than at acceptance: the limit still comes from the fixed baseline.
    plan = compute_plan(site, _readings(site, site_kw=4200.0), [reduce], now=1.0)
    assert plan.site_limit_kw == 4000.0
    assert plan.binding_constraint == "reduce 'ev-2' (ERS-30)"


def test_of_a_limit_and_a_reduce_both_active_the_tighter_one_binds() -> None:
    site = _site()
    limit = _limit(4500.0, event_id="ev-a")
    reduce = Obligation("ev-b", "reduce", kw=1500.0, start_s=0.0, end_s=None, baseline_kw=5500.0)
    plan = compute_plan(site, _readings(site), [limit, reduce], now=1.0)
    assert (plan.site_limit_kw, plan.binding_constraint) == (4000.0, "reduce 'ev-b' (generic)")
    looser = Obligation("ev-b", "reduce", kw=500.0, start_s=0.0, end_s=None, baseline_kw=5500.0)
    plan = compute_plan(site, _readings(site), [limit, looser], now=1.0)
    assert (plan.site_limit_kw, plan.binding_constraint) == (4500.0, "limit 'ev-a' (generic)")
    assert plan.active_obligations == ("ev-a", "ev-b")


def test_a_reduce_obligation_without_a_baseline_is_honoured_as_a_zero_kw_limit() -> None:
    site = _site()
    reduce = Obligation("ev-2", "reduce", kw=1500.0, start_s=0.0, end_s=None, baseline_kw=None)
    plan = compute_plan(site, _readings(site), [reduce], now=1.0)
    assert plan.site_limit_kw == 0.0
    assert len(plan.curtailed()) == 4
    assert not plan.feasible


def test_an_ai_tenant_ramping_above_its_reserve_shrinks_the_mining_budget_by_its_load_plus_headroom() -> None:
    """The AI allowance is a constraint too: at 2.9 MW the tenant keeps 2.9 MW + 300 kW headroom."""
    site = _site()
    calm = compute_plan(site, _readings(site, tenants={"ai-a": 1900.0}), [], now=1.0)
    ramped = compute_plan(site, _readings(site, tenants={"ai-a": 2900.0}), [], now=1.0)
    assert calm.ai_allowance_kw == 2300.0 and calm.curtailed() == ()
    assert ramped.ai_allowance_kw == 3200.0
    assert ramped.mining_budget_kw == 2500.0  # 6000 - 300 - 3200
    # 2650 kW of mining does not fit 2500: the worst group goes, under the interconnect, and the
    # budget line shows the AI allowance that squeezed it.
    assert ramped.curtailed() == ("old",)
    assert "merit order 1/4 under interconnect (6000 kW) (mining budget 2500 kW)" in _reasons(ramped)["old"]
    assert any("AI allowance 3200" in r for r in ramped.reasons)


def test_an_unknown_tenant_reading_counts_as_its_reserve_never_zero() -> None:
    tenant = TenantSpec("ai-a", reserved_kw=2000, headroom_kw=300)
    assert tenant_allowance_kw(tenant, None) == 2300.0
    assert tenant_allowance_kw(tenant, 0.0) == 2300.0
    assert tenant_allowance_kw(tenant, 2500.0) == 2800.0
    site = _site()
    plan = compute_plan(site, _readings(site, tenants={"ai-a": None}), [], now=1.0)
    assert plan.ai_allowance_kw == 2300.0


def test_an_obligation_outside_its_window_is_ignored_and_restore_follows_its_end() -> None:
    site = _site()
    limit = _limit(4000.0, start=50.0, end=80.0)
    before = compute_plan(site, _readings(site), [limit], now=10.0)
    assert before.curtailed() == () and before.active_obligations == ()
    during = compute_plan(site, _readings(site), [limit], now=60.0, memory=before.memory)
    assert during.curtailed() == ("old", "mid", "new-lo")
    after = _follow(site, _readings(site), [limit], during.memory, start=80.0)
    assert after[0].active_obligations == ()
    assert after[0].curtailed() != ("old", "mid", "new-lo")  # restores begin as the event ends
    assert after[-1].curtailed() == ()
    back = _back_at([during, *after])
    assert back["new-lo"] <= back["mid"] <= back["old"]  # most efficient first


# --------------------------------------------------------------------------------------------------
# Merit order: least efficient first, then operator priority; partial targets shed exactly the excess.


def test_merit_order_is_least_efficient_first_then_lowest_priority_then_id() -> None:
    order = [g.group_id for g in merit_order(_site().groups)]
    assert order == ["old", "mid", "new-lo", "new-hi"]
    twins = (
        GroupSpec("b", 700, 17.5, 10, 14),
        GroupSpec("a", 700, 17.5, 10, 14),
    )
    assert [g.group_id for g in merit_order(twins)] == ["a", "b"]


def test_a_limit_sheds_the_least_efficient_groups_first_then_the_lower_priority_of_two_equals() -> None:
    site = _site()
    plan = compute_plan(site, _readings(site), [_limit(4000.0)], now=10.0)
    # Budget 1400 kW for 2650 kW of mining: old (29.5 J/TH), mid (21.5), then new-lo (17.5, priority 10)
    # before new-hi (17.5, priority 50).
    assert plan.curtailed() == ("old", "mid", "new-lo")
    assert plan.mining_planned_kw == 12 + 13 + 14 + 700
    assert plan.mining_planned_kw <= plan.mining_budget_kw
    reasons = _reasons(plan)
    assert reasons["old"].startswith("curtail: merit order 1/4 under limit 'ev-1' (generic)")
    assert "merit order 3/4" in reasons["new-lo"]
    assert reasons["new-hi"].startswith("run: fits the mining budget (merit order 4/4)")


def test_a_10_minute_ers_event_on_a_site_at_80pct_load_sheds_the_two_worst_groups_and_a_partial_third() -> (
    None
):
    # Twelve 1 MW groups from 30 J/TH down to 16 J/TH; the third-worst takes power targets.
    efficiencies = (30.0, 28.0, 26.0, 24.0, 22.0, 21.0, 20.0, 19.0, 18.0, 17.5, 17.5, 16.0)
    groups = tuple(
        GroupSpec(
            f"g{i:02d}",
            rated_kw=1000,
            efficiency_j_per_th=eff,
            priority=20 if i == 10 else 10,
            sleep_kw=20,
            supports_power_target=i == 3,
            min_power_kw=300 if i == 3 else 0.0,
        )
        for i, eff in enumerate(efficiencies, start=1)
    )
    tenants = (TenantSpec("ai-a", reserved_kw=4000, headroom_kw=400),)
    site = _site(groups, tenants, interconnect_kw=20_000.0)
    readings = _readings(site, site_kw=16_000.0, tenants={"ai-a": 3800.0})
    # 200 base + 3800 AI + 12,000 mining = 16 MW: 80% of the 20 MW interconnect. ERS-10 asks for
    # 1.8 MW below that baseline for 10 minutes.
    ers = Obligation(
        "ercot-ers-10 #42",
        "reduce",
        kw=1800.0,
        start_s=1000.0,
        end_s=1600.0,
        baseline_kw=16_000.0,
        program="ERS-10",
    )
    steady = compute_plan(site, readings, [ers], now=900.0)
    assert steady.curtailed() == ()
    during = compute_plan(site, readings, [ers], now=1000.0, memory=steady.memory)
    # Limit 14,200 - 300 - AI 4,400 = 9,500 kW for 12,000 kW of mining: 2,500 kW must go. The two worst
    # groups sleep (980 kW each) and the third sheds the remaining 540 kW: it runs at 460 kW.
    assert during.site_limit_kw == 14_200.0
    assert during.mining_budget_kw == 9_500.0
    assert during.curtailed() == ("g01", "g02")
    assert _powers(during)["g03"] == 460.0
    assert during.mining_planned_kw == during.mining_budget_kw == 9_500.0
    reason = _reasons(during)["g03"]
    assert reason.startswith(
        "run at 460 kW: partial, merit order 3/12 under reduce 'ercot-ers-10 #42' (ERS-10)"
    )
    # Ten minutes later the event ends and the 2.5 MW come back, most efficient first, within the
    # 10 MW/min ramp: well inside a minute.
    held = compute_plan(site, readings, [ers], now=1599.0, memory=during.memory)
    assert held.curtailed() == ("g01", "g02") and _powers(held)["g03"] == 460.0
    after = _follow(site, readings, [ers], held.memory, start=1600.0)
    assert after[-1].curtailed() == ()
    assert all(p is None for p in _powers(after[-1]).values())
    back = _back_at([held, *after])
    assert back["g03"] <= back["g02"] <= back["g01"] < 1660.0


def test_a_partial_target_sheds_exactly_the_excess_to_the_whole_kw() -> None:
    site = _site(_groups(new_lo={"supports_power_target": True, "min_power_kw": 200.0}))
    plan = compute_plan(site, _readings(site), [_limit(4000.0)], now=10.0)
    # Budget 1400: old and mid asleep leave 25 kW over; new-lo runs at 700 - 25 = 675 kW.
    assert plan.curtailed() == ("old", "mid")
    assert _powers(plan)["new-lo"] == 675.0
    assert plan.mining_planned_kw == plan.mining_budget_kw == 1400.0
    # A fractional excess rounds the target down to whole kW: at most 1 kW more than needed goes.
    plan = compute_plan(site, _readings(site), [_limit(4000.4)], now=10.0)
    assert _powers(plan)["new-lo"] == 675.0
    assert plan.mining_budget_kw - 1.0 < plan.mining_planned_kw <= plan.mining_budget_kw


def test_a_group_that_would_fall_below_its_minimum_power_target_sleeps_instead() -> None:
    site = _site(_groups(new_lo={"supports_power_target": True, "min_power_kw": 690.0}))
    plan = compute_plan(site, _readings(site), [_limit(4000.0)], now=10.0)
    # 675 kW is below the firmware's 690 kW minimum: the whole group sleeps, as before.
    assert plan.curtailed() == ("old", "mid", "new-lo")
    assert _powers(plan)["new-hi"] is None


def test_a_group_whose_telemetry_is_unknown_is_never_given_a_partial_target() -> None:
    site = _site(_groups(new_lo={"supports_power_target": True, "min_power_kw": 200.0}))
    plan = compute_plan(site, _readings(site, unknown_groups=("new-lo",)), [_limit(4000.0)], now=10.0)
    # Unknown and under an obligation, new-lo counts at its rated 700 kW whatever it is told, so
    # sleeping it frees nothing on paper: new-hi must go as well.
    assert plan.curtailed() == ("old", "mid", "new-lo", "new-hi")
    assert "telemetry unknown: counted at rated" in _reasons(plan)["new-lo"]


# --------------------------------------------------------------------------------------------------
# No flapping: deadband, minimum on/off times, a just-resumed group is not the first to go again.


def _old_asleep(since: float = 0.0) -> PolicyMemory:
    return _memory(
        ("old", "curtail", None, since), ("mid", "run", None, since), ("new-lo", "run", None, since)
    )


def test_no_restore_when_the_group_would_fit_only_inside_the_deadband() -> None:
    # Mining with old asleep: 12 + 650 + 700 + 700 = 2062 kW; interconnect 5362 gives a 2762 kW budget,
    # 700 kW of room. old needs 588 kW: it fits the budget but not with a 300 kW deadband to spare.
    site = _site(interconnect_kw=5362.0, deadband_kw=300.0)
    plan = compute_plan(site, _readings(site), [], now=100.0, memory=_old_asleep())
    assert plan.curtailed() == ("old",)
    reason = _reasons(plan)["old"]
    assert reason.startswith("curtail: restore waits, needs 588 kW: room 400 kW (deadband 300)")
    without = compute_plan(
        _site(interconnect_kw=5362.0), _readings(site), [], now=100.0, memory=_old_asleep()
    )
    assert without.curtailed() == ()


def test_a_restore_goes_ahead_once_it_fits_with_the_deadband_to_spare() -> None:
    site = _site(interconnect_kw=5562.0, deadband_kw=300.0)  # 900 kW of room: 588 + 300 fits
    plan = compute_plan(site, _readings(site), [], now=100.0, memory=_old_asleep())
    assert plan.curtailed() == ()
    assert _reasons(plan)["old"] == (
        "run: restored, merit order 1/4, fits mining budget 2962 kW with deadband 300 kW"
    )


def test_a_shed_that_fits_exactly_is_not_undone_by_the_next_plan() -> None:
    site = _site(deadband_kw=50.0)
    readings = _readings(site, tenants={"ai-a": 2850.0})  # allowance 3150: budget 2550 for 2650 kW
    first = compute_plan(site, readings, [], now=0.0)
    assert first.curtailed() == ("old",)
    plans = [first]
    for now in range(5, 300, 5):
        plans.append(compute_plan(site, readings, [], now=float(now), memory=plans[-1].memory))
    assert all(p.curtailed() == ("old",) for p in plans)


def test_a_curtailed_group_stays_off_for_its_min_off_time_even_with_room() -> None:
    site = _site(_groups(old={"min_off_s": 300.0}))
    held = compute_plan(site, _readings(site), [], now=200.0, memory=_old_asleep(since=50.0))
    assert held.curtailed() == ("old",)
    assert _reasons(held)["old"] == "curtail: held, min off until +150 s"
    restored = compute_plan(site, _readings(site), [], now=350.0, memory=held.memory)
    assert restored.curtailed() == ()


def _resumed_worst_group() -> tuple[SiteSpec, PolicyMemory]:
    """old resumed at t=100 and must stay on 600 s; mid and new-lo have run for ages."""
    site = _site(_groups(old={"min_on_s": 600.0}))
    memory = _memory(
        ("old", "run", None, 100.0),
        ("mid", "run", None, 0.0),
        ("new-lo", "run", None, 0.0),
        ("new-hi", "run", None, 0.0),
    )
    return site, memory


def test_a_just_resumed_group_is_not_the_first_shed_again_the_next_in_merit_order_goes_instead() -> None:
    site, memory = _resumed_worst_group()
    # A tenant ramp to 2.8 MW squeezes the budget to 2600 kW: 50 kW must go. old is the worst, but it
    # just came back, so mid (the next in merit order) sleeps instead.
    plan = compute_plan(site, _readings(site, tenants={"ai-a": 2800.0}), [], now=200.0, memory=memory)
    assert plan.curtailed() == ("mid",)
    assert plan.mining_planned_kw <= plan.mining_budget_kw
    assert _reasons(plan)["mid"].startswith("curtail: merit order 2/4 under interconnect")
    assert plan.memory.groups["old"].since_s == 100.0


def test_a_just_resumed_group_is_shed_inside_its_min_on_time_when_nothing_else_fits() -> None:
    site, memory = _resumed_worst_group()
    plan = compute_plan(site, _readings(site), [_limit(3000.0)], now=200.0, memory=memory)
    # Budget 400 kW: with mid, new-lo and new-hi asleep old's 600 kW still makes 641 kW: old goes too.
    assert plan.curtailed() == ("old", "mid", "new-lo", "new-hi")
    assert _reasons(plan)["old"].endswith("inside its min on-time: nothing else fits")
    assert "nothing else fits" not in _reasons(plan)["mid"]
    assert plan.memory.groups["old"].since_s == 200.0


# --------------------------------------------------------------------------------------------------
# Restore: staggered by the ramp limit, gated by obligations and by stale readings.


def test_restore_is_staggered_by_the_ramp_10_mw_per_min_brings_30_groups_of_700_kw_back_over_minutes() -> (
    None
):
    groups = tuple(GroupSpec(f"g{i:02d}", 700, 17.5, 10, 14) for i in range(30))
    site = _site(groups, (), interconnect_kw=30_000.0, safety_margin_kw=0.0, base_load_kw=0.0)
    assert site.settings.restore_ramp_kw_per_min == 10_000.0  # the default: the low end utilities allow
    event = _limit(500.0, end=300.0)
    shed = compute_plan(site, _readings(site), [event], now=100.0)
    assert len(shed.curtailed()) == 30
    plans = _follow(site, _readings(site), [event], shed.memory, start=300.0, for_s=300.0)
    counts: list[tuple[float, int]] = []  # (time, groups restored by that plan)
    asleep = 30
    for plan in plans:
        if len(plan.curtailed()) < asleep:
            counts.append((plan.computed_at_s, asleep - len(plan.curtailed())))
            asleep = len(plan.curtailed())
    assert asleep == 0
    # 686 kW each (700 rated - 14 asleep): 20.6 MW in all, at most 10 MW in any rolling minute ...
    for now, _ in counts:
        assert 686 * sum(n for t, n in counts if now - 60.0 < t <= now) <= 10_000.0, counts
    # ... so the last group comes back after two full minutes, and not much later.
    assert 420.0 <= counts[-1][0] <= 540.0
    # Staggered: spread over many plans, never the whole minute's ramp in one go.
    assert len(counts) >= 5
    assert max(n for _, n in counts) * 686 < 10_000.0 - 686


def test_between_two_instants_next_change_s_names_the_plan_stays_the_same() -> None:
    """What lets mulletd replay skip cycles: from a shed through a limit's end, the min off-times and a
    ramp that lets one 700 kW group back a minute, planning every second changes decisions only at
    the instants `next_change_s` names."""
    groups = tuple(GroupSpec(f"g{i:02d}", 700, 17.5, 10, 14, min_on_s=30.0, min_off_s=90.0) for i in range(6))
    site = _site(
        groups,
        (),
        interconnect_kw=30_000.0,
        safety_margin_kw=0.0,
        base_load_kw=0.0,
        restore_ramp_kw_per_min=1000.0,
    )
    event = _limit(500.0, start=100.0, end=130.0)
    readings = _readings(site)
    plan = compute_plan(site, readings, [event], now=100.0)
    assert len(plan.curtailed()) == 6

    def decided(p: Plan) -> list[tuple[str, str, float | None]]:
        return [(d.group_id, d.mode, d.power_kw) for d in p.decisions]

    restored_at = []
    now = 100.0
    while (at := next_change_s(site, plan.memory, [event], {}, now)) is not None:
        for t in range(int(now) + 1, math.ceil(at)):
            assert decided(compute_plan(site, readings, [event], float(t), plan.memory)) == decided(plan), t
        asleep = len(plan.curtailed())
        now = at
        plan = compute_plan(site, readings, [event], now, plan.memory)
        if len(plan.curtailed()) < asleep:
            restored_at.append(now)
    assert plan.curtailed() == ()
    # The limit ends at 130 and the off-times at 190; then one group a minute (686 kW of the 1 MW
    # ramp: a second would exceed it), each as the one before leaves the ramp's one-minute window.
    assert restored_at == [190.0, 250.0, 310.0, 370.0, 430.0, 490.0]


def test_a_power_target_group_comes_back_partially_with_the_ramp_left_and_finishes_next_minute() -> None:
    site = _site(
        _groups(new_lo={"supports_power_target": True, "min_power_kw": 200.0}), restore_ramp_kw_per_min=500.0
    )
    memory = _memory(("new-lo", "curtail", None, 0.0))
    first = compute_plan(site, _readings(site), [], now=100.0, memory=memory)
    # 500 kW of ramp on top of its 14 kW asleep: it runs at 514 kW.
    assert _powers(first)["new-lo"] == 514.0
    assert first.memory.restores == ((100.0, 500.0),)
    waiting = compute_plan(site, _readings(site), [], now=130.0, memory=first.memory)
    assert _powers(waiting)["new-lo"] == 514.0
    assert "ramp 0 kW left this minute" in _reasons(waiting)["new-lo"]
    done = compute_plan(site, _readings(site), [], now=161.0, memory=waiting.memory)
    assert _powers(done)["new-lo"] is None and done.curtailed() == ()


def test_nothing_is_restored_while_an_obligation_is_active_even_with_room() -> None:
    site = _site()
    shed = compute_plan(site, _readings(site), [_limit(4000.0, end=1000.0)], now=10.0)
    assert shed.curtailed() == ("old", "mid", "new-lo")
    # The operator raises the limit mid-event: there is room for everything, but the event is on.
    relaxed = _limit(6000.0, end=1000.0)
    held = compute_plan(site, _readings(site), [relaxed], now=20.0, memory=shed.memory)
    assert held.curtailed() == ("old", "mid", "new-lo")
    assert _reasons(held)["old"] == "curtail: held, no restore while obligation 'ev-1' is active"


@pytest.mark.parametrize(
    ("site_kw", "tenants", "unknown_groups", "named"),
    [
        (None, {}, (), "site meter"),
        (5000.0, {"ai-a": None}, (), "tenant ai-a"),
        (5000.0, {}, ("new-hi",), "group new-hi"),
    ],
    ids=["meter", "tenant", "group"],
)
def test_nothing_is_restored_while_any_reading_is_unknown(
    site_kw: float | None, tenants: dict[str, float | None], unknown_groups: tuple[str, ...], named: str
) -> None:
    site = _site()
    readings = _readings(site, site_kw=site_kw, tenants=tenants, unknown_groups=unknown_groups)
    plan = compute_plan(site, readings, [], now=100.0, memory=_old_asleep())
    assert plan.curtailed() == ("old",)
    assert _reasons(plan)["old"] == f"curtail: held, no restore while {named} unknown"
    assert f"no load increase: {named} unknown" in plan.reasons
    assert plan.memory.restores == ()


def test_a_stale_meter_holds_curtailed_groups_but_still_sheds() -> None:
    site = _site()
    limit = _limit(4000.0, end=10.0)
    during = compute_plan(site, _readings(site, site_kw=None), [limit], now=5.0)
    assert during.curtailed() == ("old", "mid", "new-lo")  # an unknown meter does not stop a shed
    after_stale = compute_plan(site, _readings(site, site_kw=None), [limit], now=20.0, memory=during.memory)
    assert after_stale.curtailed() == during.curtailed()
    assert any("no load increase: site meter unknown" in r for r in after_stale.reasons)
    after_fresh = _follow(site, _readings(site), [limit], after_stale.memory, start=25.0)
    assert after_fresh[0].curtailed() != during.curtailed()
    assert after_fresh[-1].curtailed() == ()


def test_a_stale_meter_holds_a_partial_target_where_it_is_but_still_lets_it_go_down() -> None:
    site = _site(_groups(new_lo={"supports_power_target": True, "min_power_kw": 200.0}))
    memory = _memory(
        ("old", "curtail", None, 0.0), ("mid", "curtail", None, 0.0), ("new-lo", "run", 500.0, 0.0)
    )
    # 12 + 13 + 500 + 700 = 1225 kW of mining in a 3400 kW budget: room to raise new-lo, but no.
    held = compute_plan(site, _readings(site, site_kw=None), [], now=100.0, memory=memory)
    assert _powers(held)["new-lo"] == 500.0
    assert _reasons(held)["new-lo"] == "run at 500 kW: held, no restore while site meter unknown"
    # The tenant ramps to 4.2 MW: budget 1200 kW, 25 kW over: new-lo gives them up.
    tighter = compute_plan(
        site, _readings(site, site_kw=None, tenants={"ai-a": 4200.0}), [], now=100.0, memory=memory
    )
    assert _powers(tighter)["new-lo"] == 475.0


# --------------------------------------------------------------------------------------------------
# AI tenants: firm power is never curtailed; flexible shares are capped last, and only if allowed.


def _ai_site(**settings: object) -> SiteSpec:
    """Two 1 MW mining groups and a 4 MW tenant of which 2 MW is flexible (firm 2 MW)."""
    groups = (GroupSpec("g1", 1000, 30.0, 10, 10), GroupSpec("g2", 1000, 20.0, 10, 10))
    tenants = (TenantSpec("ai", reserved_kw=4000, headroom_kw=0, flexible_kw=2000),)
    return _site(
        groups, tenants, interconnect_kw=10_000.0, safety_margin_kw=0.0, base_load_kw=0.0, **settings
    )


def _ai_readings(site: SiteSpec, **kw: object) -> SiteSnapshot:
    return _readings(site, tenants={"ai": 4000.0}, **kw)  # type: ignore[arg-type]


def test_firm_ai_power_is_never_curtailed_when_an_obligation_cannot_be_met() -> None:
    site = _site()
    plan = compute_plan(site, _readings(site), [_limit(1000.0)], now=1.0)
    assert len(plan.curtailed()) == 4
    assert not plan.feasible
    assert any("infeasible: all mining curtailed and still" in r for r in plan.reasons)
    (tenant,) = plan.tenants
    assert tenant.power_cap_kw is None
    assert tenant.reason == "uncapped: firm power is never curtailed; no active obligation allows AI flex"


def test_a_flexible_share_is_capped_once_all_mining_is_shed_under_an_obligation_that_allows_it() -> None:
    site = _ai_site()
    event = _limit(3000.0, event_id="grid-emergency", allows_ai_flex=True)
    plan = compute_plan(site, _ai_readings(site), [event], now=1.0)
    # 3000 kW limit: 4000 kW of AI plus 20 kW of sleeping miners is 1020 kW over; the flexible share
    # (2000 kW) covers it: the tenant is capped at 2980 kW.
    assert plan.curtailed() == ("g1", "g2")
    (tenant,) = plan.tenants
    assert tenant.power_cap_kw == 2980.0
    assert tenant.reason == (
        "cap 2980 kW: all mining shed and still over under limit 'grid-emergency' (generic);"
        " grid-emergency allows AI flex; firm 2000 kW kept"
    )
    assert plan.feasible
    assert plan.ai_allowance_kw == 2980.0
    assert plan.mining_planned_kw == plan.mining_budget_kw == 20.0


def test_a_flexible_share_is_not_capped_while_mining_can_still_meet_the_limit() -> None:
    site = _ai_site()
    plan = compute_plan(site, _ai_readings(site), [_limit(5500.0, allows_ai_flex=True)], now=1.0)
    assert plan.curtailed() == ("g1",)
    assert [t.power_cap_kw for t in plan.tenants] == [None]
    assert plan.tenants[0].reason == "uncapped: firm power is never curtailed"


def test_a_flexible_share_is_not_capped_under_an_obligation_that_does_not_allow_it() -> None:
    site = _ai_site()
    plan = compute_plan(site, _ai_readings(site), [_limit(3000.0, allows_ai_flex=False)], now=1.0)
    assert plan.curtailed() == ("g1", "g2")
    assert not plan.feasible
    assert plan.tenants[0].power_cap_kw is None
    assert "no active obligation allows AI flex" in plan.tenants[0].reason


def test_a_cap_never_goes_below_the_tenants_firm_kw_even_when_the_site_stays_over() -> None:
    site = _ai_site()
    plan = compute_plan(site, _ai_readings(site), [_limit(1000.0, allows_ai_flex=True)], now=1.0)
    assert plan.tenants[0].power_cap_kw == 2000.0  # the firm kW, not the 980 kW the limit would want
    assert not plan.feasible
    assert any("firm AI load is never curtailed" in r for r in plan.reasons)


def test_a_tenant_without_a_flexible_share_is_never_capped() -> None:
    groups = (GroupSpec("g1", 1000, 30.0, 10, 10),)
    tenants = (
        TenantSpec("firm-only", reserved_kw=2000, headroom_kw=0),
        TenantSpec("flex", reserved_kw=2000, headroom_kw=0, flexible_kw=1000),
    )
    site = _site(groups, tenants, interconnect_kw=10_000.0, safety_margin_kw=0.0, base_load_kw=0.0)
    plan = compute_plan(
        site,
        _readings(site, tenants={"firm-only": 2000.0, "flex": 2000.0}),
        [_limit(3500.0, allows_ai_flex=True)],
        now=1.0,
    )
    caps = {t.tenant_id: t.power_cap_kw for t in plan.tenants}
    assert caps == {"firm-only": None, "flex": 1490.0}  # 510 kW over, all from the flexible share
    assert plan.feasible


def test_lifting_ai_caps_after_a_flex_event_counts_against_the_restore_ramp() -> None:
    site = _ai_site(restore_ramp_kw_per_min=1000.0)
    event = _limit(3000.0, end=100.0, allows_ai_flex=True)
    during = compute_plan(site, _ai_readings(site), [event], now=50.0)
    assert during.tenants[0].power_cap_kw == 2980.0
    after = compute_plan(site, _ai_readings(site), [event], now=100.0, memory=during.memory)
    cap = after.tenants[0].power_cap_kw
    ai_restored_kw = (4000.0 if cap is None else cap) - 2980.0
    mining_restored_kw = sum(
        g.rated_kw - g.sleep_kw for g, d in zip(site.groups, after.decisions, strict=True) if d.mode == "run"
    )
    # AI first, and both within the one minute's ramp (the ledger counts both).
    assert ai_restored_kw > 0
    assert mining_restored_kw + ai_restored_kw <= 1000.0
    assert sum(kw for _, kw in after.memory.restores) == pytest.approx(mining_restored_kw + ai_restored_kw)
    assert "lifting within the restore ramp" in after.tenants[0].reason


def test_ai_caps_are_not_lifted_while_a_reading_is_unknown() -> None:
    site = _ai_site()
    event = _limit(3000.0, end=100.0, allows_ai_flex=True)
    during = compute_plan(site, _ai_readings(site), [event], now=50.0)
    assert during.tenants[0].power_cap_kw == 2980.0
    stale = compute_plan(site, _ai_readings(site, site_kw=None), [event], now=100.0, memory=during.memory)
    assert stale.curtailed() == ("g1", "g2")  # mining is held, as it should be ...
    cap = stale.tenants[0].power_cap_kw
    assert cap == 2980.0  # ... and so is the AI cap
    assert "held" in stale.tenants[0].reason


# --------------------------------------------------------------------------------------------------
# Economics: the "back" of the mullet mines only while it pays. Off by default.


def _priced_site(**settings: object) -> SiteSpec:
    return _site(_groups(old={"break_even_usd_per_mwh": 50.0}), **settings)  # type: ignore[arg-type]


def test_economics_is_off_by_default_a_group_losing_money_keeps_running() -> None:
    site = _priced_site()
    assert site.settings.economics_enabled is False
    plan = compute_plan(site, _readings(site, price=500.0), [], now=1.0)
    assert plan.curtailed() == ()


def test_a_group_losing_money_at_the_current_price_is_curtailed_without_an_obligation() -> None:
    site = _priced_site(economics_enabled=True)
    plan = compute_plan(site, _readings(site, price=80.0), [], now=1.0)
    assert plan.active_obligations == ()
    assert plan.curtailed() == ("old",)
    assert _reasons(plan)["old"] == "curtail: economics: $80.00/MWh > break-even $50.00/MWh"


def test_break_even_from_the_hashprice_sleeps_an_s21_at_130_usd_per_mwh_but_not_a_more_efficient_model() -> (
    None
):
    s21 = GroupSpec("s21", 3500, 17.5, 10, 70)
    xp = GroupSpec("s21-xp", 3500, 13.5, 10, 70)
    # $0.05/TH/day at 17.5 J/TH: 0.05 / (17.5 x 2.4e-5 MWh) = ~$119/MWh; at 13.5 J/TH ~$154/MWh.
    assert break_even_usd_per_mwh(s21, 0.05) == pytest.approx(119.05, abs=0.01)
    assert break_even_usd_per_mwh(xp, 0.05) == pytest.approx(154.32, abs=0.01)
    assert break_even_usd_per_mwh(xp, None) is None
    site = _site(
        (s21, xp), (), interconnect_kw=10_000.0, economics_enabled=True, hashprice_usd_per_th_day=0.05
    )
    plan = compute_plan(site, _readings(site, price=130.0), [], now=1.0)
    assert plan.curtailed() == ("s21",)
    assert _reasons(plan)["s21-xp"].startswith("run: fits the mining budget")


def test_a_price_inside_the_deadband_keeps_an_uneconomic_group_off_and_a_cheaper_price_brings_it_back() -> (
    None
):
    site = _priced_site(economics_enabled=True, price_deadband_usd_per_mwh=10.0)
    off = compute_plan(site, _readings(site, price=80.0), [], now=1.0)
    assert off.curtailed() == ("old",)
    # $45 is below the $50 break-even but inside the $10 deadband: no switch back yet.
    held = compute_plan(site, _readings(site, price=45.0), [], now=60.0, memory=off.memory)
    assert held.curtailed() == ("old",)
    assert _reasons(held)["old"] == "curtail: economics: $45.00/MWh within the deadband below $50.00/MWh"
    # A running group is not switched off inside the deadband either.
    running = compute_plan(site, _readings(site, price=45.0), [], now=1.0)
    assert running.curtailed() == ()
    back = compute_plan(site, _readings(site, price=39.0), [], now=120.0, memory=held.memory)
    assert back.curtailed() == ()
    assert _reasons(back)["old"].startswith("run: restored")


def test_an_unknown_price_holds_every_group_as_it_is() -> None:
    site = _priced_site(economics_enabled=True)
    off = compute_plan(site, _readings(site, price=80.0), [], now=1.0)
    held = compute_plan(site, _readings(site, price=None), [], now=60.0, memory=off.memory)
    assert held.curtailed() == ("old",)
    assert _reasons(held)["old"] == "curtail: economics: price unknown, no switch for price"
    running = compute_plan(site, _readings(site, price=None), [], now=1.0)
    assert running.curtailed() == ()


def test_a_group_is_not_curtailed_for_economics_inside_its_min_on_time() -> None:
    site = _site(_groups(old={"break_even_usd_per_mwh": 50.0, "min_on_s": 600.0}), economics_enabled=True)
    memory = _memory(("old", "run", None, 100.0))
    plan = compute_plan(site, _readings(site, price=80.0), [], now=200.0, memory=memory)
    assert plan.curtailed() == ()
    assert (
        _reasons(plan)["old"]
        == "run: economics: $80.00/MWh > break-even $50.00/MWh, but min on holds until +500 s"
    )
    later = compute_plan(site, _readings(site, price=80.0), [], now=700.0, memory=plan.memory)
    assert later.curtailed() == ("old",)


# --------------------------------------------------------------------------------------------------
# Stale data: unknown is not zero.


def test_during_an_obligation_a_group_with_unknown_telemetry_counts_at_its_rated_kw() -> None:
    site = _site()
    memory = _memory(("old", "curtail", None, 0.0))
    limit = _limit(4600.0)  # budget 2000 kW
    seen = compute_plan(site, _readings(site), [limit], now=10.0, memory=memory)
    # old asleep counts 12 kW: 12 + 650 + 700 + 700 = 2062 kW, 62 over: mid goes.
    assert seen.curtailed() == ("old", "mid")
    unseen = compute_plan(site, _readings(site, unknown_groups=("old",)), [limit], now=10.0, memory=memory)
    # Unseen, old counts at its rated 600 kW though it was told to sleep: new-lo must go too.
    assert unseen.curtailed() == ("old", "mid", "new-lo")
    assert unseen.mining_planned_kw == 600 + 13 + 14 + 700


def test_outside_an_obligation_a_group_with_unknown_telemetry_counts_at_its_command() -> None:
    site = _site(interconnect_kw=4662.0)  # budget 2062 kW: exactly mining with old asleep
    memory = _memory(("old", "curtail", None, 0.0))
    plan = compute_plan(site, _readings(site, unknown_groups=("old",)), [], now=10.0, memory=memory)
    assert plan.curtailed() == ("old",)
    assert plan.mining_planned_kw == 2062.0


# --------------------------------------------------------------------------------------------------
# Arming: under-frequency stages are covered in merit order; a shortfall is reported.


def test_trip_stages_are_armed_in_merit_order_until_each_stages_shed_kw_is_covered() -> None:
    stages = (TripStage(2, 59.7, 600.0), TripStage(1, 59.85, 1200.0))
    site = _site(trip_stages=stages)
    plan = compute_plan(site, _readings(site), [], now=1.0)
    armed = {d.group_id: d.trip_stage for d in plan.decisions}
    # Stage 1 first: old (588 kW shed) + mid (637) = 1225 >= 1200. Stage 2: new-lo (686) >= 600.
    assert armed == {"old": 1, "mid": 1, "new-lo": 2, "new-hi": None}
    assert "stage 1 (59.85 Hz): 2 groups arm 1225 kW" in plan.reasons
    assert "stage 2 (59.7 Hz): 1 groups arm 686 kW" in plan.reasons
    assert _reasons(plan)["mid"].endswith("; armed at stage 1 (59.85 Hz)")


def test_a_stage_running_groups_cannot_cover_reports_its_shortfall_and_sleeping_groups_are_not_armed() -> (
    None
):
    stages = (TripStage(1, 59.85, 1000.0),)
    site = _site(trip_stages=stages)
    plan = compute_plan(site, _readings(site), [_limit(4000.0)], now=1.0)
    assert plan.curtailed() == ("old", "mid", "new-lo")
    armed = {d.group_id: d.trip_stage for d in plan.decisions}
    assert armed == {"old": None, "mid": None, "new-lo": None, "new-hi": 1}
    assert "stage 1 (59.85 Hz): 1 groups arm 686 kW, 314 kW short of 1000 kW" in plan.reasons


def test_a_partial_group_is_armed_for_what_it_draws_now() -> None:
    stages = (TripStage(1, 59.85, 1000.0),)
    site = _site(_groups(new_lo={"supports_power_target": True, "min_power_kw": 200.0}), trip_stages=stages)
    plan = compute_plan(site, _readings(site), [_limit(4000.0)], now=1.0)
    assert _powers(plan)["new-lo"] == 675.0
    # new-lo at 675 kW sheds 661 to its 14 kW asleep; new-hi 686 more.
    assert "stage 1 (59.85 Hz): 2 groups arm 1347 kW" in plan.reasons


# --------------------------------------------------------------------------------------------------
# Explanations: every decision names the rule that set it.


def test_every_decision_names_its_rule_the_merit_order_rank_and_the_binding_limit() -> None:
    site = _site(_groups(new_lo={"supports_power_target": True, "min_power_kw": 200.0}))
    plan = compute_plan(
        site, _readings(site), [_limit(4000.0, event_id="ercot-ers-10 #42", program="ERS-10")], now=1.0
    )
    assert _reasons(plan) == {
        "old": "curtail: merit order 1/4 under limit 'ercot-ers-10 #42' (ERS-10) (mining budget 1400 kW)",
        "mid": "curtail: merit order 2/4 under limit 'ercot-ers-10 #42' (ERS-10) (mining budget 1400 kW)",
        "new-lo": "run at 675 kW: partial, merit order 3/4 under limit 'ercot-ers-10 #42' (ERS-10)"
        " (mining budget 1400 kW)",
        "new-hi": "run: fits the mining budget (merit order 4/4)",
    }
    assert all(t.reason for t in plan.tenants)
    assert plan.reasons[0] == "limit 4000 kW from limit 'ercot-ers-10 #42' (ERS-10)"


# --------------------------------------------------------------------------------------------------
# Firmware limits.


def test_a_partial_restore_never_targets_below_the_groups_minimum_power() -> None:
    group = GroupSpec("g", 1000, 20.0, 10, 0.0, supports_power_target=True, min_power_kw=300.5)
    site = _site((group,), (), interconnect_kw=300.7, safety_margin_kw=0.0, base_load_kw=0.0)
    plan = compute_plan(site, _readings(site), [], now=100.0, memory=_memory(("g", "curtail", None, 0.0)))
    (decision,) = plan.decisions
    # Room 300.7 kW >= 300.5 passes the check, then floor() makes the target 300 kW.
    assert decision.mode == "curtail" or (decision.power_kw or 0.0) >= group.min_power_kw
