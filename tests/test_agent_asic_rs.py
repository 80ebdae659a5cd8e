"""The ASIC agent's asic-rs backend (drivers/miners_asic_rs.py) against the fake LuxOS miner.

asic-rs takes no port: it identifies the firmware on the standard ports (LuxOS by its RPC `version`
on 4028), so each fake miner listens on port 4028 of a loopback address of its own, picked at random
in 127/8 (Linux routes all of it to `lo`; 4028 needs no root). The test skips, saying why, where no
such address can be bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import observing

from mullet.daemon.agents.asic import AsicAgent
from mullet.daemon.agents.config import AsicAgentConfig, parse_agent_config
from mullet.daemon.config import ConfigError
from mullet.drivers.miner_client import MinerEndpoint, MinerReading, usable_reading
from mullet.drivers.miners_asic_rs import STANDARD_PORT, AsicRsMinerClient
from mullet.drivers.protocol import GroupSetpoint, Topics, encode
from mullet.simulators.luxos import LuxosMinerSim

RATED_W = 3500.0


async def _start_on_own_address(name: str, **sim: Any) -> LuxosMinerSim:
    """A fake miner on port 4028 of a random loopback address (retried where one is taken)."""
    problem = ""
    for _ in range(20):
        host = f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        miner = LuxosMinerSim(name, host=host, port=STANDARD_PORT, **sim)
        try:
            await miner.start()
            return miner
        except OSError as exc:
            problem = f"{host}:{STANDARD_PORT}: {exc}"
    pytest.skip(f"asic-rs needs a miner on port {STANDARD_PORT} of its own loopback address: {problem}")


@contextlib.asynccontextmanager
async def own_address_miners(count: int, **sim: Any) -> AsyncIterator[list[LuxosMinerSim]]:
    miners: list[LuxosMinerSim] = []
    try:
        for i in range(count):
            miners.append(await _start_on_own_address(f"rs{i:02d}", **sim))
        yield miners
    finally:
        await asyncio.gather(*(m.stop() for m in miners))


def client_for(sim: LuxosMinerSim, timeout_s: float = 10.0, **options: Any) -> AsicRsMinerClient:
    return AsicRsMinerClient(MinerEndpoint(sim.name, sim.host), timeout_s=timeout_s, **options)


async def test_asic_rs_sleeps_wakes_and_reads_a_fake_luxos_miner() -> None:
    async with own_address_miners(1, curtail_s=0, resume_s=0) as (sim,):
        client = client_for(sim)
        reading = await client.read()
        assert reading is not None and reading.power_w == RATED_W
        assert reading.hashrate_ths == pytest.approx((RATED_W - sim.sleep_w) / sim.efficiency_j_per_th, 0.01)
        assert await client.sleep()
        assert sim.sleeping and sim.commands["curtail"] == 1
        reading = await client.read()
        assert reading is not None and reading.power_w == sim.sleep_w and reading.hashrate_ths == 0
        assert await client.wake() and not sim.sleeping
        reading = await client.read()
        assert reading is not None and reading.power_w == RATED_W
        assert not client.failures


async def test_a_lapsed_luxos_session_is_opened_again() -> None:
    async with own_address_miners(1) as (sim,):
        client = client_for(sim)
        assert await client.sleep() and sim.sleeping
        sim.end_session()  # firmware idle timeout or reboot
        assert await client.wake() and not sim.sleeping
        assert sim.commands["logon"] == 2 and sim.rejected["invalid_session"] == 0


async def test_a_luxos_power_target_goes_through_pyasic() -> None:
    async with own_address_miners(1, curtail_s=0, resume_s=0) as (sim,):
        client = client_for(sim, power_fallback=True)
        assert await client.set_power_w(3000)
        assert sim.profile == "-3"  # pyasic: the highest LuxOS profile <= 3000 W
        assert sim.power_w <= 3000


async def test_without_the_fallback_a_luxos_power_target_is_refused() -> None:
    async with own_address_miners(1) as (sim,):
        client = client_for(sim)
        assert not await client.set_power_w(3000)
        assert client.failures["power_target_unsupported"] == 1
        assert sim.profile == "default" and sim.commands["profileset"] == 0


async def test_an_unresponsive_or_stopped_miner_reads_as_unknown() -> None:
    async with own_address_miners(2) as (dead, alive):
        dead.unresponsive = True
        clients = [client_for(dead, timeout_s=0.5), client_for(alive)]
        sent = await asyncio.gather(*(c.sleep() for c in clients))
        assert sent == [False, True] and alive.sleeping
        assert clients[0].failures["sleep_timeout"] == 1
        assert await clients[0].read() is None  # unknown, not 0 W
        assert await clients[1].read() is not None
        await alive.stop()
        assert await clients[1].read() is None


def test_an_unusable_power_is_unknown_never_zero() -> None:
    for power in (None, float("nan"), float("inf"), -1.0, "n/a", True):
        assert usable_reading(power, 100.0) is None
    assert usable_reading(3000, float("nan")) == MinerReading(3000.0, None)
    assert usable_reading("25", -5) == MinerReading(25.0, None)
    assert usable_reading(0, 0) == MinerReading(0.0, 0.0)


def test_backend_config_is_validated() -> None:
    base = {"site_id": "s", "group_id": "g", "state_path": "x"}
    with pytest.raises(ConfigError) as exc:
        parse_agent_config(
            AsicAgentConfig,
            {"agent": {**base, "backend": "asicrs"}, "miners": [{"name": "a", "host": "h", "rated_w": 1}]},
        )
    assert any(p.startswith("agent.backend") and "asic-rs" in p for p in exc.value.problems)
    with pytest.raises(ConfigError) as exc:
        parse_agent_config(
            AsicAgentConfig,
            {
                "agent": {**base, "backend": "asic-rs"},
                "miners": [{"name": "a", "host": "h", "rated_w": 1, "port": 14028}],
            },
        )
    assert any("miners[0].port" in p and "takes no port" in p for p in exc.value.problems)
    config = parse_agent_config(
        AsicAgentConfig, {"agent": base, "miners": [{"name": "a", "host": "h", "rated_w": 1}]}
    )
    assert config.agent.backend == "pyasic"  # the default


async def test_the_agent_drives_a_group_through_asic_rs(mqtt_broker, tmp_path: Path) -> None:
    async with own_address_miners(3, curtail_s=0.2, resume_s=0.3) as miners:
        site_id = f"agent-rs-{secrets.token_hex(4)}"
        config = parse_agent_config(
            AsicAgentConfig,
            {
                "mqtt": {"url": mqtt_broker.url, "reconnect_max_s": 0.5},
                "agent": {
                    "site_id": site_id,
                    "group_id": "rack-rs",
                    "state_path": str(tmp_path / "rack-rs.json"),
                    "backend": "asic-rs",
                    "telemetry_period_s": 0.2,
                    "poll_period_s": 0.2,
                    "confirm_poll_s": 0.05,
                    "command_timeout_s": 10.0,
                    "confirm_timeout_s": 5.0,
                    "resend_s": 0.5,
                },
                "miners": [{"name": m.name, "host": m.host, "rated_w": m.rated_w} for m in miners],
            },
        )
        topics = Topics(config.topic_root)
        async with observing(mqtt_broker, [topics.group_state("rack-rs")], topics) as observer:
            agent = AsicAgent(config)
            task = asyncio.create_task(agent.run())
            try:

                async def state_after(seq: int, mode: str) -> dict[str, Any]:
                    await observer.publish(
                        topics.group_set("rack-rs"),
                        encode(GroupSetpoint(seq=seq, mode=mode, ts=1.0)),
                        retain=True,
                    )
                    found = await observer.wait_for(
                        lambda m: (
                            bool(m.payload) and m.json()["seq_applied"] == seq and m.json()["mode"] == mode
                        ),
                        60,
                        0,
                        f"a confirmed {mode}",
                    )
                    return found.json()

                await observer.publish(topics.daemon_online, b"1", retain=True)
                state = await state_after(1, "curtail")
                assert all(m.sleeping for m in miners)
                assert state["miners_unconfirmed"] == [] and state["miners_online"] == 3
                state = await state_after(2, "run")
                assert not any(m.sleeping for m in miners)
                assert state["miners_unconfirmed"] == []
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await observer.publish(topics.group_set("rack-rs"), b"", retain=True)
                await observer.publish(topics.daemon_online, b"", retain=True)


# A fresh interpreter where one library cannot be imported: the other backend must not need it.
ONE_LIBRARY = """
import asyncio, importlib.abc, json, sys

