"""Active/standby failover (issue 10, docs/fleet.md section 6): etcd on loopback, two `mulletd run` for one
simulated site over mosquitto and Modbus. SIGKILL the leader during an obligation: the standby takes over
(within 3 s by design, lease TTL included: the test prints the figure and bounds it only at 10x, as a
loaded machine may be slow), the site stays at or below the limit, and a late command from the
deposed leader (its epoch) is ignored by every controller, and its retained copy is put right."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
from helpers import ETCD, Observer, etcd_server, observing, site_config, start_daemon, until

from mullet.daemon.config import Config
from mullet.daemon.site.simulated import simulated_site
from mullet.drivers.protocol import GridEvent, GroupSetpoint, Topics, encode
from mullet.simulators.ports import free_port
from mullet.simulators.site import SimulatedSite

pytestmark = pytest.mark.skipif(
    ETCD is None, reason="etcd not installed (apt-get install etcd-server; .ci/run installs it)"
)

TTL_S = 1


@dataclass
class Pair:
    config: Config
    paths: dict[str, Path]
    site: SimulatedSite
    daemons: dict[str, asyncio.subprocess.Process]
    observer: Observer
    topics: Topics
    etcd: subprocess.Popen[bytes]


@pytest.fixture
def etcd_proc(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with etcd_server(tmp_path) as server:
        yield server


def _handover(observer: Observer, node_id: str, since: int = 0) -> dict | None:
    for m in reversed(observer.received[since:]):
        if m.topic == observer.topics.root + "/daemon/handover" and m.payload:
            data = m.json()
            if data["node_id"] == node_id:
                return data
    return None


@pytest.fixture
async def pair(
    mqtt_broker, tmp_path: Path, etcd_proc: tuple[int, subprocess.Popen[bytes]]
) -> AsyncIterator[Pair]:
    etcd, etcd_process = etcd_proc
    election_key = f"/mullet/failover-{secrets.token_hex(3)}/leader"

    def ha(data: dict) -> None:
        data["ha"] = {
            "etcd_endpoints": [f"127.0.0.1:{etcd}"],
            "election_key": election_key,
            "node_id": "a",
            "lease_ttl_s": TTL_S,
        }

    config, path_a = site_config(mqtt_broker.url, tmp_path, ha)
    # The second node: same site, its own node id, journal and metrics port.
    data = tomllib.loads(path_a.read_text())
    data["ha"]["node_id"] = "b"
    data["journal"]["path"] = str(tmp_path / "journal-b.sqlite")
    data["metrics"]["port"] = free_port()
    path_b = tmp_path / "site-b.toml"
    path_b.write_text(tomli_w.dumps(data))

    topics = Topics(config.topic_root)
    site = simulated_site(config)
    site_task = asyncio.create_task(site.run())
    await asyncio.wait_for(site.started.wait(), timeout=15)
    daemons: dict[str, asyncio.subprocess.Process] = {}
    async with observing(mqtt_broker, [f"{config.topic_root}/#"], topics) as observer:
        try:
            # a first, so it leads; then b, which stays standby.
            daemons["a"] = await start_daemon(path_a, tmp_path / "mulletd-a.log")
            await observer.wait_for(lambda m: m.topic == topics.daemon_online and m.payload == b"1", 30)
            await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 30)
            daemons["b"] = await start_daemon(path_b, tmp_path / "mulletd-b.log")
            node_b = f"{topics.root}/daemon/node/b/online"
            await observer.wait_for(lambda m: m.topic == node_b and m.payload == b"1", 30)
            yield Pair(config, {"a": path_a, "b": path_b}, site, daemons, observer, topics, etcd_process)
        finally:
            for daemon in daemons.values():
                if daemon.returncode is None:
                    daemon.kill()
                    await asyncio.wait_for(daemon.wait(), 30)
            site_task.cancel()
            await asyncio.gather(site_task, return_exceptions=True)


async def test_the_standby_takes_over_keeps_the_obligation_and_fences_the_old_leader(
    pair: Pair, mqtt_broker
) -> None:
    site, observer, topics, config = pair.site, pair.observer, pair.topics, pair.config
    mining_rated_kw = sum(g.rated_kw for g in config.groups)
    await until(lambda: site.mining_power_kw() >= 0.99 * mining_rated_kw, 30, "full mining load")
    ai_allowance_kw = sum(t.reserved_kw + t.headroom_kw for t in config.tenants)
    limit_kw = (
        config.site.safety_margin_kw + config.site.base_load_kw + ai_allowance_kw + mining_rated_kw * 2 / 3
    )

    # Only the leader acks: exactly one ack for the event.
    await observer.send(GridEvent(id="ev-ha", kind="limit", kw=limit_kw, program="ERS-10", source="test"))
    assert (await observer.ack("ev-ha"))["accepted"] is True
    await until(lambda: site.site_power_kw() <= limit_kw, 30, "site at the limit")
    # The standby has the obligation from the leader's handover, published before the ack.
    handover_a = _handover(observer, "a")
    assert handover_a is not None
    assert [o["obligation"]["event_id"] for o in handover_a["obligations"]] == ["ev-ha"]
    epoch_a = handover_a["epoch"]
    assert all(g.command.epoch == epoch_a for g in site.groups.values())
    acks = [
        m.payload for m in observer.received if m.topic == topics.grid_event_ack and b'"ev-ha"' in m.payload
    ]
    assert len(acks) == 1
    curtailed = {g.group_id for g in site.groups.values() if g.commanded == "curtail"}
    assert curtailed

    # SIGKILL the leader mid-obligation.
    seen = len(observer.received)
    pair.daemons["a"].kill()
    killed_s = time.monotonic()
    await asyncio.wait_for(pair.daemons["a"].wait(), 30)

    # Meanwhile the site stays at or below the limit, sampled until well after the takeover.
    worst_kw = 0.0

    async def watch_site() -> None:
        nonlocal worst_kw
        while True:
            worst_kw = max(worst_kw, site.site_power_kw())
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_site())
    try:
        await observer.wait_for(
            lambda m: m.topic == topics.daemon_online and m.payload == b"1", 30, since=seen
        )
        online_s = time.monotonic() - killed_s
        handover_b = _handover(observer, "b", seen)
        assert handover_b is not None and handover_b["epoch"] > epoch_a
        epoch_b = handover_b["epoch"]
        await until(
            lambda: all(g.command.epoch == epoch_b for g in site.groups.values()), 30, "every group fenced"
        )
        fenced_s = time.monotonic() - killed_s
        print(
            f"takeover: daemon/online=1 from the standby {online_s:.2f} s and every controller on the new"
            f" epoch {fenced_s:.2f} s after SIGKILL of the leader (lease TTL {TTL_S} s)"
        )
        assert fenced_s < 10 * 3.0  # 3 s by design; 10x for a loaded machine
        # The new leader plans with the obligation it took over, and keeps the same groups shed.
        plan = await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 30, since=seen)
        assert plan.json()["active_obligations"] == ["ev-ha"]
        for _ in range(20):
            await asyncio.sleep(0.1)
            assert {g.group_id for g in site.groups.values() if g.commanded == "curtail"} == curtailed
    finally:
        watcher.cancel()
    assert worst_kw <= limit_kw, f"site reached {worst_kw:.0f} kW over the {limit_kw:.0f} kW limit"
    reissued = [
        GroupSetpoint.model_validate_json(m.payload)
        for m in observer.received[seen:]
        if m.topic.endswith("/set") and "/mining/" in m.topic
    ]
    highest_seq_a = max(
        GroupSetpoint.model_validate_json(m.payload).seq
        for m in observer.received[:seen]
        if m.topic.endswith("/set") and "/mining/" in m.topic
    )
    assert reissued and all(sp.epoch == epoch_b and sp.seq > highest_seq_a + 1000 for sp in reissued)

    # A zombie leader's late command (its old epoch) is ignored by the controller...
    victim = sorted(curtailed)[0]
    group = site.groups[victim]
    fenced_before = group.command.fenced
    zombie = GroupSetpoint(seq=highest_seq_a + 1, mode="run", ts=time.time(), epoch=epoch_a)
    seen = len(observer.received)
    await observer.publish(topics.group_set(victim), encode(zombie), retain=True)
    await until(lambda: group.command.fenced > fenced_before, 30, "the zombie's setpoint fenced")
    assert group.commanded == "curtail" and group.command.epoch == epoch_b
    # ...and the new leader puts its own retained setpoint back over it.
    restored = await observer.wait_for(
        lambda m: m.topic == topics.group_set(victim) and b'"epoch":%d' % epoch_b in m.payload, 30, since=seen
    )
    assert GroupSetpoint.model_validate_json(restored.payload).mode == "curtail"
    async with observing(mqtt_broker, [topics.group_set(victim)]) as late:
        retained = await late.wait_for(lambda m: True, 30, what="the retained setpoint")
        assert GroupSetpoint.model_validate_json(retained.payload).epoch == epoch_b

    # The new leader acks: a retry of the same event is a duplicate of the obligation it took over.
    seen = len(observer.received)
    await observer.send(GridEvent(id="ev-ha", kind="limit", kw=limit_kw, program="ERS-10", source="test"))
    ack = await observer.wait_for(
        lambda m: m.topic == topics.grid_event_ack and b'"ev-ha"' in m.payload, 30, since=seen
    )
    assert ack.json()["code"] == "duplicate"
    assert pair.daemons["b"].returncode is None


async def test_a_standby_neither_commands_nor_acks(pair: Pair) -> None:
    """While a leads, b sends no setpoint, plan, trip or ack: every command on the broker is a's epoch."""
    observer, topics = pair.observer, pair.topics
    seen = len(observer.received)
    await observer.send(GridEvent(id="ev-one-ack", kind="limit", kw=12_000, source="test"))
    assert (await observer.ack("ev-one-ack"))["accepted"] is True
    # The plan that follows the event comes after the ack; by then b has had the event too.
    await observer.wait_for(
        lambda m: m.topic == topics.daemon_plan and b"ev-one-ack" in m.payload, 30, since=seen
    )
    acks = [m.payload for m in observer.received[seen:] if m.topic == topics.grid_event_ack]
    assert len(acks) == 1
    handover = _handover(observer, "a")
    assert handover is not None
    commands = [
        m.json()
        for m in observer.received
        if m.payload and ((m.topic.endswith("/set") and "/mining/" in m.topic) or m.topic == topics.trip)
    ]
    assert commands and all(c["epoch"] == handover["epoch"] for c in commands)
    assert _handover(observer, "b") is None


async def test_a_leader_that_loses_its_lease_stops_and_exits_and_the_site_is_announced_offline(
    pair: Pair,
) -> None:
    """etcd goes away: the leader cannot refresh its lease, stops commanding and exits 3 (systemd restarts
    it as a standby); the standby cannot be elected either, so after two TTLs it says daemon/online = 0."""
    observer, topics = pair.observer, pair.topics
    seen = len(observer.received)
    pair.etcd.kill()
    pair.etcd.wait(timeout=10)
    assert await asyncio.wait_for(pair.daemons["a"].wait(), 30) == 3
    exited = len(observer.received)
    node_a = f"{topics.root}/daemon/node/a/online"
    await observer.wait_for(lambda m: m.topic == node_a and m.payload == b"0", 30, since=seen)
    await observer.wait_for(lambda m: m.topic == topics.daemon_online and m.payload == b"0", 30, since=seen)
    # Nothing commanded the site after the leader went: no setpoint, trip, plan or ack from anyone.
    commands = [
        m.topic
        for m in observer.received[exited:]
        if m.topic.endswith("/set") or m.topic in (topics.trip, topics.daemon_plan, topics.grid_event_ack)
    ]
    assert commands == []
    assert pair.daemons["b"].returncode is None
