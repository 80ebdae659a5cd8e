"""The absorber (issue 23): mining fills AI drops and sheds for AI rises so the site import moves within a
ramp limit, with a swing reserve to fill from; soft, after obligations, the interconnect and firm AI.

Properties over the random sites of test_policy_properties (each plan checked against the plan the same
inputs give with the absorber off), and unit sequences with instant physics: the plan's commands are
what the groups draw at the next step (the live e2e test in test_e2e_absorber has firmware ramps).
"""

from __future__ import annotations

import itertools
import math
import os
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_policy_properties import Scenario, _commanded_kw, _memory_kw, run, scenarios

from mullet.daemon.config import ConfigError, parse_config
from mullet.daemon.core.import_ramp import MAX_SAMPLES, ImportRamp
from mullet.policies.model import (
    GroupMemory,
    GroupSpec,
    Obligation,
    Override,
    Plan,
    PolicyMemory,
    PolicySettings,
    SiteSnapshot,
    SiteSpec,
    TenantSpec,
)
from mullet.policies.plan import compute_plan
from mullet.policies.plan_absorber import MAX_IMPORTS, in_window, keep_imports
from mullet.policies.plan_timers import next_change_s

TOL_KW = 1e-6
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("MULLET_POLICY_EXAMPLES", "60"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _with_absorber(
    scenario: Scenario, ramp_60_kw: float, ramp_10_kw: float | None, fraction: float
) -> Scenario:
    site = replace(
        scenario.site,
        settings=replace(
            scenario.site.settings,
            import_ramp_kw_per_min=ramp_60_kw,
            import_ramp_kw_per_10s=ramp_10_kw,
            swing_reserve_fraction=fraction,
        ),
    )
    return Scenario(site, scenario.memory, scenario.steps, scenario.seed)


def _off(site: SiteSpec) -> SiteSpec:
    return replace(
        site,
        settings=replace(
            site.settings,
            import_ramp_kw_per_min=None,
            import_ramp_kw_per_10s=None,
            swing_reserve_fraction=0.0,
        ),
    )


# --------------------------------------------------------------------------------------------------
# Off by default: unset keys change nothing.


@PROPERTY_SETTINGS
@given(scenarios(max_steps=8))
def test_off_by_default_and_a_ramp_that_never_binds_changes_no_decision(scenario: Scenario) -> None:
    assert scenario.site.settings.import_ramp_kw_per_min is None
    assert scenario.site.settings.import_ramp_kw_per_10s is None
    assert scenario.site.settings.swing_reserve_fraction == 0.0
    loose = _with_absorber(scenario, 1e15, 1e15, 0.0)
    for (_, _, plan), (_, _, loose_plan) in zip(run(scenario), run(loose), strict=True):
        assert plan.memory.imports == ()
        assert plan.swing_reserve_kw == plan.swing_reserve_th_s == 0.0
        assert not any("absorber" in r or "swing reserve" in r for r in plan.reasons)
        # A ramp no swing can reach: the same commands, caps and budget, only the import ledger kept.
        assert loose_plan.decisions == plan.decisions
        assert loose_plan.tenants == plan.tenants
        assert loose_plan.mining_planned_kw == plan.mining_planned_kw
        assert len(loose_plan.memory.imports) <= MAX_IMPORTS


# --------------------------------------------------------------------------------------------------
# On: never against obligations, the interconnect, firm AI, min on/off times; never restores when blocked.


@PROPERTY_SETTINGS
@given(
    scenarios(max_steps=10),
    st.floats(10.0, 5000.0),
    st.one_of(st.none(), st.floats(5.0, 5000.0)),
    st.floats(0.0, 1.0),
)
def test_the_absorber_binds_after_every_hard_limit(
    scenario: Scenario, ramp_60_kw: float, ramp_10_kw: float | None, fraction: float
) -> None:
    if ramp_10_kw is not None:
        ramp_10_kw = min(ramp_10_kw, ramp_60_kw)
    on = _with_absorber(scenario, ramp_60_kw, ramp_10_kw, fraction)
    site = on.site
    for step, memory, plan in run(on):
        off = compute_plan(_off(site), step.snapshot, step.obligations, step.now, memory)
        # The budget (interconnect, obligations, firm AI's allowance) is the absorber-off plan's; AI
        # caps are exactly the absorber-off plan's: the absorber never caps AI.
        assert plan.mining_budget_kw == off.mining_budget_kw
        assert plan.tenants == off.tenants
        if off.mining_planned_kw <= off.mining_budget_kw + TOL_KW:
            assert plan.mining_planned_kw <= plan.mining_budget_kw + TOL_KW
        assert plan.feasible == off.feasible or plan.mining_planned_kw < off.mining_planned_kw
        blocked = any(o.active(step.now) and o.kind != "base_point" for o in step.obligations) or (
            step.snapshot.site_power_kw is None
            or any(step.snapshot.tenant_power_kw.get(t.tenant_id) is None for t in site.tenants)
            or any(step.snapshot.group_power_kw.get(g.group_id) is None for g in site.groups)
        )
        for group in site.groups:
            before = memory.groups.get(group.group_id)
            after = plan.memory.groups[group.group_id]
            after_kw = _commanded_kw(group, after.mode, after.power_kw)
            if blocked:
                # An obligation (or an unknown reading) holds mining down: nothing rises.
                event("absorber blocked")
                assert after_kw <= _memory_kw(group, memory) + TOL_KW
            if before is None or before.mode == after.mode:
                continue
            hold_s = group.min_on_s if before.mode == "run" else group.min_off_s
            if step.now - before.since_s < hold_s:
                # Only the budget's forced shed may cut a min on-time short; the absorber never does.
                decision = next(d for d in plan.decisions if d.group_id == group.group_id)
                assert "nothing else fits" in decision.reason, decision
        if any("absorber:" in r for r in plan.reasons):
            event("absorber moved mining")


# --------------------------------------------------------------------------------------------------
# Unit sequences with instant physics.

AI_KW = 1000.0
BASE_KW = 200.0


def _site(**control: float | None) -> SiteSpec:
    groups = tuple(
        GroupSpec(
            f"g{i}",
            rated_kw=500.0,
            efficiency_j_per_th=20.0 + i,
            priority=100,
            sleep_kw=10.0,
            supports_power_target=i % 2 == 0,
            min_power_kw=150.0 if i % 2 == 0 else 0.0,
        )
        for i in range(4)
    )
    return SiteSpec(
        interconnect_kw=10_000.0,
        safety_margin_kw=100.0,
        base_load_kw=BASE_KW,
        groups=groups,
        tenants=(TenantSpec("ai", reserved_kw=AI_KW, headroom_kw=0.0),),
        settings=PolicySettings(deadband_kw=0.0, **control),  # type: ignore[arg-type]
    )


def _simulate(
    site: SiteSpec,
    ai_kw: list[float],
    obligations: tuple[Obligation, ...] = (),
    overrides: dict[str, Override] | None = None,
) -> tuple[list[float], list[Plan]]:
    """One plan a second; each group draws its command from the next second. The imports and plans."""
    memory = PolicyMemory()
    power = {g.group_id: g.rated_kw for g in site.groups}
    imports, plans = [], []
    for step, ai in enumerate(ai_kw):
        now = 1000.0 + step
        site_kw = BASE_KW + ai + sum(power.values())
        imports.append(site_kw)
        snapshot = SiteSnapshot(site_kw, {"ai": ai}, dict(power))
        plan = compute_plan(site, snapshot, obligations, now, memory, overrides)
        plans.append(plan)
        memory = plan.memory
        for decision, spec in zip(plan.decisions, site.groups, strict=True):
            asleep = decision.mode == "curtail"
            power[spec.group_id] = spec.sleep_kw if asleep else decision.power_kw or spec.rated_kw
    return imports, plans


def _largest_change(imports: list[float], window_s: int) -> float:
    return max(
        max(imports[i : i + window_s + 1]) - min(imports[i : i + window_s + 1]) for i in range(len(imports))
    )


# 85 s steady (the reserve builds), a 30 % drop over 2 s, 40 s low, back up in one step.
STEADY = 85
DROP = [AI_KW] * STEADY + [0.85 * AI_KW, 0.7 * AI_KW] + [0.7 * AI_KW] * 40 + [AI_KW] * 20
RAMPS = {"import_ramp_kw_per_min": 300.0, "import_ramp_kw_per_10s": 100.0}


def test_an_ai_drop_is_filled_within_the_ramp_where_the_reserve_covers_it() -> None:
    site = _site(**RAMPS, swing_reserve_fraction=0.25)
    imports, plans = _simulate(site, DROP)
    before_kw = imports[STEADY - 1]
    # The reserve built while AI was steady at half the ramp's pace (the absorber's own moves leave
    # the rest to the AI's): 50 kW per 10 s, 150 in any minute.
    assert plans[STEADY - 1].swing_reserve_kw >= 200.0
    assert _largest_change(imports[:STEADY], 10) <= 50.0 + TOL_KW
    assert _largest_change(imports[:STEADY], 60) <= 150.0 + TOL_KW
    # The 300 kW drop shows for the plan's lag (a second here), then mining has filled it: the import
    # is back inside the 10-s ramp of where it was, and moves within both ramps from then on.
    assert imports[STEADY + 2] >= before_kw - 100.0 - TOL_KW
    settled = imports[STEADY + 2 : STEADY + 42]
    assert _largest_change(settled, 10) <= 100.0 + TOL_KW
    assert _largest_change(settled, 60) <= 300.0 + TOL_KW
    fills = [r for p in plans for r in p.reasons if r.startswith("absorber: filling an AI drop")]
    assert fills and "within the 60-s and 10-s ramp" in fills[0]
    assert any("absorber: filling" in d.reason for p in plans for d in p.decisions)  # the group says so
    assert plans[STEADY + 5].swing_reserve_kw < plans[STEADY - 1].swing_reserve_kw  # spent on the drop

    off_imports, _ = _simulate(_site(), DROP)
    assert _largest_change(off_imports[STEADY - 2 : STEADY + 10], 10) >= 300.0 - TOL_KW  # nothing fills
    assert min(off_imports[STEADY + 2 : STEADY + 42]) <= off_imports[STEADY - 1] - 300.0 + TOL_KW


def test_the_reserve_costs_what_the_plan_says() -> None:
    site = _site(swing_reserve_fraction=0.25)
    _, plans = _simulate(site, [AI_KW] * 3)
    plan = plans[-1]
    # 25 % of 2000 kW, held in g0/g2's partial targets and g1/g3 asleep as the merit order allows.
    assert plan.swing_reserve_kw == 500.0
    held = {d.group_id: d for d in plan.decisions}
    assert any(d.mode == "curtail" or d.power_kw is not None for d in held.values())
    assert plan.mining_planned_kw <= 1500.0 + TOL_KW
    # Counted on the most efficient room first: g0 (20 J/TH) then g1 (21) ...
    assert 500.0 * 1000.0 / 23.0 - 1.0 <= plan.swing_reserve_th_s <= 500.0 * 1000.0 / 20.0 + 1.0
    assert any(
        r.startswith("swing reserve: 500 of 500 kW held") and "TH/s given up" in r for r in plan.reasons
    )


def test_an_obligation_holds_mining_down_through_an_ai_drop() -> None:
    site = _site(**RAMPS, swing_reserve_fraction=0.25)
    limit = Obligation("ev-1", "limit", kw=BASE_KW + 100.0 + AI_KW + 600.0, start_s=1060.0, end_s=None)
    _, plans = _simulate(site, DROP, obligations=(limit,))
    for before, plan in itertools.pairwise(plans):
        if plan.computed_at_s < 1060.0:
            continue
        assert plan.mining_planned_kw <= before.mining_planned_kw + TOL_KW
        assert not any("absorber: filling" in r for r in plan.reasons)
    assert all(p.mining_planned_kw <= 600.0 + TOL_KW for p in plans if p.computed_at_s >= 1060.0)


def test_an_override_holds_its_group_and_min_off_time_holds_a_wake() -> None:
    site = _site(**RAMPS, swing_reserve_fraction=0.25)
    groups = tuple(replace(g, min_off_s=1000.0) if g.group_id == "g1" else g for g in site.groups)
    site = replace(site, groups=groups)
    held = {"g0": Override("g0", "curtail", until_s=1e9)}
    _, plans = _simulate(site, DROP, overrides=held)
    for plan in plans:
        modes = {d.group_id: d for d in plan.decisions}
        assert modes["g0"].mode == "curtail"
    # g1 slept for the reserve, then stays asleep through the drop: its min off-time holds.
    slept = [p.computed_at_s for p in plans if p.modes()["g1"] == "curtail"]
    if slept:
        assert all(p.modes()["g1"] == "curtail" for p in plans if p.computed_at_s >= slept[0])


def test_a_rise_is_shed_within_the_ramp_as_far_as_mining_can() -> None:
    site = _site(**RAMPS)
    rise = [0.4 * AI_KW] * 5 + [AI_KW] * 20
    imports, plans = _simulate(site, rise)
    # 600 kW up at once, unseen for one plan; then mining sheds back to within the 10-s ramp of where
    # the import was, least efficient first (g3, asleep whole, then g2's partial target).
    assert imports[5] - imports[4] == 600.0
    assert imports[6] <= imports[4] + 100.0 + TOL_KW
    assert any(r.startswith("absorber: shed so the import rises within the") for r in plans[5].reasons)
    assert plans[5].modes()["g3"] == "curtail"
    off_imports, _ = _simulate(_site(), rise)
    assert off_imports[6] - off_imports[4] == 600.0


def test_the_import_ledger_is_a_bounded_step_function_of_window_extremes() -> None:
    ledger: tuple[tuple[float, float], ...] = ()
    for i in range(2000):
        ledger = keep_imports(ledger, float(i) * 0.01, float(i))  # rising: each entry a later minimum
    assert len(ledger) <= MAX_IMPORTS
    assert ledger[-1] == (1999 * 0.01, 1999.0)
    flat: tuple[tuple[float, float], ...] = ()
    for i in range(100):
        flat = keep_imports(flat, float(i), 500.0)
    assert flat == ((0.0, 500.0),)  # the same import planned again adds nothing
    assert keep_imports(((0.0, 1.0),), 61.0, None) == ()  # unknown: start afresh
    # 100 kW from 0 s, 50 from 10 s, 200 from 20 s, 40 from 30 s: 100 and 50 lie between later ones
    # (no window's extreme), so they go and 200 takes over from 0 s (every window reaching back there
    # holds 200 and 40 too).
    steps = ((0.0, 100.0), (10.0, 50.0), (20.0, 200.0), (30.0, 40.0))
    ledger = ()
    for t, kw in steps:
        ledger = keep_imports(ledger, t, kw)
    assert ledger == ((0.0, 200.0), (30.0, 40.0))
    assert in_window(ledger, 10.0, 35.0) == [200.0, 40.0]  # 200 was in force at 25 s
    assert in_window(ledger, 60.0, 95.0) == [40.0]
    assert keep_imports(ledger, 95.0, 40.0) == ((30.0, 40.0),)  # 200 left every window at 90 s
    # When an import stops being in force it leaves each window: the plan may change then.
    site = _site(import_ramp_kw_per_min=300.0)
    memory = PolicyMemory(imports=((90.0, 7.0), (100.0, 5.0)))
    assert next_change_s(site, memory, (), {}, 101.0) == 110.0
    assert next_change_s(site, memory, (), {}, 111.0) == 160.0
    assert next_change_s(site, PolicyMemory(imports=((100.0, 5.0),)), (), {}, 101.0) is None


# --------------------------------------------------------------------------------------------------
# [control] keys: validated, off by default, mapped onto PolicySettings.


def _config(**control: object) -> dict:
    data = tomllib.loads((ROOT / "deploy" / "site.example.toml").read_text())
    data["control"].update(control)
    return data


def test_the_control_keys_are_off_by_default_and_reach_the_policy() -> None:
    config = parse_config(_config())
    assert config.control.import_ramp_kw_per_min is None
    assert config.control.import_ramp_kw_per_10s is None
    assert config.control.swing_reserve_fraction == 0.0
    off = config.site_spec().settings
    assert (off.import_ramp_kw_per_min, off.import_ramp_kw_per_10s, off.swing_reserve_fraction) == (
        None,
        None,
        0,
    )
    on = parse_config(
        _config(import_ramp_kw_per_min=2000.0, import_ramp_kw_per_10s=500.0, swing_reserve_fraction=0.2)
    )
    settings_on = on.site_spec().settings
    assert (settings_on.import_ramp_kw_per_min, settings_on.import_ramp_kw_per_10s) == (2000.0, 500.0)
    assert settings_on.swing_reserve_fraction == 0.2


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ({"import_ramp_kw_per_min": 0}, "control.import_ramp_kw_per_min: must be > 0"),
        ({"import_ramp_kw_per_10s": -5}, "control.import_ramp_kw_per_10s: must be > 0"),
        (
            {"import_ramp_kw_per_min": 100, "import_ramp_kw_per_10s": 200},
            "import_ramp_kw_per_10s: must be <= import_ramp_kw_per_min (100), got 200",
        ),
        ({"swing_reserve_fraction": 1.5}, "control.swing_reserve_fraction: must be <= 1"),
        ({"swing_reserve_fraction": -0.1}, "control.swing_reserve_fraction: must be >= 0"),
    ],
)
def test_bad_absorber_keys_name_the_key(control: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(**control))
    assert any(expected in problem for problem in info.value.problems), info.value.problems


