"""The supervisory loop: a control cycle every period, or at once when an input asks for one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from mullet.daemon.core.controller import SiteController
from mullet.daemon.metrics import Metrics
from mullet.daemon.notify import Notifier
from mullet.daemon.site.executor import CommandRunner
from mullet.daemon.site.fastpath import FastPath
from mullet.daemon.site.status import update_metrics
from mullet.drivers.mqtt import MqttLink
from mullet.drivers.pdu import PduPool
from mullet.policies.model import Plan

log = structlog.get_logger("mullet.daemon")


class Supervisor:
    def __init__(
        self,
        core: SiteController,
        runner: CommandRunner,
        *,
        fastpath: FastPath,
        link: MqttLink,
        pdus: PduPool | None,
        metrics: Metrics,
        notifier: Notifier,
        period_s: float,
        standing_by: Callable[[], bool] = lambda: False,
        after_cycle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`standing_by`: a standby's cycle plans nothing; `after_cycle`: the pair's handover."""
        self.core = core
        self.runner = runner
        self.fastpath = fastpath
        self.link = link
        self.pdus = pdus
        self.metrics = metrics
        self.notifier = notifier
        self.period_s = period_s
        self.standing_by = standing_by
        self.after_cycle = after_cycle
        self.ready = asyncio.Event()
        self.cycles = 0  # completed control cycles (a plan computed and acted on)
        self.last_cycle_mono_s: float | None = None
        self.started_mono_s = time.monotonic()

    async def run(self) -> None:
        wake = self.runner.wake
        while True:
            try:
                await asyncio.wait_for(wake.wait(), timeout=self.period_s)
            except TimeoutError:
                pass
            wake.clear()
            try:
                await self.cycle()
            except Exception:  # one bad cycle must not end control; the next one retries
                log.exception("control cycle failed")

    async def cycle(self) -> None:
        if self.standing_by():
            return
        core = self.core
        core.connected = self.link.connected.is_set()
        started_s = time.perf_counter()
        plan = core.cycle(time.time(), time.monotonic(), self._outlets_kw)
        if plan is None:
            await self.runner.run(core.take())
            return
        self.metrics.plan_seconds.observe(time.perf_counter() - started_s)
        self.fastpath.arm(core.armed)
        await self.runner.run(core.take())
        if self.after_cycle is not None:
            await self.after_cycle()
        now_mono_s = time.monotonic()
        update_metrics(self.metrics, core, plan, time.time(), now_mono_s, self.link.connected.is_set())
        self.ready.set()
        self._done(plan)

    def _outlets_kw(self, group_id: str, read_since_s: float) -> float | None:
        """The group's outlets' PDU power readback in kW, if every outlet was read since then."""
        outlets = self.core.outlets_by_group.get(group_id)
        if not outlets or self.pdus is None:
            return None
        watts = self.pdus.power_w(outlets, read_since_s=read_since_s)
        return None if watts is None else watts / 1000.0

    def _done(self, plan: Plan) -> None:
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
