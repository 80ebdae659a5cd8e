"""A whole simulated site: meter, PDUs, one MQTT controller per mining group and per AI tenant, and
the physics tick that moves the mining ramps. `SimSiteSpec` says what to simulate (the daemon builds one
from its site config: `daemon/site/simulated.py`).

Meter power = `base_load_kw` + every group's draw + every tenant's draw, evaluated when the meter is
read. The PDUs feed the groups as their specs say (`SimGroupSpec.outlets`): a group is powered only
while all of its outlets are on, and each outlet reports an equal share of its group's power.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from mullet.drivers.device_link import Broker, DeviceLink
from mullet.drivers.protocol import Topics
from mullet.simulators.ai import AiController, DemandTrace, TenantSim
from mullet.simulators.meter import FrequencyScript, MeterSim
from mullet.simulators.mining import MiningController, MiningGroup, SimGroupSpec
from mullet.simulators.pdu import PduSimBase, make_pdu_sim

_log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class SimMeterSpec:
    host: str = "127.0.0.1"
    port: int = 0
    device_id: int = 1
    profile: str = "eastron-sdm630"
    frequency_refresh_s: float | None = None  # None: the profile's
    sunspec_base: int | None = None  # a SunSpec profile: None serves the map at 40000
    sunspec_model: int | None = None  # a SunSpec profile: None serves model 203


@dataclass(frozen=True, slots=True)
class SimPduSpec:
    pdu_id: str
    outlets: int
    host: str = "127.0.0.1"
    port: int = 0
    device_id: int = 1
    profile: str = "netio-coils"


@dataclass(frozen=True, slots=True)
class SimTenantSpec:
    """An AI tenant drawing `demand_kw` samples `step_s` apart (looping, interpolated)."""

    tenant_id: str
    demand_kw: tuple[float, ...]
    step_s: float = 10.0


@dataclass(frozen=True, slots=True)
class SimPhysics:
    """How the simulated world moves: mining ramps, telemetry, the physics tick and grid frequency."""

    tick_hz: float = 10.0
    curtail_s: float = 5.0
    resume_s: float = 10.0
    sleep_fraction: float = 0.02
    telemetry_period_s: float = 1.0
    frequency_hz: float = 60.0
    # (seconds since start, Hz) steps; the meter holds each value until the next step.
    frequency_steps: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class SimSiteSpec:
    site_id: str
    topic_root: str
    broker: Broker
    meter: SimMeterSpec
    base_load_kw: float = 0.0
    pdus: tuple[SimPduSpec, ...] = ()
    groups: tuple[SimGroupSpec, ...] = ()
    tenants: tuple[SimTenantSpec, ...] = ()
    physics: SimPhysics = SimPhysics()


class SimulatedSite:
    """Every simulated device of one site, with ground-truth accessors for tests.

    Ports: `meter_port` / `pdu_ports` (by `pdu_id`) override the spec; 0 binds a free port, and
    the bound one is `site.meter.port` / `site.pdus[id].port` once `started` is set. `clock` is the
    monotonic time source for ramps, traces and the frequency script (seconds).
    """

    def __init__(
        self,
        spec: SimSiteSpec,
        *,
        meter_port: int | None = None,
        pdu_ports: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.topics = Topics(spec.topic_root)
        self.broker = spec.broker
        self.started = asyncio.Event()
        self.ticks = 0
        self._clock = clock
        self._t0_s = clock()
        sim = spec.physics

        self.groups: dict[str, MiningGroup] = {
            g.group_id: MiningGroup(
                g, sleep_fraction=sim.sleep_fraction, curtail_s=sim.curtail_s, resume_s=sim.resume_s
            )
            for g in spec.groups
        }
        self.tenants: dict[str, TenantSim] = {
            t.tenant_id: TenantSim(t.tenant_id, DemandTrace(t.demand_kw, t.step_s), self.elapsed_s)
            for t in spec.tenants
        }

        self.frequency = FrequencyScript(sim.frequency_hz, sim.frequency_steps)
        self.meter = MeterSim(
            power_kw=self.site_power_kw,
            frequency_hz=lambda: self.frequency.at(self.elapsed_s()),
            host=spec.meter.host,
            port=spec.meter.port if meter_port is None else meter_port,
            device_id=spec.meter.device_id,
            profile=spec.meter.profile,
            frequency_refresh_s=spec.meter.frequency_refresh_s,
            sunspec_base=40000 if spec.meter.sunspec_base is None else spec.meter.sunspec_base,
            sunspec_model=203 if spec.meter.sunspec_model is None else spec.meter.sunspec_model,
        )

        # (pdu_id, outlet) -> group fed by it
        self._feeds: dict[tuple[str, int], MiningGroup] = {}
        for g in spec.groups:
            for outlet_ref in g.outlets:
                self._feeds[outlet_ref] = self.groups[g.group_id]
        self._outlets_of = {g.group_id: g.outlets for g in spec.groups}
        ports = pdu_ports or {}
        # The simulator class follows the profile's switching style (coils or holding-register codes).
        self.pdus: dict[str, PduSimBase] = {
            p.pdu_id: make_pdu_sim(
                p.pdu_id,
                p.outlets,
                outlet_power_w=self._outlet_power_fn(p.pdu_id),
                on_switch=self._switch_fn(p.pdu_id),
                host=p.host,
                port=ports.get(p.pdu_id, p.port),
                device_id=p.device_id,
                profile=p.profile,
            )
            for p in spec.pdus
        }

        period_s = sim.telemetry_period_s
        self.mining: dict[str, MiningController] = {
            gid: MiningController(group, self.topics, self.broker, telemetry_period_s=period_s)
            for gid, group in self.groups.items()
        }
        self.ai: dict[str, AiController] = {
            tid: AiController(tenant, self.topics, self.broker, telemetry_period_s=period_s)
            for tid, tenant in self.tenants.items()
        }

    # ground truth

    def elapsed_s(self) -> float:
        """Seconds since `run()` began (since construction before that)."""
        return self._clock() - self._t0_s

    def mining_power_kw(self) -> float:
        return sum(g.power_kw for g in self.groups.values())

    def ai_power_kw(self) -> float:
        return sum(t.power_kw for t in self.tenants.values())

    def site_power_kw(self) -> float:
        return self.spec.base_load_kw + self.mining_power_kw() + self.ai_power_kw()

    @property
    def links(self) -> list[DeviceLink]:
        return [*self.mining.values(), *self.ai.values()]

    # wiring

    def _outlet_power_fn(self, pdu_id: str) -> Callable[[int], float]:
        def outlet_power_w(outlet: int) -> float:
            group = self._feeds.get((pdu_id, outlet))
            if group is None:
                return 0.0
            return group.power_kw * 1000.0 / len(self._outlets_of[group.group_id])

        return outlet_power_w

    def _switch_fn(self, pdu_id: str) -> Callable[[int, bool], None]:
        def on_switch(outlet: int, on: bool) -> None:
            group = self._feeds.get((pdu_id, outlet))
            if group is None:
                return
            powered = all(self.pdus[p].is_on(o) for p, o in self._outlets_of[group.group_id])
            group.set_powered(powered)
            _log.info("pdu outlet switched", pdu=pdu_id, outlet=outlet, on=on, group=group.group_id)

        return on_switch

    # running

    def step(self, dt_s: float) -> None:
        """Advance every ramp and the meter's energy register by `dt_s`."""
        for group in self.groups.values():
            group.advance(dt_s)
        self.meter.advance(dt_s)
        self.ticks += 1

    async def run(self) -> None:
        """Serve every device until cancelled; `started` is set once the Modbus servers listen and
        every controller is connected and subscribed."""
        self._t0_s = self._clock()
        servers = [self.meter, *self.pdus.values()]
        try:
            for server in servers:
                await server.start()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._physics(), name="sim-physics")
                for link in self.links:
                    tg.create_task(link.run(), name=f"sim-{link.name}")
                tg.create_task(self._announce_started(), name="sim-started")
        finally:
            self.started.clear()
            for server in servers:
                await server.stop()

    async def _physics(self) -> None:
        period_s = 1.0 / self.spec.physics.tick_hz
        last_s = self._clock()
        deadline_s = last_s
        while True:
            deadline_s += period_s
            await asyncio.sleep(max(0.0, deadline_s - self._clock()))
            now_s = self._clock()
            self.step(now_s - last_s)
            last_s = now_s
            if now_s - deadline_s > period_s:
                deadline_s = now_s  # after a stall, do not try to catch up with a burst of ticks

    async def _announce_started(self) -> None:
        await asyncio.gather(*(link.ready.wait() for link in self.links))
        self.started.set()
        _log.info(
            "simulated site up",
            site=self.spec.site_id,
            meter=f"{self.meter.host}:{self.meter.port}",
            pdus={p.pdu_id: p.port for p in self.pdus.values()},
            broker=f"{self.broker.host}:{self.broker.port}",
            groups=len(self.groups),
            tenants=len(self.tenants),
        )
