"""Carries out the controller core's commands in order, and reports their outcomes back to it.

Ordering is the contract: a setpoint is on disk before it is published, an event before its ack, an
outlet restored before the run setpoint that follows it. Outcomes go back to the core as they come
(`setpoints_sent`, `outlets_switched`, ...); whatever the core queues in answer runs next.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from mullet.daemon.core.commands import (
    Acknowledge,
    Command,
    Record,
    RecordDurably,
    RecordInBackground,
    Republish,
    SendPlan,
    SendSetpoints,
    SendTenantCaps,
    SwitchOutlets,
)
from mullet.daemon.core.controller import SiteController
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.drivers.mqtt import MqttLink
from mullet.drivers.pdu import PduPool, PoolResult
from mullet.drivers.protocol import GridEventAck, Topics, encode

log = structlog.get_logger("mullet.daemon")


class CommandRunner:
    def __init__(
        self,
        core: SiteController,
        *,
        journal: Journal,
        link: MqttLink,
        topics: Topics,
        metrics: Metrics,
        pdus: PduPool | None,
        wake: asyncio.Event,
        before_ack: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`before_ack`: what must be published before any grid-event ack (the pair's handover)."""
        self.core = core
        self.journal = journal
        self.link = link
        self.topics = topics
        self.metrics = metrics
        self.pdus = pdus
        self.wake = wake
        self.before_ack = before_ack
        self.publishing = asyncio.Lock()  # a reconnect's republish must not overtake a newer setpoint
        self._tasks: set[asyncio.Task[None]] = set()

    def poke(self) -> None:
        """Wake the supervisory loop if an input asked for it."""
        if self.core.wake:
            self.core.wake = False
            self.wake.set()

    async def run(self, commands: list[Command]) -> list[GridEventAck]:
        """Carry out `commands` and whatever the core queues in answer; returns the acks sent."""
        acks: list[GridEventAck] = []
        queue = deque(commands)
        while queue:
            command = queue.popleft()
            ack = await self._one(command)
            if ack is not None:
                acks.append(ack)
            queue.extend(self.core.take())
        self.poke()
        return acks

    def run_soon(self, commands: list[Command]) -> None:
        """From a synchronous handler: journal rows now, anything that must wait in a task, in order."""
        rest: list[Command] = []
        for command in commands:
            if isinstance(command, Record) and not rest:
                self.journal.record(command.kind, command.data, subject=command.subject)
            elif isinstance(command, RecordInBackground) and not rest:
                self.background(
                    self.journal.durable(command.kind, command.data, subject=command.subject), command.what
                )
            else:
                rest.append(command)
        if rest:
            self.background(self._run_quietly(rest), "commands")
        self.poke()

    async def _run_quietly(self, commands: list[Command]) -> None:
        await self.run(commands)

    def background(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run `work` outside the hot path; a failure is logged, never lost."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background work failed", what=what, error=repr(finished.exception()))

        task.add_done_callback(done)

    async def _one(self, command: Command) -> GridEventAck | None:
        match command:
            case Record(kind, data, subject):
                self.journal.record(kind, data, subject=subject)
            case RecordDurably(items):
                await self.journal.durable_many(list(items))
            case RecordInBackground(kind, data, subject, what):
                self.background(self.journal.durable(kind, data, subject=subject), what)
            case SendSetpoints():
                await self._send_setpoints(command)
            case SendTenantCaps(caps):
                async with self.publishing:
                    for tenant_id, setpoint, reason in caps:
                        topic = self.topics.tenant_set(tenant_id)
                        if not await self.link.publish(topic, encode(setpoint), qos=1, retain=True):
                            break
                        self.core.tenant_cap_sent(tenant_id, setpoint, reason)
            case SendPlan(summary, payload):
                if await self.link.publish(self.topics.daemon_plan, payload, qos=1, retain=True):
                    self.core.plan_published(summary, time.monotonic())
            case SwitchOutlets():
                await self._switch(command)
            case Acknowledge(ack, publish):
                if self.before_ack is not None:
                    await self.before_ack()  # the standby has the obligation before the sender
                if publish:
                    await self.link.publish(self.topics.grid_event_ack, encode(ack), qos=1)
                return ack
            case Republish(group_setpoints, tenant_setpoints):
                async with self.publishing:
                    for tenant_id, cap in tenant_setpoints:
                        topic = self.topics.tenant_set(tenant_id)
                        await self.link.publish(topic, encode(cap), qos=1, retain=True)
                    for group_id, group_setpoint in group_setpoints:
                        topic = self.topics.group_set(group_id)
                        await self.link.publish(topic, encode(group_setpoint), qos=1, retain=True)
        return None

    async def _send_setpoints(self, command: SendSetpoints) -> None:
        items = command.setpoints
        if not items:
            return
        await self.journal.durable_many(
            [("setpoint", {**sp.model_dump(exclude={"v"}), "reason": reason}, g) for g, sp, reason in items]
        )
        async with self.publishing:
            sent = await asyncio.gather(
                *(
                    self.link.publish(self.topics.group_set(g), encode(sp), qos=1, retain=True)
                    for g, sp, _reason in items
                )
            )
        outcomes = [(g, sp, reason, ok) for (g, sp, reason), ok in zip(items, sent, strict=True)]
        self.core.setpoints_sent(outcomes, time.monotonic(), watch=command.watch)

    async def _switch(self, command: SwitchOutlets) -> None:
        started_s = time.monotonic()
        if self.pdus is None:  # the core only asks with a PDU driver configured
            self.core.outlets_switched(command, False, "no PDU driver running", started_s, 0.0)
            return
        outlets = list(command.outlets)
        outcome = await (self.pdus.switch(outlets, on=True) if command.on else self.pdus.cut(outlets))
        self.observe_pdu_acks(outcome)
        took_s = time.monotonic() - started_s
        self.core.outlets_switched(command, outcome.ok, pool_detail(outcome), started_s, took_s)

    def observe_pdu_acks(self, result: PoolResult | BaseException | None) -> None:
        """Each PDU that answered every write of a switch: switch started to its last answer."""
        if isinstance(result, PoolResult):
            for switched in result.results.values():
                if switched.ok and switched.writes:
                    self.metrics.command_ack_seconds.labels("pdu").observe(switched.elapsed_s)


def pool_detail(result: PoolResult) -> str:
    """One line on a PDU switch: how long, and which outlets failed why."""
    failures = [f"{r.pdu_id}:{list(r.failed)} {r.reason}" for r in result.results.values() if r.failed]
    return f"{result.elapsed_s * 1000:.1f} ms" + (f"; failed {', '.join(failures)}" if failures else "")