# --------------------------------------------------------------------------------------------------
# The meter's import ramp (mullet_import_ramp_10s_watts / _60s_watts).


def test_the_import_ramp_is_the_largest_change_within_each_span_of_the_last_minute() -> None:
    ramp = ImportRamp()
    assert ramp.largest_kw(10.0, 0.0) is None  # unknown, not 0
    for t in range(30):  # flat, then a 300 kW step over 2 s at 30 s, then flat
        ramp.add(float(t), 1000.0)
    ramp.add(30.0, 850.0)
    ramp.add(31.0, 700.0)
    ramp.add(29.5, 5000.0)  # out of order: ignored
    for t in range(32, 50):
        ramp.add(float(t), 700.0 + 10.0 * (t - 31))  # filled back at 10 kW/s
    assert ramp.largest_kw(10.0, 49.0) == 300.0
    assert ramp.largest_kw(60.0, 49.0) == 300.0
    assert ramp.largest_kw(1.0, 49.0) == 150.0
    # A minute later the step has left; only the slow fill is within the window.
    for t in range(50, 95):
        ramp.add(float(t), 880.0)
    assert ramp.largest_kw(10.0, 94.0) == 10.0 * 10  # 10 kW/s for 10 s
    assert ramp.largest_kw(60.0, 94.0) == 880.0 - 730.0  # from t = 34 s
    for t in range(2000):  # bounded whatever the sample rate
        ramp.add(100.0 + t * 0.001, 1.0)
    assert len(ramp._samples) == MAX_SAMPLES


