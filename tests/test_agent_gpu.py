"""The GPU agent: a tenant cap spread over NVML power limits (fake NVML), over a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pynvml
import pytest
from helpers import Observer, observing
from hypothesis import given
from hypothesis import strategies as st

from mullet.daemon.agents.config import GpuAgentConfig, parse_agent_config
from mullet.daemon.agents.gpu import GpuAgent
from mullet.drivers.nvml import Nvml, NvmlError
from mullet.drivers.protocol import TenantSetpoint, Topics, encode
from mullet.policies.gpu_cap import GpuRange, split_cap
from mullet.simulators.fake_nvml import FakeGpu, FakeNvml

# pure split


def test_split_gives_idle_gpus_less_and_keeps_the_sum_within_budget() -> None:
    gpus = [GpuRange(200, 700, 650), GpuRange(200, 700, 650), GpuRange(200, 700, 250)]
    split = split_cap(1400, gpus)
    assert split.feasible and sum(split.limits_w) == pytest.approx(1400, abs=1e-6)
    busy, _, idle = split.limits_w
    assert idle == pytest.approx(250) and busy == pytest.approx(575)


def test_split_below_the_minimum_limits_holds_the_minimums() -> None:
    split = split_cap(300, [GpuRange(200, 700, 600), GpuRange(150, 400, 0)])
    assert not split.feasible and split.limits_w == [200, 150]


def test_split_with_room_to_spare_fills_up_to_the_maximums() -> None:
    split = split_cap(10_000, [GpuRange(200, 700, 100), GpuRange(100, 350, 50)])
    assert split.limits_w == [700, 350]


@given(
    st.lists(
        st.tuples(st.floats(50, 400), st.floats(0, 600), st.floats(0, 1200)),  # min, extra range, demand
        min_size=1,
        max_size=16,
    ),
    st.floats(0, 20_000),
)
def test_split_is_within_every_range_and_the_budget(
    rows: list[tuple[float, float, float]], budget: float
) -> None:
    gpus = [GpuRange(lo, lo + extra, demand) for lo, extra, demand in rows]
    split = split_cap(budget, gpus)
    for limit, gpu in zip(split.limits_w, gpus, strict=True):
        assert gpu.min_limit_w - 1e-9 <= limit <= gpu.max_limit_w + 1e-9
    if split.feasible:
        assert sum(split.limits_w) <= budget + 1e-6
    else:
        assert budget < sum(g.min_limit_w for g in gpus)


# NVML driver over the fake


def test_nvml_prefers_instant_power_and_reports_refusals_with_their_code() -> None:
    gpus = [FakeGpu(demand_w=500), FakeGpu(demand_w=300, no_instant_power=True, deny_set=True)]
    nvml = Nvml(FakeNvml(gpus))
    infos = nvml.open()
    assert [(g.min_limit_w, g.max_limit_w, g.default_limit_w) for g in infos] == [(200, 700, 700)] * 2
    assert nvml.power_w(0) == 500 and nvml.uses_instant_power(0)
    assert nvml.power_w(1) == 300 and not nvml.uses_instant_power(1)
    nvml.set_limit_w(0, 450.5)
    assert nvml.limit_w(0) == 450.5 and nvml.power_w(0) == 450.5
    with pytest.raises(NvmlError) as denied:
        nvml.set_limit_w(1, 400)
    assert denied.value.code == pynvml.NVML_ERROR_NO_PERMISSION
    with pytest.raises(NvmlError) as out_of_range:
        nvml.set_limit_w(0, 150)
    assert out_of_range.value.code == pynvml.NVML_ERROR_INVALID_ARGUMENT


# the agent

# 8 GPUs, two generations with different ranges, busy and idle.
FLEET = [
    FakeGpu(min_limit_w=200, max_limit_w=700, demand_w=680),
    FakeGpu(min_limit_w=200, max_limit_w=700, demand_w=690),
    FakeGpu(min_limit_w=200, max_limit_w=700, demand_w=400),
    FakeGpu(min_limit_w=200, max_limit_w=700, demand_w=120),
    FakeGpu(min_limit_w=100, max_limit_w=400, demand_w=390),
    FakeGpu(min_limit_w=100, max_limit_w=400, demand_w=380),
    FakeGpu(min_limit_w=100, max_limit_w=400, demand_w=300),
    FakeGpu(min_limit_w=100, max_limit_w=400, demand_w=90),
]
OVERHEAD_KW = 0.5
FIRM_KW = 2.0


@contextlib.asynccontextmanager
async def gpu_agent(
    broker: Any,
) -> AsyncIterator[tuple[GpuAgent, list[FakeGpu], Topics, Observer, Observer]]:
    gpus = [FakeGpu(min_limit_w=g.min_limit_w, max_limit_w=g.max_limit_w, demand_w=g.demand_w) for g in FLEET]
    config = parse_agent_config(
        GpuAgentConfig,
        {
            "mqtt": {"url": broker.url},
            "agent": {
                "site_id": f"gpu-{secrets.token_hex(4)}",
                "tenant_id": "ai-a",
                "telemetry_period_s": 0.1,
                "verify_after_s": 0.1,
                "firm_kw": FIRM_KW,
                "overhead_kw": OVERHEAD_KW,
            },
        },
    )
    topics = Topics(config.topic_root)
    agent = GpuAgent(config, nvml=Nvml(FakeNvml(gpus)))
    async with observing(broker, [topics.tenant_state("ai-a")], topics) as observer:
        task = asyncio.create_task(agent.run())
        try:
            yield agent, gpus, topics, observer, observer  # the observer publishes caps and records states
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await observer.publish(topics.tenant_set("ai-a"), b"", retain=True)


async def wait_state(
    states: Observer, match: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
) -> dict:
    """The first state so far (or to come) that matches."""
    seen = await states.wait_for(lambda m: match(m.json()), timeout_s, what="a matching tenant state")
    return seen.json()


async def send_cap(client: Observer, topics: Topics, seq: int, cap_kw: float | None) -> None:
    setpoint = TenantSetpoint(seq=seq, power_cap_kw=cap_kw, ts=time.time())
    await client.publish(topics.tenant_set("ai-a"), encode(setpoint), retain=True)


async def test_gpu_agent_spreads_a_cap_over_eight_gpus_and_honours_it(mqtt_broker) -> None:
    async with gpu_agent(mqtt_broker) as (agent, gpus, topics, client, states):
        # Before its first power readings the agent counts each GPU at its maximum (unknown is not
        # zero): take a state stamped after a completed control cycle (which read every GPU).
        await asyncio.wait_for(agent.cycle_done.wait(), 30)
        read_s = time.time()
        uncapped = await wait_state(states, lambda s: s["seq_applied"] is None and s["ts"] >= read_s)
        demand_w = sum(g.demand_w for g in FLEET)
        assert uncapped["power_kw"] == pytest.approx(demand_w / 1000 + OVERHEAD_KW)

        cap_kw = 3.0  # GPUs get 2.5 kW of the 3.53 kW they want
        await send_cap(client, topics, 7, cap_kw)
        state = await wait_state(states, lambda s: s["seq_applied"] == 7 and s["cap_honoured"] is True)
        for gpu in gpus:
            assert gpu.min_limit_w <= gpu.limit_w <= gpu.max_limit_w
        assert sum(g.limit_w for g in gpus) <= (cap_kw - OVERHEAD_KW) * 1000 + 1e-6
        assert sum(g.power_w for g in gpus) / 1000 + OVERHEAD_KW <= cap_kw
        assert state["power_kw"] <= cap_kw and state["gpu_limits_w"] == pytest.approx(
            [g.limit_w for g in gpus], abs=0.1
        )
        idle_big, idle_small = gpus[3], gpus[7]
        assert idle_big.limit_w < gpus[0].limit_w and idle_small.limit_w < gpus[4].limit_w

        await send_cap(client, topics, 8, 1.0)  # below the tenant's firm power: held at firm
        state = await wait_state(states, lambda s: s["seq_applied"] == 8 and s["cap_honoured"] is True)
        assert state["power_cap_kw"] == FIRM_KW
        assert sum(g.limit_w for g in gpus) <= (FIRM_KW - OVERHEAD_KW) * 1000 + 1e-6
        assert sum(g.limit_w for g in gpus) >= (FIRM_KW - OVERHEAD_KW) * 1000 - 8  # the firm kW is used

        await send_cap(client, topics, 9, None)  # lifted: every GPU back at its default limit
        defaults = [g.max_limit_w for g in FLEET]
        await wait_state(states, lambda s: s["seq_applied"] == 9 and s["gpu_limits_w"] == defaults)
        assert [g.limit_w for g in gpus] == [g.max_limit_w for g in FLEET]
        assert agent.verify.misses == 0


async def test_a_gpu_that_ignores_its_limit_is_reported_not_honoured(mqtt_broker) -> None:
    async with gpu_agent(mqtt_broker) as (agent, gpus, topics, client, states):
        gpus[0].ignore_limit = True
        await send_cap(client, topics, 3, 3.0)
        state = await wait_state(states, lambda s: s["seq_applied"] == 3 and s["cap_honoured"] is False)
        assert state["power_kw"] > 3.0 and agent.verify.misses >= 1
