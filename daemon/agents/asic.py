"""`mulletd agent asic`: one mining group's controller, turning protocol v1 into miner commands.

MQTT side (the same rules as the simulated controllers, `drivers/group_command.py`): applies
`mining/<group>/set` unless it is a redelivery of the `seq` already applied, sheds on a
`mining/trip` whose stage reaches its armed `trip_stage`, reports `mining/<group>/state` (with
`seq_applied`) at once on every command, on every change it sees and every `telemetry_period_s`, and
keeps `mining/<group>/online` with a last will.

Device side: one worker per miner, all concurrent, each call bounded by `command_timeout_s`, through
the miner client of the agent's `backend` (`drivers/miner_client.py`: `pyasic`, `drivers/miners.py`, or
`asic-rs`, `drivers/miners_asic_rs.py`; only that backend's library is imported, at start-up).
A command is only sent; a miner is *confirmed* when its own reading shows the result (asleep:
power <= `sleep_confirm_w`; running: power >= `run_confirm_fraction` x rated, or within the target
tolerance with a power target). A miner not confirmed `confirm_timeout_s` after its command
is reported in `state.miners_unconfirmed`, and the command is sent again every `resend_s`. The agent
does no more than that: the group's `power_kw` stays high, so the daemon's shed verification escalates
to the group's PDU outlets.

Unknown is never zero: a miner without a fresh reading is counted at its rated power.

Contact with the daemon: while `daemon/online` is `0` (or the broker is out of reach) the agent
holds its last command; after `failsafe_after_s` it applies `failsafe` (`hold`, `curtail` or `run`).
When the daemon is back online, the last command applies again (the daemon republishes it with the
same `seq`, which would otherwise be ignored as a redelivery).

The last command (and whether the fail-safe is in force) is saved to `state_path` and restored at
start, before the broker is reached, so a restarted agent puts its miners back as they were told.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from pydantic import Field

from mullet.daemon.agents.config import AsicAgentConfig, MinerSection
from mullet.daemon.agents.metrics import serving_metrics
from mullet.daemon.agents.state import CommandStore, load_command
from mullet.daemon.device_broker import broker_of
from mullet.drivers import extras
from mullet.drivers.device_link import DeviceLink
from mullet.drivers.group_command import CommandMode, GroupCommand
from mullet.drivers.miner_client import MinerClient, MinerEndpoint, MinerReading
from mullet.drivers.protocol import (
    GroupSetpoint,
    GroupState,
    Topics,
    Trip,
    WireError,
    decode,
    decode_online,
    encode,
)

log = structlog.get_logger("mullet.agent")

MinerStatus = Literal["idle", "pending", "confirmed", "unconfirmed"]
# backend -> (module, client class, the library it needs)
_BACKENDS = {
    "pyasic": ("mullet.drivers.miners", "PyasicMinerClient", "pyasic"),
    "asic-rs": ("mullet.drivers.miners_asic_rs", "AsicRsMinerClient", "pyasic-rs"),
}


class BackendUnavailable(extras.MissingExtra):
    """The agent's miner library is not installed: the agent cannot start (`name`: the missing module)."""


def miner_clients(config: AsicAgentConfig) -> list[MinerClient]:
    """One client per configured miner through the agent's backend, its library imported now (at
    start-up: the import takes over a second on a small machine, too long inside a call's timeout)."""
    cfg = config.agent
    module_name, class_name, library = _BACKENDS[cfg.backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend {cfg.backend!r} needs {library}, which cannot be imported ({exc});"
            " install the ASIC agent's libraries: pip install 'mullet[asic]'",
            name=exc.name,
        ) from exc
    client_class = getattr(module, class_name)
    extra = {"power_fallback": cfg.supports_power_target} if cfg.backend == "asic-rs" else {}
    return [
        client_class(
            MinerEndpoint(m.name, m.host, m.port, m.firmware), timeout_s=cfg.command_timeout_s, **extra
        )
        for m in config.miners
    ]


_PUBLISH_COALESCE_S = 0.005  # many miners confirming together make one state message, not 100


class AgentGroupState(GroupState):
    """`mining/<group>/state` plus fields the daemon ignores (protocol: unknown fields are ignored)
    and operators read: which miners have not confirmed, and whether the fail-safe is in force."""

    miners_total: int = 0
    miners_unconfirmed: list[str] = Field(default_factory=list)
    failsafe_active: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    generation: int
    mode: CommandMode | None
    power_w: float | None  # this miner's share of a group power target