def test_with_an_ai_reading_unknown_the_reserve_is_not_built_past_the_ramp() -> None:
    # The e2e test found it: a daemon's first plans, before the tenants report, slept whole groups for
    # the reserve with no band to keep the import in.
    site = _site(**RAMPS, swing_reserve_fraction=0.5)
    power = {g.group_id: g.rated_kw for g in site.groups}
    snapshot = SiteSnapshot(BASE_KW + AI_KW + sum(power.values()), {"ai": None}, power)
    plan = compute_plan(site, snapshot, (), 1000.0, PolicyMemory())
    assert plan.mining_planned_kw == sum(power.values())
    assert plan.memory.imports == ()
    known = SiteSnapshot(snapshot.site_power_kw, {"ai": AI_KW}, power)
    plan = compute_plan(site, known, (), 1001.0, plan.memory)
    assert plan.mining_planned_kw == sum(power.values()) - 50.0  # half the 10-s ramp, partial


# --------------------------------------------------------------------------------------------------
# With the ramp on, the import the plans make moves within it whenever mining is not at an end.


@st.composite
def swinging_sites(draw: st.DrawFn) -> tuple[SiteSpec, list[tuple[float, float]]]:
    """Partial-target groups with no min on/off times under an ample interconnect, and an AI tenant
    swinging at random: (site, [(dt s, AI kW)])."""
    groups = tuple(
        GroupSpec(
            f"g{i}",
            rated_kw=(rated := draw(st.floats(100.0, 2000.0))),
            efficiency_j_per_th=draw(st.floats(15.0, 40.0)),
            priority=draw(st.integers(0, 5)),
            sleep_kw=0.02 * rated,
            supports_power_target=True,
            min_power_kw=0.1 * rated,
        )
        for i in range(draw(st.integers(1, 6)))
    )
    ai_max_kw = draw(st.floats(100.0, 10_000.0))
    ramp_60_kw = draw(st.floats(20.0, 3000.0))
    ramp_10_kw = draw(st.one_of(st.none(), st.floats(10.0, ramp_60_kw)))
    site = SiteSpec(
        interconnect_kw=1e7,
        safety_margin_kw=0.0,
        base_load_kw=draw(st.floats(0.0, 500.0)),
        groups=groups,
        tenants=(TenantSpec("ai", reserved_kw=ai_max_kw, headroom_kw=0.0),),
        settings=PolicySettings(
            deadband_kw=0.0,
            import_ramp_kw_per_min=ramp_60_kw,
            import_ramp_kw_per_10s=ramp_10_kw,
            swing_reserve_fraction=draw(st.floats(0.2, 0.9)),  # mostly room both ways
        ),
    )
    steps = draw(
        st.lists(st.tuples(st.floats(0.2, 20.0), st.floats(0.0, ai_max_kw)), min_size=2, max_size=30)
    )
    return site, steps


