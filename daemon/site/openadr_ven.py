"""OpenADR events -> grid obligations: the mapping, the opt decision, and the VEN task.

Each interval of a SIMPLE or LOAD_DISPATCH signal becomes one grid event
(`oadr-<event id>-m<modification>-<signal>-<interval>`) that goes through the daemon's grid-event queue
like an MQTT or HTTP one: validated, journaled before it counts, acked. The VEN opts in only when every
interval was accepted and the site can deliver the reduction now; otherwise it opts out and logs why.
A modification cancels the previous modification's obligations and maps the new one; a cancelled event
cancels its obligations (restores then follow the ramp, or wait for a recall where the program needs
one and the VTN has not cancelled).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Literal, Protocol

import structlog

from mullet.daemon.config import OpenAdrSection
from mullet.daemon.core.controller import SiteController
from mullet.daemon.metrics import Metrics
from mullet.drivers.openadr import AdrEvent, AdrSignal, OpenAdrVen, Opt
from mullet.drivers.protocol import GridEvent, GridEventAck, is_event_id
from mullet.policies.capacity import required_reduction_kw, sheddable_kw


class Daemon(Protocol):
    """What the VEN needs of the site daemon (daemon/site/app.py): its core's state and book to answer a
    VTN, the one grid-event queue, and its metrics."""

    core: SiteController
    metrics: Metrics

    def submit_grid_event(self, event: GridEvent) -> asyncio.Future[GridEventAck]: ...


log = structlog.get_logger("mullet.openadr")

# OpenADR SI scale codes -> factor to kW for an itemBase in W (LOAD_DISPATCH powerReal).
_SCALE_TO_KW = {"none": 0.001, "k": 1.0, "M": 1000.0, "G": 1_000_000.0}


class _OptOut(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class GridVen:
    def __init__(self, daemon: Daemon, section: OpenAdrSection) -> None:
        self.daemon = daemon
        self.section = section
        self.levels = {level.level: level for level in section.simple_levels}
        self.ven = OpenAdrVen(
            vtn_url=section.vtn_url,
            ven_name=section.ven_name,
            ven_id=section.ven_id,
            poll_s=section.poll_s,
            report_interval_s=section.report_interval_s,
            resource_id=section.resource_id,
            decide=self.decide,
            site_power_kw=self._site_power_kw,
            on_registered=lambda up: daemon.metrics.openadr_registered.set(1.0 if up else 0.0),
        )

    def _site_power_kw(self) -> float | None:
        power_kw = self.daemon.core.state.site_power_kw(time.monotonic())
        self.daemon.metrics.openadr_reports.labels(known="yes" if power_kw is not None else "no").inc()
        return power_kw

    async def decide(self, event: AdrEvent) -> tuple[Opt, str]:
        started_s = time.perf_counter()
        try:
            opt, code, reason = await self._decide(event)
        except _OptOut as out:
            opt, code, reason = "optOut", out.code, out.reason
        self.daemon.metrics.openadr_handler_seconds.observe(time.perf_counter() - started_s)
        self.daemon.metrics.openadr_events.labels(opt=opt, reason=code).inc()
        logger = log.info if opt == "optIn" else log.warning
        logger(
            "openadr event",
            adr_event_id=event.event_id,
            modification=event.modification_number,
            status=event.status,
            market_context=event.market_context,
            opt=opt,
            code=code,
            reason=reason,
        )
        return opt, reason

    async def _decide(self, event: AdrEvent) -> tuple[Opt, str, str]:
        if event.status == "cancelled":
            await self._cancel_previous(event.event_id, keep_modification=None)
            return "optIn", "cancelled", "event cancelled: its obligations are cancelled"
        if event.status == "completed":
            return "optIn", "completed", "event completed"
        now_s = time.time()
        events = self.to_grid_events(event, now_s)
        self._check_deliverable(events)
        # Validate all before submitting any (pure), so a refusal cannot leave half an event in force.
        for grid_event in events:
            site_kw = self.daemon.core.state.site_power_kw(time.monotonic())
            decision = self.daemon.core.book.decide(grid_event, now_s=now_s, site_power_kw=site_kw)
            if not decision.accepted:
                raise _OptOut(decision.code, f"{grid_event.id}: {decision.reason}")
        await self._cancel_previous(event.event_id, keep_modification=event.modification_number)
        acks = await self._submit(events)
        refused = [ack for ack in acks if not ack.accepted]
        if refused:
            for ack in acks:
                if ack.accepted:
                    await self._submit([GridEvent(id=ack.id, kind="cancel", source="openadr")])
            raise _OptOut(refused[0].code, f"{refused[0].id}: {refused[0].reason}")
        if not events:
            return "optIn", "nothing_in_force", "no interval asks for a reduction"
        return "optIn", "accepted", f"{len(events)} obligation(s) accepted: {', '.join(e.id for e in events)}"

    def to_grid_events(self, event: AdrEvent, now_s: float) -> list[GridEvent]:
        """One grid event per interval that asks for something and has not ended; raises _OptOut for a
        signal the site has no mapping for."""
        program = self.section.market_contexts.get(event.market_context, self.section.default_program)
        supported = [s for s in event.signals if s.name in ("SIMPLE", "LOAD_DISPATCH")]
        if not supported:
            names = ", ".join(sorted({s.name for s in event.signals})) or "none"
            raise _OptOut("unsupported_signal", f"no SIMPLE or LOAD_DISPATCH signal (got {names})")
        events = []
        for signal_index, signal in enumerate(event.signals):
            if signal not in supported:
                continue
            for interval_index, interval in enumerate(signal.intervals):
                if interval.end_s is not None and interval.end_s <= now_s:
                    continue  # an interval already over asks nothing
                mapped = self._map(signal, interval.value)
                if mapped is None:
                    continue  # SIMPLE level 0: normal operation
                kind, kw = mapped
                events.append(
                    GridEvent(
                        id=_obligation_id(
                            event.event_id, event.modification_number, signal_index, interval_index
                        ),
                        kind=kind,
                        kw=kw,
                        start=interval.start_s,
                        end=interval.end_s,
                        program=program,
                        source=f"openadr:{event.market_context}"[:128],
                    )
                )
        return events

    def _map(self, signal: AdrSignal, value: float) -> tuple[Literal["limit", "reduce"], float] | None:
        if signal.name == "SIMPLE":
            level = round(value)
            if level == 0:
                return None
            mapping = self.levels.get(level)
            if mapping is None:
                raise _OptOut(
                    "unmapped_level", f"SIMPLE level {level} has no mapping (openadr.simple_levels)"
                )
            return mapping.kind, mapping.kw
        # LOAD_DISPATCH: setpoint = import limit, delta = reduction; powerReal in W with a scale (kW when
        # the VTN sends no itemBase, the common case).
        factor = 1.0 if signal.scale is None else _SCALE_TO_KW.get(signal.scale)
        if factor is None or (signal.unit not in (None, "W")):
            raise _OptOut("unsupported_unit", f"LOAD_DISPATCH in {signal.scale}{signal.unit} is not a power")
        if signal.type == "setpoint":
            return "limit", value * factor
        if signal.type == "delta":
            return "reduce", abs(value) * factor
        raise _OptOut("unsupported_signal", f"LOAD_DISPATCH of type {signal.type!r}")

    def _check_deliverable(self, events: list[GridEvent]) -> None:
        """Opt out when the reduction asked exceeds what the site could shed now."""
        if not events:
            return
        now_mono_s = time.monotonic()
        daemon = self.daemon
        core = daemon.core
        snapshot = core.state.snapshot(core.tenant_ids, core.group_ids, now_mono_s)
        available_kw = sheddable_kw(core.site, snapshot)
        for grid_event in events:
            assert grid_event.kw is not None and grid_event.kind != "cancel"
            needed_kw = required_reduction_kw(
                core.site, grid_event.kind, grid_event.kw, snapshot.site_power_kw
            )
            if needed_kw is None:
                raise _OptOut("site_power_unknown", "site meter reading unknown: cannot promise a limit")
            if needed_kw > available_kw:
                raise _OptOut(
                    "cannot_deliver",
                    f"{grid_event.id} needs {needed_kw:.0f} kW off, more than the {available_kw:.0f} kW"
                    " sheddable now",
                )

    async def _submit(self, events: list[GridEvent]) -> list[GridEventAck]:
        replies = [self.daemon.submit_grid_event(e) for e in events]
        try:
            return list(
                await asyncio.wait_for(
                    asyncio.gather(*(asyncio.shield(r) for r in replies)), self.section.response_timeout_s
                )
            )
        except TimeoutError:
            raise _OptOut("timeout", "the daemon did not journal the event in time") from None

    async def _cancel_previous(self, adr_event_id: str, keep_modification: int | None) -> None:
        """Cancel the obligations of earlier modifications of an event (all of them when cancelled)."""
        prefix = f"{_event_prefix(adr_event_id)}-m"
        keep = None if keep_modification is None else f"{prefix}{keep_modification}-"
        stale = [
            oid
            for oid in self.daemon.core.book.obligations
            if oid.startswith(prefix) and (keep is None or not oid.startswith(keep))
        ]
        if stale:
            await self._submit([GridEvent(id=oid, kind="cancel", source="openadr") for oid in stale])

    async def run(self) -> None:
        await self.ven.run()


def _event_prefix(adr_event_id: str) -> str:
    # Keep ids within the wire's 128 characters and its character set whatever the VTN's ids look like.
    if len(adr_event_id) > 80 or not is_event_id(adr_event_id):
        adr_event_id = hashlib.sha256(adr_event_id.encode()).hexdigest()[:32]
    return f"oadr-{adr_event_id}"


def _obligation_id(adr_event_id: str, modification: int, signal_index: int, interval_index: int) -> str:
    return f"{_event_prefix(adr_event_id)}-m{modification}-{signal_index}-{interval_index}"


async def run_ven(daemon: Daemon, section: OpenAdrSection) -> None:
    await GridVen(daemon, section).run()
