"""The site daemon: wires drivers, state, policy, journal and metrics together in one TaskGroup."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Coroutine
from dataclasses import asdict
from typing import Any

import structlog

from mullet.daemon import broker_history, fds, recovery
from mullet.daemon.config import Config, ConfigError, load_config
from mullet.daemon.events import ObligationBook, rejected
from mullet.daemon.fastpath import FastPath, TripRecord, TripSettled
from mullet.daemon.grid_ven import run_ven
from mullet.daemon.ha import HaRole
from mullet.daemon.http_api import serve_http_api
from mullet.daemon.http_guard import Limits, beyond_loopback
from mullet.daemon.journal import Journal
from mullet.daemon.metrics import Metrics
from mullet.daemon.metrics_http import MetricsListener
from mullet.daemon.notify import Notifier
from mullet.daemon.pdu_metrics import PduCollector
from mullet.daemon.plan_journal import plan_change
from mullet.daemon.secrets import SecretError, read_secret
from mullet.daemon.state import SiteState
from mullet.daemon.verify import PendingShed, ShedVerifier
from mullet.drivers.device_profiles import load_meter_profile
from mullet.drivers.meter import MeterSample, ModbusMeter, RefreshWatch
from mullet.drivers.mqtt import MqttLink, tls_context
from mullet.drivers.pdu import PduPool, PoolResult
from mullet.drivers.wire import (
    GridEvent,
    GridEventAck,
    GroupSetpoint,
    GroupState,
    Price,
    TenantSetpoint,
    TenantState,
    Topics,
    WireError,
    decode,
    decode_online,
    encode,
    event_id_of,
)
from mullet.policies.fleet import site_flex
from mullet.policies.model import (
    GroupDecision,
    GroupMemory,
    GroupMode,
    Override,
    Plan,
    PolicyMemory,
)
from mullet.policies.plan import compute_plan
from mullet.policies.trigger import FrequencyTrigger, trip_hold

log = structlog.get_logger("mullet.daemon")


SEQ_RESTART_GAP = 1000
# The plan is republished at least this often, unchanged or not: a fleet dispatcher reads a plan older
# than its stale limit as a site gone (docs/fleet.md).
PLAN_HEARTBEAT_S = 5.0


class _Stopped(Exception):
    pass


class _RejectedEvent:
    """A grid event that failed validation at the edge but whose id we could read: it still gets an ack."""

    def __init__(self, event_id: str, reason: str, code: str) -> None:
        self.event_id = event_id
        self.reason = reason
        self.code = code


# A grid event (or an edge refusal) and, for HTTP and OpenADR callers, where to hand its ack.
_GridItem = tuple["GridEvent | _RejectedEvent", "asyncio.Future[GridEventAck] | None"]


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier(None)
        # Secrets are read here, so a bad one fails start-up (SecretError) instead of the first request.
        self.api_token = read_secret(
            file=config.http_api.token_file, credential=config.http_api.token_credential
        )
        mqtt = config.mqtt
        mqtt_password = read_secret(file=mqtt.password_file, credential=mqtt.password_credential)
        self.mqtt_password = mqtt_password  # broker_history's own session at start-up
        self.journal_lost: dict[str, Any] | None = None  # set when an empty journal met broker history
        self.topics = Topics(config.topic_root)
        self.site = config.site_spec()
        self.group_ids = [g.group_id for g in self.site.groups]
        self.tenant_ids = [t.tenant_id for t in self.site.tenants]
        self.metrics = metrics or Metrics()
        retention_days = config.journal.retention_days
        self.journal = Journal(
            config.journal.path,
            queue_size=config.journal.queue_size,
            retention_s=None if retention_days is None else retention_days * 86_400.0,
            on_drop=lambda kind: self.metrics.journal_dropped.labels(kind=kind).inc(),
            on_commit=self._on_journal_commit,
        )
        self.metrics.journal_queue.set_function(lambda: self.journal.queue_depth)
        self._site_power_journaled_mono_s = -math.inf
        # Per group, the last setpoint the broker took and when: its ack is the state reporting its seq.
        self._awaiting_ack: dict[str, tuple[int, float]] = {}
        self.state = SiteState(
            meter_stale_after_s=config.meter.stale_after_s,
            telemetry_stale_after_s=config.control.telemetry_stale_after_s,
            price_stale_after_s=config.economics.price_stale_after_s,
        )
        self.book = ObligationBook.from_config(config)
        # Active/standby ([ha]): only the leader commands; None = a single daemon, as in v1.
        self.ha = (
            HaRole(config.ha, site_id=config.site.site_id, topics=self.topics, metrics=self.metrics)
            if config.ha is not None
            else None
        )
        self.link = MqttLink(
            config.mqtt.url,
            client_id=config.mqtt.client_id
            or (self.ha.client_id if self.ha else f"mulletd-{config.site.site_id}"),
            subscriptions=self.topics.daemon_subscriptions() + (self.ha.subscriptions if self.ha else []),
            on_message=self._on_message,
            on_connect=self._on_connect,
            # A pair cannot share one will: each node has its own, the leader owns daemon/online.
            will_topic=self.ha.node_online_topic if self.ha else self.topics.daemon_online,
            keepalive_s=config.mqtt.keepalive_s,
            reconnect_min_s=config.mqtt.reconnect_min_s,
            reconnect_max_s=config.mqtt.reconnect_max_s,
            username=mqtt.username,
            password=mqtt_password,
            tls=tls_context(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if "mqtts:" in mqtt.url else None,
        )
        meter_device = f"meter:{config.meter.host}:{config.meter.port}"
        self.meter = ModbusMeter(
            config.meter.host,
            config.meter.port,
            device_id=config.meter.device_id,
            profile=load_meter_profile(config.meter.profile),
            poll_hz=config.meter.poll_hz,
            timeout_s=config.meter.timeout_s,
            on_sample=self._on_meter_sample,
            on_reject=self._on_meter_reject,
            on_round_trip=self.metrics.modbus_seconds.labels(device=meter_device).observe,
        )
        self.meter_refresh = RefreshWatch()
        self._meter_refresh_slow = False
        self.outlets_by_group = {g.group_id: [(o.pdu, o.outlet) for o in g.outlets] for g in config.groups}
        # A warm connection to every PDU, so a cut is one round trip (docs/architecture.md section 9).
        self.pdus: PduPool | None = PduPool.from_config(config.pdus) if config.pdus else None
        if self.pdus is not None:
            self.metrics.registry.register(PduCollector(self.pdus))
        self.fastpath = FastPath(
            trigger=FrequencyTrigger(config.trip_stages(), config.trigger_settings()),
            stages=config.trip_stages(),
            outlets_by_group=self.outlets_by_group,
            pdus=self.pdus,
            epoch=lambda: self.epoch,
            publish_trip=lambda payload: self.link.publish_now(self.topics.trip, payload, qos=1),
            next_seq=self._next_seq,
            on_fired=self._on_trip,
            on_settled=self._on_trip_settled,
            on_released=self._on_trip_released,
            on_reject=lambda reason: self.metrics.frequency_rejected.labels(reason=reason).inc(),
        )
        self.metrics.trip_pickup.set(self.fastpath.trigger.settings.pickup_s)
        self.verifier = ShedVerifier(
            deadline_s=config.control.shed_deadline_s,
            threshold_kw={
                g.group_id: g.sleep_kw + config.control.shed_confirm_fraction * (g.rated_kw - g.sleep_kw)
                for g in self.site.groups
            },
        )
        # Groups whose outlets the daemon cut: they get power back before their next run setpoint.
        self.hard_cut: set[str] = set()
        # Groups whose shed escalation failed (firmware did not shed, no cut acknowledged): treated as
        # unknown while an obligation is active, so the plan counts them at rated kW and sheds others.
        self.unshed: set[str] = set()
        self.wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._grid_queue: asyncio.Queue[_GridItem] = asyncio.Queue(maxsize=1000)
        self.plan: Plan | None = None
        # The exact setpoints last delivered, so a republish after a reconnect is byte-identical (a
        # controller ignores a seq it has applied). The plan's memory is what the policy intends;
        # this is what the devices were told.
        self.commanded: dict[str, GroupSetpoint] = {}
        self.tenant_setpoints: dict[str, TenantSetpoint] = {}
        self._publishing = asyncio.Lock()  # a reconnect's republish must not overtake a newer setpoint
        self.memory = PolicyMemory()
        self._connected_mono_s: float | None = None  # first broker session: when telemetry began to flow
        self._planning = False  # the start-up picture settled once; from then on every cycle plans
        self._published_plan: dict[str, Any] | None = None
        self._plan_published_mono_s = -math.inf
        # Setpoints are journaled off the hot path, so the newest few may be lost in a crash: jump ahead
        # so a controller never sees a seq go backwards or repeat with a different meaning.
        self.seq = self.journal.max_seq() + SEQ_RESTART_GAP
        self.metrics_port: int | None = None
        self.http_port: int | None = None  # set by the HTTP API once it listens
        # Operator holds (POST /v1/override): journaled, so a restart keeps them until they expire.
        self.overrides: dict[str, Override] = {}
        self.cycles = 0  # completed control cycles (a plan computed and acted on)
        self.last_cycle_mono_s: float | None = None
        self.started_mono_s = time.monotonic()
        self._recover()

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        # The HTTP listeners' connection caps fit under the fd limit with control's fds kept free.
        caps = fds.listener_caps(self.config, fds.soft_nofile_limit())
        section = self.config.metrics
        limits = Limits(
            caps.metrics, section.header_timeout_s, section.body_timeout_s, section.idle_timeout_s
        )
        metrics_listener = MetricsListener(self.metrics, limits)
        self.metrics_port = await metrics_listener.start(section.host, section.port)
        log.info(
            "mulletd starting",
            site_id=self.config.site.site_id,
            metrics=f"http://{self.config.metrics.host}:{self.metrics_port}/metrics",
            seq=self.seq,
            recovered_obligations=sorted(self.book.obligations),
        )
        for ok, line in self.config.stage_budget_lines():
            (log.info if ok else log.warning)("trip budget", detail=line)
        if self.journal.was_empty:  # before anything is published: seq and holds from the broker
            await broker_history.recover_lost_journal(self)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.journal.run(), name="journal")
                tg.create_task(self.link.run(), name="mqtt")
                tg.create_task(self.meter.run(), name="meter")
                if self.pdus is not None:
                    tg.create_task(self.pdus.start(), name="pdus")
                tg.create_task(self._grid_events(), name="grid-events")
                if self.config.http_api.enabled:
                    tg.create_task(serve_http_api(self, self.config.http_api, caps.api), name="http-api")
                if self.config.openadr.enabled:
                    tg.create_task(run_ven(self, self.config.openadr), name="openadr")
                tg.create_task(self._supervise(), name="supervisor")
                if self.ha is not None:
                    tg.create_task(self.ha.run(self), name="ha")
                await self._stop.wait()
                self.notifier.stopping()
                if self.ha is not None:
                    await self.ha.stop(self)
                # Say goodbye while the session is still up; a clean disconnect fires no LWT.
                await self.link.close()
                raise _Stopped
        except* _Stopped:
            pass
        finally:
            if self.pdus is not None:
                await self.pdus.close()
            await self.journal.flush()
            self.journal.close()
            await metrics_listener.close()
            log.info("mulletd stopped")
            self.notifier.close()

    def stop(self) -> None:
        self._stop.set()

    @property
    def commanding(self) -> bool:
        """Whether this daemon may plan, publish, fire and ack: always without [ha], else the leader."""
        return self.ha is None or self.ha.commanding

    @property
    def epoch(self) -> int | None:
        """The leader epoch every command carries; None without [ha] (nothing added to the wire)."""
        return None if self.ha is None else self.ha.epoch

    def _recover(self) -> None:
        """Take back what the last run held (daemon/recovery.py): a restart never restores load the
        last run had shed."""
        now_s = time.time()
        self.overrides = recovery.overrides(self.journal, self.group_ids, now_s)
        recovery.replay_obligations(self.journal, self.book, now_s)
        self.commanded, self.memory = recovery.commanded(self.journal, self.group_ids)
        holds = recovery.fast_path_holds(self.journal, self.outlets_by_group, self.group_ids)
        self.hard_cut = holds.hard_cut
        self.memory = holds.shed(self.memory, self.group_ids)
        for hold in holds.obligations(self.site.interconnect_kw):
            self.book.obligations[hold.event_id] = hold
        self.fastpath.trigger.latch(holds.latched_stages)
        if holds.open_trips or holds.hard_cut:
            log.warning(
                "recovered under-frequency holds",
                obligations=sorted(f"ufr-{seq}" for seq in holds.open_trips),
                hard_cut=sorted(holds.hard_cut),
            )

    # ---- inbound ---------------------------------------------------------------------------

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        self.metrics.rejected.labels(reason=reason).inc()
        log.warning("message rejected", reason=reason, topic=topic[:200], detail=detail[:300])

    def _on_message(self, topic: str, raw: bytes) -> None:
        if self.ha is not None and self.ha.on_message(self, topic, raw):
            return  # the standby's warm copy, presence and fencing topics
        try:
            parsed = self.topics.parse(topic)
            subject = parsed.subject
            now_s = time.monotonic()
            match parsed.kind:
                case "group_state" | "group_online" if subject not in self.group_ids:
                    raise WireError("unknown_subject", f"group {subject!r} is not configured")
                case "tenant_state" | "tenant_online" if subject not in self.tenant_ids:
                    raise WireError("unknown_subject", f"tenant {subject!r} is not configured")
                case "group_state":
                    assert subject is not None
                    first = subject not in self.state.groups
                    group_state = decode(GroupState, raw)
                    self.state.groups[subject] = (group_state, now_s)
                    self._note_ack(subject, group_state.seq_applied, now_s)
                    if first:
                        self.wake.set()  # may complete the start-up picture
                case "group_online":
                    assert subject is not None
                    self.state.groups_online[subject] = decode_online(raw)
                    self.wake.set()
                case "tenant_state":
                    assert subject is not None
                    self.state.tenants[subject] = (decode(TenantState, raw), now_s)
                    self.wake.set()
                case "tenant_online":
                    assert subject is not None
                    self.state.tenants_online[subject] = decode_online(raw)
                    self.wake.set()
                case "grid_event":
                    self._enqueue_grid_event(raw)
                case "grid_price":
                    self.state.price = (decode(Price, raw).usd_per_mwh, now_s)
                    self.wake.set()
                case _:
                    raise WireError("unexpected_topic", f"{parsed.kind} is not an inbound topic")
        except WireError as exc:
            self._reject(exc.reason, topic, exc.detail)

    def _enqueue_grid_event(self, raw: bytes) -> None:
        self.submit_grid_event_raw(raw, source=self.topics.grid_event)

    def submit_grid_event_raw(self, raw: bytes, *, source: str) -> asyncio.Future[GridEventAck] | None:
        """Queue a grid event payload from any transport (MQTT, HTTP); the future resolves with its ack
        once it is journaled (or refused). None: no id could be read, so nothing can be acked."""
        try:
            event = decode(GridEvent, raw)
        except WireError as exc:
            self._reject(exc.reason, source, exc.detail)
            self.metrics.grid_events.labels(outcome="rejected").inc()
            self.metrics.grid_event_rejections.labels(reason=exc.reason).inc()
            event_id = event_id_of(raw)
            if event_id is None:
                return None  # nothing to address an ack to
            return self._queue(_RejectedEvent(event_id, f"{exc.reason}: {exc.detail}", exc.reason))
        return self._queue(event)

    def submit_grid_event(self, event: GridEvent) -> asyncio.Future[GridEventAck]:
        """Queue a validated event (the OpenADR VEN); resolves with its ack after the journal write."""
        return self._queue(event)

    def _queue(self, item: GridEvent | _RejectedEvent) -> asyncio.Future[GridEventAck]:
        reply: asyncio.Future[GridEventAck] = asyncio.get_running_loop().create_future()
        try:
            self._grid_queue.put_nowait((item, reply))
        except asyncio.QueueFull:
            self._refuse_queue_full(item, reply)
        return reply

    _queue_full_refused = 0  # refusals since the last `grid event queue full` line
    _queue_full_logged_mono_s = -math.inf

    def _refuse_queue_full(
        self, item: GridEvent | _RejectedEvent, reply: asyncio.Future[GridEventAck]
    ) -> None:
        """Counted, answered on grid/event/ack like every refusal (written at once: nothing here may
        await, and paho's bounded queue holds what the socket cannot take), logged once a second."""
        self.metrics.rejected.labels(reason="queue_full").inc()
        self.metrics.grid_event_rejections.labels(reason="queue_full").inc()
        self.metrics.grid_events.labels(outcome="rejected").inc()
        event_id = item.event_id if isinstance(item, _RejectedEvent) else item.id
        ack = GridEventAck(id=event_id, accepted=False, reason="grid event queue full", code="queue_full")
        if self.commanding:
            self.link.publish_now(self.topics.grid_event_ack, encode(ack), qos=1)
        reply.set_result(ack)
        self._queue_full_refused += 1
        now_mono_s = time.monotonic()
        if now_mono_s - self._queue_full_logged_mono_s >= 1.0:
            log.warning("grid event queue full", refused=self._queue_full_refused, last_id=event_id)
            self._queue_full_logged_mono_s = now_mono_s
            self._queue_full_refused = 0

    async def _grid_events(self) -> None:
        while True:
            item, reply = await self._grid_queue.get()
            if self.ha is not None and not self.ha.commanding:
                self.ha.refuse(item, reply)  # the leader journals and acks; we keep MQTT ones warm
                continue
            if isinstance(item, _RejectedEvent):
                self.journal.record("grid_event_rejected", {"id": item.event_id, "reason": item.reason})
                ack = await self._ack(item.event_id, False, item.reason, item.code)
            else:
                ack = await self._handle_grid_event(item)
            if reply is not None and not reply.done():
                reply.set_result(ack)

    async def _handle_grid_event(self, event: GridEvent) -> GridEventAck:
        received_mono_s = time.monotonic()
        decision = self.book.decide(
            event, now_s=time.time(), site_power_kw=self.state.site_power_kw(received_mono_s)
        )
        if decision.accepted and not decision.duplicate and decision.fire_stage is not None:
            # Immediate deployment (an explicit trip_stage, or a program whose deadline is shorter than
            # firmware sleep): the armed trip goes out first; journal and ack follow.
            self.fastpath.fire(decision.fire_stage, received_mono_s, cause=event.id)
        if decision.accepted and not decision.duplicate:
            entry = {
                "event": event.model_dump(),
                "obligation": asdict(decision.obligation) if decision.obligation else None,
                "cancels": decision.cancels,
            }
            try:
                await self.journal.durable("grid_event", entry, subject=event.id)
            except Exception as exc:  # never acknowledge what is not on disk
                decision = rejected("journal_unavailable", f"journal unavailable: {type(exc).__name__}")
            else:
                self.book.apply(event, decision)
                self.wake.set()
        if not decision.accepted:
            self.journal.record(
                "grid_event_rejected", {"event": event.model_dump(), "reason": decision.reason}
            )
        outcome = "duplicate" if decision.duplicate else ("accepted" if decision.accepted else "rejected")
        self.metrics.grid_events.labels(outcome=outcome).inc()
        if not decision.accepted:
            self.metrics.grid_event_rejections.labels(reason=decision.code).inc()
        log.info(
            "grid event",
            event_id=event.id,
            kind=event.kind,
            kw=event.kw,
            program=event.program,
            source=event.source,
            outcome=outcome,
            code=decision.code,
            reason=decision.reason,
            actuation=decision.obligation.actuation if decision.obligation else None,
        )
        return await self._ack(event.id, decision.accepted, decision.reason, decision.code)

    async def _ack(self, event_id: str, accepted: bool, reason: str, code: str) -> GridEventAck:
        ack = GridEventAck(id=event_id, accepted=accepted, reason=reason, code=code)
        if self.ha is not None:
            await self.ha.publish_handover(self)  # the standby has the obligation before the sender
        await self.link.publish(self.topics.grid_event_ack, encode(ack), qos=1)
        return ack

    def _on_meter_sample(self, sample: MeterSample) -> None:
        if self.commanding:  # a standby reads the meter for its warm state; only the leader trips
            self.fastpath.on_sample(sample.frequency_hz, sample.monotonic_s, sample.requested_s)  # first
        self.meter_refresh.observe(sample.frequency_hz, sample.monotonic_s)
        was_stale = self.state.site_power_kw(sample.monotonic_s) is None
        self.state.meter = sample
        if was_stale:
            self.wake.set()
        if sample.monotonic_s - self._site_power_journaled_mono_s >= self.config.journal.site_power_every_s:
            # Bounded rate, for compliance reports (baselines, delivered reduction per interval).
            self._site_power_journaled_mono_s = sample.monotonic_s
            self.journal.record("site_power", {"kw": round(sample.power_kw, 3), "hz": sample.frequency_hz})

    def _note_ack(self, group_id: str, seq_applied: int | None, now_mono_s: float) -> None:
        awaited = self._awaiting_ack.get(group_id)
        if awaited is not None and seq_applied is not None and seq_applied >= awaited[0]:
            del self._awaiting_ack[group_id]
            self.metrics.command_ack_seconds.labels("mining").observe(now_mono_s - awaited[1])

    def _observe_pdu_acks(self, result: PoolResult | BaseException | None) -> None:
        """Each PDU that answered every write of a switch: switch started to its last answer."""
        if isinstance(result, PoolResult):
            for switched in result.results.values():
                if switched.ok and switched.writes:
                    self.metrics.command_ack_seconds.labels("pdu").observe(switched.elapsed_s)

    def _on_journal_commit(self, entries: int, _elapsed_s: float) -> None:
        self.metrics.journal_written.inc(entries)
        self.metrics.journal_commit_seconds.observe(_elapsed_s)

    def _on_meter_reject(self, reason: str) -> None:
        self.metrics.meter_rejected.labels(reason=reason).inc()

    # ---- supervisory loop ------------------------------------------------------------------

    async def _supervise(self) -> None:
        period_s = self.config.control.period_s
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=period_s)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self._cycle()
            except Exception:  # one bad cycle must not end control; the next one retries
                log.exception("control cycle failed")

    async def _cycle(self) -> None:
        if self.ha is not None and not self.ha.commanding:
            self.ha.idle(self)  # a standby plans nothing
            return
        now_s = time.time()
        now_mono_s = time.monotonic()
        for event_id in self.book.expire(now_s):
            self.journal.record("obligation_ended", {"id": event_id}, subject=event_id)
            log.info("obligation ended", event_id=event_id)
        for group_id in [g for g, o in self.overrides.items() if not o.active(now_s)]:
            del self.overrides[group_id]
            log.info("override expired", group_id=group_id)
        if not self._settled(now_mono_s):
            return
        snapshot = self.state.snapshot(self.tenant_ids, self.group_ids, now_mono_s)
        if self.unshed and any(o.active(now_s) for o in self.book.obligations.values()):
            # Not where its command says: unknown, so counted at rated and no load is added for it.
            unknown = dict.fromkeys(self.unshed)
            snapshot = dataclasses.replace(snapshot, group_power_kw={**snapshot.group_power_kw, **unknown})
        started_s = time.perf_counter()
        obligations = list(self.book.obligations.values())
        plan = compute_plan(self.site, snapshot, obligations, now_s, self.memory, self.overrides)
        self.metrics.plan_seconds.observe(time.perf_counter() - started_s)
        self.plan = plan
        for restore in set(plan.memory.restores) - set(self.memory.restores):
            # The ramp ledger must survive a restart, or a restarted daemon could restore a second
            # minute's worth of load inside the same minute.
            self.journal.record("restore", {"t": restore[0], "kw": restore[1]})
        self.memory = plan.memory
        self.fastpath.arm(plan)
        await self._restore_outlets(plan)
        await self._publish_setpoints(plan, now_s)
        await self._publish_tenant_caps(plan, now_s)
        await self._publish_plan(plan)
        if self.ha is not None:
            await self.ha.publish_handover(self)
        self._update_metrics(plan, now_mono_s)
        await self._verify_sheds(time.monotonic())
        self.ready.set()
        self._cycle_done(plan)

    def _cycle_done(self, plan: Plan) -> None:
        """systemd hears READY=1 after the first complete cycle, WATCHDOG=1 only after complete cycles:
        a wedged loop or a cycle that fails every time stops the pings and systemd restarts us."""
        now_mono_s = time.monotonic()
        self.cycles += 1
        self.last_cycle_mono_s = now_mono_s
        if self.cycles == 1:
            status = f"controlling {len(self.group_ids)} groups, {len(plan.curtailed())} curtailed"
            self.notifier.ready(status)
            log.info("ready", status=status, after_s=round(now_mono_s - self.started_mono_s, 3))
        self.notifier.watchdog(now_mono_s)

    async def _verify_sheds(self, now_mono_s: float) -> None:
        confirmed, overdue = self.verifier.check(
            now_mono_s, lambda g: self.state.group_power_kw(g, now_mono_s), self._outlets_kw
        )
        for item in confirmed:
            self.unshed.discard(item.group_id)
            self.metrics.shed_confirm_seconds.labels(via=item.via, source=item.source).observe(item.after_s)
        for pending in overdue:
            if pending.group_id in self.hard_cut:
                continue  # already cut at its PDU: silence from a dark controller is expected
            await self._escalate(pending, now_mono_s)

    def _outlets_kw(self, group_id: str, read_since_s: float) -> float | None:
        """The group's outlets' PDU power readback in kW, if every outlet was read since then."""
        outlets = self.outlets_by_group.get(group_id)
        if not outlets or self.pdus is None:
            return None
        watts = self.pdus.power_w(outlets, read_since_s=read_since_s)
        return None if watts is None else watts / 1000.0

    async def _escalate(self, pending: PendingShed, now_mono_s: float) -> None:
        """Firmware did not shed in time: cut the group's outlets (design: firmware sleep -> PDU cut)."""
        outlets = self.outlets_by_group.get(pending.group_id, [])
        started_s = time.monotonic()
        if not outlets:
            result, detail = "no_outlets", "group has no PDU outlets configured"
        elif self.pdus is None:
            result, detail = "no_pdu_driver", "no PDU driver running"
        else:
            outcome = await self.pdus.cut(outlets)
            self._observe_pdu_acks(outcome)
            result = "ok" if outcome.ok else "failed"
            detail = _pool_detail(outcome)
            if outcome.ok:
                self.hard_cut.add(pending.group_id)
        if result == "ok":
            self.unshed.discard(pending.group_id)
        else:
            # Another path: count it at rated (others shed in its place) and re-send firmware sleep
            # under a new seq next cycle, which restarts verification; its deadline retries the cut.
            self.unshed.add(pending.group_id)
            self.commanded.pop(pending.group_id, None)
        self.metrics.escalations.labels(result=result).inc()
        entry = {
            "group_id": pending.group_id,
            "via": pending.via,
            "waited_s": round(now_mono_s - pending.since_mono_s, 3),
            "outlets": [list(o) for o in outlets],
            "result": result,
            "detail": detail,
            "cut_s": round(time.monotonic() - started_s, 4),
        }
        self.journal.record("escalation", entry, subject=pending.group_id)
        log.error("shed not confirmed in time, escalated", **entry)

    async def _restore_outlets(self, plan: Plan) -> None:
        """A hard-cut group the plan restores gets its outlets back first; its run setpoint waits for that."""
        if not self.hard_cut or self.pdus is None:
            return
        for decision in plan.decisions:
            if decision.mode == "run" and decision.group_id in self.hard_cut:
                outcome = await self.pdus.switch(self.outlets_by_group[decision.group_id], on=True)
                self._observe_pdu_acks(outcome)
                if outcome.ok:
                    self.hard_cut.discard(decision.group_id)
                    self.journal.record("outlets_restored", {"group_id": decision.group_id})

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _on_trip(self, record: TripRecord) -> None:
        """After a trip's commands are out: remember the shed groups, hold restores, record it all."""
        now_s = time.time()
        groups = dict(self.memory.groups)
        for group_id in record.groups:
            groups[group_id] = GroupMemory("curtail", None, now_s)
        self.memory = dataclasses.replace(self.memory, groups=groups)
        cut = set(record.outlets)
        for group_id in record.groups:
            outlets = self.outlets_by_group.get(group_id, [])
            if outlets and all(o in cut for o in outlets):
                self.hard_cut.add(group_id)
            else:
                self.verifier.expect(group_id, record.sample_mono_s, "trip")
        if record.cause == "frequency":
            # Restores wait for the frequency to recover (the trigger's release), like an obligation.
            hold = trip_hold(record.seq, record.stage, self.site.interconnect_kw, now_s)
            self.book.obligations[hold.event_id] = hold
        cause = "frequency" if record.cause == "frequency" else "grid_event"
        self.metrics.trips.labels(stage=str(record.stage), cause=cause).inc()
        entry = {
            "seq": record.seq,
            "stage": record.stage,
            "cause": record.cause,
            "hz": record.hz,
            "groups": list(record.groups),
            "outlets": [list(o) for o in record.outlets],
        }
        # Durable in the background: a restart during the event must find it (recovery.fast_path_holds).
        self._background(self.journal.durable("trip", entry, subject=str(record.stage)), "journal trip")
        log.warning(
            "trip fired",
            stage=record.stage,
            seq=record.seq,
            cause=record.cause,
            hz=record.hz,
            groups=len(record.groups),
            outlets=len(record.outlets),
            added_latency_ms=round(record.added_latency_s * 1000, 3),
        )
        self.wake.set()

    def _on_trip_settled(self, settled: TripSettled) -> None:
        """The trip's PUBACK and PDU acknowledgements are back (or failed): time and record them."""
        trip = settled.trip
        self.metrics.trip_seconds.observe(settled.added_latency_s)
        self.metrics.trip_settled_seconds.observe(settled.settled_latency_s)
        self._observe_pdu_acks(settled.cut_result)
        detail = {
            "seq": trip.seq,
            "published": settled.published,
            "added_latency_s": settled.added_latency_s,
            "settled_latency_s": settled.settled_latency_s,
            "cut": _cut_detail(settled.cut_result),
        }
        self.journal.record("trip_settled", detail, subject=str(trip.stage))
        log_at = log.info if settled.published and _cut_ok(settled.cut_result) else log.error
        log_at("trip acknowledged", **{**detail, "added_latency_s": round(settled.added_latency_s, 6)})

    def _background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run `work` outside the hot path; a failure is logged, never lost."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background work failed", what=what, error=repr(finished.exception()))

        task.add_done_callback(done)

    def _on_trip_released(self) -> None:
        released = [event_id for event_id in self.book.obligations if event_id.startswith("ufr-")]
        for event_id in released:
            del self.book.obligations[event_id]
        self.journal.record("trip_released", {"obligations": released})
        log.info("under-frequency trip released", obligations=released)
        self.wake.set()

    def _settled(self, now_mono_s: float) -> bool:
        """Whether to plan yet. Controllers' retained state arrives just after (re)subscribing; planning
        before it would count every group as unknown, at rated kW during an obligation, and shed them
        all. Wait for every group's telemetry, or for the stale limit, whichever comes first."""
        if self._planning:
            return True  # once per process: a group lost later must not stop control
        if self._connected_mono_s is None:
            return False
        if now_mono_s - self._connected_mono_s >= self.config.control.telemetry_stale_after_s:
            self._planning = True
        else:
            self._planning = all(self.state.group_power_kw(g, now_mono_s) is not None for g in self.group_ids)
        return self._planning

    async def _publish_setpoints(self, plan: Plan, now_s: float) -> None:
        changed = []
        for decision in plan.decisions:
            if decision.mode == "run" and decision.group_id in self.hard_cut:
                continue  # its outlets are still off: the run setpoint waits for them
            previous = self.commanded.get(decision.group_id)
            wanted = (decision.mode, decision.power_kw, decision.trip_stage)
            if previous is None or (previous.mode, previous.power_kw, previous.trip_stage) != wanted:
                changed.append(decision)
        if not changed or not self.link.connected.is_set():
            return

        setpoints = []
        for decision in changed:
            self.seq += 1
            setpoints.append(
                GroupSetpoint(
                    seq=self.seq,
                    mode=decision.mode,
                    power_kw=decision.power_kw,
                    trip_stage=decision.trip_stage,
                    ts=now_s,
                    epoch=self.epoch,
                )
            )
        # Journaled before they go out: after a crash, the newest command per group is on disk, so a
        # restarted daemon never re-sends an older one over it (one commit per cycle, not per group).
        await self.journal.durable_many(
            [
                ("setpoint", {**sp.model_dump(exclude={"v"}), "reason": d.reason}, d.group_id)
                for d, sp in zip(changed, setpoints, strict=True)
            ]
        )

        async def send(decision: GroupDecision, setpoint: GroupSetpoint) -> None:
            sent = await self.link.publish(
                self.topics.group_set(decision.group_id), encode(setpoint), qos=1, retain=True
            )
            if not sent:
                return
            self.commanded[decision.group_id] = setpoint
            self._awaiting_ack[decision.group_id] = (setpoint.seq, time.monotonic())
            self.metrics.setpoints.inc()
            if decision.mode == "curtail":
                self.verifier.expect(decision.group_id, time.monotonic(), "setpoint")
            else:
                self.verifier.forget(decision.group_id)
                self.unshed.discard(decision.group_id)
            log.info(
                "setpoint",
                group_id=decision.group_id,
                **setpoint.model_dump(exclude={"v", "ts"}),
                reason=decision.reason,
            )

        async with self._publishing:
            await asyncio.gather(*(send(d, sp) for d, sp in zip(changed, setpoints, strict=True)))

    async def _publish_tenant_caps(self, plan: Plan, now_s: float) -> None:
        """Tell each tenant its cap when it changes; uncapped (null) unless the plan caps a flexible
        share. The plan never caps below firm kW."""
        if not self.link.connected.is_set():
            return
        async with self._publishing:
            for decision in plan.tenants:
                previous = self.tenant_setpoints.get(decision.tenant_id)
                if previous is not None and previous.power_cap_kw == decision.power_cap_kw:
                    continue
                self.seq += 1
                setpoint = TenantSetpoint(
                    seq=self.seq, power_cap_kw=decision.power_cap_kw, ts=now_s, epoch=self.epoch
                )
                topic = self.topics.tenant_set(decision.tenant_id)
                if not await self.link.publish(topic, encode(setpoint), qos=1, retain=True):
                    return
                self.tenant_setpoints[decision.tenant_id] = setpoint
                fields = setpoint.model_dump(exclude={"v"})
                self.journal.record(
                    "tenant_setpoint", {**fields, "reason": decision.reason}, subject=decision.tenant_id
                )
                log.info(
                    "tenant setpoint",
                    tenant_id=decision.tenant_id,
                    seq=setpoint.seq,
                    power_cap_kw=setpoint.power_cap_kw,
                    reason=decision.reason,
                )

    def _plan_summary(self, plan: Plan) -> dict[str, Any]:
        return {
            "v": 1,
            "seq": self.seq,
            "site_limit_kw": round(plan.site_limit_kw, 3),
            "binding_constraint": plan.binding_constraint,
            "ai_allowance_kw": round(plan.ai_allowance_kw, 3),
            "mining_budget_kw": round(plan.mining_budget_kw, 3),
            "mining_planned_kw": round(plan.mining_planned_kw, 3),
            "feasible": plan.feasible,
            "active_obligations": list(plan.active_obligations),
            "obligations": self._obligations_summary(plan),
            "groups": {
                d.group_id: {
                    "mode": d.mode,
                    "power_kw": d.power_kw,
                    "trip_stage": d.trip_stage,
                    "reason": d.reason,
                }
                for d in plan.decisions
            },
            "tenants": {
                t.tenant_id: {"power_cap_kw": t.power_cap_kw, "reason": t.reason} for t in plan.tenants
            },
            "reasons": list(plan.reasons),
            "flex": self._flex_summary(plan),
        }

    def _obligations_summary(self, plan: Plan) -> dict[str, Any]:
        """Per active obligation: its program, deadline, how it is actuated and why, how it ends."""
        summary: dict[str, Any] = {}
        for event_id in plan.active_obligations:
            obligation = self.book.obligations.get(event_id)
            if obligation is None:
                continue
            summary[event_id] = {
                "program": obligation.program,
                "limit_kw": round(obligation.site_limit_kw(), 3),
                "deadline_s": obligation.deadline_s,
                "actuation": obligation.actuation or None,
                "why": obligation.actuation_reason or None,
                "recall": "explicit" if obligation.explicit_recall else "timer",
                "end": obligation.end_s,
            }
        return summary

    def _flex_summary(self, plan: Plan) -> dict[str, Any]:
        """What the site could shed now by deadline class, and its import: for a fleet dispatcher."""
        snapshot = self.state.snapshot(self.tenant_ids, self.group_ids, time.monotonic())
        flex = site_flex(self.site, snapshot, plan.decisions, self.config.control.firmware_sleep_s)
        return {
            "site_kw": None if flex.site_kw is None else round(flex.site_kw),
            "firmware_sleep_s": flex.firmware_sleep_s,
            "sheddable_kw": {"fast_path": round(flex.fast_path_kw), "graceful": round(flex.graceful_kw)},
        }

    async def _publish_plan(self, plan: Plan, *, force: bool = False) -> None:
        summary = self._plan_summary(plan)
        heartbeat_due = time.monotonic() - self._plan_published_mono_s >= PLAN_HEARTBEAT_S
        if summary == self._published_plan and not force and not heartbeat_due:
            return
        payload = json.dumps({**summary, "ts": plan.computed_at_s}).encode()
        if await self.link.publish(self.topics.daemon_plan, payload, qos=1, retain=True):
            # Journal decisions, not every budget wobble from AI telemetry; and only what changed, so a
            # row and a log line stay bounded however many obligations are in force.
            if self._published_plan is None or _decision_key(summary) != _decision_key(self._published_plan):
                change = plan_change(self._published_plan, summary)
                self.journal.record("plan", change)
                log.info(
                    "plan",
                    binding=plan.binding_constraint,
                    mining_budget_kw=round(plan.mining_budget_kw),
                    curtailed=len(plan.curtailed()),
                    feasible=plan.feasible,
                    obligations=change["obligations_active"],
                    changed_groups=len(change["groups"]),
                    reasons=change["reasons"],
                )
            self._published_plan = summary
            self._plan_published_mono_s = time.monotonic()

    async def _on_connect(self) -> None:
        """After every (re)connect: the broker may have lost retained state, so say it all again."""
        self.metrics.mqtt_connections.inc()
        if self._connected_mono_s is None:
            self._connected_mono_s = time.monotonic()
        if self.ha is not None:
            await self.ha.on_connect(self)
        if not self.commanding:
            return  # a standby's retained state is the leader's to say
        async with self._publishing:
            for tenant_id, tenant_setpoint in list(self.tenant_setpoints.items()):
                payload = encode(tenant_setpoint)
                await self.link.publish(self.topics.tenant_set(tenant_id), payload, qos=1, retain=True)
            for group_id, setpoint in list(self.commanded.items()):
                await self.link.publish(self.topics.group_set(group_id), encode(setpoint), qos=1, retain=True)
        if self.plan is not None:
            await self._publish_plan(self.plan, force=True)
        self.wake.set()

    def _check_meter_refresh(self) -> None:
        """Publish how often the meter's frequency register really changes, and say once (per change
        of verdict) when it changes more slowly than the pickup: one bad measurement could then
        outlast the pickup and confirm itself (docs/programs.md, "the detection budget")."""
        refresh_s = self.meter_refresh.interval_s
        if refresh_s is None:
            return
        self.metrics.meter_frequency_refresh.set(refresh_s)
        pickup_s = self.fastpath.trigger.settings.pickup_s
        slow = refresh_s > 1.5 * pickup_s
        if slow != self._meter_refresh_slow:
            self._meter_refresh_slow = slow
            if slow:
                log.warning(
                    "meter frequency refreshes slower than the trip pickup",
                    observed_s=round(refresh_s, 3),
                    pickup_s=pickup_s,
                )
            else:
                log.info(
                    "meter frequency refresh within the trip pickup",
                    observed_s=round(refresh_s, 3),
                    pickup_s=pickup_s,
                )

    def _update_metrics(self, plan: Plan, now_mono_s: float) -> None:
        m = self.metrics
        site_kw = self.state.site_power_kw(now_mono_s)
        m.site_power.set(math.nan if site_kw is None else site_kw * 1000.0)
        m.meter_stale.set(1.0 if site_kw is None else 0.0)
        self._check_meter_refresh()
        m.ai_power.set(self._sum_kw(self.state.tenant_power_kw, self.tenant_ids, now_mono_s) * 1000.0)
        m.mining_power.set(self._sum_kw(self.state.group_power_kw, self.group_ids, now_mono_s) * 1000.0)
        m.site_limit.set(plan.site_limit_kw * 1000.0)
        m.mining_budget.set(plan.mining_budget_kw * 1000.0)
        m.obligations_active.set(len(plan.active_obligations))
        m.groups_curtailed.set(len(plan.curtailed()))
        m.mqtt_connected.set(1.0 if self.link.connected.is_set() else 0.0)
        for group_id, setpoint in self.commanded.items():
            m.set_group_mode(group_id, setpoint.mode)
        m.plan_feasible.set(1.0 if plan.feasible else 0.0)
        limits = [o.site_limit_kw() for o in self.book.active(time.time())]
        if not limits:
            m.obligation_excess.set(0.0)
        elif site_kw is None:
            m.obligation_excess.set(math.nan)  # unknown is not zero
        else:
            m.obligation_excess.set(max(0.0, site_kw - min(limits)) * 1000.0)
        for group_id in self.group_ids:
            known = self.state.group_power_kw(group_id, now_mono_s) is not None
            m.group_telemetry_known.labels(group_id=group_id).set(1.0 if known else 0.0)
            awaited = self._awaiting_ack.get(group_id)
            pending_s = 0.0 if awaited is None else now_mono_s - awaited[1]
            m.group_ack_pending.labels(group_id=group_id).set(pending_s)

    @staticmethod
    def _sum_kw(reader: Any, ids: list[str], now_mono_s: float) -> float:
        """Sum of known readings; NaN as soon as one is unknown (unknown is not zero)."""
        total = 0.0
        for subject in ids:
            value = reader(subject, now_mono_s)
            if value is None:
                return math.nan
            total += value
        return total

    def _listeners(self) -> dict[str, Any]:
        """Where the API and metrics listen, and whether beyond loopback (`mulletd status` says so)."""
        out = {"metrics": (self.config.metrics.host, self.metrics_port)}
        if self.config.http_api.enabled:
            out["api"] = (self.config.http_api.host, self.http_port)
        return {
            name: {"address": f"{host}:{port}", "beyond_loopback": beyond_loopback(host)}
            for name, (host, port) in out.items()
        }

    def lifecycle_status(self) -> dict[str, Any]:
        """Service health for GET /v1/status: started, ready, cycling, what operators hold."""
        now_mono_s = time.monotonic()
        return {
            "site_id": self.config.site.site_id,
            "ready": self.ready.is_set(),
            "seq": self.seq,
            "cycles": self.cycles,
            "last_cycle_age_s": (
                None if self.last_cycle_mono_s is None else round(now_mono_s - self.last_cycle_mono_s, 3)
            ),
            "uptime_s": round(now_mono_s - self.started_mono_s, 3),
            "overrides": {g: self._override_doc(o) for g, o in sorted(self.overrides.items())},
            "config_reload": self._last_reload,
            "listeners": self._listeners(),
            "journal_lost": self.journal_lost,
        }

    def plan_document(self) -> dict[str, Any] | None:
        """The current plan as `daemon/plan` carries it; None before the first plan."""
        if self.plan is None:
            return None
        return {**self._plan_summary(self.plan), "ts": self.plan.computed_at_s}

    # ---- operator overrides ----------------------------------------------------------------

    @staticmethod
    def _override_doc(override: Override) -> dict[str, Any]:
        return {"mode": override.mode, "until": override.until_s, "note": override.note}

    async def set_override(self, group_id: str, mode: str, until_s: float | None, note: str, by: str) -> None:
        """Hold `group_id` in `mode` until `until_s` (mode "auto": release it); durable before it
        takes effect, so an acknowledged override survives a restart. Raises ValueError for an
        unknown group, KeyError for "auto" on a group that has none."""
        if group_id not in self.group_ids:
            raise ValueError(f"unknown group {group_id!r}")
        if mode == "auto" and group_id not in self.overrides:
            raise KeyError(group_id)
        entry = {"group_id": group_id, "mode": mode, "until": until_s, "note": note, "by": by}
        await self.journal.durable("override", entry, subject=group_id)
        if mode == "auto":
            del self.overrides[group_id]
        else:
            assert until_s is not None and mode in ("run", "curtail")
            mode_held: GroupMode = "run" if mode == "run" else "curtail"
            self.overrides[group_id] = Override(group_id, mode_held, until_s, note)
        log.warning("override", **entry)
        self.wake.set()

    # ---- configuration reload (SIGHUP) -----------------------------------------------------

    def reload(self) -> str:
        """Re-read the config file and take on what can change while running (docs/operations.md);
        on any problem keep the config in force, log why and count it. Returns the outcome."""
        self.notifier.reloading()
        try:
            outcome, detail = self._reload()
        finally:
            self.notifier.notify(READY=1, STATUS=f"config reload: {self._last_reload}")
        self.metrics.config_reloads.labels(result=outcome).inc()
        if outcome == "ok":
            log.info("config reloaded", path=self.config_path, changed=detail)
        else:
            log.error("config reload refused, previous config kept", result=outcome, problems=detail)
        self.journal.record("config_reload", {"result": outcome, "detail": detail})
        return outcome

    _last_reload = "none"

    def _reload(self) -> tuple[str, list[str]]:
        if self.config_path is None:
            self._last_reload = "no config file"
            return "invalid", ["daemon was not started from a config file"]
        try:
            new = load_config(self.config_path)
            token = read_secret(file=new.http_api.token_file, credential=new.http_api.token_credential)
        except ConfigError as exc:
            self._last_reload = "invalid, previous config kept"
            return "invalid", exc.problems
        except SecretError as exc:
            self._last_reload = "invalid, previous config kept"
            return "invalid", [f"http_api: {exc}"]
        fixed_before, fixed_after = _restart_only(self.config), _restart_only(new)
        if fixed_before != fixed_after:
            self._last_reload = "needs a restart, previous config kept"
            changed = sorted(k for k in fixed_after if fixed_before.get(k) != fixed_after.get(k))
            return "needs_restart", [f"{key}: changes only on restart" for key in changed]
        changed = sorted(k for k, v in new.model_dump().items() if self.config.model_dump()[k] != v)
        self.config = new
        self.site = new.site_spec()
        self.book.max_kw = new.site.interconnect_kw * new.control.max_event_kw_factor
        self.book.programs = new.program_catalogue()
        self.book.firmware_sleep_s = new.control.firmware_sleep_s
        self.book.max_obligations = new.control.max_obligations
        self.verifier.threshold_kw = {
            g.group_id: g.sleep_kw + new.control.shed_confirm_fraction * (g.rated_kw - g.sleep_kw)
            for g in self.site.groups
        }
        self.api_token = token
        self._last_reload = "ok"
        self.wake.set()
        return "ok", changed

    def status(self) -> dict[str, Any]:
        now_mono_s = time.monotonic()
        plan = self.plan
        return {
            "site_kw": self.state.site_power_kw(now_mono_s),
            "ai_kw": self._sum_kw(self.state.tenant_power_kw, self.tenant_ids, now_mono_s),
            "mining_kw": self._sum_kw(self.state.group_power_kw, self.group_ids, now_mono_s),
            "site_limit_kw": plan.site_limit_kw if plan else None,
            "mining_budget_kw": plan.mining_budget_kw if plan else None,
            "curtailed": len(plan.curtailed()) if plan else 0,
            "groups": len(self.group_ids),
            "obligations": list(plan.active_obligations) if plan else [],
            # For `mulletd status`: the plan summary as last published, and what each group reports.
            "meter_stale": self.state.site_power_kw(now_mono_s) is None,
            "mqtt_connected": self.link.connected.is_set(),
            "plan": self._published_plan,
            "group_power_kw": {g: self.state.group_power_kw(g, now_mono_s) for g in self.group_ids},
            "awaiting_ack_s": {g: round(now_mono_s - t, 3) for g, (_seq, t) in self._awaiting_ack.items()},
            "journal": {
                "written": self.journal.written,
                "dropped": self.journal.dropped,
                "queued": self.journal.queue_depth,
            },
        }


