"""Inputs into the controller core: MQTT telemetry, the meter, and the one grid-event queue.

Every transport (MQTT, HTTP, OpenADR) puts grid events on one bounded queue, answered in order: an
accepted event is journaled durably before its ack (docs/protocol.md section 6). A refusal the
protocol defines is always answered, including a full queue.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import structlog

from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.drills import ID_PREFIX as DRILL_ID_PREFIX
from mullet.daemon.core.drills import is_drill
from mullet.daemon.core.qse import ID_PREFIX as QSE_ID_PREFIX
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.daemon.site.executor import CommandRunner
from mullet.daemon.site.fastpath import FastPath
from mullet.drivers.meter import MeterSample
from mullet.drivers.mqtt import MqttLink
from mullet.drivers.protocol import (
    GridEvent,
    GridEventAck,
    GroupState,
    Price,
    TenantState,
    Topics,
    WireError,
    decode,
    decode_online,
    encode,
    event_id_of,
)

log = structlog.get_logger("mullet.daemon")

GRID_QUEUE_SIZE = 1000


def _not_qse(event_id: str) -> None:
    """The QSE link's ids are its own: another transport may neither create nor cancel them (its
    deployments are level-held: only the QSE's registers end them). Drills' ids are the drill API's
    (daemon/site/drills.py): a grid transport may not pass a test off as a grid event or end one."""
    if event_id.startswith(QSE_ID_PREFIX):
        raise WireError("reserved_id", f"ids starting with {QSE_ID_PREFIX!r} are the QSE link's")
    if is_drill(event_id):
        raise WireError("reserved_id", f"ids starting with {DRILL_ID_PREFIX!r} are drills' (POST /v1/drills)")


class RejectedEvent:
    """A grid event that failed validation at the edge but whose id we could read: it still gets an ack."""

    def __init__(self, event_id: str, reason: str, code: str) -> None:
        self.event_id = event_id
        self.reason = reason
        self.code = code


# A grid event (or an edge refusal) and, for HTTP and OpenADR callers, where to hand its ack.
GridItem = tuple["GridEvent | RejectedEvent", "asyncio.Future[GridEventAck] | None"]
# The pair's say on an MQTT message (True: taken) and on a queued event while standing by.
PairMessages = Callable[[str, bytes], bool]
StandbyRefusal = Callable[["GridEvent | RejectedEvent", "asyncio.Future[GridEventAck] | None"], None]


class Intake:
    def __init__(
        self,
        core: SiteController,
        runner: CommandRunner,
        *,
        topics: Topics,
        metrics: Metrics,
        journal: Journal,
        link: MqttLink,
        fastpath: FastPath,
    ) -> None:
        self.core = core
        self.runner = runner
        self.topics = topics
        self.metrics = metrics
        self.journal = journal
        self.link = link
        self.fastpath = fastpath
        self.grid_queue: asyncio.Queue[GridItem] = asyncio.Queue(maxsize=GRID_QUEUE_SIZE)
        self.pair_messages: PairMessages | None = None  # set by the active/standby pair
        self.standby_refusal: StandbyRefusal | None = None
        self._queue_full_refused = 0  # refusals since the last `grid event queue full` line
        self._queue_full_logged_mono_s = -math.inf

    def reject(self, reason: str, topic: str, detail: str) -> None:
        """A message refused at the edge: counted and logged, never acted on."""
        self.metrics.rejected.labels(reason=reason).inc()
        log.warning("message rejected", reason=reason, topic=topic[:200], detail=detail[:300])

    # ---- the meter: the trip first, then everything else ------------------------------------

    def on_meter_sample(self, sample: MeterSample) -> None:
        order = self.core.frequency(sample)
        if order is not None:
            self.fastpath.fire(order)
        self.core.meter_sample(sample)
        self.runner.run_soon(self.core.take())

    # ---- MQTT --------------------------------------------------------------------------------

    def on_message(self, topic: str, raw: bytes) -> None:
        if self.pair_messages is not None and self.pair_messages(topic, raw):
            return  # the standby's warm copy, presence and fencing topics
        core = self.core
        try:
            parsed = self.topics.parse(topic)
            subject = parsed.subject
            now_mono_s = time.monotonic()
            match parsed.kind:
                case "group_state" | "group_online" if subject not in core.group_ids:
                    raise WireError("unknown_subject", f"group {subject!r} is not configured")
                case "tenant_state" | "tenant_online" if subject not in core.tenant_ids:
                    raise WireError("unknown_subject", f"tenant {subject!r} is not configured")
                case "group_state":
                    assert subject is not None
                    core.group_state(subject, decode(GroupState, raw), now_mono_s)
                case "group_online":
                    assert subject is not None
                    core.group_online(subject, decode_online(raw))
                case "tenant_state":
                    assert subject is not None
                    core.tenant_state(subject, decode(TenantState, raw), now_mono_s)
                case "tenant_online":
                    assert subject is not None
                    core.tenant_online(subject, decode_online(raw))
                case "grid_event":
                    self.submit_grid_event_raw(raw, source=self.topics.grid_event)
                case "grid_price":
                    core.price(decode(Price, raw).usd_per_mwh, now_mono_s)
                case _:
                    raise WireError("unexpected_topic", f"{parsed.kind} is not an inbound topic")
        except WireError as exc:
            self.reject(exc.reason, topic, exc.detail)
        self.runner.poke()

    # ---- grid events -------------------------------------------------------------------------

    def submit_grid_event_raw(self, raw: bytes, *, source: str) -> asyncio.Future[GridEventAck] | None:
        """Queue a grid event payload from any transport (MQTT, HTTP); the future resolves with its ack
        once it is journaled (or refused). None: no id could be read, so nothing can be acked."""
        try:
            event = decode(GridEvent, raw)
            _not_qse(event.id)
        except WireError as exc:
            self.reject(exc.reason, source, exc.detail)
            self.metrics.grid_events.labels(outcome="rejected").inc()
            self.metrics.grid_event_rejections.labels(reason=exc.reason).inc()
            event_id = event_id_of(raw)
            if event_id is None:
                return None  # nothing to address an ack to
            return self._queue(RejectedEvent(event_id, f"{exc.reason}: {exc.detail}", exc.reason))
        return self._queue(event)

    def submit_grid_event(self, event: GridEvent) -> asyncio.Future[GridEventAck]:
        """Queue a validated event (the OpenADR VEN, a takeover); resolves with its ack after the
        journal write."""
        try:
            _not_qse(event.id)
        except WireError as exc:
            return self._queue(RejectedEvent(event.id, exc.detail, exc.reason))
        return self._queue(event)

    def submit_qse_event(self, event: GridEvent) -> asyncio.Future[GridEventAck]:
        """Queue an event of the QSE link (daemon/site/qse.py), the one source of `qse:` ids."""
        return self._queue(event)

    def submit_drill(self, event: GridEvent) -> asyncio.Future[GridEventAck]:
        """Queue a drill's deployment or cancel (daemon/site/drills.py), the one source of `drill:` ids;
        decided like any event, journaled as a `drill`."""
        return self._queue(event)

    def _queue(self, item: GridEvent | RejectedEvent) -> asyncio.Future[GridEventAck]:
        reply: asyncio.Future[GridEventAck] = asyncio.get_running_loop().create_future()
        try:
            self.grid_queue.put_nowait((item, reply))
        except asyncio.QueueFull:
            self._refuse_queue_full(item, reply)
        return reply

    def _refuse_queue_full(
        self, item: GridEvent | RejectedEvent, reply: asyncio.Future[GridEventAck]
    ) -> None:
        """Counted, answered on grid/event/ack like every refusal (written at once: nothing here may
        await, and paho's bounded queue holds what the socket cannot take), logged once a second."""
        self.metrics.rejected.labels(reason="queue_full").inc()
        self.metrics.grid_event_rejections.labels(reason="queue_full").inc()
        self.metrics.grid_events.labels(outcome="rejected").inc()
        event_id = item.event_id if isinstance(item, RejectedEvent) else item.id
        ack = GridEventAck(id=event_id, accepted=False, reason="grid event queue full", code="queue_full")
        if self.core.commanding:
            self.link.publish_now(self.topics.grid_event_ack, encode(ack), qos=1)
        reply.set_result(ack)
        self._queue_full_refused += 1
        now_mono_s = time.monotonic()
        if now_mono_s - self._queue_full_logged_mono_s >= 1.0:
            log.warning("grid event queue full", refused=self._queue_full_refused, last_id=event_id)
            self._queue_full_logged_mono_s = now_mono_s
            self._queue_full_refused = 0

    async def run_grid_events(self) -> None:
        """Decide queued events one at a time, in arrival order."""
        while True:
            item, reply = await self.grid_queue.get()
            if not self.core.commanding and self.standby_refusal is not None:
                self.standby_refusal(item, reply)  # the leader journals and acks; we keep MQTT ones warm
                continue
            if isinstance(item, RejectedEvent):
                self.core.refuse_unreadable(item.event_id, item.reason, item.code)
            else:
                await self._decide(item)
            acks = await self.runner.run(self.core.take())
            if reply is not None and not reply.done() and acks:
                reply.set_result(acks[-1])

    async def _decide(self, event: GridEvent) -> None:
        now_s = time.time()
        decision, order = self.core.decide(event, now_s, time.monotonic())
        if order is not None:
            self.fastpath.fire(order)  # the armed trip goes out first; journal and ack follow
        journal_error = None
        if decision.accepted and not decision.duplicate:
            try:
                await self.journal.durable(
                    "drill" if is_drill(event.id) else "grid_event",
                    self.core.grid_event_entry(event, decision),
                    subject=event.id,
                )
            except Exception as exc:  # never acknowledge what is not on disk
                journal_error = type(exc).__name__
        self.core.commit(event, decision, journal_error, now_s)
