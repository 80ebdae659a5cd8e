"""The site daemon: wires the controller core to its drivers, journal, listeners and clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from mullet.daemon import broker_history, fds, recovery
from mullet.daemon.config import Config
from mullet.daemon.core.controller import SEQ_RESTART_GAP, SiteController
from mullet.daemon.executor import CommandRunner
from mullet.daemon.fastpath import FastPath, TripRecord, TripSettled
from mullet.daemon.grid_ven import run_ven
from mullet.daemon.ha import HaRole
from mullet.daemon.http_api import serve_http_api
from mullet.daemon.http_guard import Limits, beyond_loopback
from mullet.daemon.intake import Intake
from mullet.daemon.journal import Journal
from mullet.daemon.metrics import Metrics
from mullet.daemon.metrics_http import MetricsListener
from mullet.daemon.notify import Notifier
from mullet.daemon.pdu_metrics import PduCollector
from mullet.daemon.reload import ReloadRefused, reread
from mullet.daemon.secrets import read_secret
from mullet.daemon.site_status import override_document, site_status, update_metrics
from mullet.daemon.state import SiteState
from mullet.daemon.trip_records import record_settled
from mullet.drivers.device_profiles import load_meter_profile
from mullet.drivers.meter import ModbusMeter
from mullet.drivers.mqtt import MqttLink, tls_context
from mullet.drivers.pdu import PduPool
from mullet.drivers.wire import GridEvent, GridEventAck, Topics
from mullet.policies.model import Plan, SiteSpec

log = structlog.get_logger("mullet.daemon")


class _Stopped(Exception):
    pass


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
        self.mqtt_password = read_secret(file=mqtt.password_file, credential=mqtt.password_credential)
        self.journal_lost: dict[str, Any] | None = None  # set when an empty journal met broker history
        self.topics = Topics(config.topic_root)
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
        # A warm connection to every PDU, so a cut is one round trip (docs/architecture.md section 9).
        self.pdus: PduPool | None = PduPool.from_config(config.pdus) if config.pdus else None
        if self.pdus is not None:
            self.metrics.registry.register(PduCollector(self.pdus))
        self.core = SiteController(
            config, self.metrics, seq=self.journal.max_seq() + SEQ_RESTART_GAP, has_pdus=self.pdus is not None
        )
        # Active/standby ([ha]): only the leader commands; None = a single daemon, as in v1.
        self.ha = (
            HaRole(config.ha, site_id=config.site.site_id, topics=self.topics, metrics=self.metrics)
            if config.ha
            else None
        )
        self.core.commanding = self.ha is None
        self.link = MqttLink(
            mqtt.url,
            client_id=mqtt.client_id or (self.ha.client_id if self.ha else f"mulletd-{config.site.site_id}"),
            subscriptions=self.topics.daemon_subscriptions() + (self.ha.subscriptions if self.ha else []),
            on_message=lambda topic, raw: self.intake.on_message(topic, raw),
            on_connect=self._on_connect,
            # A pair cannot share one will: each node has its own, the leader owns daemon/online.
            will_topic=self.ha.node_online_topic if self.ha else self.topics.daemon_online,
            keepalive_s=mqtt.keepalive_s,
            reconnect_min_s=mqtt.reconnect_min_s,
            reconnect_max_s=mqtt.reconnect_max_s,
            username=mqtt.username,
            password=self.mqtt_password,
            tls=tls_context(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if "mqtts:" in mqtt.url else None,
        )
        self.wake = asyncio.Event()
        ha_role = self.ha
        self.runner = CommandRunner(
            self.core,
            journal=self.journal,
            link=self.link,
            topics=self.topics,
            metrics=self.metrics,
            pdus=self.pdus,
            wake=self.wake,
            before_ack=(lambda: ha_role.publish_handover(self)) if ha_role else None,
        )
        self.fastpath = FastPath(
            publish_trip=lambda payload: self.link.publish_now(self.topics.trip, payload, qos=1),
            on_fired=self._on_trip,
            on_settled=self._on_trip_settled,
            pdus=self.pdus,
        )
        self.metrics.trip_pickup.set(self.core.trigger.settings.pickup_s)
        self.intake = Intake(
            self.core,
            self.runner,
            topics=self.topics,
            metrics=self.metrics,
            journal=self.journal,
            link=self.link,
            fastpath=self.fastpath,
        )
        if self.ha is not None:
            ha = self.ha
            self.intake.pair_messages = lambda topic, raw: ha.on_message(self, topic, raw)
            self.intake.standby_refusal = ha.refuse
        meter = config.meter
        self.meter = ModbusMeter(
            meter.host,
            meter.port,
            device_id=meter.device_id,
            profile=load_meter_profile(meter.profile),
            poll_hz=meter.poll_hz,
            timeout_s=meter.timeout_s,
            on_sample=self.intake.on_meter_sample,
            on_reject=lambda reason: self.metrics.meter_rejected.labels(reason=reason).inc(),
            on_round_trip=self.metrics.modbus_seconds.labels(
                device=f"meter:{meter.host}:{meter.port}"
            ).observe,
        )
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.metrics_port: int | None = None
        self.http_port: int | None = None  # set by the HTTP API once it listens
        self.cycles = 0  # completed control cycles (a plan computed and acted on)
        self.last_cycle_mono_s: float | None = None
        self.started_mono_s = time.monotonic()
        self.last_reload = "none"
        recovery.recover(self.journal, self.core, time.time())

    # ---- what other parts of the daemon read ------------------------------------------------

    @property
    def plan(self) -> Plan | None:
        return self.core.plan

    @property
    def site(self) -> SiteSpec:
        return self.core.site

    @property
    def state(self) -> SiteState:
        return self.core.state

    @property
    def group_ids(self) -> list[str]:
        return self.core.group_ids

    @property
    def tenant_ids(self) -> list[str]:
        return self.core.tenant_ids

    @property
    def commanding(self) -> bool:
        """Whether this daemon may plan, publish, fire and ack: always without [ha], else the leader."""
        return self.core.commanding

    def submit_grid_event_raw(self, raw: bytes, *, source: str) -> asyncio.Future[GridEventAck] | None:
        return self.intake.submit_grid_event_raw(raw, source=source)

    def submit_grid_event(self, event: GridEvent) -> asyncio.Future[GridEventAck]:
        return self.intake.submit_grid_event(event)

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
            metrics=f"http://{section.host}:{self.metrics_port}/metrics",
            seq=self.core.seq,
            recovered_obligations=sorted(self.core.book.obligations),
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
                tg.create_task(self.intake.run_grid_events(), name="grid-events")
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

    async def _on_connect(self) -> None:
        self.metrics.mqtt_connections.inc()
        self.core.session_up(time.monotonic())
        if self.ha is not None:
            await self.ha.on_connect(self)
        await self.runner.run(self.core.take())

    def _on_journal_commit(self, entries: int, elapsed_s: float) -> None:
        self.metrics.journal_written.inc(entries)
        self.metrics.journal_commit_seconds.observe(elapsed_s)

    def _on_trip(self, record: TripRecord) -> None:
        self.core.trip_fired(record, time.time())
        self.runner.run_soon(self.core.take())

    def _on_trip_settled(self, settled: TripSettled) -> None:
        self.runner.observe_pdu_acks(settled.cut_result)
        record_settled(settled, self.metrics, self.journal)

    # ---- the supervisory loop --------------------------------------------------------------

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
        self.core.connected = self.link.connected.is_set()
        started_s = time.perf_counter()
        plan = self.core.cycle(time.time(), time.monotonic(), self._outlets_kw)
        if plan is None:
            await self.runner.run(self.core.take())
            return
        self.metrics.plan_seconds.observe(time.perf_counter() - started_s)
        self.fastpath.arm(self.core.armed)
        await self.runner.run(self.core.take())
        if self.ha is not None:
            await self.ha.publish_handover(self)
        update_metrics(
            self.metrics, self.core, plan, time.time(), time.monotonic(), self.link.connected.is_set()
        )
        self.ready.set()
        self._cycle_done(plan)

    def _outlets_kw(self, group_id: str, read_since_s: float) -> float | None:
        """The group's outlets' PDU power readback in kW, if every outlet was read since then."""
        outlets = self.core.outlets_by_group.get(group_id)
        if not outlets or self.pdus is None:
            return None
        watts = self.pdus.power_w(outlets, read_since_s=read_since_s)
        return None if watts is None else watts / 1000.0

    def _cycle_done(self, plan: Plan) -> None:
        """systemd hears READY=1 after the first complete cycle, WATCHDOG=1 only after complete cycles:
        a wedged loop or a cycle that fails every time stops the pings and systemd restarts us."""
        now_mono_s = time.monotonic()
        self.cycles += 1
        self.last_cycle_mono_s = now_mono_s
        if self.cycles == 1:
            status = f"controlling {len(self.core.group_ids)} groups, {len(plan.curtailed())} curtailed"
            self.notifier.ready(status)
            log.info("ready", status=status, after_s=round(now_mono_s - self.started_mono_s, 3))
        self.notifier.watchdog(now_mono_s)

    # ---- operators: status, overrides, reload ----------------------------------------------

    def status(self) -> dict[str, Any]:
        return site_status(self.core, self.journal, self.link.connected.is_set(), time.monotonic())

    def lifecycle_status(self) -> dict[str, Any]:
        """Service health for GET /v1/status: started, ready, cycling, what operators hold."""
        now_mono_s = time.monotonic()
        listeners = {"metrics": (self.config.metrics.host, self.metrics_port)}
        if self.config.http_api.enabled:
            listeners["api"] = (self.config.http_api.host, self.http_port)
        last_age_s = None if self.last_cycle_mono_s is None else round(now_mono_s - self.last_cycle_mono_s, 3)
        return {
            "site_id": self.config.site.site_id,
            "ready": self.ready.is_set(),
            "seq": self.core.seq,
            "cycles": self.cycles,
            "last_cycle_age_s": last_age_s,
            "uptime_s": round(now_mono_s - self.started_mono_s, 3),
            "overrides": {g: override_document(o) for g, o in sorted(self.core.overrides.items())},
            "config_reload": self.last_reload,
            # Where the API and metrics listen, and whether beyond loopback (`mulletd status` says so).
            "listeners": {
                name: {"address": f"{host}:{port}", "beyond_loopback": beyond_loopback(host)}
                for name, (host, port) in listeners.items()
            },
            "journal_lost": self.journal_lost,
        }

    def plan_document(self) -> dict[str, Any] | None:
        """The current plan as `daemon/plan` carries it; None before the first plan."""
        plan = self.core.plan
        if plan is None:
            return None
        return {**self.core.plan_summary(plan, time.monotonic()), "ts": plan.computed_at_s}

    async def set_override(self, group_id: str, mode: str, until_s: float | None, note: str, by: str) -> None:
        """Hold `group_id` in `mode` until `until_s` (mode "auto": release it); durable before it takes
        effect, so an acknowledged override survives a restart. Raises ValueError for an unknown group,
        KeyError for "auto" on a group that has none."""
        entry = self.core.override_entry(group_id, mode, until_s, note, by)
        await self.journal.durable("override", entry, subject=group_id)
        self.core.apply_override(entry)
        self.runner.poke()

    def reload(self) -> str:
        """Re-read the config file and take on what can change while running (docs/operations.md);
        on any problem keep the config in force, log why and count it. Returns the outcome."""
        self.notifier.reloading()
        try:
            reloaded = reread(self.config_path, self.config)
        except ReloadRefused as refused:
            outcome, detail, self.last_reload = refused.outcome, refused.problems, refused.summary
            log.error("config reload refused, previous config kept", result=outcome, problems=detail)
        else:
            outcome, detail, self.last_reload = "ok", reloaded.changed, "ok"
            self.config = reloaded.config
            self.core.reconfigure(reloaded.config)
            self.api_token = reloaded.token
            self.runner.poke()
            log.info("config reloaded", path=self.config_path, changed=detail)
        finally:
            self.notifier.notify(READY=1, STATUS=f"config reload: {self.last_reload}")
        self.metrics.config_reloads.labels(result=outcome).inc()
        self.journal.record("config_reload", {"result": outcome, "detail": detail})
        return outcome
