"""The groups while a plan is being made: how they enter it from memory, what load each counts for,
and what they leave behind (the next memory, the decisions). Part of `compute_plan` (policies/plan.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mullet.policies.model import (
    NEVER,
    GroupDecision,
    GroupMemory,
    GroupMode,
    GroupSpec,
    SiteSnapshot,
)
from mullet.policies.plan_cache import PlanCache

__all__ = [
    "EPSILON_KW",
    "LoadFn",
    "WorkingGroup",
    "decisions",
    "enter_groups",
    "load_model",
    "next_groups",
    "until",
]

EPSILON_KW = 1e-6


@dataclass(slots=True)
class WorkingGroup:
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


LoadFn = Callable[[WorkingGroup, GroupMode, float | None], float]


def load_model(obligation_active: bool) -> LoadFn:
    """The kW a group counts for in this plan in a given mode and power target."""

    def load_kw(group: WorkingGroup, mode: GroupMode, power_kw: float | None) -> float:
        # Unknown is not zero: during an obligation a group we cannot see counts at rated kW.
        if obligation_active and not group.known:
            return group.spec.rated_kw
        if mode == "curtail":
            return group.spec.sleep_kw
        return group.spec.rated_kw if power_kw is None else power_kw

    return load_kw


def enter_groups(
    order: tuple[GroupSpec, ...], memory: Mapping[str, GroupMemory], snapshot: SiteSnapshot
) -> tuple[list[WorkingGroup], list[str]]:
    """Every group in merit order with the command the last plan left it (a group no plan has switched
    yet: running at full power), and the ids of those whose reading is unknown."""
    remembered = memory.get
    readings = snapshot.group_power_kw.get
    groups: list[WorkingGroup] = []
    unknown_groups: list[str] = []
    for rank, spec in enumerate(order, start=1):
        previous = remembered(spec.group_id)
        known = readings(spec.group_id) is not None
        if not known:
            unknown_groups.append(spec.group_id)
        if previous is None:
            groups.append(WorkingGroup(spec, rank, "run", None, NEVER, known, None))
        else:
            groups.append(
                WorkingGroup(spec, rank, previous.mode, previous.power_kw, previous.since_s, known, previous)
            )
    return groups, unknown_groups


def until(group: WorkingGroup, now: float, which: str) -> str:
    """When the group's minimum on ("on") or off ("off") time ends, from now."""
    hold_s = group.spec.min_on_s if which == "on" else group.spec.min_off_s
    return f"+{group.since_s + hold_s - now:.0f} s"


def next_groups(
    memory: Mapping[str, GroupMemory], groups: list[WorkingGroup], now: float
) -> dict[str, GroupMemory]:
    """Every group's memory for the next plan."""
    # Most groups keep their command from one plan to the next: copy the mapping (C speed) and
    # replace only what changed, instead of rebuilding thousands of entries per cycle.
    changed = {}
    for group in groups:
        previous = group.previous
        if previous is None or previous.mode != group.mode or previous.power_kw != group.power_kw:
            changed[group.spec.group_id] = _remember(previous, group, now)
    kept = dict(memory) if len(memory) == len(groups) else {}
    if not kept:
        changed = {g.spec.group_id: _remember(g.previous, g, now) for g in groups}
    kept.update(changed)
    return kept


def _remember(previous: GroupMemory | None, group: WorkingGroup, now: float) -> GroupMemory:
    """The group's memory for the next plan; `since` moves only when this plan switched its mode."""
    if previous is None:
        return GroupMemory(group.mode, group.power_kw, NEVER if group.mode == "run" else now)
    if previous.mode != group.mode:
        return GroupMemory(group.mode, group.power_kw, now)
    if previous.power_kw == group.power_kw:
        return previous  # unchanged: no new object
    return GroupMemory(group.mode, group.power_kw, previous.since_s)


def decisions(
    groups: list[WorkingGroup], site_index: tuple[int, ...], cache: PlanCache
) -> tuple[GroupDecision, ...]:
    """The plan's decisions in the site's order of groups."""
    count = len(groups)
    # Unchanged decisions are the previous plan's objects: a big site's plan then allocates only for
    # what changed. Pure memoisation: the plan is equal either way.
    previous_decisions = cache.last_decisions(count)
    made: list[GroupDecision | None] = [None] * count
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
            made[index] = last
        else:
            made[index] = GroupDecision(
                group.spec.group_id, group.mode, group.power_kw, group.reason, group.trip_stage
            )
    cache.keep_decisions(made)
    return tuple(d for d in made if d is not None)
