"""A whole simulated site from one `Config`: meter, PDUs, one MQTT controller per mining group and
per AI tenant, and the physics tick that moves the mining ramps.

Meter power = `site.base_load_kw` + every group's draw + every tenant's draw, evaluated when the
meter is read. The PDUs feed the groups as configured (`groups[].outlets`): a group is powered only
while all of its outlets are on, and each outlet reports an equal share of its group's power.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import structlog

from mullet.daemon.config import Config
from mullet.drivers.wire import Topics
from mullet.simulators.ai import DEFAULT_DEMAND_FRACTION, AiController, DemandTrace, TenantSim
from mullet.simulators.meter import FrequencyScript, MeterSim
from mullet.simulators.mining import MiningController, MiningGroup
from mullet.simulators.mqtt_link import Broker, DeviceLink
from mullet.simulators.pdu import PduSimBase, make_pdu_sim

_log = structlog.get_logger()


class SimulatedSite:
    """Every simulated device of one site, with ground-truth accessors for tests.

    Ports: `meter_port` / `pdu_ports` (by `pdu_id`) override the config; 0 binds a free port, and
    the bound one is `site.meter.port` / `site.pdus[id].port` once `started` is set. `clock` is the
    monotonic time source for ramps, traces and the frequency script (seconds).
    """

    def __init__(
        self,
        config: Config,
        *,
        meter_port: int | None = None,
        pdu_ports: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.topics = Topics(config.topic_root)
        self.broker = Broker.from_config(
            config.mqtt, device_password_file=config.simulator.mqtt_password_file
        )
        self.started = asyncio.Event()
        self.ticks = 0
        self._clock = clock
        self._t0_s = clock()
        sim = config.simulator

        self.groups: dict[str, MiningGroup] = {
            g.group_id: MiningGroup(
                g, sleep_fraction=sim.sleep_fraction, curtail_s=sim.curtail_s, resume_s=sim.resume_s
            )
            for g in config.groups
        }
        traces = {t.tenant_id: DemandTrace(t.demand_trace_kw, t.trace_step_s) for t in sim.tenants}
        self.tenants: dict[str, TenantSim] = {}
        for tenant in config.tenants:
            trace = traces.get(tenant.tenant_id) or DemandTrace(
                [tenant.reserved_kw * DEFAULT_DEMAND_FRACTION], step_s=1.0
            )
            self.tenants[tenant.tenant_id] = TenantSim(tenant.tenant_id, trace, self.elapsed_s)

        self.frequency = FrequencyScript(sim.frequency_hz, sim.frequency_script)
        self.meter = MeterSim(
            power_kw=self.site_power_kw,
            frequency_hz=lambda: self.frequency.at(self.elapsed_s()),
            host=config.meter.host,
            port=config.meter.port if meter_port is None else meter_port,
            device_id=config.meter.device_id,
            profile=config.meter.profile,
            frequency_refresh_s=config.meter_frequency_refresh_s(),
        )

        # (pdu_id, outlet) -> group fed by it
        self._feeds: dict[tuple[str, int], MiningGroup] = {}
        for g in config.groups:
            for ref in g.outlets:
                self._feeds[(ref.pdu, ref.outlet)] = self.groups[g.group_id]
        self._outlets_of = {g.group_id: [(r.pdu, r.outlet) for r in g.outlets] for g in config.groups}
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
            for p in config.pdus
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
        return self.config.site.base_load_kw + self.mining_power_kw() + self.ai_power_kw()

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
        period_s = 1.0 / self.config.simulator.tick_hz
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
            site=self.config.site.site_id,
            meter=f"{self.meter.host}:{self.meter.port}",
            pdus={p.pdu_id: p.port for p in self.pdus.values()},
            broker=f"{self.broker.host}:{self.broker.port}",
            groups=len(self.groups),
            tenants=len(self.tenants),
        )


async def simulate(config: Config) -> None:
    """Entry point for `mulletd simulate`: run the simulated site until cancelled."""
    _log.info("simulator starting", summary=config.summary())
    await SimulatedSite(config).run()