@PROPERTY_SETTINGS
@given(swinging_sites())
def test_the_planned_import_moves_within_the_ramp_while_mining_can_cover_the_swing(
    case: tuple[SiteSpec, list[tuple[float, float]]],
) -> None:
    site, steps = case
    settings_ = site.settings
    full_kw = sum(g.rated_kw for g in site.groups)
    lowest_kw = sum(g.min_power_kw for g in site.groups)
    slack_kw = 1.0 * len(site.groups) + TOL_KW  # whole-kW targets
    memory = PolicyMemory()
    power = {g.group_id: g.rated_kw for g in site.groups}
    ai_kw = steps[0][1]
    now = 1000.0
    # The first plan's band starts from the import the commands make (all groups at full power).
    history: list[tuple[float, float]] = [(now, site.base_load_kw + ai_kw + full_kw)]
    for dt_s, ai_kw in steps:
        now += dt_s
        snapshot = SiteSnapshot(site.base_load_kw + ai_kw + sum(power.values()), {"ai": ai_kw}, dict(power))
        plan = compute_plan(site, snapshot, (), now, memory)
        memory = plan.memory
        # Planned again on the same inputs with its own memory, mining does not turn back (a shed
        # then a fill, or the reverse, would be flapping on nothing new).
        again = compute_plan(site, snapshot, (), now, memory)
        moved_kw = plan.mining_planned_kw - sum(power.values())
        then_kw = again.mining_planned_kw - plan.mining_planned_kw
        assert not (moved_kw < -slack_kw and then_kw > slack_kw), (moved_kw, then_kw)
        assert not (moved_kw > slack_kw and then_kw < -slack_kw), (moved_kw, then_kw)
        for decision, spec in zip(plan.decisions, site.groups, strict=True):
            power[spec.group_id] = (
                spec.sleep_kw if decision.mode == "curtail" else decision.power_kw or spec.rated_kw
            )
        import_kw = site.base_load_kw + ai_kw + plan.mining_planned_kw
        saturated = not (lowest_kw + slack_kw < plan.mining_planned_kw < full_kw - slack_kw)
        if saturated:
            event("mining at an end: the swing passes through")
            return  # mining could not cover it: the ramp may be broken, by the swing, from here on
        for window_s, ramp_kw in (
            (60.0, settings_.import_ramp_kw_per_min),
            (10.0, settings_.import_ramp_kw_per_10s),
        ):
            if ramp_kw is None:
                continue
            recent = [kw for t, kw in history if t >= now - window_s]
            if recent:
                assert import_kw >= max(recent) - ramp_kw - slack_kw, (window_s, import_kw, recent)
                assert import_kw <= min(recent) + ramp_kw + slack_kw, (window_s, import_kw, recent)
        history.append((now, import_kw))
    event(f"every step covered ({len(steps) // 10 * 10}+ steps)")


