"""The policy engine: one pure function from (site, readings, obligations, now, memory) to a plan.

Order of rules, each explained in the decision it sets:
1. Budget: the tightest import limit in force, less safety margin, base load and the AI allowance.
2. Economics (opt-in): groups that lose money at the current price are curtailed.
3. Shed to fit: least efficient (J/TH) first, then lowest priority; partial power targets where the
   firmware takes them, so exactly the excess goes; groups inside their minimum on-time go last.
Operator overrides come first: a held group keeps the mode it was given and no rule below moves it.
4. Restore (only with no obligation active and every reading known): most efficient first, within
   the deadband, minimum off-times and the restore ramp (kW per rolling minute).
5. AI flexible shares: capped only once all mining is shed, only under an obligation that allows
   it, and never below a tenant's firm kW.
6. Arming: under-frequency stages take running groups in merit order until their shed kW is covered.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mullet.policies.budget import site_limit, tenant_allowance_kw
from mullet.policies.economics import EconomicView, economic_view
from mullet.policies.model import (
    NEVER,
    GroupDecision,
    GroupMemory,
    GroupMode,
    GroupSpec,
    Obligation,
    Override,
    Plan,
    PolicyMemory,
    SiteSnapshot,
    SiteSpec,
    TenantDecision,
)

__all__ = ["compute_plan", "merit_order", "site_limit", "tenant_allowance_kw"]

EPSILON_KW = 1e-6
LoadFn = Callable[["_Group", GroupMode, float | None], float]
RAMP_WINDOW_S = 60.0


def merit_order(groups: tuple[GroupSpec, ...]) -> tuple[GroupSpec, ...]:
    """Shed order: least efficient (highest J/TH) first, then lowest priority, then id for determinism."""
    return _ranked(groups)[0]


# A site's groups do not change between plans: sort once per groups tuple. Keyed by identity, since
# hashing 6,000 frozen specs (what lru_cache would do) costs more than the plan itself.
_RANKED: dict[int, tuple[tuple[GroupSpec, ...], tuple[tuple[GroupSpec, ...], tuple[int, ...]]]] = {}


_LAST_DECISIONS: dict[int, list[GroupDecision | None]] = {}


def _ranked(groups: tuple[GroupSpec, ...]) -> tuple[tuple[GroupSpec, ...], tuple[int, ...]]:
    """The merit order, and for each entry of it the group's index in `groups` (the site's order)."""
    cached = _RANKED.get(id(groups))
    if cached is not None and cached[0] is groups:
        return cached[1]
    index_of = {id(g): i for i, g in enumerate(groups)}
    order = tuple(sorted(groups, key=lambda g: (-g.efficiency_j_per_th, g.priority, g.group_id)))
    ranked = (order, tuple(index_of[id(g)] for g in order))
    if len(_RANKED) >= 8:
        _RANKED.clear()
    _RANKED[id(groups)] = (groups, ranked)
    return ranked


@dataclass(slots=True)
class _Group:
    """Working state of one group while a plan is being made."""

    spec: GroupSpec
    rank: int
    mode: GroupMode
    power_kw: float | None
    since_s: float
    known: bool
    previous: GroupMemory | None  # what the last plan left for this group
    reason: str = ""
    trip_stage: int | None = None
    held: bool = False  # by an operator override


def compute_plan(
    site: SiteSpec,
    snapshot: SiteSnapshot,
    obligations: Sequence[Obligation],
    now: float,
    memory: PolicyMemory | None = None,
    overrides: Mapping[str, Override] | None = None,
) -> Plan:
    memory = memory if memory is not None else PolicyMemory()
    settings = site.settings
    limit_kw, binding, active = site_limit(site, obligations, now)
    obligation_active = bool(active)

    full_allowances = {
        t.tenant_id: tenant_allowance_kw(t, snapshot.tenant_power_kw.get(t.tenant_id)) for t in site.tenants
    }
    # A cap at or above what the tenant would be allowed anyway constrains nothing: it just ends.
    caps = {t: kw for t, kw in memory.caps.items() if t in full_allowances and kw < full_allowances[t]}
    allowances = {t: min(kw, caps.get(t, kw)) for t, kw in full_allowances.items()}
    cap_reasons: dict[str, str] = {}
    ai_allowance_kw = sum(allowances.values())
    fixed_kw = site.safety_margin_kw + site.base_load_kw
    budget_kw = limit_kw - fixed_kw - ai_allowance_kw
    reasons = [f"limit {limit_kw:.0f} kW from {binding}"]
    reasons.extend(_actuation_reasons(active, now))

    order, site_index = _ranked(site.groups)
    count = len(order)
    remembered = memory.groups.get
    readings = snapshot.group_power_kw.get
    groups: list[_Group] = []
    unknown_groups: list[str] = []
    for rank, spec in enumerate(order, start=1):
        previous = remembered(spec.group_id)
        known = readings(spec.group_id) is not None
        if not known:
            unknown_groups.append(spec.group_id)
        if previous is None:
            groups.append(_Group(spec, rank, "run", None, NEVER, known, None))
        else:
            groups.append(
                _Group(spec, rank, previous.mode, previous.power_kw, previous.since_s, known, previous)
            )

    def load_kw(group: _Group, mode: GroupMode, power_kw: float | None) -> float:
        # Unknown is not zero: during an obligation a group we cannot see counts at rated kW.
        if obligation_active and not group.known:
            return group.spec.rated_kw
        if mode == "curtail":
            return group.spec.sleep_kw
        return group.spec.rated_kw if power_kw is None else power_kw

    held = _hold(groups, overrides or {}, now)
    if held:
        reasons.append(f"operator overrides: {_summarise(held)}")

    unknown = _unknown_inputs(site, snapshot, unknown_groups)
    if unknown:
        reasons.append(f"no load increase: {_summarise(unknown)} unknown")

    # 2. Economics.
    views: dict[str, EconomicView | None] = (
        {g.spec.group_id: economic_view(g.spec, settings, snapshot.price_usd_per_mwh) for g in groups}
        if settings.economics_enabled
        else {}
    )
    for group in groups:
        view = views.get(group.spec.group_id)
        if view is None or view.wish != "curtail" or group.mode == "curtail" or group.held:
            continue
        if now - group.since_s < group.spec.min_on_s:
            group.reason = f"run: {view.reason}, but min on holds until {_until(group, now, 'on')}"
            continue
        group.mode, group.power_kw, group.reason = "curtail", None, f"curtail: {view.reason}"

    # 3. Shed to fit.
    planned_kw = sum(load_kw(g, g.mode, g.power_kw) for g in groups)
    if planned_kw > budget_kw + EPSILON_KW:
        for forced in (False, True):
            for group in groups:
                if planned_kw <= budget_kw + EPSILON_KW:
                    break
                if group.mode == "curtail" or group.held:
                    continue
                protected = now - group.since_s < group.spec.min_on_s
                if protected and not forced:
                    continue
                shed_kw, slept = _shed(group, planned_kw - budget_kw, load_kw)
                planned_kw -= shed_kw
                where = f"merit order {group.rank}/{count} under {binding} (mining budget {budget_kw:.0f} kW)"
                if not group.known and obligation_active:
                    where += ", telemetry unknown: counted at rated"
                if protected:
                    where += ", inside its min on-time: nothing else fits"
                partial = f"run at {group.power_kw or 0:.0f} kW: partial"
                group.reason = f"curtail: {where}" if slept else f"{partial}, {where}"

    # 4. Restore.
    recent = tuple((t, kw) for t, kw in memory.restores if t > now - RAMP_WINDOW_S)
    ramp_left_kw = settings.restore_ramp_kw_per_min - sum(kw for _, kw in recent)
    # Stagger: within any `restore_stagger_s` only that slice of the minute's ramp, so a 10 MW/min
    # ramp restores ~1.7 MW every 10 s rather than 10 MW at once and nothing for a minute. A group
    # bigger than the slice may go alone once its window is empty (the minute's limit still holds).
    stagger_s = settings.restore_stagger_s
    slice_kw = settings.restore_ramp_kw_per_min * stagger_s / RAMP_WINDOW_S
    slice_left_kw = slice_kw - sum(kw for t, kw in recent if t > now - stagger_s)
    slice_empty = slice_left_kw >= slice_kw - EPSILON_KW
    restored: list[tuple[float, float]] = []
    blocker = _restore_blocker(active, unknown)
    # AI first: the front of the mullet gets its flexible share back before any miner restarts.
    for tenant_id in [t.tenant_id for t in site.tenants if t.tenant_id in caps]:
        cap_kw = caps[tenant_id]
        if blocker:
            cap_reasons[tenant_id] = f"cap {cap_kw:.0f} kW: held, {blocker}"
            continue
        room_kw = budget_kw - settings.deadband_kw - planned_kw
        needed_kw = full_allowances[tenant_id] - cap_kw
        lone_ok = slice_empty and needed_kw > slice_kw
        step_kw = min(room_kw, ramp_left_kw, needed_kw if lone_ok else slice_left_kw)
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
                f" ramp {max(ramp_left_kw, 0):.0f} kW left"
            )
            continue
        allowances[tenant_id] += increase_kw
        ai_allowance_kw += increase_kw
        budget_kw -= increase_kw
        ramp_left_kw -= increase_kw
        slice_left_kw -= increase_kw
        slice_empty = False
        restored.append((now, increase_kw))
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
            group.reason = f"curtail: held, min off until {_until(group, now, 'off')}"
            continue
        room_kw = budget_kw - settings.deadband_kw - planned_kw
        needed_kw = full_kw - current_kw
        lone_ok = slice_empty and needed_kw > slice_kw
        step_kw = min(room_kw, ramp_left_kw, needed_kw if lone_ok else slice_left_kw)
        partial_ok = group.spec.supports_power_target and step_kw >= 1.0
        if needed_kw <= step_kw + EPSILON_KW:
            new_power: float | None = None
            increase_kw = needed_kw
        elif partial_ok and math.floor(current_kw + step_kw) >= group.spec.min_power_kw:
            new_power = float(math.floor(current_kw + step_kw))
            increase_kw = new_power - current_kw
        else:
            group.reason = (
                f"{label}: restore waits, needs {needed_kw:.0f} kW: room {max(room_kw, 0):.0f} kW"
                f" (deadband {settings.deadband_kw:.0f}), ramp {max(ramp_left_kw, 0):.0f} kW left"
                f" this minute, {max(slice_left_kw, 0):.0f} kW this {stagger_s:g} s"
            )
            continue
        group.mode, group.power_kw = "run", new_power
        planned_kw += increase_kw
        ramp_left_kw -= increase_kw
        slice_left_kw -= increase_kw
        slice_empty = False
        restored.append((now, increase_kw))
        target = "" if new_power is None else f" at {new_power:.0f} kW"
        group.reason = (
            f"run{target}: restored, merit order {group.rank}/{count}, fits mining budget {budget_kw:.0f} kW"
            f" with deadband {settings.deadband_kw:.0f} kW"
        )

    # 5. AI flexible shares.
    tenant_decisions, ai_relief_kw = _tenant_caps(
        site, allowances, caps, cap_reasons, groups, active, planned_kw - budget_kw, binding
    )
    if ai_relief_kw > 0:
        ai_allowance_kw -= ai_relief_kw
        budget_kw += ai_relief_kw
    reasons.append(
        f"mining budget {budget_kw:.0f} kW = limit - margin {site.safety_margin_kw:.0f}"
        f" - base {site.base_load_kw:.0f} - AI allowance {ai_allowance_kw:.0f}"
    )
    feasible = planned_kw <= budget_kw + EPSILON_KW
    if not feasible:
        reasons.append(
            f"infeasible: all mining curtailed and still {planned_kw - budget_kw:.0f} kW over;"
            " firm AI load is never curtailed"
        )

    fits = _fits_reasons(count)
    for group in groups:
        if not group.reason:
            group.reason = fits[group.rank - 1]

    # 6. Arming.
    reasons.extend(_arm(site, groups, load_kw))

    # Most groups keep their command from one plan to the next: copy the mapping (C speed) and
    # replace only what changed, instead of rebuilding thousands of entries per cycle.
    changed = {}
    for group in groups:
        previous = group.previous
        if previous is None or previous.mode != group.mode or previous.power_kw != group.power_kw:
            changed[group.spec.group_id] = _remember(previous, group, now)
    next_groups = dict(memory.groups) if len(memory.groups) == count else {}
    if not next_groups:
        changed = {g.spec.group_id: _remember(g.previous, g, now) for g in groups}
    next_groups.update(changed)
    new_memory = PolicyMemory(groups=next_groups, restores=recent + tuple(restored), caps=caps)
    # Unchanged decisions are the previous plan's objects: a big site's plan then allocates only for
    # what changed. Pure memoisation: the plan is equal either way.
    previous_decisions = _LAST_DECISIONS.get(id(site.groups))
    if previous_decisions is None or len(previous_decisions) != count:
        previous_decisions = [None] * count
    decisions: list[GroupDecision | None] = [None] * count
    for group, index in zip(groups, site_index, strict=True):
        last = previous_decisions[index]
        if (
            last is not None
            and last.reason == group.reason
            and last.mode == group.mode
            and last.power_kw == group.power_kw
            and last.trip_stage == group.trip_stage
            and last.group_id == group.spec.group_id
        ):
            decisions[index] = last
        else:
            decisions[index] = GroupDecision(
                group.spec.group_id, group.mode, group.power_kw, group.reason, group.trip_stage
            )
    if len(_LAST_DECISIONS) >= 8:
        _LAST_DECISIONS.clear()
    _LAST_DECISIONS[id(site.groups)] = decisions
    return Plan(
        computed_at_s=now,
        site_limit_kw=limit_kw,
        binding_constraint=binding,
        ai_allowance_kw=ai_allowance_kw,
        mining_budget_kw=budget_kw,
        mining_planned_kw=planned_kw,
        feasible=feasible,
        active_obligations=tuple(o.event_id for o in active),
        decisions=tuple(d for d in decisions if d is not None),
        reasons=tuple(reasons),
        tenants=tenant_decisions,
        memory=new_memory,
    )


def _hold(groups: list[_Group], overrides: Mapping[str, Override], now: float) -> list[str]:
    """Put every group with an active override in its held mode, ahead of every rule; say which."""
    held = []
    for group in groups:
        override = overrides.get(group.spec.group_id)
        if override is None or not override.active(now):
            continue
        group.held = True
        group.mode, group.power_kw = override.mode, None
        until = datetime.fromtimestamp(override.until_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        group.reason = f"{override.mode}: operator override until {until}"
        if override.note:
            group.reason += f" ({override.note})"
        held.append(f"{group.spec.group_id} {override.mode}")
    return held


def _shed(group: _Group, over_kw: float, load_kw: LoadFn) -> tuple[float, bool]:
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


@functools.lru_cache(maxsize=8)
def _fits_reasons(count: int) -> tuple[str, ...]:
    """The reason of every group that simply keeps running, by rank: formatted once per site size,
    so the thousands of unchanged groups of a big site cost no string building per plan (the budget
    figure is in the plan's own reasons)."""
    return tuple(f"run: fits the mining budget (merit order {rank}/{count})" for rank in range(1, count + 1))


@functools.lru_cache(maxsize=65_536)
def _armed(reason: str, stage: int, threshold_hz: float) -> str:
    return f"{reason}; armed at stage {stage} ({threshold_hz:g} Hz)"


def _remember(previous: GroupMemory | None, group: _Group, now: float) -> GroupMemory:
    """The group's memory for the next plan; `since` moves only when this plan switched its mode."""
    if previous is None:
        return GroupMemory(group.mode, group.power_kw, NEVER if group.mode == "run" else now)
    if previous.mode != group.mode:
        return GroupMemory(group.mode, group.power_kw, now)
    if previous.power_kw == group.power_kw:
        return previous  # unchanged: no new object
    return GroupMemory(group.mode, group.power_kw, previous.since_s)


def _until(group: _Group, now: float, which: str) -> str:
    hold_s = group.spec.min_on_s if which == "on" else group.spec.min_off_s
    return f"+{group.since_s + hold_s - now:.0f} s"


def _unknown_inputs(site: SiteSpec, snapshot: SiteSnapshot, unknown_groups: list[str]) -> list[str]:
    unknown: list[str] = []
    if snapshot.site_power_kw is None:
        unknown.append("site meter")
    unknown.extend(
        f"tenant {t.tenant_id}" for t in site.tenants if snapshot.tenant_power_kw.get(t.tenant_id) is None
    )
    unknown.extend(f"group {group_id}" for group_id in sorted(unknown_groups, key=_site_order(site)))
    return unknown


def _site_order(site: SiteSpec) -> Callable[[str], int]:
    """Sort key: a group's position in the site's own order, so reasons list groups as configured."""
    order, site_index = _ranked(site.groups)
    position = {spec.group_id: index for spec, index in zip(order, site_index, strict=True)}
    return position.__getitem__


def _summarise(items: list[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown if len(items) <= most else f"{shown} and {len(items) - most} more"


def _actuation_reasons(active: tuple[Obligation, ...], now: float) -> list[str]:
    """How each active obligation is met and why (its program's deadline against firmware sleep), and
    whether it waits for a recall rather than its end."""
    lines = []
    described = [o for o in active if o.actuation]
    for obligation in described[:_MOST_DESCRIBED]:
        line = f"'{obligation.event_id}' ({obligation.program}): {obligation.actuation}"
        line += f", {obligation.actuation_reason}"
        if obligation.explicit_recall:
            past_end = obligation.end_s is not None and now >= obligation.end_s
            line += "; past its scheduled end, held until recalled" if past_end else "; held until recalled"
        lines.append(line)
    if len(described) > _MOST_DESCRIBED:
        lines.append(f"and {len(described) - _MOST_DESCRIBED} more obligations")
    return lines


# Obligations described one per reason line, and named in a held group's reason: the plan's text
# stays bounded however many are in force (control.max_obligations bounds the book).
_MOST_DESCRIBED = 10


def _restore_blocker(active: tuple[Obligation, ...], unknown: list[str]) -> str:
    """Why nothing may be restored now, or "" when restores may go ahead."""
    if active:
        names = _summarise([f"'{o.event_id}'" for o in active], _MOST_DESCRIBED)
        return f"no restore while obligation {names} is active"
    if unknown:
        return f"no restore while {_summarise(unknown)} unknown"
    return ""


def _tenant_caps(
    site: SiteSpec,
    allowances: dict[str, float],
    caps: dict[str, float],
    cap_reasons: dict[str, str],
    groups: list[_Group],
    active: tuple[Obligation, ...],
    over_kw: float,
    binding: str,
) -> tuple[tuple[TenantDecision, ...], float]:
    """Tighten caps on flexible AI shares if all mining is shed and the plan is still over, and say
    why each tenant is (un)capped. Returns the decisions and the kW newly freed; `caps` is updated.
    Firm kW is never capped."""
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


def _arm(site: SiteSpec, groups: list[_Group], load_kw: LoadFn) -> list[str]:
    """Assign running groups to under-frequency stages, least efficient first; say what falls short."""
    notes: list[str] = []
    running = iter([g for g in groups if g.mode == "run"])
    for stage in sorted(site.settings.trip_stages, key=lambda s: s.stage):
        covered_kw = 0.0
        armed = 0
        while covered_kw < stage.shed_kw - EPSILON_KW:
            group = next(running, None)
            if group is None:
                break
            group.trip_stage = stage.stage
            covered_kw += load_kw(group, "run", group.power_kw) - group.spec.sleep_kw
            armed += 1
            group.reason = _armed(group.reason, stage.stage, stage.threshold_hz)
        line = f"stage {stage.stage} ({stage.threshold_hz:g} Hz): {armed} groups arm {covered_kw:.0f} kW"
        if covered_kw < stage.shed_kw - EPSILON_KW:
            line += f", {stage.shed_kw - covered_kw:.0f} kW short of {stage.shed_kw:.0f} kW"
        notes.append(line)
    return notes