# What a running daemon takes on at SIGHUP; every other key changes only on restart (its connections,
# listeners, topic root, trip stages and the identities of its groups and tenants are fixed).
_LIVE_CONTROL = (
    "period_s",
    "deadband_kw",
    "restore_ramp_kw_per_min",
    "restore_stagger_s",
    "min_on_s",
    "min_off_s",
    "max_event_kw_factor",
    "firmware_sleep_s",
    "max_obligations",
)


def _restart_only(config: Config) -> dict[str, Any]:
    data = config.model_dump()
    for key in ("economics", "programs", "simulator"):
        data.pop(key)
    data["economics.price_stale_after_s"] = config.economics.price_stale_after_s
    data["site"] = config.site.site_id
    for key in _LIVE_CONTROL:
        data["control"].pop(key)
    for key in ("token_file", "token_credential"):
        data["http_api"].pop(key)
    data["groups"] = [(g.group_id, g.model_dump()["outlets"]) for g in config.groups]
    data["tenants"] = [t.tenant_id for t in config.tenants]
    return data


def _pool_detail(result: PoolResult) -> str:
    """One line on a PDU switch: how long, and which outlets failed why."""
    failures = [f"{r.pdu_id}:{list(r.failed)} {r.reason}" for r in result.results.values() if r.failed]
    return f"{result.elapsed_s * 1000:.1f} ms" + (f"; failed {', '.join(failures)}" if failures else "")


def _cut_ok(result: PoolResult | BaseException | None) -> bool:
    return result is None or (isinstance(result, PoolResult) and result.ok)


def _cut_detail(result: PoolResult | BaseException | None) -> str | None:
    if isinstance(result, PoolResult):
        return _pool_detail(result)
    return None if result is None else f"error: {result!r}"[:500]


def _decision_key(summary: dict[str, Any]) -> tuple[Any, ...]:
    modes = tuple(
        sorted((g, v["mode"], v["power_kw"], v["trip_stage"]) for g, v in summary["groups"].items())
    )
    caps = tuple(sorted((t, v["power_cap_kw"]) for t, v in summary["tenants"].items()))
    return (summary["site_limit_kw"], tuple(summary["active_obligations"]), modes, caps)
