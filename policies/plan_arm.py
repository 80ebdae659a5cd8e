"""The last phase of a plan: arm running groups at the under-frequency trip stages. Part of
`compute_plan` (policies/plan.py).
"""

from __future__ import annotations

from mullet.policies.model import TripStage
from mullet.policies.plan_cache import PlanCache
from mullet.policies.plan_groups import EPSILON_KW, LoadFn, WorkingGroup

__all__ = ["arm"]


def arm(
    trip_stages: tuple[TripStage, ...], groups: list[WorkingGroup], load_kw: LoadFn, cache: PlanCache
) -> list[str]:
    """Assign running groups to under-frequency stages, least efficient first; say what falls short."""
    notes: list[str] = []
    running = iter([g for g in groups if g.mode == "run"])
    for stage in sorted(trip_stages, key=lambda s: s.stage):
        covered_kw = 0.0
        armed = 0
        while covered_kw < stage.shed_kw - EPSILON_KW:
            group = next(running, None)
            if group is None:
                break
            group.trip_stage = stage.stage
            covered_kw += load_kw(group, "run", group.power_kw) - group.spec.sleep_kw
            armed += 1
            group.reason = cache.armed_reason(group.reason, stage.stage, stage.threshold_hz)
        line = f"stage {stage.stage} ({stage.threshold_hz:g} Hz): {armed} groups arm {covered_kw:.0f} kW"
        if covered_kw < stage.shed_kw - EPSILON_KW:
            line += f", {stage.shed_kw - covered_kw:.0f} kW short of {stage.shed_kw:.0f} kW"
        notes.append(line)
    return notes
