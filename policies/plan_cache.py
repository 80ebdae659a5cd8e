"""What one plan can hand the next to make it cheaper: pure memoisation, never a change of the plan.

A site's groups change only on a reload, and most of a big site's decisions are the same from one plan
to the next. `PlanCache` keeps, for one groups tuple, the merit order, the reason texts of groups that
simply keep running, the armed-reason texts, and the previous plan's decision objects, so a cycle
neither sorts 6,000 groups again nor allocates a decision for each. The caller owns it (the daemon keeps
one for its plan loop); a plan made without one is equal, only slower. It recognises its groups tuple
by holding it (`is`), not by hashing 6,000 frozen specs, which would cost more than the plan.
"""

from __future__ import annotations

import functools

from mullet.policies.model import GroupDecision, GroupSpec

__all__ = ["PlanCache", "merit_key", "rank"]

# Armed-reason texts kept at most: groups x stages x the few reasons a group goes through.
MAX_ARMED_REASONS = 65_536


def merit_key(group: GroupSpec) -> tuple[float, int, str]:
    """Shed order: least efficient (highest J/TH) first, then lowest priority, then id for determinism."""
    return (-group.efficiency_j_per_th, group.priority, group.group_id)


def rank(groups: tuple[GroupSpec, ...]) -> tuple[tuple[GroupSpec, ...], tuple[int, ...]]:
    """The merit order, and for each entry of it the group's index in `groups` (the site's order)."""
    # Sorting indices keeps equal keys in the site's order, as sorting the specs themselves would.
    site_index = tuple(sorted(range(len(groups)), key=lambda i: merit_key(groups[i])))
    return tuple(groups[i] for i in site_index), site_index


class PlanCache:
    """Memoised per-site work of `compute_plan`, owned by the caller that plans one site over and over.

    Bounded: one groups tuple's worth (a different tuple replaces it all) plus at most
    `MAX_ARMED_REASONS` armed-reason texts.
    """

    __slots__ = ("_decisions", "_fits", "_groups", "_ranking", "armed_reason")

    def __init__(self) -> None:
        self._groups: tuple[GroupSpec, ...] | None = None
        self._ranking: tuple[tuple[GroupSpec, ...], tuple[int, ...]] = ((), ())
        self._fits: tuple[str, ...] | None = None
        self._decisions: list[GroupDecision | None] = []
        # A group's reason with its trip stage added; the same few texts recur every plan. Memoised
        # per cache (an LRU at C speed: armed groups call it every plan).
        self.armed_reason = functools.lru_cache(maxsize=MAX_ARMED_REASONS)(_armed_reason)

    def ranking(self, groups: tuple[GroupSpec, ...]) -> tuple[tuple[GroupSpec, ...], tuple[int, ...]]:
        """`rank(groups)`, sorted once per groups tuple; a new tuple drops everything kept for the old."""
        if groups is not self._groups:
            self._ranking = rank(groups)
            self._groups = groups
            self._fits = None
            self._decisions = []
        return self._ranking

    def fits_reasons(self) -> tuple[str, ...]:
        """The reason of every group that simply keeps running, by rank: formatted once per site, so
        the thousands of unchanged groups of a big site cost no string building per plan (the budget
        figure is in the plan's own reasons). Call `ranking` first."""
        if self._fits is None:
            count = len(self._ranking[0])
            self._fits = tuple(
                f"run: fits the mining budget (merit order {n}/{count})" for n in range(1, count + 1)
            )
        return self._fits

    def last_decisions(self, count: int) -> list[GroupDecision | None]:
        """The previous plan's decisions in the site's order, or `count` Nones if there is none."""
        return self._decisions if len(self._decisions) == count else [None] * count

    def keep_decisions(self, decisions: list[GroupDecision | None]) -> None:
        self._decisions = decisions


def _armed_reason(reason: str, stage: int, threshold_hz: float) -> str:
    return f"{reason}; armed at stage {stage} ({threshold_hz:g} Hz)"
