"""What each armed trip stage touches, computed from a plan so that firing only looks it up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mullet.policies.model import Plan, TripStage

Outlet = tuple[str, int]  # (pdu_id, outlet)
ArmedStage = tuple[tuple[str, ...], tuple[Outlet, ...]]  # (groups, outlets to cut)


@dataclass(frozen=True, slots=True)
class TripRecord:
    """One trip as its commands went out, times in `time.monotonic()` seconds.

    `published_s`: the PUBLISH was written to the broker's socket (or found no session).
    `issued_s`: every armed PDU's first outlet write was on its socket (None: no PDU armed); a PDU
    that had to reconnect or log in first is later, see `TripSettled.issued_s`.
    """

    stage: int
    seq: int
    cause: str  # "frequency" or the id of the grid event that asked for it
    sample_mono_s: float
    published_s: float
    issued_s: float | None
    groups: tuple[str, ...]
    outlets: tuple[Outlet, ...]
    hz: float | None = None  # the confirming measurement (frequency trips)

    @property
    def added_latency_s(self) -> float:
        """The daemon's own cost: sample -> broadcast written and all armed PDU writes issued."""
        out_s = self.published_s if self.issued_s is None else max(self.published_s, self.issued_s)
        return out_s - self.sample_mono_s


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
