"""The QSE link in the site daemon: the Modbus server, the journal before every write takes effect,
and the loop that turns the QSE's levels into grid events (docs/qse.md).

A write that changes a level is journaled durably (`qse_write`, with the peer's address and the whole
level image, so a restart takes the levels back) before it is acknowledged; a heartbeat-only or
unchanged write is counted, not journaled (a heartbeat every 2 s would write 43,200 rows a day that
say nothing the link's state changes do not). The link's state changes are journaled (`qse_link`),
logged once and exported as metrics: `mullet_qse_link_up` and `mullet_qse_fail_safe` are the alarms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from pymodbus.constants import ExcCodes

from mullet.daemon.config import QseSection
from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.qse import SLOTS, Action, QseLink
from mullet.daemon.core.qse_telemetry import input_values
from mullet.daemon.logs import RateLimiter
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.daemon.site.intake import Intake
from mullet.drivers.protocol import GridEvent
from mullet.drivers.qse_dnp3 import QseDnp3Outstation
from mullet.drivers.qse_points import Table
from mullet.drivers.qse_server import QseServer, parse_allowlist

log = structlog.get_logger("mullet.qse")

# How often the link's heartbeat and levels are looked at with nothing written.
TICK_S = 0.5
# A queued grid event is answered in milliseconds; this only bounds a wedged queue.
ACK_TIMEOUT_S = 10.0
# Refusals are counted each; a line per reason at most this often.
REFUSAL_LOG_EVERY_S = 60.0


class QseService:
    def __init__(
        self,
        section: QseSection,
        core: SiteController,
        intake: Intake,
        journal: Journal,
        metrics: Metrics,
        *,
        start_mono_s: float,
    ) -> None:
        self.section = section
        self.core = core
        self.intake = intake
        self.journal = journal
        self.metrics = metrics
        self.link = QseLink(section, start_mono_s)
        allow = parse_allowlist(section.allow)
        self.server = QseServer(
            host=section.host,
            port=section.port,
            device_id=section.device_id,
            allow=allow,
            max_connections=section.max_connections,
            writes_allowed=section.allow_writes,
            read=self.read,
            write=self.write,
            refused=self.refused,
        )
        # The same points read-only over DNP3, with its own refusal labels (docs/qse.md section 7).
        self.dnp3: QseDnp3Outstation | None = None
        if section.dnp3:
            self.dnp3 = QseDnp3Outstation(
                host=section.host,
                port=section.dnp3_port,
                outstation_address=section.dnp3_outstation_address,
                master_address=section.dnp3_master_address,
                allow=allow,
                read=self.read,
                refused=lambda reason, peer: self.refused(f"dnp3_{reason}", peer),
            )
        self._wake = asyncio.Event()
        self._refusal_log = RateLimiter(REFUSAL_LOG_EVERY_S)
        self._outcomes_logged: dict[str, str] = {}  # slot -> the last outcome logged
        metrics.qse_link_up.set(0)
        metrics.qse_fail_safe.set(0)

    def status(self, now_mono_s: float) -> dict[str, Any]:
        """The link for GET /v1/status: bounded (one entry per slot)."""
        link = self.link
        slots = {}
        for slot in SLOTS[:-1]:
            held = link.held.get(slot)
            slots[slot] = {
                "state": link.slot_state(slot),
                "kw": None if held is None else held.want.kw,
                "refusal": link.refusal(slot),
            }
        return {
            "link": link.state,
            "heartbeat_age_s": link.heartbeat_age_s(now_mono_s),
            "writes": self.section.allow_writes,
            "connections": self.server.connections,
            "test_mode": link.levels["test_mode"] == 1.0,
            "slots": slots,
        }

    # ---- the server's hooks --------------------------------------------------------------------

    def read(self, table: Table) -> dict[str, float]:
        self.metrics.qse_reads.labels(table=table).inc()
        if table == "holding":
            return self.link.levels
        return input_values(self.core, self.link, time.monotonic())

    async def write(self, peer: str, changes: dict[str, float]) -> ExcCodes | None:
        if not self.core.commanding:
            self._count_refusal("standby", peer, "writes go to the leader")
            return ExcCodes.DEVICE_BUSY
        problem = self.link.check(changes)
        if problem is not None:
            self._count_refusal("not_applicable", peer, problem)
            return ExcCodes.ILLEGAL_VALUE
        if not self.link.needs_journal(changes):
            self.link.apply(changes, time.monotonic())  # the heartbeat, or a level already in force
            self.metrics.qse_writes.labels(result="unchanged").inc()
            self._wake.set()
            return None
        levels = {**self.link.levels, **changes}
        try:
            await self.journal.durable(
                "qse_write", {"peer": peer, "points": changes, "levels": levels}, subject="qse"
            )
        except Exception as exc:  # never acknowledge what is not on disk
            self._count_refusal("journal_unavailable", peer, type(exc).__name__)
            return ExcCodes.DEVICE_FAILURE
        self.link.apply(changes, time.monotonic())
        self.link.commanded(changes)
        self.metrics.qse_writes.labels(result="journaled").inc()
        log.info("qse write", peer=peer, points=changes)
        self._wake.set()
        return None

    def refused(self, reason: str, peer: str) -> None:
        self._count_refusal(reason, peer, "")

    def _count_refusal(self, reason: str, peer: str, detail: str) -> None:
        self.metrics.qse_refusals.labels(reason=reason).inc()
        held_back = self._refusal_log.allow(reason)
        if held_back is not None:
            log.warning(
                "qse request refused", reason=reason, peer=peer, detail=detail[:200], since_last=held_back
            )

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.server.start()
        if self.dnp3 is not None:
            await self.dnp3.start()  # logs where it listens
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_S)
                self._wake.clear()
                self.metrics.qse_connections.set(self.server.connections)
                await self.step()
        finally:
            await self.server.stop()
            if self.dnp3 is not None:
                await self.dnp3.stop()

    async def step(self) -> None:
        """Look at the heartbeat, then close the gap between the levels and the book."""
        now_mono_s = time.monotonic()
        self._link_state(now_mono_s)
        age_s = self.link.heartbeat_age_s(now_mono_s)
        self.metrics.qse_heartbeat_age.set(float("nan") if age_s is None else age_s)
        if not self.core.commanding:
            return
        book = self.core.book
        # Each slot needs at most a new event and a cancel; a refusal that repeats waits for the next tick.
        for _ in range(2 * len(SLOTS)):
            action = self.link.next_action(book.obligations, time.time(), time.monotonic())
            if action is None:
                return
            accepted, code = await self._submit(action.event)
            self.link.outcome(action, accepted, code, time.monotonic())
            self._log_outcome(action, accepted, code)
            if accepted and action.replaces is not None and action.replaces in book.obligations:
                await self._submit(GridEvent(id=action.replaces, kind="cancel", source="qse"))

    def _link_state(self, now_mono_s: float) -> None:
        change = self.link.tick(now_mono_s)
        if change is None:
            return
        up = change == "up"
        self.metrics.qse_link_up.set(1 if up else 0)
        self.metrics.qse_fail_safe.set(0 if up else 1)
        entry = {"state": change, "fail_safe": self.section.fail_safe}
        self.journal.record("qse_link", entry, subject="qse")
        if up:
            log.info("qse link up", **entry)
        else:
            self.metrics.qse_link_lost.inc()
            log.error(
                "qse link lost: heartbeat stood still, fail-safe applied",
                **entry,
                timeout_s=self.section.heartbeat_timeout_s,
            )

    async def _submit(self, event: GridEvent) -> tuple[bool, str]:
        try:
            ack = await asyncio.wait_for(self.intake.submit_qse_event(event), ACK_TIMEOUT_S)
        except TimeoutError:
            return False, "timeout"
        return ack.accepted, ack.code

    def _log_outcome(self, action: Action, accepted: bool, code: str) -> None:
        what = "recall" if action.want is None else f"{action.want.kind} {action.want.kw:g} kW"
        outcome = f"{what}: {code}"
        if self._outcomes_logged.get(action.slot) == outcome:
            return  # a transient refusal asked again: said once
        self._outcomes_logged[action.slot] = outcome
        if accepted:
            log.info("qse level applied", slot=action.slot, event_id=action.event.id, what=what, code=code)
        else:
            log.warning("qse level refused", slot=action.slot, event_id=action.event.id, what=what, code=code)
