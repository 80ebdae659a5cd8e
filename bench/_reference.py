"""The same-run reference for the plan benches: the least any plan of a site must do, in plain Python.

Absolute plan times move 3-4x between two 2-core machines (docs/performance.md), so the plan benches
judge the plan by its ratio to this loop, timed in the same run on the same site: it reads each group's
spec and reading once, sums the kW, sorts the groups by merit once (least efficient first), and walks
that order once to give every group a decision tuple, shedding from the top while the total is over
`budget_kw`. No plan can decide for every group with less.
"""

from __future__ import annotations

from mullet.policies.model import SiteSnapshot, SiteSpec


def least_plan(site: SiteSpec, snapshot: SiteSnapshot, budget_kw: float) -> list[tuple[str, str]]:
    """(group_id, "run" | "curtail") for every group; unknown readings count as rated."""
    readings = snapshot.group_power_kw
    total_kw = 0.0
    rows = []
    for group in site.groups:
        kw = readings.get(group.group_id)
        if kw is None:
            kw = group.rated_kw
        total_kw += kw
        rows.append((group.efficiency_j_per_th, -group.priority, group.group_id, kw))
    rows.sort(reverse=True)
    excess_kw = total_kw - budget_kw
    decisions = []
    for _efficiency, _priority, group_id, kw in rows:
        if excess_kw > 0.0:
            excess_kw -= kw
            decisions.append((group_id, "curtail"))
        else:
            decisions.append((group_id, "run"))
    return decisions
