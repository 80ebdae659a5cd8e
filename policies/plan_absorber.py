"""The absorber: mining as the AI load's shock absorber, keeping the site import within a ramp limit.

AI training swings fast (a stopped job drops tens of percent in seconds); grid operators scrutinise such
ramps at the point of interconnection. With `import_ramp_kw_per_min` / `_per_10s` set, each plan keeps
the import it plans (the base load and the AI tenants as they report, plus the mining it plans) inside a
band: no more than the ramp above the lowest, nor below the highest, import planned in the last 60 s
(10 s). When AI falls, mining fills (wakes groups, raises partial targets, most efficient first); when
AI rises, mining is shed (least efficient first), both as far as mining can. The swing reserve
(`swing_reserve_fraction`) keeps a share of the mining rating in partial targets or asleep so that
there is something to fill with. The absorber's own moves (building the reserve, restores under it)
take only `OWN_MOVE_SHARE` of the ramp, leaving the rest to the AI's: moved to the limit, any AI
change on top would break it (on `mulletd replay`'s ai-swings behind 30 s of GPU smoothing with every
group on power targets, half the ramp instead of all of it cut the episodes over the limit from
1,041 / 213 to 285 / 23 in 10 s / 60 s).

It binds after everything that is not soft: obligations, the interconnect, firm AI power and operator
overrides bind first (the budget's shed runs before it, and it never raises mining above the budget);
it never restores a group while an obligation or an unknown reading blocks restores, never caps AI,
never sheds a group inside its minimum on-time nor wakes one inside its minimum off-time, and stands
aside while a base point sets mining. A fill swaps AI load for mining load, the import staying level,
so it is not charged to the restore ramp (which limits what raises the import). The plan reckons with
commands, not firmware: a woken group takes its resume time to draw (docs/configuration.md), so the
meter shows that lag. Part of `compute_plan` (policies/plan.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mullet.policies.economics import EconomicView
from mullet.policies.model import PolicySettings, SiteSnapshot, SiteSpec
from mullet.policies.plan_groups import EPSILON_KW, LoadFn, WorkingGroup, until

__all__ = [
    "IMPORT_WINDOWS_S",
    "MAX_IMPORTS",
    "Absorber",
    "absorb_drop",
    "absorb_rise",
    "in_window",
    "keep_imports",
    "leave_times",
    "reserve_cost",
]

IMPORT_WINDOWS_S = (60.0, 10.0)
# The absorber's own moves (building the reserve, restores) take this share of the ramp, the rest is
# left for the AI's: moved to the limit, any AI change on top would break it.
OWN_MOVE_SHARE = 0.5
# Entries of the import ledger kept at most (the newest): only a window's possible extremes are kept,
# so a 1-s control period holds a few; this bounds it whatever the period and the swings.
MAX_IMPORTS = 256


def keep_imports(
    ledger: tuple[tuple[float, float], ...], now: float, import_kw: float | None
) -> tuple[tuple[float, float], ...]:
    """The ledger after a plan: each entry is the import planned from its time until the next one's
    (a step function, so a plan that changes nothing adds nothing, and skipping quiet cycles, as
    `mulletd replay` does, leaves it as planning every cycle would). This plan's import is added when
    it differs from the last; None (unknown) empties it: the next known plan starts afresh. Dropped:
    entries no window can reach (before the one in force a minute ago), and those a later entry at
    least as high and a later one at least as low make no window's extreme; the later kept entry
    takes over the dropped one's time, so what is in force at a window's start stays an extreme it has."""
    if import_kw is None:
        return ()
    entries = list(ledger)
    if not entries or entries[-1][1] != import_kw:
        entries.append((now, import_kw))
    start = max((i for i, (t, _) in enumerate(entries) if t <= now - IMPORT_WINDOWS_S[0]), default=0)
    kept: list[tuple[float, float]] = []
    high, low = -math.inf, math.inf
    for t, kw in reversed(entries[start:]):
        if kw > high or kw < low:
            kept.append((t, kw))
        else:
            kept[-1] = (t, kept[-1][1])
        high, low = max(high, kw), min(low, kw)
    return tuple(reversed(kept[:MAX_IMPORTS]))


def in_window(ledger: tuple[tuple[float, float], ...], window_s: float, now: float) -> list[float]:
    """The imports planned within the last `window_s` (both ends in): the one in force at its start
    and every later one."""
    values = [kw for t, kw in ledger if t > now - window_s]
    before = [kw for t, kw in ledger if t <= now - window_s]
    return before[-1:] + values


def leave_times(ledger: tuple[tuple[float, float], ...]) -> list[float]:
    """When each entry stops being in force (the next one's time): it leaves a window that long after."""
    return [t for t, _ in ledger[1:]]


def _ramps(settings: PolicySettings) -> tuple[tuple[float, float], ...]:
    """(window s, kW) of each import ramp limit set."""
    limits = (settings.import_ramp_kw_per_min, settings.import_ramp_kw_per_10s)
    return tuple((w, kw) for w, kw in zip(IMPORT_WINDOWS_S, limits, strict=True) if kw is not None)


def _label(ramps: tuple[tuple[float, float], ...]) -> str:
    return " and ".join(f"{w:.0f}-s" for w, _ in ramps) + " ramp"


@dataclass(slots=True)
class Absorber:
    """The absorber's view of this plan: the mining it should stay between, and what it did."""

    on: bool
    ramps: tuple[tuple[float, float], ...]
    nonmining_kw: float | None  # the base load and the AI tenants' readings; None: unknown
    floor_kw: float  # mining the import band wants at least (-inf: none)
    ceiling_kw: float  # mining the import band allows at most (inf: none)
    # The same band at OWN_MOVE_SHARE of the ramps: what building the reserve and restores keep to.
    own_floor_kw: float
    own_ceiling_kw: float
    # Mining that brings the import back to the highest of the windows, where it was before a drop:
    # a fill goes no higher, or the AI's return would land on top of it (inf: none).
    previous_kw: float
    reserve_kw: float  # the swing reserve's share of the mining rating
    full_kw: float  # all mining at full power, as the plan counts it
    ledger: tuple[tuple[float, float], ...]

    @classmethod
    def at(
        cls,
        site: SiteSpec,
        snapshot: SiteSnapshot,
        ledger: tuple[tuple[float, float], ...],
        groups: list[WorkingGroup],
        load_kw: LoadFn,
        now: float,
    ) -> Absorber:
        settings = site.settings
        ramps = _ramps(settings)
        nonmining_kw = _nonmining_kw(site, snapshot)
        floor_kw, ceiling_kw, previous_kw = -math.inf, math.inf, math.inf
        own_floor_kw, own_ceiling_kw = -math.inf, math.inf
        if ramps and nonmining_kw is not None and not ledger:
            # Nothing planned yet (a start, or readings back after an unknown one): the band starts
            # from the import the last commands make, so the first plans move it within the ramp too.
            ledger = ((now, nonmining_kw + sum(_commanded_kw(g, load_kw) for g in groups)),)
        if ramps and nonmining_kw is not None:
            band = _band(ledger, ramps, now)
            if band is not None:
                floor_kw, ceiling_kw = band[0] - nonmining_kw, band[1] - nonmining_kw
                own = _band(ledger, tuple((w, kw * OWN_MOVE_SHARE) for w, kw in ramps), now) or band
                own_floor_kw, own_ceiling_kw = own[0] - nonmining_kw, own[1] - nonmining_kw
                longest_s = max(w for w, _ in ramps)
                previous_kw = max(in_window(ledger, longest_s, now)) - nonmining_kw
        full_kw = sum(load_kw(g, "run", None) for g in groups)
        rated_kw = sum(g.spec.rated_kw for g in groups)
        return cls(
            on=bool(ramps) or settings.swing_reserve_fraction > 0,
            ramps=ramps,
            nonmining_kw=nonmining_kw,
            floor_kw=floor_kw,
            ceiling_kw=ceiling_kw,
            own_floor_kw=own_floor_kw,
            own_ceiling_kw=own_ceiling_kw,
            previous_kw=previous_kw,
            reserve_kw=settings.swing_reserve_fraction * rated_kw,
            full_kw=full_kw,
            ledger=ledger,
        )

    def cap_kw(self) -> float:
        """The most mining may draw for the absorber: the band's ceiling, and the reserve's cap as far
        as the band lets mining go down."""
        if self.ramps and self.nonmining_kw is None:
            return math.inf  # the import unknown: no band, and no reserve built past the ramp
        reserve_cap_kw = self.full_kw - self.reserve_kw if self.reserve_kw > 0 else math.inf
        # Never under the band's floor, where a fill would take it back up (the absorber's own band
        # can lie lower when earlier swings leave no import within the ramp of all).
        return min(self.ceiling_kw, max(reserve_cap_kw, self.own_floor_kw, self.floor_kw))

    def restore_cap_kw(self) -> float:
        """The most restores may bring mining to: the cap, within the absorber's share of the ramp."""
        return min(self.cap_kw(), max(self.own_ceiling_kw, self.floor_kw))

    def next_ledger(self, planned_kw: float, now: float) -> tuple[tuple[float, float], ...]:
        if not self.ramps:
            return ()
        import_kw = None if self.nonmining_kw is None else self.nonmining_kw + planned_kw
        return keep_imports(self.ledger, now, import_kw)


def _nonmining_kw(site: SiteSpec, snapshot: SiteSnapshot) -> float | None:
    """The import that is not mining: the base load and the AI tenants as they report; None if a tenant
    is unknown. Not the meter less the groups' readings: those lag the meter by up to a telemetry
    period while a group ramps, and the plan would chase its own ramps. A constant error (the base
    load is configured, not metered) leaves every change, and so the ramp, as it is."""
    ai_kw = 0.0
    for tenant in site.tenants:
        reading = snapshot.tenant_power_kw.get(tenant.tenant_id)
        if reading is None:
            return None
        ai_kw += reading
    return site.base_load_kw + ai_kw


def _commanded_kw(group: WorkingGroup, load_kw: LoadFn) -> float:
    """What the last plan's command has a group draw (a group no plan has moved: full power)."""
    previous = group.previous
    return (
        load_kw(group, "run", None) if previous is None else load_kw(group, previous.mode, previous.power_kw)
    )


def _band(
    ledger: tuple[tuple[float, float], ...], ramps: tuple[tuple[float, float], ...], now: float
) -> tuple[float, float] | None:
    """The import this plan may plan: within each ramp of every import of its window. When earlier
    swings mining could not make up leave no such import, the one nearest the latest within the ramp
    of it, towards where the import was. None: nothing planned in the windows yet."""
    low, high = -math.inf, math.inf
    for window_s, ramp_kw in ramps:
        recent = in_window(ledger, window_s, now)
        if recent:
            low, high = max(low, max(recent) - ramp_kw), min(high, min(recent) + ramp_kw)
    if low == -math.inf and high == math.inf:
        return None
    if low > high:
        latest_kw = ledger[-1][1]
        point_kw = min(max(latest_kw, high), low)
        return point_kw, point_kw
    return low, high


def absorb_rise(
    groups: list[WorkingGroup], absorber: Absorber, planned_kw: float, load_kw: LoadFn, now: float
) -> tuple[float, str]:
    """Shed mining to the absorber's cap, least efficient first, never below the band's floor (a whole
    group that would overshoot it stays on), never a held group nor one inside its minimum on-time;
    return the planned kW and what it did ("": nothing)."""
    cap_kw = absorber.cap_kw()
    if planned_kw <= cap_kw + EPSILON_KW:
        return planned_kw, ""
    ramp_binds = cap_kw >= absorber.ceiling_kw - EPSILON_KW
    if ramp_binds:
        text = f"absorber: shed so the import rises within the {_label(absorber.ramps)}"
    else:
        text = f"absorber: shed towards the swing reserve of {absorber.reserve_kw:.0f} kW"
    before_kw = planned_kw
    count = len(groups)
    for group in groups:  # least efficient first
        over_kw = planned_kw - cap_kw
        if over_kw <= EPSILON_KW:
            break
        if group.mode == "curtail" or group.held or group.reason:
            continue
        if now - group.since_s < group.spec.min_on_s:
            continue
        # What the band lets mining give up: to its floor for the AI's rise, to the absorber's own
        # share of the ramp for the reserve.
        slack_kw = planned_kw - (absorber.floor_kw if ramp_binds else absorber.own_floor_kw)
        current_kw = load_kw(group, "run", group.power_kw)
        target_kw = _lowered_kw(group, current_kw, over_kw, slack_kw, load_kw)
        if target_kw is None:
            continue
        if target_kw == group.spec.sleep_kw and not _partial_ok(group):
            group.mode, group.power_kw = "curtail", None
            group.reason = f"curtail: {text}, merit order {group.rank}/{count}"
        else:
            group.power_kw = target_kw
            group.reason = f"run at {target_kw:.0f} kW: partial, {text}, merit order {group.rank}/{count}"
        planned_kw -= current_kw - load_kw(group, group.mode, group.power_kw)
    if planned_kw >= before_kw - EPSILON_KW:
        return before_kw, ""
    return planned_kw, f"{text}: mining -{before_kw - planned_kw:.0f} kW"


def _partial_ok(group: WorkingGroup) -> bool:
    return group.spec.supports_power_target and group.known


def _lowered_kw(
    group: WorkingGroup, current_kw: float, over_kw: float, slack_kw: float, load_kw: LoadFn
) -> float | None:
    """The load one running group can be lowered to, by about `over_kw` and by no more than `slack_kw`:
    a whole kW target (at least the firmware's minimum) where it takes one, else asleep; None: not."""
    if _partial_ok(group):
        target_kw = float(math.floor(current_kw - over_kw))
        if current_kw - target_kw > slack_kw:
            target_kw = float(math.ceil(current_kw - slack_kw))
        target_kw = max(target_kw, group.spec.min_power_kw)
        return target_kw if target_kw < current_kw - EPSILON_KW else None
    asleep_kw = load_kw(group, "curtail", None)
    return group.spec.sleep_kw if current_kw - asleep_kw <= slack_kw + EPSILON_KW else None


def absorb_drop(
    groups: list[WorkingGroup],
    absorber: Absorber,
    settings: PolicySettings,
    budget_kw: float,
    planned_kw: float,
    views: Mapping[str, EconomicView | None],
    blocker: str,
    load_kw: LoadFn,
    now: float,
) -> tuple[float, str]:
    """Raise mining to the band's floor, most efficient first, within the mining budget (less the
    deadband) and the band's ceiling; return the planned kW and what it did ("": nothing). A fill
    spends the reserve (rebuilt after it within the ramp), so the reserve's cap does not bound it.
    It first takes only moves that keep the import at or below where it was (the windows' highest:
    past it, the AI's return would land on top of the fill), then, still short of the floor, whole
    groups that overshoot it within the ceiling."""
    ceiling_kw = min(budget_kw - settings.deadband_kw, absorber.ceiling_kw)
    target_kw = min(absorber.floor_kw, ceiling_kw)
    gap_kw = target_kw - planned_kw
    if gap_kw <= EPSILON_KW or blocker:
        return planned_kw, ""
    text = f"absorber: filling an AI drop of {gap_kw:.0f} kW within the {_label(absorber.ramps)}"
    before_kw = planned_kw
    for limit_kw in (min(ceiling_kw, absorber.previous_kw), ceiling_kw):
        for group in reversed(groups):  # most efficient first
            need_kw = target_kw - planned_kw
            if need_kw <= EPSILON_KW:
                break
            new_kw = _fill_kw(group, views, need_kw, load_kw, now)
            if new_kw is None:
                continue
            current_kw = load_kw(group, group.mode, group.power_kw)
            if planned_kw + new_kw - current_kw > limit_kw + EPSILON_KW:
                continue
            full_kw = load_kw(group, "run", None)
            group.mode = "run"
            group.power_kw = None if new_kw >= full_kw - EPSILON_KW else new_kw
            planned_kw += new_kw - current_kw
            target = "" if group.power_kw is None else f" at {new_kw:.0f} kW"
            group.reason = f"run{target}: {text}"
    if planned_kw <= before_kw + EPSILON_KW:
        return planned_kw, ""
    return planned_kw, f"{text}: mining +{planned_kw - before_kw:.0f} kW"


def _fill_kw(
    group: WorkingGroup, views: Mapping[str, EconomicView | None], need_kw: float, load_kw: LoadFn, now: float
) -> float | None:
    """The load a fill may raise one group to (None: not this group): never one an earlier rule
    decided, held, unseen, uneconomic or inside its minimum off-time (which it says)."""
    if group.reason or group.held or not group.known:
        return None
    view = views.get(group.spec.group_id)
    if view is not None and view.wish != "run":
        return None
    if group.mode == "curtail" and now - group.since_s < group.spec.min_off_s:
        group.reason = f"curtail: held, min off until {until(group, now, 'off')}; absorber waits"
        return None
    current_kw = load_kw(group, group.mode, group.power_kw)
    full_kw = load_kw(group, "run", None)
    if full_kw - current_kw <= EPSILON_KW:
        return None
    return _raised_kw(group, current_kw, full_kw, need_kw)


def _raised_kw(group: WorkingGroup, current_kw: float, full_kw: float, need_kw: float) -> float | None:
    """The load one group can be raised to towards `need_kw` more: a whole kW target where the
    firmware takes one (at least its minimum), else full power; None: not at all."""
    if not group.spec.supports_power_target:
        return full_kw
    wanted_kw = float(math.floor(current_kw + need_kw))
    if wanted_kw >= full_kw:
        return full_kw
    return max(wanted_kw, group.spec.min_power_kw, current_kw) if wanted_kw > current_kw else None


def reserve_cost(
    groups: list[WorkingGroup], absorber: Absorber, budget_kw: float, planned_kw: float, load_kw: LoadFn
) -> tuple[float, float]:
    """The kW the swing reserve holds (mining under what the budget allows, up to the reserve's share)
    and the hashrate it gives up (TH/s = kW x 1000 / (J/TH)), counted on the most efficient room first,
    which a restore would take first."""
    if absorber.reserve_kw <= 0:
        return 0.0, 0.0
    held_kw = max(0.0, min(absorber.reserve_kw, min(budget_kw, absorber.full_kw) - planned_kw))
    left_kw, th_s = held_kw, 0.0
    for group in reversed(groups):
        if left_kw <= EPSILON_KW:
            break
        room_kw = load_kw(group, "run", None) - load_kw(group, group.mode, group.power_kw)
        taken_kw = min(max(room_kw, 0.0), left_kw)
        th_s += taken_kw * 1000.0 / group.spec.efficiency_j_per_th
        left_kw -= taken_kw
    return held_kw, th_s
