"""What the site can deliver now: the basis of an opt-in (pure; measured readings, unknown never counts)."""

from __future__ import annotations

from mullet.policies.model import ObligationKind, SiteSnapshot, SiteSpec


def sheddable_kw(site: SiteSpec, snapshot: SiteSnapshot) -> float:
    """Mining load that could be shed now: each group's measured draw above its sleep draw. A group
    whose telemetry is unknown adds nothing: a reduction cannot be promised on a reading we lack."""
    total_kw = 0.0
    for group in site.groups:
        power_kw = snapshot.group_power_kw.get(group.group_id)
        if power_kw is not None:
            total_kw += max(0.0, power_kw - group.sleep_kw)
    return total_kw


def required_reduction_kw(
    site: SiteSpec, kind: ObligationKind, kw: float, site_power_kw: float | None
) -> float | None:
    """How far the site must come down from now to meet an obligation, safety margin included; None
    when that cannot be known (a `limit` with the meter reading unknown)."""
    if kind == "reduce":
        return kw + site.safety_margin_kw
    if site_power_kw is None:
        return None
    return max(0.0, site_power_kw - kw + site.safety_margin_kw)