class MinerWorker:
    """Drives one miner toward the agent's target and judges it from its own readings."""

    def __init__(self, agent: AsicAgent, spec: MinerSection, client: MinerClient) -> None:
        self.agent = agent
        self.spec = spec
        self.client = client
        self.reading: MinerReading | None = None
        self.reading_at_s = -float("inf")
        self.status: MinerStatus = "idle"
        self.commands_sent = 0
        self.wake = asyncio.Event()

    @property
    def name(self) -> str:
        return self.spec.name

    def fresh(self, now_s: float) -> bool:
        return self.reading is not None and now_s - self.reading_at_s <= self.agent.stale_after_s

    def matches(self, target: Target, reading: MinerReading | None) -> bool:
        if reading is None or target.mode is None:
            return False
        cfg = self.agent.config.agent
        if target.mode == "curtail":
            return reading.power_w <= cfg.sleep_confirm_w
        if target.power_w is not None:
            awake = reading.power_w > cfg.sleep_confirm_w
            return awake and reading.power_w <= target.power_w * (1 + cfg.target_tolerance_fraction)
        return reading.power_w >= cfg.run_confirm_fraction * self.spec.rated_w

    async def run(self) -> None:
        cfg = self.agent.config.agent
        sent_generation = -1
        sent_at_s = first_sent_at_s = 0.0
        while True:
            self.wake.clear()
            target = self.agent.target_for(self)
            if target.mode is not None and target.generation != sent_generation:
                sent_generation = target.generation
                first_sent_at_s = sent_at_s = time.monotonic()
                self._set_status("pending")
                await self._send(target)
            reading = await self.client.read()
            now_s = time.monotonic()
            if reading is not None:
                self.reading, self.reading_at_s = reading, now_s
            self.agent.mark_dirty()
            if target.mode is None:
                self._set_status("idle")
            elif self.matches(target, reading):
                self._set_status("confirmed")
            elif now_s - first_sent_at_s >= cfg.confirm_timeout_s:
                if self.status != "unconfirmed":
                    log.warning(
                        "miner not confirmed",
                        group=cfg.group_id,
                        miner=self.name,
                        mode=target.mode,
                        power_w=None if reading is None else reading.power_w,
                        failures=dict(self.client.failures),
                    )
                self._set_status("unconfirmed")
            if self.status in ("pending", "unconfirmed") and now_s - sent_at_s >= cfg.resend_s:
                sent_at_s = now_s
                await self._send(target)
            period_s = cfg.confirm_poll_s if self.status in ("pending", "unconfirmed") else cfg.poll_period_s
            try:
                async with asyncio.timeout(period_s):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _set_status(self, status: MinerStatus) -> None:
        if status != self.status:
            self.status = status
            self.agent.mark_dirty()

    async def _send(self, target: Target) -> None:
        self.commands_sent += 1
        if target.mode == "curtail":
            await self.client.sleep()
            return
        await self.client.wake()
        if self.agent.config.agent.supports_power_target:
            # No target means full power: the rated profile, undoing an earlier target.
            await self.client.set_power_w(target.power_w if target.power_w is not None else self.spec.rated_w)


