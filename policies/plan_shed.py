"""The phases of a plan that take load off: operator holds, economics, shed to fit. Part of
`compute_plan` (policies/plan.py), whose docstring gives the order of the rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

from mullet.policies.economics import EconomicView, economic_view
from mullet.policies.model import Override, PolicySettings
from mullet.policies.plan_groups import EPSILON_KW, LoadFn, WorkingGroup, until
from mullet.policies.plan_trim import trim, trimmable_kw

__all__ = ["economics", "hold", "shed_to_fit"]


def hold(groups: list[WorkingGroup], overrides: Mapping[str, Override], now: float) -> list[str]:
    """Put every group with an active override in its held mode, ahead of every rule; say which."""
    held = []
    for group in groups:
        override = overrides.get(group.spec.group_id)
        if override is None or not override.active(now):
            continue
        group.held = True
        group.mode, group.power_kw = override.mode, None
        until_text = datetime.fromtimestamp(override.until_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        group.reason = f"{override.mode}: operator override until {until_text}"
        if override.note:
            group.reason += f" ({override.note})"
        held.append(f"{group.spec.group_id} {override.mode}")
    return held


def economics(
    groups: list[WorkingGroup], settings: PolicySettings, price_usd_per_mwh: float | None, now: float
) -> dict[str, EconomicView | None]:
    """Curtail the running groups that lose money at this price (unless held, or inside their minimum
    on-time); return every group's economic view for the restore phase (empty with economics off)."""
    views: dict[str, EconomicView | None] = (
        {g.spec.group_id: economic_view(g.spec, settings, price_usd_per_mwh) for g in groups}
        if settings.economics_enabled
        else {}
    )
    for group in groups:
        view = views.get(group.spec.group_id)
        if view is None or view.wish != "curtail" or group.mode == "curtail" or group.held:
            continue
        if now - group.since_s < group.spec.min_on_s:
            group.reason = f"run: {view.reason}, but min on holds until {until(group, now, 'on')}"
            continue
        group.mode, group.power_kw, group.reason = "curtail", None, f"curtail: {view.reason}"
    return views


def shed_to_fit(
    groups: list[WorkingGroup],
    budget_kw: float,
    binding: str,
    obligation_active: bool,
    load_kw: LoadFn,
    now: float,
    *,
    exact_kw: float | None = None,
) -> float:
    """Shed running groups in merit order until the plan fits `budget_kw`, those inside their minimum
    on-time only if nothing else fits; return the planned mining kW. `exact_kw` (a base point binds):
    a whole group that would overshoot the budget by more than this is left running and the partial
    groups are trimmed instead, when they can give enough (policies/plan_trim.py)."""
    planned_kw = sum(load_kw(g, g.mode, g.power_kw) for g in groups)
    if planned_kw <= budget_kw + EPSILON_KW:
        return planned_kw
    count = len(groups)
    for forced in (False, True):
        for group in groups:
            if planned_kw <= budget_kw + EPSILON_KW:
                break
            if group.mode == "curtail" or group.held:
                continue
            protected = now - group.since_s < group.spec.min_on_s
            if protected and not forced:
                continue
            over_kw = planned_kw - budget_kw
            if exact_kw is not None and _overshoots(group, over_kw, exact_kw, load_kw):
                if trimmable_kw(groups, load_kw, group, changed_ok=True) >= over_kw:
                    why = f"to meet {binding} exactly (mining budget {budget_kw:.0f} kW)"
                    planned_kw -= trim(groups, over_kw, load_kw, group, True, why)
                    break
            shed_kw, slept = _shed(group, over_kw, load_kw)
            planned_kw -= shed_kw
            where = f"merit order {group.rank}/{count} under {binding} (mining budget {budget_kw:.0f} kW)"
            if not group.known and obligation_active:
                where += ", telemetry unknown: counted at rated"
            if protected:
                where += ", inside its min on-time: nothing else fits"
            partial = f"run at {group.power_kw or 0:.0f} kW: partial"
            group.reason = f"curtail: {where}" if slept else f"{partial}, {where}"
    return planned_kw


def _overshoots(group: WorkingGroup, over_kw: float, tolerance_kw: float, load_kw: LoadFn) -> bool:
    """Whether putting `group` to sleep (it takes no power target) would shed more than `over_kw` by
    more than `tolerance_kw`."""
    if group.spec.supports_power_target and group.known:
        return False
    whole_kw = load_kw(group, "run", group.power_kw) - load_kw(group, "curtail", None)
    return whole_kw - over_kw > tolerance_kw


def _shed(group: WorkingGroup, over_kw: float, load_kw: LoadFn) -> tuple[float, bool]:
    """Take `over_kw` off one running group: a partial target if the firmware allows, else sleep.

    Returns the kW shed and whether the group was put to sleep.
    """
    current_kw = load_kw(group, "run", group.power_kw)
    # Whole kW: a target that wobbles by fractions with AI telemetry would be republished every cycle.
    target_kw = float(math.floor(current_kw - over_kw))
    if group.spec.supports_power_target and group.known and target_kw >= group.spec.min_power_kw:
        group.power_kw = target_kw
        return current_kw - target_kw, False
    asleep_kw = load_kw(group, "curtail", None)
    group.mode, group.power_kw = "curtail", None
    return current_kw - asleep_kw, True
