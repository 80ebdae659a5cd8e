"""`PlanCache`: the caller's memo for `compute_plan` changes how much work a plan takes, never the plan."""

from __future__ import annotations

from dataclasses import replace

from mullet.policies.model import (
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
from mullet.policies.plan import PlanCache, compute_plan, merit_order


def _site(groups: tuple[GroupSpec, ...] | None = None) -> SiteSpec:
    """Six groups of three efficiencies, one tenant, a trip stage (so reasons get the armed text)."""
    specs = groups or tuple(
        GroupSpec(
            f"g{i}", rated_kw=500, efficiency_j_per_th=(29.5, 21.5, 17.5)[i % 3], priority=10, sleep_kw=10
        )
        for i in range(6)
    )
    settings = PolicySettings(
        restore_ramp_kw_per_min=1200.0, trip_stages=(TripStage(1, 59.7, shed_kw=400.0),)
    )
    return SiteSpec(6000.0, 100.0, 200.0, specs, (TenantSpec("ai-a", 2000, 300),), settings)


def _readings(site: SiteSpec) -> SiteSnapshot:
    return SiteSnapshot(5000.0, {"ai-a": 1900.0}, {g.group_id: g.rated_kw for g in site.groups})


def _run(site: SiteSpec, cache: PlanCache | None) -> list[Plan]:
    """Steady, then a limit that sheds half the mining, then its end and the staggered restore."""
    limit = Obligation("ev-1", "limit", kw=4100.0, start_s=100.0, end_s=200.0)
    plans: list[Plan] = []
    memory: PolicyMemory | None = None
    for now in range(0, 400, 10):
        plan = compute_plan(site, _readings(site), [limit], float(now), memory, cache=cache)
        plans.append(plan)
        memory = plan.memory
    return plans


def test_plans_made_with_a_cache_equal_plans_made_without_and_reuse_unchanged_decisions() -> None:
    site = _site()
    cache = PlanCache()
    cached, fresh = _run(site, cache), _run(site, None)
    assert cached == fresh
    assert any(d.mode == "curtail" for d in cached[12].decisions)  # the limit shed something
    assert all(d.mode == "run" and d.power_kw is None for d in cached[-1].decisions)  # and all came back
    # An unchanged decision is the previous plan's object with the cache, a new one without.
    assert cached[1].decisions[0] is cached[0].decisions[0]
    assert fresh[1].decisions[0] is not fresh[0].decisions[0]


def test_a_cache_follows_a_reload_that_changes_the_groups() -> None:
    site = _site()
    cache = PlanCache()
    _run(site, cache)
    # Same ids, same count, efficiencies reversed: a ranking kept from the old groups would shed the
    # wrong ones and give them the wrong merit order in their reasons.
    reloaded = replace(
        site,
        groups=tuple(replace(g, efficiency_j_per_th=47.0 - g.efficiency_j_per_th) for g in site.groups),
    )
    assert merit_order(reloaded.groups) != merit_order(site.groups)
    assert _run(reloaded, cache) == _run(reloaded, None)


def test_one_cache_per_site_planned_in_turn_gives_each_site_its_own_plans() -> None:
    one, other = _site(), _site(tuple(GroupSpec(f"h{i}", 400, 20.0 + i, 10, 8) for i in range(8)))
    caches = {id(one): PlanCache(), id(other): PlanCache()}
    shared = PlanCache()
    for site in (one, other, one, other):
        assert _run(site, caches[id(site)]) == _run(site, None) == _run(site, shared)
