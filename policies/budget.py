"""The site budget: the tightest import limit in force, less what AI tenants and overheads keep."""

from __future__ import annotations

from collections.abc import Sequence

from mullet.policies.model import Obligation, SiteSpec, TenantSpec


def tenant_allowance_kw(tenant: TenantSpec, power_kw: float | None) -> float:
    """What the budget keeps for a tenant: its reserve or its measured load if above, plus headroom.

    An unknown reading counts as the reserve (the tenant may be drawing it), never as zero.
    """
    load_kw = tenant.reserved_kw if power_kw is None else max(tenant.reserved_kw, power_kw)
    return load_kw + tenant.headroom_kw


def site_limit(
    site: SiteSpec, obligations: Sequence[Obligation], now: float
) -> tuple[float, str, tuple[Obligation, ...]]:
    """The tightest import limit in force now, which constraint it is, and the active obligations.

    Base points are active but never bind here: they set the mining budget (policies/plan_budget.py)."""
    limit_kw = site.interconnect_kw
    binding = f"interconnect ({site.interconnect_kw:.0f} kW)"
    active: list[Obligation] = []
    for obligation in sorted(obligations, key=lambda o: o.event_id):
        if not obligation.active(now):
            continue
        active.append(obligation)
        if obligation.kind == "base_point":
            continue
        obligation_kw = obligation.site_limit_kw()
        if obligation_kw < limit_kw:
            limit_kw = obligation_kw
            binding = f"{obligation.kind} '{obligation.event_id}' ({obligation.program})"
    return limit_kw, binding, tuple(active)
