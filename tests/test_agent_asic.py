"""The ASIC agent: fake LuxOS miners driven through pyasic (the default backend), over a real broker.
tests/test_agent_asic_rs.py drives them through the asic-rs backend.

The first tests drive the pyasic side directly; the agent tests play the daemon on MQTT (retained
setpoints, trips, `daemon/online`); the last two run the real daemon (`mulletd run`) against the
simulated site with one group handed to the agent (tests/helpers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import Observer, Seen, observing, read_metrics, site_config, start_daemon, until

from mullet.daemon.agents.asic import AsicAgent
from mullet.daemon.agents.config import AsicAgentConfig, parse_agent_config
from mullet.daemon.config import Config, ConfigError
from mullet.daemon.site.simulated import simulated_site
from mullet.drivers.miner_client import MinerEndpoint
from mullet.drivers.miners import PyasicMinerClient
from mullet.drivers.protocol import GridEvent, GroupSetpoint, Topics, Trip, encode
from mullet.simulators.luxos import LuxosFleet, LuxosMinerSim
from mullet.simulators.site import SimulatedSite

RATED_W = 3500.0


def client_for(sim: LuxosMinerSim, timeout_s: float = 10.0) -> PyasicMinerClient:
    return PyasicMinerClient(MinerEndpoint(sim.name, "127.0.0.1", sim.port, "luxos"), timeout_s=timeout_s)


async def test_pyasic_sleeps_wakes_and_reads_a_fake_luxos_miner() -> None:
    async with LuxosFleet(1, curtail_s=0, resume_s=0) as fleet:
        sim = fleet.miners[0]
        client = client_for(sim)
        reading = await client.read()
        assert reading is not None and reading.power_w == RATED_W
        assert reading.hashrate_ths == pytest.approx((RATED_W - sim.sleep_w) / sim.efficiency_j_per_th, 0.01)
        assert await client.sleep() and sim.sleeping
        assert sim.commands["logon"] == 1  # pyasic asked `session` first, then logged on
        reading = await client.read()
        assert reading is not None and reading.power_w == sim.sleep_w and reading.hashrate_ths == 0
        assert await client.wake() and not sim.sleeping
        assert await client.set_power_w(3000) and sim.profile == "-3"  # highest profile <= 3000 W
        assert sim.power_w <= 3000


# In a fresh interpreter whose pyasic import takes 3 s: the first read, bounded by 2 s, must not pay it.
SLOW_IMPORT_FIRST_READ = """
import asyncio, importlib.abc, sys, time

