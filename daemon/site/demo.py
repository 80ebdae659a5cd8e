"""`mulletd demo`: an embedded broker, a simulated site and the daemon in one process, plus a script.

The script plays what an aggregator would do: a `limit` that forces about a third of the mining load
off, then a `cancel`. It is the zero-install way to watch the whole path work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from mullet.daemon.config import Config
from mullet.daemon.site.app import Daemon
from mullet.daemon.site.simulated import simulated_site
from mullet.drivers.mqtt import BrokerAddress
from mullet.drivers.protocol import GridEvent, Topics, encode
from mullet.simulators.broker import EmbeddedBroker
from mullet.simulators.ports import free_port
from mullet.simulators.site import SimulatedSite

SHED_FRACTION = 1 / 3


@dataclass
class DemoOutcome:
    event_id: str | None = None
    limit_kw: float | None = None
    met_after_s: float | None = None
    acked: bool = False
    restored_after_s: float | None = None
    notes: list[str] = field(default_factory=list)


def with_free_ports(config: Config, broker_url: str, state_dir: Path) -> Config:
    """The packaged site, moved onto free loopback ports so the demo never collides with a real one."""
    return config.model_copy(
        update={
            "mqtt": config.mqtt.model_copy(update={"url": broker_url}),
            "meter": config.meter.model_copy(update={"host": "127.0.0.1", "port": free_port()}),
            "pdus": [p.model_copy(update={"host": "127.0.0.1", "port": free_port()}) for p in config.pdus],
            "metrics": config.metrics.model_copy(update={"host": "127.0.0.1", "port": free_port()}),
            "journal": config.journal.model_copy(update={"path": str(state_dir / "journal.sqlite")}),
            # The demo compresses an event into seconds: so do the anti-flapping times.
            "control": config.control.model_copy(
                update={"min_on_s": 3.0, "min_off_s": 3.0, "restore_stagger_s": 2.0}
            ),
        }
    )


def demo_limit_kw(daemon: Daemon) -> float:
    """A site limit that leaves mining about two thirds of its rated power."""
    plan = daemon.core.plan
    assert plan is not None
    mining_rated_kw = sum(g.rated_kw for g in daemon.core.site.groups)
    fixed_kw = daemon.core.site.safety_margin_kw + daemon.core.site.base_load_kw + plan.ai_allowance_kw
    return round(fixed_kw + mining_rated_kw * (1 - SHED_FRACTION), -1)


def _fmt(value: float | None) -> str:
    return "  ?  " if value is None or math.isnan(value) else f"{value:6.0f}"


def status_line(daemon: Daemon, started_s: float) -> str:
    s = daemon.status()
    obligations = ",".join(s["obligations"]) or "-"
    return (
        f"t={time.monotonic() - started_s:5.1f}s  site {_fmt(s['site_kw'])} kW | AI {_fmt(s['ai_kw'])} kW"
        f" | mining {_fmt(s['mining_kw'])} kW | limit {_fmt(s['site_limit_kw'])} kW"
        f" | mining budget {_fmt(s['mining_budget_kw'])} kW | curtailed {s['curtailed']}/{s['groups']}"
        f" | obligations {obligations}"
    )


async def _wait_until(predicate, timeout_s: float, poll_s: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    """Poll a condition the simulated world makes true; False on timeout (the demo reports, not raises)."""
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline_s:
            return False
        await asyncio.sleep(poll_s)
    return True


async def _play_script(daemon: Daemon, site: SimulatedSite, config: Config, outcome: DemoOutcome) -> None:
    topics = Topics(config.topic_root)
    address = BrokerAddress.parse(config.mqtt.url)
    await asyncio.wait_for(daemon.ready.wait(), timeout=30)
    await _wait_until(
        lambda: (
            daemon.status()["site_kw"] is not None and daemon.status()["ai_kw"] == daemon.status()["ai_kw"]
        ),
        15,
    )
    await asyncio.sleep(2.0)  # let the audience see the steady state first
    async with aiomqtt.Client(address.host, address.port, identifier="mullet-demo-aggregator") as client:
        await client.subscribe(topics.grid_event_ack, qos=1)
        outcome.event_id = f"demo-{int(time.time())}"
        outcome.limit_kw = demo_limit_kw(daemon)
        event = GridEvent(
            id=outcome.event_id, kind="limit", kw=outcome.limit_kw, program="demo", source="mulletd demo"
        )
        print(
            f"demo: grid event {outcome.event_id}: limit site import to {outcome.limit_kw:.0f} kW", flush=True
        )
        sent_s = time.monotonic()
        await client.publish(topics.grid_event, encode(event), qos=1)
        outcome.acked = await _await_ack(client, topics.grid_event_ack, outcome.event_id)
        limit_kw = outcome.limit_kw

        def met() -> bool:
            site_kw = daemon.status()["site_kw"]
            return site_kw is not None and site_kw <= limit_kw

        if await _wait_until(met, timeout_s=config.simulator.curtail_s + 15):
            outcome.met_after_s = time.monotonic() - sent_s
            print(f"demo: limit met after {outcome.met_after_s:.1f} s", flush=True)
        else:
            outcome.notes.append("limit not met in time")
        await asyncio.sleep(5.0)  # hold the obligation for a while
        cancel = GridEvent(id=outcome.event_id, kind="cancel", program="demo", source="mulletd demo")
        print(f"demo: cancel {outcome.event_id}", flush=True)
        cancelled_s = time.monotonic()
        await client.publish(topics.grid_event, encode(cancel), qos=1)
        await _await_ack(client, topics.grid_event_ack, outcome.event_id)
        rated_kw = sum(g.rated_kw for g in config.groups)
        if await _wait_until(
            lambda: site.mining_power_kw() >= 0.98 * rated_kw, config.simulator.resume_s + 15
        ):
            outcome.restored_after_s = time.monotonic() - cancelled_s
            print(
                f"demo: mining load back to {site.mining_power_kw():.0f} kW"
                f" after {outcome.restored_after_s:.1f} s"
            )


async def _await_ack(client: aiomqtt.Client, ack_topic: str, event_id: str, timeout_s: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                # Only acks are subscribed; match anyway, a broker is not ours to trust.
                if not message.topic.matches(ack_topic):
                    continue
                ack = json.loads(message.payload if isinstance(message.payload, bytes) else b"{}")
                if ack.get("id") == event_id:
                    print(f"demo: ack accepted={ack['accepted']} reason={ack['reason']!r}", flush=True)
                    return bool(ack["accepted"])
    except TimeoutError:
        pass
    return False


async def run_demo(
    config: Config, *, duration_s: float | None, broker_url: str | None, stop: asyncio.Event
) -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="mullet-demo-"))
    broker: EmbeddedBroker | None = None
    if broker_url is None:
        broker = EmbeddedBroker()
        broker_url = broker.url
    config = with_free_ports(config, broker_url, state_dir)
    print(f"metrics at http://{config.metrics.host}:{config.metrics.port}/metrics", flush=True)
    print(f"demo: {config.summary()}", flush=True)
    site = simulated_site(config)
    daemon = Daemon(config)
    outcome = DemoOutcome()
    started_s = time.monotonic()
    # Torn down in reverse: helpers, then the daemon (its goodbye needs the broker), site, broker.
    async with contextlib.AsyncExitStack() as stack:
        if broker is not None:
            await broker.start()
            stack.push_async_callback(broker.stop)
        site_task = asyncio.create_task(site.run(), name="site")
        stack.push_async_callback(_cancel, site_task)
        await asyncio.wait_for(site.started.wait(), timeout=30)
        daemon_task = asyncio.create_task(daemon.run(), name="daemon")
        stack.push_async_callback(_stop_daemon, daemon, daemon_task)
        status = asyncio.create_task(_print_status(daemon, started_s), name="status")
        script = asyncio.create_task(_play_script(daemon, site, config, outcome), name="script")
        stack.push_async_callback(_cancel, status, script)
        ending: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if duration_s is not None:
            # A timed run (CI, a smoke test) ends at its duration, or once the script has told its story.
            ending.append(asyncio.ensure_future(asyncio.sleep(duration_s)))
            ending.append(asyncio.ensure_future(_after(script, 1.0)))
        stack.push_async_callback(_cancel, *ending)
        await asyncio.wait([*ending, site_task, daemon_task], return_when=asyncio.FIRST_COMPLETED)
        if script.done() and not script.cancelled() and script.exception() is not None:
            outcome.notes.append(f"script failed: {script.exception()!r}")

    ai_untouched = all(cap is None for tenant in site.tenants.values() for cap in tenant.caps_received)
    for note in outcome.notes:
        print(f"demo: {note}")
    met_text = f"met in {outcome.met_after_s:.1f} s" if outcome.met_after_s is not None else "NOT met"
    limit_text = f"{outcome.limit_kw:.0f}" if outcome.limit_kw is not None else "?"
    print(
        f"demo: event {outcome.event_id or '-'} limit {limit_text} kW {met_text};"
        f" ai untouched: {'yes' if ai_untouched else 'no'}",
        flush=True,
    )
    if duration_s is None:
        return 0
    return 0 if outcome.met_after_s is not None and ai_untouched else 1


async def _after(task: asyncio.Task[None], pause_s: float) -> None:
    """`task`'s end (however it ended), then a pause for the last status line."""
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(pause_s)


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _stop_daemon(daemon: Daemon, task: asyncio.Task[None]) -> None:
    daemon.stop()
    try:
        await asyncio.wait_for(task, 5)
    except TimeoutError:
        pass  # wait_for cancelled it


async def _print_status(daemon: Daemon, started_s: float) -> None:
    await daemon.ready.wait()
    while True:
        print(status_line(daemon, started_s), flush=True)
        await asyncio.sleep(1.0)
