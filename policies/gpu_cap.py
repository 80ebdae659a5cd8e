"""Spreading a tenant's power cap over its GPUs' power limits (pure; used by daemon/agents/gpu.py).

The sum of the limits never exceeds the GPU budget (when the GPUs' minimum limits allow it), so the
cap holds by construction whatever the workload does next; readings only decide who gets what:

1. every GPU gets its minimum limit (NVML refuses less);
2. the rest is water-filled toward each GPU's demand (its draw, or its maximum limit when it is
   pinned at its current limit and may want more): idle GPUs do not hold budget that busy ones need;
3. what is left after every demand is met is water-filled up to the maximum limits, so a GPU whose
   demand grows has room before the next re-split.

Water-filling: one level L, each GPU at `clamp(L, low, high)`, L the highest level whose sum fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_BISECTION_STEPS = 60


@dataclass(frozen=True, slots=True)
class GpuRange:
    min_limit_w: float
    max_limit_w: float
    demand_w: float


@dataclass(frozen=True, slots=True)
class Split:
    limits_w: list[float]
    feasible: bool  # False: the budget is below the sum of minimum limits (the minimums are used)


def _fill(low: Sequence[float], high: Sequence[float], budget_w: float) -> list[float]:
    """`clamp(L, low_i, high_i)` with the largest L whose sum is <= budget (sum(low) <= budget)."""
    if sum(high) <= budget_w:
        return list(high)
    lo_level, hi_level = min(low), max(high)
    for _ in range(_BISECTION_STEPS):
        mid = (lo_level + hi_level) / 2
        if sum(min(max(mid, a), b) for a, b in zip(low, high, strict=True)) <= budget_w:
            lo_level = mid
        else:
            hi_level = mid
    return [min(max(lo_level, a), b) for a, b in zip(low, high, strict=True)]


def split_cap(budget_w: float, gpus: Sequence[GpuRange]) -> Split:
    """Limits for `gpus` whose sum is <= `budget_w`, each within its range."""
    mins = [g.min_limit_w for g in gpus]
    if budget_w < sum(mins):
        return Split(mins, feasible=False)
    wants = [min(max(g.demand_w, g.min_limit_w), g.max_limit_w) for g in gpus]
    limits = _fill(mins, wants, budget_w)
    if limits == wants:
        limits = _fill(wants, [g.max_limit_w for g in gpus], budget_w)
    return Split(limits, feasible=True)
