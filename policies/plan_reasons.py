"""The plan's explanations that several phases share: what is unknown, how each obligation is met, why
nothing may be restored. Bounded however many groups, tenants or obligations there are. Part of
`compute_plan` (policies/plan.py).
"""

from __future__ import annotations

from mullet.policies.model import GroupSpec, Obligation, SiteSnapshot, SiteSpec

__all__ = ["MOST_DESCRIBED", "actuation_reasons", "restore_blocker", "summarise", "unknown_inputs"]

# Obligations described one per reason line, and named in a held group's reason: the plan's text
# stays bounded however many are in force (control.max_obligations bounds the book).
MOST_DESCRIBED = 10


def summarise(items: list[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown} and {len(items) - most} more"


def unknown_inputs(
    site: SiteSpec,
    snapshot: SiteSnapshot,
    unknown_groups: list[str],
    ranking: tuple[tuple[GroupSpec, ...], tuple[int, ...]],
) -> list[str]:
    """Every reading that is unknown: the site meter, then tenants and groups in the site's order."""
    unknown: list[str] = []
    if snapshot.site_power_kw is None:
        unknown.append("site meter")
    unknown.extend(
        f"tenant {t.tenant_id}" for t in site.tenants if snapshot.tenant_power_kw.get(t.tenant_id) is None
    )
    if unknown_groups:
        # Listed as configured: by each group's position in the site's own order.
        order, site_index = ranking
        position = {spec.group_id: index for spec, index in zip(order, site_index, strict=True)}
        unknown.extend(f"group {group_id}" for group_id in sorted(unknown_groups, key=position.__getitem__))
    return unknown


def actuation_reasons(active: tuple[Obligation, ...], now: float) -> list[str]:
    """How each active obligation is met and why (its program's deadline against firmware sleep), and
    whether it waits for a recall rather than its end."""
    lines = []
    described = [o for o in active if o.actuation]
    for obligation in described[:MOST_DESCRIBED]:
        line = f"'{obligation.event_id}' ({obligation.program}): {obligation.actuation}"
        line += f", {obligation.actuation_reason}"
        if obligation.explicit_recall:
            past_end = obligation.end_s is not None and now >= obligation.end_s
            line += "; past its scheduled end, held until recalled" if past_end else "; held until recalled"
        lines.append(line)
    if len(described) > MOST_DESCRIBED:
        lines.append(f"and {len(described) - MOST_DESCRIBED} more obligations")
    return lines


def restore_blocker(active: tuple[Obligation, ...], unknown: list[str]) -> str:
    """Why nothing may be restored now, or "" when restores may go ahead. A base point does not block:
    a rising one is followed within the restore ramp (it only sets the mining budget)."""
    blocking = [o for o in active if o.kind != "base_point"]
    if blocking:
        names = summarise([f"'{o.event_id}'" for o in blocking], MOST_DESCRIBED)
        return f"no restore while obligation {names} is active"
    if unknown:
        return f"no restore while {summarise(unknown)} unknown"
    return ""
