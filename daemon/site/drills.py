"""The drill service: POST /v1/drills runs, schedules or dry-runs a drill; DELETE cancels one.

A drill due now goes through the one grid-event queue like any event (decided, journaled as a
`drill` before it is answered, then planned and carried out by the real path). A drill for later is
journaled as `drill_scheduled` before it is answered, waits here on the wall clock, and a restart
takes it back from the journal (one whose time passed while the daemon was down is journaled as
`drill_missed`, never run late). What a drill is and is not: daemon/core/drills.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.drills import (
    MAX_AHEAD_S,
    MAX_SCHEDULED,
    DrillRequest,
    DrillSchedule,
    ScheduledDrill,
    drill_event,
    drill_id,
    is_drill,
    recover_schedule,
)
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.daemon.site.intake import Intake
from mullet.drivers.protocol import GridEvent
from mullet.policies.programs import Program

log = structlog.get_logger("mullet.drills")

# A drill asked for less than this far ahead runs now: the clocks of the caller and the site differ.
NOW_TOLERANCE_S = 2.0
ACK_TIMEOUT_S = 10.0
SCHEDULE_KINDS = ("drill_scheduled", "drill_cancelled", "drill_missed", "drill")


class DrillError(Exception):
    """A drill refused before anything happened: `status` for HTTP, `code` for the caller."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


