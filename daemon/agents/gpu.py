"""`mulletd agent gpu`: an AI node's (or tenant's) controller: reports power and demand on
`ai/<tenant>/state` and enforces `ai/<tenant>/set`'s `power_cap_kw` with NVML power limits.

Every `telemetry_period_s` and at once on a new setpoint: read each GPU's instant power, work out
the limits (`policies/gpu_cap.py`: the sum of limits fits the cap, each limit within the GPU's NVML
range), write those that changed, and publish the state. The cap is never taken below `firm_kw`
(the tenant's firm power; the daemon never asks for less, this is the agent's own guard), and it
covers `overhead_kw` (the node's non-GPU draw) too. `null` restores every GPU's default limit.

Verification: `verify_after_s` after limits are written, the measured power (GPUs + overhead) must
be within `cap_tolerance_fraction` of the cap; `state.cap_honoured` says whether it is, and a miss is
logged. Demand (informational on the wire): a GPU drawing close to its limit is counted at its
maximum limit (it may want more), others at their draw.

Unknown is never zero: a GPU whose power cannot be read counts at its maximum limit; while NVML
cannot be opened at all, no state is published, so the daemon sees the tenant as unknown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from pydantic import Field

from mullet.daemon.agents.config import GpuAgentConfig
from mullet.daemon.agents.metrics import serving_metrics
from mullet.daemon.device_broker import broker_of
from mullet.drivers.device_link import DeviceLink
from mullet.drivers.group_command import EpochFence
from mullet.drivers.nvml import GpuInfo, Nvml, NvmlError
from mullet.drivers.protocol import TenantSetpoint, TenantState, Topics, WireError, decode, encode
from mullet.policies.gpu_cap import GpuRange, split_cap

log = structlog.get_logger("mullet.agent")

_PINNED_FRACTION = 0.97  # a GPU at >= 97 % of its limit is held back by it
# A GPU below its limit is given its draw plus this margin, so that it is not "pinned" by its own
# new limit next cycle (which would flip it to wanting its maximum, and back: an oscillation).
_DEMAND_MARGIN_FRACTION = 0.1
_DEMAND_MARGIN_MIN_W = 20.0
_CHANGE_W = 5.0  # a new split is written only if some limit moves by this much (or the cap needs it)


class AgentTenantState(TenantState):
    """`ai/<tenant>/state` plus fields the daemon ignores and operators read."""

    seq_applied: int | None = None
    power_cap_kw: float | None = None
    cap_honoured: bool | None = None  # None: uncapped, or not verified yet
    cap_feasible: bool = True
    gpu_limits_w: list[float] = Field(default_factory=list)


@dataclass
class GpuView:
    info: GpuInfo
    limit_w: float
    power_w: float | None = None
    set_failures: int = 0


@dataclass
class _Verify:
    due_s: float | None = None  # limits written at due_s - verify_after_s; judged from due_s on
    honoured: bool | None = None
    misses: int = 0


class GpuAgent(DeviceLink):
    def __init__(self, config: GpuAgentConfig, *, nvml: Nvml | None = None) -> None:
        cfg = config.agent
        topics = Topics(config.topic_root)
        super().__init__(
            broker_of(config.mqtt),
            name=f"agent-{cfg.tenant_id}",
            online_topic=topics.tenant_online(cfg.tenant_id),
            subscriptions=[topics.tenant_set(cfg.tenant_id)],
            telemetry_period_s=cfg.telemetry_period_s,
        )
        self.config = config
        if nvml is None:
            nvml = Nvml(_fake_lib(config) if config.nvml.backend == "fake" else None)
        self.nvml = nvml
        self.gpus: list[GpuView] = []
        self.seq_applied: int | None = None
        self.fence = EpochFence()
        self.cap_kw: float | None = None
        self.feasible = True
        self.invalid_setpoints = 0
        self.verify = _Verify()
        self.cycles = 0
        self.cycle_done = asyncio.Event()  # set after every control cycle (tests wait on it)
        self._wake = asyncio.Event()
        self._set_topic = topics.tenant_set(cfg.tenant_id)
        self._state_topic = topics.tenant_state(cfg.tenant_id)

    # running

    async def run(self) -> None:
        log.info("gpu agent starting", tenant=self.config.agent.tenant_id, backend=self.config.nvml.backend)
        try:
            async with serving_metrics(self.config.metrics), asyncio.TaskGroup() as tg:
                tg.create_task(self._control(), name="agent-control")
                tg.create_task(super().run(), name="agent-mqtt")
        finally:
            await asyncio.to_thread(self.nvml.close)

    async def close(self) -> None:
        await self.say_offline()

    async def publish_state(self) -> None:
        if not self.gpus:
            return  # NVML not open: unknown, and unknown is never published as a number
        await super().publish_state()

    async def _open(self) -> None:
        while not self.gpus:
            try:
                infos = await asyncio.to_thread(self.nvml.open, self.config.nvml.gpus)
                limits = [await asyncio.to_thread(self.nvml.limit_w, g.index) for g in infos]
            except NvmlError as exc:
                log.error("nvml unavailable; retrying", error=str(exc), code=exc.code)
                await asyncio.sleep(max(5.0, self.config.agent.telemetry_period_s))
                continue
            self.gpus = [GpuView(info, limit) for info, limit in zip(infos, limits, strict=True)]
            log.info(
                "gpus found",
                count=len(self.gpus),
                ranges_w=[(g.min_limit_w, g.max_limit_w) for g in infos],
            )

    async def _control(self) -> None:
        await self._open()
        period_s = self.config.agent.telemetry_period_s
        while True:
            self._wake.clear()
            await self.cycle()
            try:
                async with asyncio.timeout(self._next_wait_s(period_s)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _next_wait_s(self, period_s: float) -> float:
        due_in_s = None if self.verify.due_s is None else self.verify.due_s - time.monotonic()
        if due_in_s is None or due_in_s <= 0:
            return period_s
        return min(period_s, due_in_s)

    async def cycle(self) -> None:
        """Read, split, write, verify, publish."""
        await asyncio.to_thread(self._read_all)
        limits = self._limits()
        changed = await asyncio.to_thread(self._write_limits, limits)
        if changed:
            self.verify.due_s = time.monotonic() + self.config.agent.verify_after_s
            self.verify.honoured = None
        elif self.verify.due_s is not None and time.monotonic() >= self.verify.due_s:
            self._judge()  # every cycle from then on, so a later overshoot shows too
        self.cycles += 1
        await self.publish_state()
        self.cycle_done.set()

    def _read_all(self) -> None:
        for gpu in self.gpus:
            try:
                gpu.power_w = self.nvml.power_w(gpu.info.index)
            except NvmlError as exc:
                gpu.power_w = None
                log.warning("gpu power unreadable", gpu=gpu.info.index, error=str(exc))

    def effective_cap_kw(self) -> float | None:
        if self.cap_kw is None:
            return None
        return max(self.cap_kw, self.config.agent.firm_kw)

    def _limits(self) -> list[float]:
        cap_kw = self.effective_cap_kw()
        if cap_kw is None:
            self.feasible = True
            return [g.info.default_limit_w for g in self.gpus]
        budget_w = cap_kw * 1000.0 - self.config.agent.overhead_kw * 1000.0
        ranges = [GpuRange(g.info.min_limit_w, g.info.max_limit_w, self._demand_w(g)) for g in self.gpus]
        split = split_cap(budget_w, ranges)
        if not split.feasible and self.feasible:
            log.warning(
                "cap below the GPUs' minimum limits; GPUs held at their minimum",
                cap_kw=cap_kw,
                min_total_w=sum(g.info.min_limit_w for g in self.gpus),
            )
        self.feasible = split.feasible
        return split.limits_w

    def _demand_w(self, gpu: GpuView) -> float:
        if gpu.power_w is None or gpu.power_w >= _PINNED_FRACTION * gpu.limit_w:
            return gpu.info.max_limit_w
        return gpu.power_w + max(_DEMAND_MARGIN_MIN_W, _DEMAND_MARGIN_FRACTION * gpu.power_w)

    def _write_limits(self, limits_w: list[float]) -> bool:
        """All limits or none: skipping small moves one by one could leave the sum above the cap."""
        moved = any(abs(new - g.limit_w) >= _CHANGE_W for g, new in zip(self.gpus, limits_w, strict=True))
        if not moved and sum(g.limit_w for g in self.gpus) <= sum(limits_w) + 1e-6:
            return False
        changed = False
        for gpu, limit_w in zip(self.gpus, limits_w, strict=True):
            if abs(limit_w - gpu.limit_w) < 1e-3:
                continue
            try:
                self.nvml.set_limit_w(gpu.info.index, limit_w)
                gpu.limit_w = self.nvml.limit_w(gpu.info.index)
                changed = True
            except NvmlError as exc:
                gpu.set_failures += 1
                log.error("gpu limit not set", gpu=gpu.info.index, limit_w=limit_w, error=str(exc))
        return changed

    def power_kw(self) -> float:
        gpus_w = sum(g.power_w if g.power_w is not None else g.info.max_limit_w for g in self.gpus)
        return gpus_w / 1000.0 + self.config.agent.overhead_kw

    def _judge(self) -> None:
        cap_kw = self.effective_cap_kw()
        if cap_kw is None:
            self.verify.honoured = None
            return
        power_kw = self.power_kw()
        honoured = power_kw <= cap_kw * (1 + self.config.agent.cap_tolerance_fraction)
        if not honoured and self.verify.honoured is not False:
            self.verify.misses += 1
            log.error("power cap not honoured", cap_kw=cap_kw, power_kw=round(power_kw, 3))
        self.verify.honoured = honoured

    # MQTT

    def _state(self) -> tuple[str, bytes]:
        demand_kw = sum(self._demand_w(g) for g in self.gpus) / 1000.0 + self.config.agent.overhead_kw
        state = AgentTenantState(
            power_kw=self.power_kw(),
            demand_kw=demand_kw,
            ts=time.time(),
            seq_applied=self.seq_applied,
            power_cap_kw=self.effective_cap_kw(),
            cap_honoured=self.verify.honoured,
            cap_feasible=self.feasible,
            gpu_limits_w=[round(g.limit_w, 1) for g in self.gpus],
        )
        return self._state_topic, encode(state)

    async def _handle(self, topic: str, payload: bytes) -> None:
        if topic != self._set_topic or not payload:
            return
        try:
            setpoint = decode(TenantSetpoint, payload)
        except WireError as exc:
            self.invalid_setpoints += 1
            log.warning("message rejected", topic=topic, reason=exc.reason, detail=exc.detail)
            return
        if setpoint.seq == self.seq_applied or self.fence.refuses(setpoint.epoch):
            return  # a redelivery of the setpoint in force, or a deposed leader's late cap
        self.seq_applied = setpoint.seq
        self.cap_kw = setpoint.power_cap_kw
        log.info("tenant setpoint applied", seq=setpoint.seq, power_cap_kw=setpoint.power_cap_kw)
        self._wake.set()


def _fake_lib(config: GpuAgentConfig) -> object:
    from mullet.simulators.fake_nvml import FakeGpu, FakeNvml

    return FakeNvml(
        [
            FakeGpu(min_limit_w=g.min_limit_w, max_limit_w=g.max_limit_w, demand_w=g.demand_w)
            for g in config.nvml.fake_gpus
        ]
    )
