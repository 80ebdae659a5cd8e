"""The restore phase of a plan: AI caps lifted first, then groups back to full power most efficient
first, all within the deadband, minimum off-times and the restore ramp (kW per rolling minute, spread
by the stagger). Part of `compute_plan` (policies/plan.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mullet.policies.economics import EconomicView
from mullet.policies.model import PolicySettings, SiteSpec
from mullet.policies.plan_budget import Budget
from mullet.policies.plan_groups import EPSILON_KW, LoadFn, WorkingGroup, until
from mullet.policies.plan_trim import trim, trimmable_kw

__all__ = ["RAMP_WINDOW_S", "RestoreRamp", "lift_caps", "restore_groups"]

RAMP_WINDOW_S = 60.0


@dataclass(slots=True)
class RestoreRamp:
    """How much load this plan may still add: what is left of the minute's ramp and of the stagger
    slice, and the increases it commanded (the ramp ledger's new entries)."""

    recent: tuple[tuple[float, float], ...]  # the ledger's entries of the last minute
    stagger_s: float
    slice_kw: float
    ramp_left_kw: float
    slice_left_kw: float
    slice_empty: bool
    restored: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def at(cls, settings: PolicySettings, ledger: tuple[tuple[float, float], ...], now: float) -> RestoreRamp:
        recent = tuple((t, kw) for t, kw in ledger if t > now - RAMP_WINDOW_S)
        # Stagger: within any `restore_stagger_s` only that slice of the minute's ramp, so a 10 MW/min
        # ramp restores ~1.7 MW every 10 s rather than 10 MW at once and nothing for a minute. A group
        # bigger than the slice may go alone once its window is empty (the minute's limit still holds).
        stagger_s = settings.restore_stagger_s
        slice_kw = settings.restore_ramp_kw_per_min * stagger_s / RAMP_WINDOW_S
        slice_left_kw = slice_kw - sum(kw for t, kw in recent if t > now - stagger_s)
        return cls(
            recent=recent,
            stagger_s=stagger_s,
            slice_kw=slice_kw,
            ramp_left_kw=settings.restore_ramp_kw_per_min - sum(kw for _, kw in recent),
            slice_left_kw=slice_left_kw,
            slice_empty=slice_left_kw >= slice_kw - EPSILON_KW,
        )

    def step_kw(self, room_kw: float, needed_kw: float) -> float:
        """The most one increase of `needed_kw` may take now, with `room_kw` left under the budget."""
        lone_ok = self.slice_empty and needed_kw > self.slice_kw
        return min(room_kw, self.ramp_left_kw, needed_kw if lone_ok else self.slice_left_kw)

    def take(self, increase_kw: float, now: float) -> None:
        self.ramp_left_kw -= increase_kw
        self.slice_left_kw -= increase_kw
        self.slice_empty = False
        self.restored.append((now, increase_kw))

    def ledger(self) -> tuple[tuple[float, float], ...]:
        """The ramp ledger for the next plan."""
        return self.recent + tuple(self.restored)


def lift_caps(
    site: SiteSpec, budget: Budget, ramp: RestoreRamp, blocker: str, planned_kw: float, now: float
) -> None:
    """Give AI tenants their capped flexible share back, out of the mining budget and the ramp: the
    front of the mullet before any miner restarts."""
    caps, cap_reasons = budget.caps, budget.cap_reasons
    deadband_kw = site.settings.deadband_kw
    for tenant_id in [t.tenant_id for t in site.tenants if t.tenant_id in caps]:
        cap_kw = caps[tenant_id]
        if blocker:
            cap_reasons[tenant_id] = f"cap {cap_kw:.0f} kW: held, {blocker}"
            continue
        # Against the site limit's share: a base point sets mining's budget, never the AI tenants'.
        room_kw = budget.mining_max_kw - deadband_kw - planned_kw
        needed_kw = budget.full_allowances[tenant_id] - cap_kw
        step_kw = ramp.step_kw(room_kw, needed_kw)
        if needed_kw <= step_kw + EPSILON_KW:
            del caps[tenant_id]
            increase_kw = needed_kw
            cap_reasons[tenant_id] = "uncapped: cap lifted within the restore ramp"
        elif step_kw >= 1.0:
            caps[tenant_id] = float(math.floor(cap_kw + step_kw))
            increase_kw = caps[tenant_id] - cap_kw
            cap_reasons[tenant_id] = f"cap {caps[tenant_id]:.0f} kW: lifting within the restore ramp"
        else:
            cap_reasons[tenant_id] = (
                f"cap {cap_kw:.0f} kW: lifting waits, room {max(room_kw, 0):.0f} kW,"
                f" ramp {max(ramp.ramp_left_kw, 0):.0f} kW left"
            )
            continue
        budget.allowances[tenant_id] += increase_kw
        budget.ai_allowance_kw += increase_kw
        budget.mining_max_kw -= increase_kw
        ramp.take(increase_kw, now)


def restore_groups(
    groups: list[WorkingGroup],
    settings: PolicySettings,
    budget_kw: float,
    planned_kw: float,
    ramp: RestoreRamp,
    views: Mapping[str, EconomicView | None],
    blocker: str,
    load_kw: LoadFn,
    now: float,
    *,
    exact: bool = False,
) -> float:
    """Bring groups the earlier phases left alone back towards full power, most efficient first, or
    say why each waits; return the planned mining kW. `exact` (a base point binds): a whole group the
    room cannot take is restored anyway when trimming the partial groups makes it fit, as long as
    mining is more than twice the deadband under the budget (policies/plan_trim.py)."""
    count = len(groups)
    deadband_kw = settings.deadband_kw
    for group in reversed(groups):  # most efficient first
        if group.reason or (group.mode == "run" and group.power_kw is None):
            continue  # decided already, or running at full power: nothing to restore
        current_kw = load_kw(group, group.mode, group.power_kw)
        full_kw = load_kw(group, "run", None)
        if group.mode == "run" and current_kw >= full_kw - EPSILON_KW:
            continue
        label = "curtail" if group.mode == "curtail" else f"run at {current_kw:.0f} kW"
        view = views.get(group.spec.group_id)
        if view is not None and view.wish != "run":
            group.reason = f"{label}: {view.reason}"
            continue
        if blocker:
            group.reason = f"{label}: held, {blocker}"
            continue
        if group.mode == "curtail" and now - group.since_s < group.spec.min_off_s:
            group.reason = f"curtail: held, min off until {until(group, now, 'off')}"
            continue
        room_kw = budget_kw - deadband_kw - planned_kw
        needed_kw = full_kw - current_kw
        step_kw = ramp.step_kw(room_kw, needed_kw)
        partial_ok = group.spec.supports_power_target and step_kw >= 1.0
        if needed_kw <= step_kw + EPSILON_KW:
            new_power: float | None = None
            increase_kw = needed_kw
        elif partial_ok and math.floor(current_kw + step_kw) >= group.spec.min_power_kw:
            new_power = float(math.floor(current_kw + step_kw))
            increase_kw = new_power - current_kw
        elif exact and _fits_trimmed(
            groups, group, room_kw, needed_kw, budget_kw - planned_kw, ramp, settings, load_kw
        ):
            why = f"to restore {group.spec.group_id} within mining budget {budget_kw:.0f} kW"
            trimmed_kw = trim(groups, needed_kw - room_kw, load_kw, group, False, why)
            new_power, increase_kw = None, needed_kw - trimmed_kw
        else:
            group.reason = (
                f"{label}: restore waits, needs {needed_kw:.0f} kW: room {max(room_kw, 0):.0f} kW"
                f" (deadband {deadband_kw:.0f}), ramp {max(ramp.ramp_left_kw, 0):.0f} kW left"
                f" this minute, {max(ramp.slice_left_kw, 0):.0f} kW this {ramp.stagger_s:g} s"
            )
            continue
        group.mode, group.power_kw = "run", new_power
        planned_kw += increase_kw
        ramp.take(increase_kw, now)
        target = "" if new_power is None else f" at {new_power:.0f} kW"
        group.reason = (
            f"run{target}: restored, merit order {group.rank}/{count}, fits mining budget {budget_kw:.0f} kW"
            f" with deadband {deadband_kw:.0f} kW"
        )
    return planned_kw


def _fits_trimmed(
    groups: list[WorkingGroup],
    group: WorkingGroup,
    room_kw: float,
    needed_kw: float,
    gap_kw: float,
    ramp: RestoreRamp,
    settings: PolicySettings,
    load_kw: LoadFn,
) -> bool:
    """Whether `group` can come back whole with the partial groups trimmed by what the room lacks:
    only while mining is more than twice the deadband under the budget (else a swap every cycle),
    and the net increase (the room) within the ramp."""
    if room_kw <= 0 or gap_kw <= 2 * settings.deadband_kw or room_kw > ramp.step_kw(math.inf, needed_kw):
        return False
    return trimmable_kw(groups, load_kw, group, changed_ok=False) >= needed_kw - room_kw
