"""Trimming: partial power targets that let mining meet a base point when whole groups cannot.

Shedding and restoring move whole groups unless their firmware takes a power target, so a site whose
partial groups are its most efficient (shed last, restored first) would otherwise sit up to one
group's draw off its base point, and a CLR is charged for base-point deviation. While a base point
binds, a whole group that would overshoot (shed) or that does not fit (restore) is balanced by
trimming the running partial groups instead, least efficient first, down to their minimum power
target. Part of `compute_plan` (policies/plan.py): plan_shed and plan_restore call it.
"""

from __future__ import annotations

import math

from mullet.policies.plan_groups import EPSILON_KW, LoadFn, WorkingGroup

__all__ = ["trim", "trimmable_kw"]


def _trimmable(group: WorkingGroup, exclude: WorkingGroup, changed_ok: bool) -> bool:
    if group is exclude or group.held or not group.known or group.mode != "run":
        return False
    if not group.spec.supports_power_target:
        return False
    previous = group.previous
    unchanged = previous is not None and (previous.mode, previous.power_kw) == (group.mode, group.power_kw)
    return changed_ok or unchanged or previous is None


def trimmable_kw(
    groups: list[WorkingGroup], load_kw: LoadFn, exclude: WorkingGroup, changed_ok: bool
) -> float:
    """What the running partial groups (but `exclude`) could still give up, down to their minimums.
    `changed_ok`: whether a group this plan already moved may be trimmed too (not when restoring)."""
    return sum(
        max(0.0, load_kw(g, "run", g.power_kw) - g.spec.min_power_kw)
        for g in groups
        if _trimmable(g, exclude, changed_ok)
    )


def trim(
    groups: list[WorkingGroup], kw: float, load_kw: LoadFn, exclude: WorkingGroup, changed_ok: bool, why: str
) -> float:
    """Take at least `kw` off the running partial groups, least efficient first (whole kW, like every
    target); returns the kW taken."""
    taken_kw = 0.0
    for group in groups:  # merit order: least efficient first
        if taken_kw >= kw - EPSILON_KW:
            break
        if not _trimmable(group, exclude, changed_ok):
            continue
        current_kw = load_kw(group, "run", group.power_kw)
        target_kw = max(group.spec.min_power_kw, float(math.floor(current_kw - (kw - taken_kw))))
        if target_kw >= current_kw - EPSILON_KW:
            continue
        group.power_kw = target_kw
        taken_kw += current_kw - target_kw
        group.reason = f"run at {target_kw:.0f} kW: partial, trimmed {why}"
    return taken_kw
