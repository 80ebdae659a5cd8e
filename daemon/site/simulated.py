"""The simulated site a daemon config describes (`mulletd simulate`, the demo, tests, benchmarks):
the translation from `Config` to the simulators' own `SimSiteSpec`, so simulators/ never reads the
daemon's config. Raises SecretError when a configured MQTT password cannot be read."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog

from mullet.daemon.config import Config, GroupSection
from mullet.daemon.device_broker import broker_of
from mullet.simulators.ai import DEFAULT_DEMAND_FRACTION
from mullet.simulators.mining import SimGroupSpec
from mullet.simulators.site import (
    SimMeterSpec,
    SimPduSpec,
    SimPhysics,
    SimSiteSpec,
    SimTenantSpec,
    SimulatedSite,
)

_log = structlog.get_logger()


def group_spec(group: GroupSection) -> SimGroupSpec:
    return SimGroupSpec(
        group_id=group.group_id,
        rated_kw=group.rated_kw,
        efficiency_j_per_th=group.efficiency_j_per_th,
        supports_power_target=group.supports_power_target,
        sleep_kw=group.sleep_kw,
        outlets=tuple((ref.pdu, ref.outlet) for ref in group.outlets),
    )


def sim_spec(config: Config) -> SimSiteSpec:
    """Every device of `config`, simulated as `[simulator]` says; a tenant with no demand trace there
    draws `DEFAULT_DEMAND_FRACTION` of its reserved kW."""
    sim = config.simulator
    traces = {t.tenant_id: t for t in sim.tenants}
    tenants = []
    for tenant in config.tenants:
        trace = traces.get(tenant.tenant_id)
        if trace is None:
            tenants.append(
                SimTenantSpec(tenant.tenant_id, (tenant.reserved_kw * DEFAULT_DEMAND_FRACTION,), 1.0)
            )
        else:
            tenants.append(SimTenantSpec(tenant.tenant_id, tuple(trace.demand_trace_kw), trace.trace_step_s))
    meter = config.meter
    return SimSiteSpec(
        site_id=config.site.site_id,
        topic_root=config.topic_root,
        broker=broker_of(config.mqtt, device_password_file=sim.mqtt_password_file),
        meter=SimMeterSpec(
            host=meter.host,
            port=meter.port,
            device_id=meter.device_id,
            profile=meter.profile,
            frequency_refresh_s=config.meter_frequency_refresh_s(),
            sunspec_base=meter.sunspec_base,
            sunspec_model=meter.sunspec_model,
        ),
        base_load_kw=config.site.base_load_kw,
        pdus=tuple(
            SimPduSpec(
                p.pdu_id, p.outlets, host=p.host, port=p.port, device_id=p.device_id, profile=p.profile
            )
            for p in config.pdus
        ),
        groups=tuple(group_spec(g) for g in config.groups),
        tenants=tuple(tenants),
        physics=SimPhysics(
            tick_hz=sim.tick_hz,
            curtail_s=sim.curtail_s,
            resume_s=sim.resume_s,
            sleep_fraction=sim.sleep_fraction,
            telemetry_period_s=sim.telemetry_period_s,
            frequency_hz=sim.frequency_hz,
            frequency_steps=tuple(sim.frequency_script),
        ),
    )


def simulated_site(
    config: Config,
    *,
    meter_port: int | None = None,
    pdu_ports: Mapping[str, int] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SimulatedSite:
    """`SimulatedSite(sim_spec(config), ...)`; the keyword arguments are `SimulatedSite`'s."""
    return SimulatedSite(sim_spec(config), meter_port=meter_port, pdu_ports=pdu_ports, clock=clock)


async def simulate(config: Config) -> None:
    """Entry point for `mulletd simulate`: run the simulated site until cancelled."""
    _log.info("simulator starting", summary=config.summary())
    await simulated_site(config).run()
