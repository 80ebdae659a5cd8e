"""Drills: test deployments a site runs on itself, to prove it will perform before the real event.

A drill is a `reduce` obligation under a program's rules (its deadline, its actuation path, its
scoring) that runs the real path end to end: planning, setpoints, verification, escalation. It is
journaled as a `drill`, never as a `grid_event`, counted in `mullet_drills_total`, never in
`mullet_grid_events_total`, and its ack is never published on grid/event/ack: the grid did not ask
for it. It ends at its own end (the site recalls its own test), even under a program such as ERS
whose real deployments hold until the grid recalls them.

Pure: the request model, the ids, and the schedule of drills not yet due. daemon/site/drills.py
does the I/O (the HTTP API, the journal, the timer).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mullet.drivers.protocol import GridEvent

ID_PREFIX = "drill:"
# At most this many drills wait for their time; a drill is a few a season, so more is a mistake.
MAX_SCHEDULED = 16
# A scheduled drill whose time passed by more than this while the daemon was down is journaled as
# missed, not run late: a test load shed hours after the operator expected it surprises everyone.
MISSED_AFTER_S = 300.0
# Shortest and longest drill. ERCOT's ERS tests last up to an hour; 8 h is ERS's longest deployment.
MIN_DURATION_S = 10.0
MAX_DURATION_S = 8 * 3600.0
DEFAULT_DURATION_S = 3600.0
# Furthest ahead a drill may be scheduled: a season's drills are planned weeks, not years, ahead.
MAX_AHEAD_S = 31 * 86_400.0


def is_drill(event_id: str) -> bool:
    return event_id.startswith(ID_PREFIX)


class DrillRequest(BaseModel):
    """POST /v1/drills: `kw` below the meter reading at deployment, under `program`'s rules, from
    `at_s` (Unix s; now when absent) for `duration_s`. `dry_run`: plan it and say what would be shed,
    acting on nothing."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    program: Annotated[str, Field(min_length=1, max_length=64)]
    kw: Annotated[float, Field(gt=0, le=10_000_000, allow_inf_nan=False)]
    at_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    duration_s: Annotated[float, Field(ge=MIN_DURATION_S, le=MAX_DURATION_S, allow_inf_nan=False)] = (
        DEFAULT_DURATION_S
    )
    dry_run: bool = False
    note: Annotated[str, Field(max_length=200)] = ""


def drill_id(at_s: float, taken: set[str]) -> str:
    """`drill:<UTC start, to the second>`, with a suffix when two drills share a second."""
    base = ID_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(math.floor(at_s)))
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def drill_event(drill_id_: str, request: DrillRequest, start_s: float) -> GridEvent:
    """The obligation a drill deploys, starting now (`start_s`) and ending at its own end."""
    return GridEvent(
        id=drill_id_,
        kind="reduce",
        kw=request.kw,
        end=start_s + request.duration_s,
        program=request.program,
        source="drill",
    )


@dataclass(frozen=True, slots=True)
class ScheduledDrill:
    drill_id: str
    request: DrillRequest
    by: str

    def entry(self) -> dict[str, Any]:
        return {"id": self.drill_id, "request": self.request.model_dump(), "by": self.by}

    @staticmethod
    def from_entry(data: dict[str, Any]) -> ScheduledDrill:
        return ScheduledDrill(str(data["id"]), DrillRequest.model_validate(data["request"]), str(data["by"]))


class DrillSchedule:
    """Drills waiting for their time, bounded by MAX_SCHEDULED."""

    def __init__(self) -> None:
        self.pending: dict[str, ScheduledDrill] = {}

    def full(self) -> bool:
        return len(self.pending) >= MAX_SCHEDULED

    def add(self, drill: ScheduledDrill) -> None:
        if self.full():
            raise OverflowError(f"{MAX_SCHEDULED} drills already scheduled")
        self.pending[drill.drill_id] = drill

    def cancel(self, drill_id_: str) -> ScheduledDrill | None:
        return self.pending.pop(drill_id_, None)

    def next_due_s(self) -> float | None:
        return min((d.request.at_s or 0.0 for d in self.pending.values()), default=None)

    def take_due(self, now_s: float) -> list[ScheduledDrill]:
        due = sorted(
            (d for d in self.pending.values() if (d.request.at_s or 0.0) <= now_s),
            key=lambda d: d.request.at_s or 0.0,
        )
        for drill in due:
            del self.pending[drill.drill_id]
        return due

    def listing(self) -> list[dict[str, Any]]:
        return [
            {
                "id": d.drill_id,
                "program": d.request.program,
                "kw": d.request.kw,
                "at_s": d.request.at_s,
                "duration_s": d.request.duration_s,
            }
            for d in sorted(self.pending.values(), key=lambda d: d.request.at_s or 0.0)
        ]


def recover_schedule(
    rows: list[tuple[float, str, dict[str, Any]]], now_s: float
) -> tuple[DrillSchedule, list[ScheduledDrill]]:
    """From the journal's (wall_s, kind, data) rows of kinds drill_scheduled, drill_cancelled,
    drill_missed and drill (in order): the drills still to run, and those whose time passed by more
    than MISSED_AFTER_S while the daemon was down (to journal as missed)."""
    scheduled: dict[str, ScheduledDrill] = {}
    for _wall_s, kind, data in rows:
        if kind == "drill_scheduled":
            drill = ScheduledDrill.from_entry(data)
            scheduled[drill.drill_id] = drill
        elif kind in ("drill_cancelled", "drill_missed"):
            scheduled.pop(str(data.get("id")), None)
        elif kind == "drill":
            scheduled.pop(str(data.get("event", {}).get("id")), None)
    schedule, missed = DrillSchedule(), []
    for drill in sorted(scheduled.values(), key=lambda d: d.request.at_s or 0.0):
        if (drill.request.at_s or 0.0) < now_s - MISSED_AFTER_S:
            missed.append(drill)
        elif not schedule.full():
            schedule.add(drill)
    return schedule, missed
