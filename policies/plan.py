"""Policy v0: the site budget and the merit order that fits mining load under it.

budget = min(interconnect, active obligations) - safety margin - base load - AI allowance.
Mining groups are curtailed least-efficient first (highest J/TH), then lowest priority, until the
mining load planned at rated kW fits. Restores happen only when every reading the budget depends on
is known: a stale reading may justify shedding, never adding load (evcc's rule for a stale meter).
"""

from __future__ import annotations

from collections.abc import Sequence

from mullet.policies.model import (
    GroupDecision,
    GroupMode,
    GroupSpec,
    Obligation,
    Plan,
    SiteSnapshot,
    SiteSpec,
    TenantSpec,
)


def merit_order(groups: Sequence[GroupSpec]) -> list[GroupSpec]:
    """Shed order: least efficient (highest J/TH) first, then lowest priority, then id for determinism."""
    return sorted(groups, key=lambda g: (-g.efficiency_j_per_th, g.priority, g.group_id))


def tenant_allowance_kw(tenant: TenantSpec, power_kw: float | None) -> float:
    """What the budget keeps for a tenant: its firm reserve or its measured load if above, plus headroom.

    An unknown reading counts as the reserve (the tenant may be drawing it), never as zero.
    """
    load_kw = tenant.reserved_kw if power_kw is None else max(tenant.reserved_kw, power_kw)
    return load_kw + tenant.headroom_kw


def site_limit(
    site: SiteSpec, obligations: Sequence[Obligation], now: float
) -> tuple[float, str, tuple[str, ...]]:
    """The tightest import limit in force now, which constraint it is, and the active obligation ids."""
    limit_kw = site.interconnect_kw
    binding = "interconnect"
    active: list[str] = []
    for obligation in sorted(obligations, key=lambda o: o.event_id):
        if not obligation.active(now):
            continue
        active.append(obligation.event_id)
        obligation_kw = obligation.site_limit_kw()
        if obligation_kw < limit_kw:
            limit_kw = obligation_kw
            binding = f"{obligation.kind} {obligation.event_id} ({obligation.program})"
    return limit_kw, binding, tuple(active)


def compute_plan(
    site: SiteSpec,
    snapshot: SiteSnapshot,
    obligations: Sequence[Obligation],
    now: float,
) -> Plan:
    limit_kw, binding, active = site_limit(site, obligations, now)
    ai_allowance_kw = sum(
        tenant_allowance_kw(t, snapshot.tenant_power_kw.get(t.tenant_id)) for t in site.tenants
    )
    mining_budget_kw = limit_kw - site.safety_margin_kw - site.base_load_kw - ai_allowance_kw
    reasons = [
        f"limit {limit_kw:.0f} kW from {binding}",
        f"mining budget {mining_budget_kw:.0f} kW = limit - margin {site.safety_margin_kw:.0f}"
        f" - base {site.base_load_kw:.0f} - AI allowance {ai_allowance_kw:.0f}",
    ]

    stale = _stale_inputs(site, snapshot)
    if stale:
        reasons.append(f"restores held: {', '.join(stale)} unknown")

    # Start from everything running, then shed in merit order until the plan fits.
    modes: dict[str, GroupMode] = {g.group_id: "run" for g in site.groups}
    why: dict[str, str] = {g.group_id: f"fits: mining budget {mining_budget_kw:.0f} kW" for g in site.groups}
    planned_kw = sum(g.rated_kw for g in site.groups)
    for group in merit_order(site.groups):
        if planned_kw <= mining_budget_kw:
            break
        modes[group.group_id] = "curtail"
        over_kw = planned_kw - mining_budget_kw
        why[group.group_id] = (
            f"shed: {over_kw:.0f} kW over mining budget under {binding};"
            f" {group.efficiency_j_per_th:g} J/TH, priority {group.priority}"
        )
        planned_kw -= group.rated_kw - group.sleep_kw

    if stale:
        for group in site.groups:
            if modes[group.group_id] == "run" and snapshot.commanded_modes.get(group.group_id) == "curtail":
                modes[group.group_id] = "curtail"
                why[group.group_id] = f"held curtailed: {', '.join(stale)} unknown, no restore"
                planned_kw -= group.rated_kw - group.sleep_kw

    feasible = planned_kw <= mining_budget_kw + 1e-9
    if not feasible:
        reasons.append(
            f"infeasible: all mining curtailed and still {planned_kw - mining_budget_kw:.0f} kW over;"
            " firm AI load is never curtailed"
        )

    decisions = tuple(
        GroupDecision(group_id=g.group_id, mode=modes[g.group_id], power_kw=None, reason=why[g.group_id])
        for g in site.groups
    )
    return Plan(
        computed_at_s=now,
        site_limit_kw=limit_kw,
        binding_constraint=binding,
        ai_allowance_kw=ai_allowance_kw,
        mining_budget_kw=mining_budget_kw,
        mining_planned_kw=planned_kw,
        feasible=feasible,
        active_obligations=active,
        decisions=decisions,
        reasons=tuple(reasons),
    )


def _stale_inputs(site: SiteSpec, snapshot: SiteSnapshot) -> list[str]:
    stale: list[str] = []
    if snapshot.site_power_kw is None:
        stale.append("site meter")
    for tenant in site.tenants:
        if snapshot.tenant_power_kw.get(tenant.tenant_id) is None:
            stale.append(f"tenant {tenant.tenant_id}")
    return stale
