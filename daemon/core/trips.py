"""What each armed trip stage touches, computed from a plan so that firing only looks it up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mullet.policies.model import Plan, TripStage

Outlet = tuple[str, int]  # (pdu_id, outlet)
ArmedStage = tuple[tuple[str, ...], tuple[Outlet, ...]]  # (groups, outlets to cut)


def arm_stages(
    plan: Plan, stages: Sequence[TripStage], outlets_by_group: Mapping[str, Sequence[Outlet]]
) -> dict[int, ArmedStage]:
    """Per stage: every group armed at or below it (a trip at stage 2 also sheds stage 1's), and the
    outlets of those armed at a `hard_cut` stage."""
    by_number = {s.stage: s for s in stages}
    armed: dict[int, ArmedStage] = {}
    for number in sorted(by_number):
        tripped = [d for d in plan.decisions if d.trip_stage is not None and d.trip_stage <= number]
        outlets = tuple(
            outlet
            for d in tripped
            if d.trip_stage is not None and by_number[d.trip_stage].hard_cut
            for outlet in outlets_by_group.get(d.group_id, ())
        )
        armed[number] = (tuple(d.group_id for d in tripped), outlets)
    return armed