def test_a_fill_prefers_moves_that_keep_the_import_at_or_below_where_it_was() -> None:
    whole = GroupSpec("whole", 500.0, 15.0, 100, 10.0)  # the most efficient, asleep, no power target
    partial = GroupSpec("partial", 500.0, 30.0, 100, 10.0, supports_power_target=True, min_power_kw=100.0)
    site = SiteSpec(
        10_000.0,
        0.0,
        0.0,
        (whole, partial),
        (TenantSpec("ai", 2000.0, 0.0),),
        PolicySettings(deadband_kw=0.0, import_ramp_kw_per_min=300.0, import_ramp_kw_per_10s=300.0),
    )
    before_kw = 2000.0 + 10.0 + 200.0
    memory = PolicyMemory(
        groups={"whole": GroupMemory("curtail", None, 0.0), "partial": GroupMemory("run", 200.0, 0.0)},
        imports=((999.0, before_kw),),
    )
    power = {"whole": 10.0, "partial": 200.0}
    # AI drops 400 kW: the floor is 300 kW below where the import was, 100 kW to fill.
    snapshot = SiteSnapshot(1600.0 + 210.0, {"ai": 1600.0}, power)
    plan = compute_plan(site, snapshot, (), 1000.0, memory)
    modes = {d.group_id: d for d in plan.decisions}
    # Waking the whole group would put the import 90 kW above where it was (inside the ramp, but the
    # AI's return would land on it): the partial group's 100 kW does it.
    assert modes["whole"].mode == "curtail"
    assert modes["partial"].power_kw == 300.0
    assert 1600.0 + plan.mining_planned_kw == before_kw - 300.0
    # With only the whole group to move, it wakes: inside the band beats 300 kW under its floor.
    memory = replace(memory, groups={**memory.groups, "partial": GroupMemory("run", 100.0, 0.0)})
    power = {"whole": 10.0, "partial": 100.0}
    site = replace(site, groups=(whole, replace(partial, rated_kw=100.0)))
    snapshot = SiteSnapshot(1600.0 + 110.0, {"ai": 1600.0}, power)
    plan = compute_plan(site, snapshot, (), 1000.0, replace(memory, imports=((999.0, 2110.0),)))
    assert plan.modes()["whole"] == "run"
    assert any(r.startswith("absorber: filling an AI drop") for r in plan.reasons)


