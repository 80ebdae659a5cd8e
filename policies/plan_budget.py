"""The plan's budget: the limit in force, what the AI tenants may draw (and their caps), what is left for
mining; and, once all mining is shed and the plan is still over, the caps on flexible AI shares. Part of
`compute_plan` (policies/plan.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mullet.policies.budget import site_limit, tenant_allowance_kw
from mullet.policies.model import Obligation, SiteSnapshot, SiteSpec, TenantDecision
from mullet.policies.plan_groups import EPSILON_KW, WorkingGroup

__all__ = ["Budget", "base_point_in_force", "cap_ai_flex", "make_budget"]


@dataclass(slots=True)
class Budget:
    """The site's power budget while a plan is made. Restores lift caps out of `mining_max_kw`, and AI
    flex caps add to it: the phases update it in place. A base point caps mining below it (`mining_kw`)
    and never moves the AI allowance."""

    limit_kw: float
    binding: str  # the constraint that sets the mining budget, named (the base point when it binds)
    site_binding: str  # the constraint that sets the site limit, named
    active: tuple[Obligation, ...]  # the obligations in force
    full_allowances: dict[str, float]  # kW by tenant, uncapped
    caps: dict[str, float]  # kW by tenant, the caps in force (each below the full allowance)
    allowances: dict[str, float]  # kW by tenant, capped
    ai_allowance_kw: float
    mining_max_kw: float  # what the site limit leaves for mining, a base point aside
    cap_reasons: dict[str, str]  # by tenant, set by the phase that moved its cap
    base_point: Obligation | None = None  # the base point mining follows, if one is in force

    @property
    def base_point_kw(self) -> float:
        return math.inf if self.base_point is None else self.base_point.kw

    @property
    def mining_kw(self) -> float:
        """What is left for mining: the site limit's share, or the base point if lower."""
        return min(self.mining_max_kw, self.base_point_kw)


def base_point_in_force(active: Sequence[Obligation]) -> Obligation | None:
    """The base point mining follows: the latest start wins, ties by event id (the book holds one at a
    time; the policy still answers for several)."""
    points = [o for o in active if o.kind == "base_point"]
    return max(points, key=lambda o: (o.start_s, o.event_id)) if points else None


def make_budget(
    site: SiteSpec,
    snapshot: SiteSnapshot,
    obligations: Sequence[Obligation],
    now: float,
    caps_in_force: Mapping[str, float],
) -> Budget:
    """The tightest limit in force, less safety margin, base load and the AI allowance; and the base
    point in force, if any, which caps what is left for mining."""
    limit_kw, site_binding, active = site_limit(site, obligations, now)
    full_allowances = {
        t.tenant_id: tenant_allowance_kw(t, snapshot.tenant_power_kw.get(t.tenant_id)) for t in site.tenants
    }
    # A cap at or above what the tenant would be allowed anyway constrains nothing: it just ends.
    caps = {t: kw for t, kw in caps_in_force.items() if t in full_allowances and kw < full_allowances[t]}
    allowances = {t: min(kw, caps.get(t, kw)) for t, kw in full_allowances.items()}
    ai_allowance_kw = sum(allowances.values())
    fixed_kw = site.safety_margin_kw + site.base_load_kw
    mining_max_kw = limit_kw - fixed_kw - ai_allowance_kw
    point = base_point_in_force(active)
    binding = site_binding
    if point is not None and point.kw < mining_max_kw:
        binding = f"base_point '{point.event_id}' ({point.program})"
    return Budget(
        limit_kw=limit_kw,
        binding=binding,
        site_binding=site_binding,
        active=active,
        full_allowances=full_allowances,
        caps=caps,
        allowances=allowances,
        ai_allowance_kw=ai_allowance_kw,
        mining_max_kw=mining_max_kw,
        cap_reasons={},
        base_point=point,
    )


def cap_ai_flex(
    site: SiteSpec, budget: Budget, groups: list[WorkingGroup], planned_kw: float
) -> tuple[TenantDecision, ...]:
    """Tighten caps on flexible AI shares if all mining is shed and the plan is still over, and say
    why each tenant is (un)capped. The kW freed move from the AI allowance to the mining budget.
    Firm kW is never capped, and a base point never caps AI: "over" is against the site limit's share."""
    decisions, relief_kw = _tenant_caps(
        site,
        budget.allowances,
        budget.caps,
        budget.cap_reasons,
        groups,
        budget.active,
        planned_kw - budget.mining_max_kw,
        budget.site_binding,
    )
    if relief_kw > 0:
        budget.ai_allowance_kw -= relief_kw
        budget.mining_max_kw += relief_kw
    return decisions


def _tenant_caps(
    site: SiteSpec,
    allowances: dict[str, float],
    caps: dict[str, float],
    cap_reasons: dict[str, str],
    groups: list[WorkingGroup],
    active: tuple[Obligation, ...],
    over_kw: float,
    binding: str,
) -> tuple[tuple[TenantDecision, ...], float]:
    """The decisions and the kW newly freed; `caps` and `cap_reasons` are updated."""
    flex_ok = [o.event_id for o in active if o.allows_ai_flex]
    all_shed = all(g.mode == "curtail" for g in groups)
    available = {
        t.tenant_id: allowances[t.tenant_id] - t.firm_kw
        for t in site.tenants
        if t.flexible_kw > 0 and allowances[t.tenant_id] > t.firm_kw
    }
    total_kw = sum(available.values())
    relief_kw = 0.0
    if over_kw > EPSILON_KW and all_shed and flex_ok and total_kw > 0:
        relief_kw = min(over_kw, total_kw)
        for tenant in site.tenants:
            share_kw = available.get(tenant.tenant_id, 0.0)
            if share_kw <= 0:
                continue
            # Whole kW, rounded down: steadier setpoints, and never less relief than computed.
            uncapped_kw = allowances[tenant.tenant_id] - relief_kw * share_kw / total_kw
            caps[tenant.tenant_id] = max(tenant.firm_kw, float(math.floor(uncapped_kw)))
            cap_reasons[tenant.tenant_id] = (
                f"cap {caps[tenant.tenant_id]:.0f} kW: all mining shed and still over under {binding};"
                f" {', '.join(flex_ok)} allows AI flex; firm {tenant.firm_kw:.0f} kW kept"
            )
    if over_kw > EPSILON_KW and all_shed and not flex_ok:
        default = "uncapped: firm power is never curtailed; no active obligation allows AI flex"
    else:
        default = "uncapped: firm power is never curtailed"
    decisions = []
    for tenant in site.tenants:
        cap_kw = caps.get(tenant.tenant_id)
        reason = cap_reasons.get(tenant.tenant_id) or (
            f"cap {cap_kw:.0f} kW: held; firm {tenant.firm_kw:.0f} kW kept" if cap_kw is not None else default
        )
        if cap_kw is not None and "firm" not in reason:
            reason += f"; firm {tenant.firm_kw:.0f} kW kept"
        decisions.append(TenantDecision(tenant.tenant_id, cap_kw, reason))
    return tuple(decisions), relief_kw