class SlowPyasic(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyasic":
            time.sleep(3.0)
        return None

sys.meta_path.insert(0, SlowPyasic())
from mullet.drivers.miner_client import MinerEndpoint
from mullet.drivers.miners import PyasicMinerClient
from mullet.simulators.luxos import LuxosMinerSim

async def main():
    sim = LuxosMinerSim("first")
    await sim.start()
    try:
        client = PyasicMinerClient(MinerEndpoint(sim.name, "127.0.0.1", sim.port, "luxos"), timeout_s=2.0)
        reading = await client.read()
        print(reading.power_w if reading else f"none {dict(client.failures)}")
    finally:
        await sim.stop()

asyncio.run(main())
"""


async def test_the_first_read_does_not_pay_for_importing_pyasic() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SLOW_IMPORT_FIRST_READ, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    assert stdout.decode().strip() == str(RATED_W)


async def test_a_dropped_session_is_renewed_once() -> None:
    async with LuxosFleet(1) as fleet:
        sim = fleet.miners[0]
        client = client_for(sim)
        assert await client.sleep()
        sim.end_session()  # firmware idle timeout or reboot
        assert await client.wake() and not sim.sleeping
        assert sim.rejected["invalid_session"] == 1 and sim.commands["logon"] == 2


async def test_an_unresponsive_miner_costs_only_its_timeout() -> None:
    async with LuxosFleet(2) as fleet:
        dead, alive = fleet.miners
        dead.unresponsive = True
        clients = [client_for(dead, timeout_s=0.3), client_for(alive)]
        sent = await asyncio.gather(*(c.sleep() for c in clients))
        assert sent == [False, True] and alive.sleeping
        assert clients[0].failures["sleep_timeout"] == 1
        assert await clients[0].read() is None  # unknown, not 0 W


async def test_a_stopped_miner_reads_as_unknown() -> None:
    sim = LuxosMinerSim("gone")
    await sim.start()
    client = client_for(sim)
    assert await client.read() is not None
    await sim.stop()
    assert await client.read() is None


def test_agent_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_agent_config(
            AsicAgentConfig,
            {
                "agent": {"site_id": "s", "group_id": "g", "state_path": "x", "failsafe": "panic"},
                "miners": [
                    {"name": "a", "host": "h", "rated_w": 1},
                    {"name": "a", "host": "h", "rated_w": 0},
                ],
                "extra": 1,
            },
        )
    problems = "\n".join(exc.value.problems)
    assert "agent.failsafe" in problems and "miners[1].rated_w: must be > 0" in problems
    assert "extra: unknown key" in problems


# The agent, with the test as the daemon.


def agent_config(
    broker_url: str, fleet: LuxosFleet, state_path: Path, **agent: Any
) -> tuple[AsicAgentConfig, Topics]:
    site_id = f"agent-{secrets.token_hex(4)}"
    settings = {
        "site_id": site_id,
        "group_id": "rack-a",
        "state_path": str(state_path),
        "telemetry_period_s": 0.2,
        "poll_period_s": 0.2,
        "confirm_poll_s": 0.05,
        "command_timeout_s": 10.0,
        "confirm_timeout_s": 1.0,
        "resend_s": 0.5,
        **agent,
    }
    miners = [
        {"name": m.name, "host": "127.0.0.1", "port": m.port, "rated_w": m.rated_w} for m in fleet.miners
    ]
    config = parse_agent_config(
        AsicAgentConfig,
        {"mqtt": {"url": broker_url, "reconnect_max_s": 0.5}, "agent": settings, "miners": miners},
    )
    return config, Topics(config.topic_root)


@dataclass
class Daemonish:
    """The daemon's side of the group's topics: publishes commands, watches the group's states."""

    observer: Observer
    topics: Topics
    seq: int = 100

    async def state(self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0) -> dict[str, Any]:
        """The first state from now on that matches."""
        found = await self.observer.wait_for(
            lambda m: bool(m.payload) and match(m.json()), timeout_s, len(self.observer.received), "a state"
        )
        return found.json()

    async def set(self, mode: str, *, trip_stage: int | None = None) -> int:
        self.seq += 1
        setpoint = GroupSetpoint(seq=self.seq, mode=mode, trip_stage=trip_stage, ts=time.time())  # type: ignore[arg-type]
        await self.observer.publish(self.topics.group_set("rack-a"), encode(setpoint), retain=True)
        return self.seq

    async def online(self, up: bool) -> None:
        await self.observer.publish(self.topics.daemon_online, b"1" if up else b"0", retain=True)


@contextlib.asynccontextmanager
async def daemonish(broker: Any, topics: Topics) -> AsyncIterator[Daemonish]:
    async with observing(broker, [topics.group_state("rack-a")], topics) as observer:
        try:
            yield Daemonish(observer, topics)
        finally:
            # Retained commands must not leak into a later test that reuses the broker.
            await observer.publish(topics.group_set("rack-a"), b"", retain=True)
            await observer.publish(topics.daemon_online, b"", retain=True)


@contextlib.asynccontextmanager
async def running_agent(config: AsicAgentConfig) -> AsyncIterator[AsicAgent]:
    agent = AsicAgent(config)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def confirmed(mode: str, seq: int | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s["mode"] == mode and (seq is None or s["seq_applied"] == seq)


async def test_agent_follows_setpoints_and_an_armed_trip(mqtt_broker, tmp_path: Path) -> None:
    async with LuxosFleet(4, curtail_s=0.2, resume_s=0.3) as fleet:
        config, topics = agent_config(mqtt_broker.url, fleet, tmp_path / "rack-a.json")
        async with daemonish(mqtt_broker, topics) as daemon, running_agent(config) as agent:
            await daemon.online(True)
            seq = await daemon.set("curtail")
            ack = await daemon.state(lambda s: s["seq_applied"] == seq)
            assert ack["mode"] == "ramping"  # the command is acknowledged before it is confirmed
            # Confirmed can be published before every miner's next reading shows its sleep power.
            state = await daemon.state(
                lambda s: confirmed("curtail", seq)(s) and s["power_kw"] == pytest.approx(4 * 0.025)
            )
            assert all(m.sleeping for m in fleet.miners)
            assert state["miners_online"] == 4
            assert state["miners_unconfirmed"] == [] and state["miners_total"] == 4

            seq = await daemon.set("run", trip_stage=2)
            # confirmed from 80 % of rated on; the ramp then goes on to full power
            await daemon.state(confirmed("run", seq))
            state = await daemon.state(lambda s: s["power_kw"] == pytest.approx(4 * RATED_W / 1000))
            assert state["mode"] == "run" and state["hashrate_ths"] > 0

            for stage in (1, 2):  # stage 1 is below the arming: ignored; stage 2 sheds
                await daemon.observer.publish(topics.trip, encode(Trip(seq=500 + stage, stage=stage, ts=1.0)))
            state = await daemon.state(confirmed("curtail", seq))  # a trip leaves seq_applied alone
            assert agent.trips_received == 2 and all(m.sleeping for m in fleet.miners)


async def test_an_ignoring_miner_is_reported_unconfirmed(mqtt_broker, tmp_path: Path) -> None:
    async with LuxosFleet(3, curtail_s=0.1, resume_s=0.1) as fleet:
        fleet.miners[1].ignore_commands = True  # says OK, keeps hashing
        config, topics = agent_config(mqtt_broker.url, fleet, tmp_path / "rack-a.json")
        async with daemonish(mqtt_broker, topics) as daemon, running_agent(config):
            seq = await daemon.set("curtail")
            state = await daemon.state(lambda s: s["seq_applied"] == seq and s["miners_unconfirmed"])
            assert state["miners_unconfirmed"] == [fleet.miners[1].name]
            assert state["mode"] == "ramping"
            assert state["power_kw"] == pytest.approx((RATED_W + 2 * 25) / 1000)
            # and the command keeps being re-sent, acknowledged, and ignored
            await until(lambda: fleet.miners[1].commands["curtail"] >= 3, 30, "re-sent sleep")


async def test_a_restarted_agent_restores_its_last_command_without_the_broker(
    mqtt_broker, tmp_path: Path
) -> None:
    state_path = tmp_path / "rack-a.json"
    async with LuxosFleet(3, curtail_s=0.1, resume_s=0.1) as fleet:
        config, topics = agent_config(mqtt_broker.url, fleet, state_path)
        async with daemonish(mqtt_broker, topics) as daemon:
            async with running_agent(config) as agent:
                seq = await daemon.set("curtail")
                await daemon.state(confirmed("curtail", seq))
                await asyncio.wait_for(agent.store.idle.wait(), 30)
            assert json.loads(state_path.read_text())["mode"] == "curtail"

        for miner in fleet.miners:
            miner.reboot()  # power cycled while the agent was down: awake again
        assert not any(m.sleeping for m in fleet.miners)
        # No broker at all: the saved command alone must put the miners back to sleep.
        dead_url = "mqtt://127.0.0.1:1"
        offline_config, _ = agent_config(dead_url, fleet, state_path)
        async with running_agent(offline_config) as agent:
            assert agent.restored and agent.command.mode == "curtail" and agent.command.seq_applied == seq
            await until(lambda: all(m.sleeping for m in fleet.miners), 30, "miners asleep again")


async def test_failsafe_applies_after_the_daemon_goes_away_and_lifts_when_it_returns(
    mqtt_broker, tmp_path: Path
) -> None:
    async with LuxosFleet(2, curtail_s=0.1, resume_s=0.1) as fleet:
        config, topics = agent_config(
            mqtt_broker.url, fleet, tmp_path / "rack-a.json", failsafe="curtail", failsafe_after_s=0.6
        )
        async with daemonish(mqtt_broker, topics) as daemon, running_agent(config) as agent:
            await daemon.online(True)
            seq = await daemon.set("run")
            await daemon.state(confirmed("run", seq))
            await daemon.online(False)
            lost_s = time.monotonic()
            state = await daemon.state(lambda s: s["failsafe_active"] and s["mode"] == "curtail")
            assert time.monotonic() - lost_s >= 0.6  # held the last setpoint first
            assert all(m.sleeping for m in fleet.miners) and state["seq_applied"] == seq
            await daemon.online(True)  # back: its retained `run` (same seq) applies again
            await daemon.state(lambda s: not s["failsafe_active"] and s["mode"] == "run")
            assert not any(m.sleeping for m in fleet.miners) and not agent.failsafe_active


# The real daemon, with one group handed to the agent.

AGENT_MINERS = 4


def _agent_site(data: dict[str, Any]) -> None:
    """The example site with one small group, `rack-a`, that the agent drives (4 x 3.5 kW)."""
    data["groups"] = [
        {
            "group_id": "rack-a",
            "rated_kw": AGENT_MINERS * RATED_W / 1000,
            "efficiency_j_per_th": 17.5,
            "sleep_kw": AGENT_MINERS * 0.025,
            "outlets": [{"pdu": "pdu-a", "outlet": 1}, {"pdu": "pdu-a", "outlet": 2}],
        }
    ]
    data["control"].pop("trip_stages", None)
    data["control"].update(shed_deadline_s=3.0, telemetry_stale_after_s=3.0)


@dataclass
class DaemonRun:
    config: Config
    site: SimulatedSite
    observer: Observer
    topics: Topics
    fleet: LuxosFleet
    agent: AsicAgent
    metrics_port: int

    def metric(self, name: str) -> float:
        return read_metrics(self.metrics_port).value(name, 0.0)


@contextlib.asynccontextmanager
async def daemon_and_agent(
    mqtt_broker: Any, tmp_path: Path, *, ignoring: int | None
) -> AsyncIterator[DaemonRun]:
    config, path = site_config(mqtt_broker.url, tmp_path, _agent_site)
    topics = Topics(config.topic_root)
    site = simulated_site(config)
    del site.mining["rack-a"], site.groups["rack-a"]  # the agent is this group's controller
    async with LuxosFleet(AGENT_MINERS, curtail_s=0.3, resume_s=0.5) as fleet:
        if ignoring is not None:
            fleet.miners[ignoring].ignore_commands = True
        agent_cfg = parse_agent_config(
            AsicAgentConfig,
            {
                "mqtt": {"url": mqtt_broker.url, "topic_root": config.topic_root},
                "agent": {
                    "site_id": config.site.site_id,
                    "group_id": "rack-a",
                    "state_path": str(tmp_path / "agent.json"),
                    "telemetry_period_s": 0.5,
                    "poll_period_s": 0.5,
                    "confirm_poll_s": 0.1,
                    "confirm_timeout_s": 1.5,
                    "resend_s": 1.0,
                },
                "miners": [
                    {"name": m.name, "host": "127.0.0.1", "port": m.port, "rated_w": RATED_W}
                    for m in fleet.miners
                ],
            },
        )
        site_task = asyncio.create_task(site.run())
        async with running_agent(agent_cfg) as agent:
            await asyncio.wait_for(site.started.wait(), 30)
            daemon = await start_daemon(path, tmp_path / "mulletd.log")
            try:
                async with observing(mqtt_broker, [f"{config.topic_root}/#"], topics) as observer:
                    await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 30, what="a first plan")
                    yield DaemonRun(config, site, observer, topics, fleet, agent, config.metrics.port)
            finally:
                daemon.kill()
                await daemon.wait()
                site_task.cancel()
                await asyncio.gather(site_task, return_exceptions=True)


def _limit_for_mining_kw(run: DaemonRun, mining_kw: float) -> float:
    config = run.config
    ai_kw = sum(t.reserved_kw + t.headroom_kw for t in config.tenants)
    return config.site.safety_margin_kw + config.site.base_load_kw + ai_kw + mining_kw


def _group_state(topics: Topics, match: Callable[[dict[str, Any]], bool]) -> Callable[[Seen], bool]:
    return lambda m: m.topic == topics.group_state("rack-a") and bool(m.payload) and match(m.json())


async def test_the_daemon_sleeps_and_wakes_a_fleet_through_the_agent(mqtt_broker, tmp_path: Path) -> None:
    async with daemon_and_agent(mqtt_broker, tmp_path, ignoring=None) as run:
        observer, topics = run.observer, run.topics
        mark = len(observer.received)
        await observer.send(GridEvent(id="agent-lim", kind="limit", kw=_limit_for_mining_kw(run, 5.0)))
        assert (await observer.ack("agent-lim"))["accepted"]
        state = (
            await observer.wait_for(_group_state(topics, lambda s: s["mode"] == "curtail"), 30, mark)
        ).json()
        assert all(m.sleeping for m in run.fleet.miners)
        assert state["power_kw"] == pytest.approx(AGENT_MINERS * 0.025) and state["miners_unconfirmed"] == []

        mark = len(observer.received)
        await observer.send(GridEvent(id="agent-lim", kind="cancel"))
        full_kw = AGENT_MINERS * RATED_W / 1000
        at_full = _group_state(
            topics, lambda s: s["mode"] == "run" and s["power_kw"] == pytest.approx(full_kw)
        )
        await observer.wait_for(at_full, 30, mark)
        assert not any(m.sleeping for m in run.fleet.miners)
        assert run.metric('mullet_escalations_total{result="ok"}') == 0


async def test_an_ignoring_miner_is_escalated_by_the_daemon(mqtt_broker, tmp_path: Path) -> None:
    async with daemon_and_agent(mqtt_broker, tmp_path, ignoring=2) as run:
        observer, topics = run.observer, run.topics
        await observer.send(GridEvent(id="agent-lim-2", kind="limit", kw=_limit_for_mining_kw(run, 5.0)))
        assert (await observer.ack("agent-lim-2"))["accepted"]
        raw = await observer.wait_for(_group_state(topics, lambda s: s["miners_unconfirmed"]), 30)
        assert raw.json()["miners_unconfirmed"] == [run.fleet.miners[2].name]
        pdu = run.site.pdus["pdu-a"]
        await until(lambda: not pdu.is_on(1) and not pdu.is_on(2), 30, "rack-a's outlets cut")
        assert run.metric('mullet_escalations_total{result="ok"}') == 1