class DrillService:
    def __init__(
        self,
        core: SiteController,
        intake: Intake,
        journal: Journal,
        metrics: Metrics,
        catalogue: dict[str, Program],
    ) -> None:
        self.core, self.intake, self.journal, self.metrics = core, intake, journal, metrics
        self.catalogue = catalogue
        self.schedule = DrillSchedule()
        self._changed = asyncio.Event()

    def recover(self, now_s: float) -> list[ScheduledDrill]:
        """Take back the drills still to run; returns those missed while down (journaled by `run`)."""
        rows = [(w, k, d) for w, k, _s, d in self.journal.entries(SCHEDULE_KINDS)]
        self.schedule, missed = recover_schedule(rows, now_s)
        return missed

    def _taken_ids(self) -> set[str]:
        return set(self.schedule.pending) | set(self.core.book.obligations)

    async def request(self, request: DrillRequest, by: str) -> tuple[int, dict[str, Any]]:
        """Run, schedule or dry-run `request`; (HTTP status, body)."""
        if request.program.casefold() not in self.catalogue:
            raise DrillError(
                422,
                "unknown_program",
                f"program {request.program!r} is not in this site's catalogue:"
                " a drill tests a program's rules",
            )
        now_s = time.time()
        at_s = request.at_s if request.at_s is not None and request.at_s > now_s + NOW_TOLERANCE_S else None
        if request.dry_run:
            event = drill_event(drill_id(now_s, self._taken_ids()), request, now_s)
            preview = self.core.preview(event, now_s, time.monotonic())
            entry = {"request": request.model_dump(), "by": by, "preview": preview}
            await self._durable("drill_dry_run", entry, event.id)
            self.metrics.drills.labels(outcome="dry_run").inc()
            log.info("drill dry run", program=request.program, kw=request.kw, by=by, **_brief(preview))
            return 200, {"v": 1, "id": event.id, "dry_run": True, "at_s": request.at_s, **preview}
        if at_s is not None:
            if at_s > now_s + MAX_AHEAD_S:
                raise DrillError(422, "too_far", f"at_s is more than {MAX_AHEAD_S / 86_400:g} days ahead")
            return await self._schedule(request, at_s, by)
        return await self._deploy(ScheduledDrill(drill_id(now_s, self._taken_ids()), request, by), now_s)

    async def _schedule(self, request: DrillRequest, at_s: float, by: str) -> tuple[int, dict[str, Any]]:
        if self.schedule.full():
            raise DrillError(409, "too_many_drills", f"{MAX_SCHEDULED} drills already scheduled; cancel one")
        drill = ScheduledDrill(drill_id(at_s, self._taken_ids()), request, by)
        await self._durable("drill_scheduled", drill.entry(), drill.drill_id)
        self.schedule.add(drill)
        self._changed.set()
        self.metrics.drills.labels(outcome="scheduled").inc()
        log.info(
            "drill scheduled", drill_id=drill.drill_id, program=request.program, kw=request.kw, at_s=at_s
        )
        return 202, {
            "v": 1,
            "id": drill.drill_id,
            "scheduled": True,
            "at_s": at_s,
            "duration_s": request.duration_s,
        }

    async def _deploy(self, drill: ScheduledDrill, now_s: float) -> tuple[int, dict[str, Any]]:
        event = drill_event(drill.drill_id, drill.request, now_s)
        ack = await asyncio.wait_for(self.intake.submit_drill(event), ACK_TIMEOUT_S)
        body = {"v": 1, **ack.model_dump(), "start_s": now_s, "end_s": event.end}
        return (200 if ack.accepted else 409), body

    async def _deploy_scheduled(self, drill: ScheduledDrill) -> None:
        """A scheduled drill's time has come; whatever happens is logged, never raised into the daemon
        (the refusal itself, if any, is journaled by the controller as `drill_rejected`)."""
        try:
            status, body = await self._deploy(drill, time.time())
        except Exception as exc:
            self.metrics.drills.labels(outcome="rejected").inc()
            log.error("scheduled drill not deployed", drill_id=drill.drill_id, error=type(exc).__name__)
            return
        log.info("scheduled drill deployed", drill_id=drill.drill_id, status=status, code=body.get("code"))

    async def cancel(self, drill_id_: str, by: str) -> tuple[int, dict[str, Any]]:
        """End a drill in force (a cancel through the queue) or drop a scheduled one."""
        if not is_drill(drill_id_):
            raise DrillError(404, "not_a_drill", f"{drill_id_!r} is not a drill id")
        scheduled = self.schedule.pending.get(drill_id_)
        if scheduled is not None:
            await self._durable("drill_cancelled", {"id": drill_id_, "by": by}, drill_id_)
            self.schedule.cancel(drill_id_)
            self._changed.set()
            self.metrics.drills.labels(outcome="cancelled").inc()
            log.info("drill cancelled", drill_id=drill_id_, by=by)
            return 200, {"v": 1, "id": drill_id_, "cancelled": True, "was": "scheduled"}
        if drill_id_ not in self.core.book.obligations:
            raise DrillError(404, "unknown_drill", f"no drill {drill_id_!r} scheduled or in force")
        ack = await asyncio.wait_for(
            self.intake.submit_drill(GridEvent(id=drill_id_, kind="cancel", source="drill")), ACK_TIMEOUT_S
        )
        return (200 if ack.accepted else 409), {"v": 1, **ack.model_dump(), "was": "in_force"}

    async def _durable(self, kind: str, data: dict[str, Any], subject: str) -> None:
        """Journal before answering; a write that fails is a refusal, never an unrecorded drill."""
        try:
            await self.journal.durable(kind, data, subject=subject)
        except Exception as exc:
            raise DrillError(
                503, "journal_unavailable", f"journal unavailable: {type(exc).__name__}"
            ) from None

    def status(self) -> dict[str, Any]:
        in_force = sorted(i for i in self.core.book.obligations if is_drill(i))
        return {"scheduled": self.schedule.listing(), "in_force": in_force}

    async def run(self, missed: list[ScheduledDrill]) -> None:
        """Journal the drills missed while down, then deploy each scheduled drill when its time comes."""
        for drill in missed:
            self.metrics.drills.labels(outcome="missed").inc()
            log.warning(
                "drill missed while the daemon was down", drill_id=drill.drill_id, at_s=drill.request.at_s
            )
            try:
                await self._durable(
                    "drill_missed", {"id": drill.drill_id, "at_s": drill.request.at_s}, drill.drill_id
                )
            except DrillError as exc:  # the next start says it again
                log.error("drill missed not journaled", drill_id=drill.drill_id, reason=exc.reason)
        while True:
            self._changed.clear()
            next_s = self.schedule.next_due_s()
            if next_s is not None and next_s <= time.time():
                for drill in self.schedule.take_due(time.time()):
                    await self._deploy_scheduled(drill)
                continue
            wait_s = None if next_s is None else min(60.0, max(0.0, next_s - time.time()))
            try:
                await asyncio.wait_for(self._changed.wait(), wait_s)
            except TimeoutError:
                pass


def _brief(preview: dict[str, Any]) -> dict[str, Any]:
    return {
        "accepted": preview.get("accepted"),
        "would_shed_kw": preview.get("would_shed_kw"),
        "groups": len(preview.get("would_change", [])),
        "code": preview.get("code"),
    }
