"""Simulated AI tenants: a GPU cluster following a demand trace (`TenantSim`) and its controller on
MQTT (`AiController`).

Power is `min(demand, cap)`, effective at once: GPU power caps (NVML) act in ~0.1 s, well inside a
telemetry period, so no ramp is modelled.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from mullet.drivers.device_link import Broker, DeviceLink
from mullet.drivers.group_command import EpochFence
from mullet.drivers.protocol import TenantSetpoint, TenantState, Topics, WireError, decode, encode

DEFAULT_DEMAND_FRACTION = 0.9  # of reserved kW, for a tenant with no trace in the config


class DemandTrace:
    """Demand samples `step_s` apart, linearly interpolated and looping (the last sample blends
    back into the first)."""

    def __init__(self, samples_kw: Sequence[float], step_s: float) -> None:
        if not samples_kw:
            raise ValueError("a demand trace needs at least one sample")
        if step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        self.samples_kw = list(samples_kw)
        self.step_s = step_s

    def at(self, elapsed_s: float) -> float:
        position = max(elapsed_s, 0.0) / self.step_s
        index = math.floor(position)
        fraction = position - index
        count = len(self.samples_kw)
        here = self.samples_kw[index % count]
        after = self.samples_kw[(index + 1) % count]
        return here + (after - here) * fraction


class TenantSim:
    """Ground truth for one tenant. `caps_received` lists the cap of every setpoint delivered,
    `None` (uncapped) included, so a test can assert no firm load was ever capped."""

    def __init__(self, tenant_id: str, trace: DemandTrace, elapsed_s: Callable[[], float]) -> None:
        self.tenant_id = tenant_id
        self.trace = trace
        self.cap_kw: float | None = None
        self.seq_applied: int | None = None
        self.fence = EpochFence()
        self.caps_received: list[float | None] = []
        self._elapsed_s = elapsed_s

    @property
    def demand_kw(self) -> float:
        return self.trace.at(self._elapsed_s())

    @property
    def power_kw(self) -> float:
        demand_kw = self.demand_kw
        return demand_kw if self.cap_kw is None else min(demand_kw, self.cap_kw)

    def apply(self, setpoint: TenantSetpoint) -> None:
        if self.fence.refuses(setpoint.epoch):
            return  # a deposed leader's late cap
        self.caps_received.append(setpoint.power_cap_kw)
        self.cap_kw = setpoint.power_cap_kw
        self.seq_applied = setpoint.seq

    def state(self, ts: float) -> TenantState:
        demand_kw = self.demand_kw
        power_kw = demand_kw if self.cap_kw is None else min(demand_kw, self.cap_kw)
        return TenantState(power_kw=power_kw, demand_kw=demand_kw, ts=ts)


class AiController(DeviceLink):
    """The tenant's controller: applies `ai/<tenant>/set` and reports `ai/<tenant>/state` on a
    period and at once after every setpoint."""

    def __init__(
        self, tenant: TenantSim, topics: Topics, broker: Broker, *, telemetry_period_s: float
    ) -> None:
        tid = tenant.tenant_id
        super().__init__(
            broker,
            name=f"ai-{tid}",
            online_topic=topics.tenant_online(tid),
            subscriptions=[topics.tenant_set(tid)],
            telemetry_period_s=telemetry_period_s,
        )
        self.tenant = tenant
        self.invalid_setpoints = 0
        self._set_topic = topics.tenant_set(tid)
        self._state_topic = topics.tenant_state(tid)

    @property
    def caps_received(self) -> list[float | None]:
        return self.tenant.caps_received

    def _state(self) -> tuple[str, bytes]:
        return self._state_topic, encode(self.tenant.state(time.time()))

    async def _handle(self, topic: str, payload: bytes) -> None:
        if topic != self._set_topic or not payload:
            return
        try:
            setpoint = decode(TenantSetpoint, payload)
        except WireError as exc:
            self.invalid_setpoints += 1
            self._log.warning("invalid setpoint", reason=exc.reason, detail=exc.detail)
            return
        self.tenant.apply(setpoint)
        await self.publish_state()