def test_skipping_quiet_cycles_plans_as_planning_every_cycle_does() -> None:
    # `mulletd replay` plans only when an input changes or a time rule ends (plan_timers): the import
    # ledger's windows must be among those rules, and a plan that changes nothing must add nothing.
    site = _site(**RAMPS, swing_reserve_fraction=0.25)
    ai = {1000: AI_KW, 1030: 0.7 * AI_KW, 1031: 0.4 * AI_KW, 1050: 0.9 * AI_KW, 1090: AI_KW}
    power = {g.group_id: g.rated_kw for g in site.groups}

    def snapshot(now: int) -> SiteSnapshot:
        level = ai[max(t for t in ai if t <= now)]
        return SiteSnapshot(BASE_KW + level + sum(power.values()), {"ai": level}, dict(power))

    every: dict[int, Plan] = {}
    memory = PolicyMemory()
    for now in range(1000, 1200):
        every[now] = compute_plan(site, snapshot(now), (), float(now), memory)
        memory = every[now].memory
    skipped: dict[int, Plan] = {}
    memory, now = PolicyMemory(), 1000
    while now < 1200:
        skipped[now] = compute_plan(site, snapshot(now), (), float(now), memory)
        memory = skipped[now].memory
        timer_s = next_change_s(site, memory, (), {}, float(now))
        later = [t for t in ai if t > now] + ([math.ceil(timer_s)] if timer_s is not None else []) + [1200]
        now = min(later)
    assert len(skipped) < len(every) / 3
    last: Plan | None = None
    for now, plan in every.items():
        last = skipped.get(now, last)
        assert last is not None
        # The same commands (a reason may say "restore waits" where the last plan said why it moved).
        assert [(d.mode, d.power_kw) for d in plan.decisions] == [
            (d.mode, d.power_kw) for d in last.decisions
        ], now
    assert any("absorber: filling" in r for p in skipped.values() for r in p.reasons)
