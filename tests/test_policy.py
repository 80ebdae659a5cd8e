"""Policy v0: budget, merit order, restore gating. Pure code, so properties are checked with hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mullet.policies.model import GroupSpec, Obligation, SiteSnapshot, SiteSpec, TenantSpec
from mullet.policies.plan import compute_plan, merit_order, tenant_allowance_kw


def _site(**overrides: object) -> SiteSpec:
    groups = (
        GroupSpec("old", rated_kw=600, efficiency_j_per_th=29.5, priority=10, sleep_kw=12),
        GroupSpec("mid", rated_kw=650, efficiency_j_per_th=21.5, priority=10, sleep_kw=13),
        GroupSpec("new-lo", rated_kw=700, efficiency_j_per_th=17.5, priority=10, sleep_kw=14),
        GroupSpec("new-hi", rated_kw=700, efficiency_j_per_th=17.5, priority=50, sleep_kw=14),
    )
    tenants = (TenantSpec("ai-a", reserved_kw=2000, headroom_kw=300),)
    values: dict[str, object] = {
        "interconnect_kw": 6000.0,
        "safety_margin_kw": 100.0,
        "base_load_kw": 200.0,
        "groups": groups,
        "tenants": tenants,
    }
    values.update(overrides)
    return SiteSpec(**values)  # type: ignore[arg-type]


def _snapshot(site_kw: float | None = 5000.0, ai_kw: float | None = 1900.0) -> SiteSnapshot:
    return SiteSnapshot(site_power_kw=site_kw, tenant_power_kw={"ai-a": ai_kw})


def test_no_obligation_everything_runs_within_interconnect() -> None:
    plan = compute_plan(_site(), _snapshot(), [], now=100.0)
    assert plan.curtailed() == ()
    assert plan.binding_constraint == "interconnect"
    # 6000 - 100 - 200 - (2000 + 300)
    assert plan.mining_budget_kw == 3400.0


def test_limit_sheds_least_efficient_first_then_lowest_priority() -> None:
    limit = Obligation("ev-1", "limit", kw=4000.0, start_s=0.0, end_s=None)
    plan = compute_plan(_site(), _snapshot(), [limit], now=10.0)
    # budget = 4000 - 100 - 200 - 2300 = 1400: shed old (29.5), mid (21.5), then new-lo (priority 10)
    assert plan.curtailed() == ("old", "mid", "new-lo")
    assert plan.mining_planned_kw <= plan.mining_budget_kw
    assert "limit ev-1" in plan.binding_constraint
    reasons = {d.group_id: d.reason for d in plan.decisions}
    assert reasons["old"].startswith("shed:") and "29.5 J/TH" in reasons["old"]


def test_merit_order_is_deterministic() -> None:
    order = [g.group_id for g in merit_order(_site().groups)]
    assert order == ["old", "mid", "new-lo", "new-hi"]


def test_obligation_outside_its_window_is_ignored_and_restore_follows_its_end() -> None:
    limit = Obligation("ev-1", "limit", kw=4000.0, start_s=50.0, end_s=80.0)
    assert compute_plan(_site(), _snapshot(), [limit], now=10.0).curtailed() == ()
    assert len(compute_plan(_site(), _snapshot(), [limit], now=60.0).curtailed()) == 3
    assert compute_plan(_site(), _snapshot(), [limit], now=80.0).curtailed() == ()


def test_reduce_uses_the_baseline_fixed_at_acceptance() -> None:
    reduce = Obligation("ev-2", "reduce", kw=1500.0, start_s=0.0, end_s=None, baseline_kw=5500.0)
    plan = compute_plan(_site(), _snapshot(), [reduce], now=1.0)
    assert plan.site_limit_kw == 4000.0


def test_unknown_tenant_reading_counts_as_reserve_never_zero() -> None:
    tenant = TenantSpec("ai-a", reserved_kw=2000, headroom_kw=300)
    assert tenant_allowance_kw(tenant, None) == 2300.0
    assert tenant_allowance_kw(tenant, 0.0) == 2300.0
    assert tenant_allowance_kw(tenant, 2500.0) == 2800.0


def test_stale_meter_holds_curtailed_groups_but_still_sheds() -> None:
    site = _site()
    limit = Obligation("ev-1", "limit", kw=4000.0, start_s=0.0, end_s=10.0)
    during = compute_plan(site, _snapshot(), [limit], now=5.0)
    commanded = during.modes()
    after_stale = compute_plan(
        site,
        SiteSnapshot(site_power_kw=None, tenant_power_kw={"ai-a": 1900.0}, commanded_modes=commanded),
        [limit],
        now=20.0,
    )
    assert after_stale.curtailed() == during.curtailed()
    assert any("restores held" in r for r in after_stale.reasons)
    after_fresh = compute_plan(
        site, SiteSnapshot(5000.0, {"ai-a": 1900.0}, commanded_modes=commanded), [limit], now=20.0
    )
    assert after_fresh.curtailed() == ()


def test_infeasible_limit_curtails_all_mining_and_says_so_but_never_touches_ai() -> None:
    limit = Obligation("ev-1", "limit", kw=1000.0, start_s=0.0, end_s=None)
    plan = compute_plan(_site(), _snapshot(), [limit], now=1.0)
    assert len(plan.curtailed()) == 4
    assert not plan.feasible
    assert any("infeasible" in r for r in plan.reasons)


_groups = st.lists(
    st.builds(
        lambda i, rated, eff, prio: GroupSpec(f"g{i}", rated, eff, prio, rated * 0.02),
        st.integers(0, 10_000),
        st.floats(50, 5000),
        st.floats(10, 40),
        st.integers(0, 100),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda g: g.group_id,
)


@settings(max_examples=300, deadline=None)
@given(
    groups=_groups,
    limit_kw=st.floats(0, 100_000),
    ai_kw=st.one_of(st.none(), st.floats(0, 5000)),
    site_kw=st.one_of(st.none(), st.floats(0, 100_000)),
)
def test_plan_properties(
    groups: list[GroupSpec], limit_kw: float, ai_kw: float | None, site_kw: float | None
) -> None:
    site = _site(groups=tuple(groups), interconnect_kw=200_000.0)
    limit = Obligation("ev", "limit", kw=limit_kw, start_s=0.0, end_s=None)
    plan = compute_plan(site, SiteSnapshot(site_kw, {"ai-a": ai_kw}), [limit], now=1.0)
    curtailed = set(plan.curtailed())
    # Fits whenever it is feasible at all; infeasible only when every group is curtailed.
    sleep_total_kw = sum(g.sleep_kw for g in groups)
    if sleep_total_kw <= plan.mining_budget_kw:
        assert plan.feasible
        assert plan.mining_planned_kw <= plan.mining_budget_kw + 1e-6
    else:
        assert curtailed == {g.group_id for g in groups}
    # Merit order: no running group is less efficient than a curtailed one (ties broken by priority).
    rank = {g.group_id: i for i, g in enumerate(merit_order(groups))}
    if curtailed:
        last_shed = max(rank[g] for g in curtailed)
        assert all(rank[g] <= last_shed for g in curtailed)
        assert all(rank[g.group_id] > last_shed for g in groups if g.group_id not in curtailed)
    # The AI allowance never drops below the firm reserve plus headroom.
    assert plan.ai_allowance_kw >= 2300.0
    # Every decision explains itself.
    assert all(d.reason for d in plan.decisions)
    # Deterministic.
    assert plan == compute_plan(site, SiteSnapshot(site_kw, {"ai-a": ai_kw}), [limit], now=1.0)