BLOCKED = sys.argv[1]
BACKEND = sys.argv[2]

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocked())
from mullet.daemon.agents.asic import BackendUnavailable, miner_clients
from mullet.daemon.agents.config import AsicAgentConfig, parse_agent_config

config = parse_agent_config(AsicAgentConfig, {
    "agent": {"site_id": "s", "group_id": "g", "state_path": "x", "backend": BACKEND,
              "supports_power_target": True},
    "miners": [{"name": "a", "host": "127.0.0.1", "rated_w": 1}],
})
try:
    clients = miner_clients(config)
except BackendUnavailable as exc:
    print(json.dumps({"refused": str(exc), "name": exc.name}))
else:
    print(json.dumps({"client": type(clients[0]).__name__, "loaded": sorted(
        m for m in ("pyasic", "pyasic_rs") if m in sys.modules)}))
"""


@pytest.mark.parametrize(
    ("blocked", "backend", "expected"),
    [
        ("pyasic", "asic-rs", {"client": "AsicRsMinerClient", "loaded": ["pyasic_rs"]}),
        ("pyasic_rs", "pyasic", {"client": "PyasicMinerClient", "loaded": ["pyasic"]}),
    ],
)
def test_a_backend_does_not_need_the_other_library(blocked: str, backend: str, expected: dict) -> None:
    result = _one_library(blocked, backend)
    assert result == expected


@pytest.mark.parametrize(("blocked", "backend"), [("pyasic_rs", "asic-rs"), ("pyasic", "pyasic")])
def test_a_missing_backend_library_is_a_clear_refusal(blocked: str, backend: str) -> None:
    result = _one_library(blocked, backend)
    assert "pip install 'mullet[asic]'" in result["refused"] and result["name"] == blocked


# `mulletd agent asic` in a fresh interpreter where the backend's library cannot be imported.
AGENT_WITHOUT = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocked())
from mullet.daemon.cli import main
sys.exit(main(["agent", "asic", "--config", sys.argv[2]]))
"""


def test_the_agent_refuses_to_start_without_its_backend_library(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\nsite_id = "s"\ngroup_id = "g"\nbackend = "asic-rs"\n'
        f'state_path = "{tmp_path / "state.json"}"\n'
        '[[miners]]\nname = "a"\nhost = "127.0.0.1"\nrated_w = 3500\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", AGENT_WITHOUT, "pyasic_rs", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'mullet[asic]'" in done.stderr and "Traceback" not in done.stderr


def _one_library(blocked: str, backend: str) -> dict[str, Any]:
    import json

    done = subprocess.run(
        [sys.executable, "-c", ONE_LIBRARY, blocked, backend], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
