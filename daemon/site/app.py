"""The site daemon: wires the controller core to its drivers, journal, listeners and clock."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from mullet.daemon import fds
from mullet.daemon.config import Config
from mullet.daemon.core.controller import SEQ_RESTART_GAP, SiteController
from mullet.daemon.core.trips import TripRecord
from mullet.daemon.http_guard import Limits
from mullet.daemon.metrics import Metrics
from mullet.daemon.metrics_http import MetricsListener
from mullet.daemon.notify import Notifier
from mullet.daemon.pair.role import HaRole
from mullet.daemon.secrets import read_secret
from mullet.daemon.site import broker_history, recovery
from mullet.daemon.site.drills import DrillService
from mullet.daemon.site.executor import CommandRunner
from mullet.daemon.site.fastpath import FastPath, TripSettled
from mullet.daemon.site.fourcp import FourCpService
from mullet.daemon.site.http_api import serve_http_api
from mullet.daemon.site.intake import Intake
from mullet.daemon.site.pdu_metrics import PduCollector
from mullet.daemon.site.reload import ReloadRefused, reread
from mullet.daemon.site.status import lifecycle_status, listener_status, site_status
from mullet.daemon.site.supervisor import Supervisor
from mullet.daemon.site.trip_records import record_settled
from mullet.daemon.site.wiring import site_journal, site_link, site_meter
from mullet.drivers.pdu import PduPool
from mullet.drivers.protocol import GridEvent, GridEventAck, Topics

if TYPE_CHECKING:
    from mullet.daemon.site.qse import QseService

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
        self.journal = site_journal(config, self.metrics)
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
        self.link = site_link(
            config,
            self.topics,
            self.ha,
            self.mqtt_password,
            lambda topic, raw: self.intake.on_message(topic, raw),
            self._on_connect,
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
        self.meter = site_meter(config, self.metrics, self.intake.on_meter_sample)
        self.supervisor = Supervisor(
            self.core,
            self.runner,
            fastpath=self.fastpath,
            link=self.link,
            pdus=self.pdus,
            metrics=self.metrics,
            notifier=self.notifier,
            period_s=config.control.period_s,
            standing_by=(lambda: ha_role.standing_by(self)) if ha_role else (lambda: False),
            after_cycle=(lambda: ha_role.publish_handover(self)) if ha_role else None,
        )
        self.ready = self.supervisor.ready  # set after the first complete cycle
        self._stop = asyncio.Event()
        self.metrics_port: int | None = None
        self.http_port: int | None = None  # set by the HTTP API once it listens
        self.last_reload = "none"
        recovery.recover(self.journal, self.core, time.time())
        self.drills = DrillService(
            self.core, self.intake, self.journal, self.metrics, config.program_catalogue()
        )
        self._missed_drills = self.drills.recover(time.time())
        # The QSE link ([qse], docs/qse.md): its levels and obligations come back from the journal.
        self.qse: QseService | None = None
        if config.qse.enabled:
            # Imported only when configured: pymodbus' server stack costs every start ~0.25 s.
            from mullet.daemon.site.qse import QseService

            self.qse = QseService(
                config.qse, self.core, self.intake, self.journal, self.metrics, start_mono_s=time.monotonic()
            )
            recovery.recover_qse(self.journal, self.core, self.qse.link)
        # 4CP avoidance ([fourcp], docs/programs.md): decisions from ERCOT's forecast, holds as events.
        self.fourcp: FourCpService | None = None
        if config.fourcp.enabled:
            self.fourcp = FourCpService(config, self.core, self.intake, self.journal, self.metrics)

    # ---- what other parts of the daemon read ------------------------------------------------

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
                tg.create_task(self.drills.run(self._missed_drills), name="drills")
                if self.config.http_api.enabled:
                    tg.create_task(serve_http_api(self, self.config.http_api, caps.api), name="http-api")
                if self.config.openadr.enabled:
                    # Imported only when configured: openleadr (and its aiohttp client) cost ~0.2 s.
                    from mullet.daemon.site.openadr_ven import run_ven

                    tg.create_task(run_ven(self, self.config.openadr), name="openadr")
                if self.qse is not None:
                    tg.create_task(self.qse.run(), name="qse")
                if self.fourcp is not None:
                    tg.create_task(self.fourcp.run(), name="fourcp")
                tg.create_task(self.supervisor.run(), name="supervisor")
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

    def _on_trip(self, record: TripRecord) -> None:
        self.core.trip_fired(record, time.time())
        self.runner.run_soon(self.core.take())

    def _on_trip_settled(self, settled: TripSettled) -> None:
        self.runner.observe_pdu_acks(settled.cut_result)
        record_settled(settled, self.metrics, self.journal)

    # ---- operators: status, overrides, reload ----------------------------------------------

    def status(self) -> dict[str, Any]:
        now_mono_s = time.monotonic()
        document = site_status(self.core, self.journal, self.link.connected.is_set(), now_mono_s)
        if self.qse is not None:
            document["qse"] = self.qse.status(now_mono_s)
        document["drills"] = self.drills.status()
        if self.fourcp is not None:
            document["fourcp"] = self.fourcp.status()
        return document

    def lifecycle_status(self) -> dict[str, Any]:
        """Service health for GET /v1/status: started, ready, cycling, what operators hold."""
        listeners = {"metrics": (self.config.metrics.host, self.metrics_port)}
        if self.config.http_api.enabled:
            listeners["api"] = (self.config.http_api.host, self.http_port)
        document = lifecycle_status(self.config.site.site_id, self.core, self.supervisor, time.monotonic())
        return {
            **document,
            "config_reload": self.last_reload,
            "listeners": listener_status(listeners),
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