class AsicAgent(DeviceLink):
    """One mining group's controller. `clients` overrides the miner clients (tests may pass their
    own endpoints); by default one per configured miner through the config's backend."""

    def __init__(self, config: AsicAgentConfig, *, clients: list[MinerClient] | None = None) -> None:
        cfg = config.agent
        topics = Topics(config.topic_root)
        super().__init__(
            broker_of(config.mqtt),
            name=f"agent-{cfg.group_id}",
            online_topic=topics.group_online(cfg.group_id),
            subscriptions=[topics.group_set(cfg.group_id), topics.trip, topics.daemon_online],
            telemetry_period_s=cfg.telemetry_period_s,
        )
        self.config = config
        self.topics = topics
        self.stale_after_s = max(3 * cfg.poll_period_s, 2 * cfg.command_timeout_s)
        if clients is None:
            clients = miner_clients(config)
        self.workers = [MinerWorker(self, spec, c) for spec, c in zip(config.miners, clients, strict=True)]
        self.store = CommandStore(Path(cfg.state_path))
        self.command = GroupCommand()
        self.failsafe_active = False
        self.invalid_messages = 0
        self.trips_received = 0
        self.restored = False
        self._generation = 0
        self._daemon_online: bool | None = None
        self._contact_lost_s = time.monotonic()  # no contact until the daemon says it is online
        self._dirty = asyncio.Event()
        self._set_topic = topics.group_set(cfg.group_id)
        self._state_topic = topics.group_state(cfg.group_id)
        saved = load_command(self.store.path)
        if saved is not None:
            self.command, self.failsafe_active = saved
            self.restored = True
            log.info(
                "agent command restored",
                group=cfg.group_id,
                mode=self.command.mode,
                power_kw=self.command.power_kw,
                seq_applied=self.command.seq_applied,
                failsafe_active=self.failsafe_active,
            )

    # what the miners should do

    def effective(self) -> tuple[CommandMode | None, float | None]:
        failsafe = self.config.agent.failsafe
        if self.failsafe_active and failsafe != "hold":
            return failsafe, None
        return self.command.mode, self.command.power_kw

    def target_for(self, worker: MinerWorker) -> Target:
        mode, power_kw = self.effective()
        power_w = None
        if mode == "run" and power_kw is not None and self.config.agent.supports_power_target:
            power_w = power_kw * 1000.0 * worker.spec.rated_w / self.config.rated_w
        return Target(self._generation, mode, power_w)

    def _retarget(self) -> None:
        self._generation += 1
        self.store.save(self.command, failsafe_active=self.failsafe_active)
        for worker in self.workers:
            worker.wake.set()
        self.mark_dirty()

    # running

    async def run(self) -> None:
        cfg = self.config.agent
        log.info("asic agent starting", group=cfg.group_id, miners=len(self.workers), backend=cfg.backend)
        async with serving_metrics(self.config.metrics), asyncio.TaskGroup() as tg:
            tg.create_task(self.store.run(), name="agent-store")
            for worker in self.workers:
                tg.create_task(worker.run(), name=f"agent-miner-{worker.name}")
            tg.create_task(self._publisher(), name="agent-publisher")
            tg.create_task(self._failsafe_watch(), name="agent-failsafe")
            tg.create_task(super().run(), name="agent-mqtt")

    async def close(self) -> None:
        """Before a clean stop: `online` = `0`, and the last command on disk."""
        await self.say_offline()
        try:
            async with asyncio.timeout(5):
                await self.store.idle.wait()
        except TimeoutError:
            log.error("agent state not saved before stop", path=str(self.store.path))

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def _publisher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self.publish_state()
            await asyncio.sleep(_PUBLISH_COALESCE_S)

    async def _failsafe_watch(self) -> None:
        cfg = self.config.agent
        period_s = min(cfg.telemetry_period_s, cfg.failsafe_after_s / 4)
        while True:
            await asyncio.sleep(period_s)
            if self.in_contact or self.failsafe_active:
                continue
            if time.monotonic() - self._contact_lost_s >= cfg.failsafe_after_s:
                self.failsafe_active = True
                log.warning(
                    "no contact with the daemon; fail-safe applied",
                    group=cfg.group_id,
                    failsafe=cfg.failsafe,
                    after_s=cfg.failsafe_after_s,
                )
                self._retarget()

    @property
    def in_contact(self) -> bool:
        return self._daemon_online is True and self.ready.is_set()

    def _contact(self, online: bool | None) -> None:
        was = self.in_contact
        self._daemon_online = online
        if was and not self.in_contact:
            self._contact_lost_s = time.monotonic()
        if self.in_contact and self.failsafe_active:
            self.failsafe_active = False
            log.info("daemon back online; last command applies again", group=self.config.agent.group_id)
            self._retarget()

    async def _session(self) -> None:
        try:
            await super()._session()
        finally:
            self._contact(None)  # out of reach of the broker: the daemon's liveness is unknown

    # MQTT

    def _state(self) -> tuple[str, bytes]:
        return self._state_topic, encode(self.group_state(time.time()))

    def group_state(self, ts: float) -> AgentGroupState:
        now_s = time.monotonic()
        mode, _ = self.effective()
        power_w = hashrate_ths = 0.0
        online = 0
        unconfirmed: list[str] = []
        confirmed = 0
        for worker in self.workers:
            if worker.fresh(now_s):
                assert worker.reading is not None
                online += 1
                power_w += worker.reading.power_w
                hashrate_ths += worker.reading.hashrate_ths or 0.0
            else:
                power_w += worker.spec.rated_w  # unknown is never zero
            if worker.status == "unconfirmed":
                unconfirmed.append(worker.name)
            elif worker.status == "confirmed":
                confirmed += 1
        if mode is None:
            reported = self._observed_mode(now_s)
        else:
            reported = mode if confirmed == len(self.workers) else "ramping"
        return AgentGroupState(
            seq_applied=self.command.seq_applied,
            mode=reported,
            power_kw=power_w / 1000.0,
            hashrate_ths=hashrate_ths,
            miners_online=online,
            ts=ts,
            miners_total=len(self.workers),
            miners_unconfirmed=unconfirmed,
            failsafe_active=self.failsafe_active,
        )

    def _observed_mode(self, now_s: float) -> Literal["run", "curtail", "ramping"]:
        """Before any command: what the readings show (all asleep, all running, or neither)."""
        readings = [w.reading for w in self.workers if w.fresh(now_s) and w.reading is not None]
        if len(readings) < len(self.workers):
            return "ramping"
        asleep = sum(r.power_w <= self.config.agent.sleep_confirm_w for r in readings)
        if asleep == len(readings):
            return "curtail"
        return "run" if asleep == 0 else "ramping"

    async def _handle(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a retained message being cleared
        try:
            if topic == self._set_topic:
                setpoint = decode(GroupSetpoint, payload)
                if self.command.apply(setpoint):
                    log.info(
                        "setpoint applied",
                        group=self.config.agent.group_id,
                        seq=setpoint.seq,
                        mode=setpoint.mode,
                        power_kw=setpoint.power_kw,
                        trip_stage=setpoint.trip_stage,
                    )
                    self._retarget()
                else:
                    self.mark_dirty()  # a redelivery is acknowledged again, not re-applied
            elif topic == self.topics.trip:
                trip = decode(Trip, payload)
                self.trips_received += 1
                if self.command.trip(trip.stage, trip.epoch):
                    log.warning("trip: shedding", group=self.config.agent.group_id, stage=trip.stage)
                    self._retarget()
            elif topic == self.topics.daemon_online:
                self._contact(decode_online(payload))
        except WireError as exc:
            self.invalid_messages += 1
            log.warning("message rejected", topic=topic, reason=exc.reason, detail=exc.detail)
