"""The daemon (`mulletd run`) and a simulated site, as test_e2e's `running` fixture starts them, for tests
that need to set up something else first (an OpenADR VTN) or pass a config mutator built at run time."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
from test_e2e import Observer, Running, site_config, start_daemon

from mullet.drivers.wire import Topics
from mullet.simulators.site import SimulatedSite


@contextlib.asynccontextmanager
async def running_site(
    mqtt_broker, tmp_path: Path, mutate: Callable[[dict], None] | None = None
) -> AsyncIterator[Running]:
    config, path = site_config(mqtt_broker.url, tmp_path, mutate)
    topics = Topics(config.topic_root)
    site = SimulatedSite(config)
    site_task = asyncio.create_task(site.run())
    await asyncio.wait_for(site.started.wait(), timeout=15)
    log_path = tmp_path / "mulletd.log"
    daemon = await start_daemon(path, log_path)
    async with aiomqtt.Client(
        mqtt_broker.host, mqtt_broker.port, identifier=f"agg-{secrets.token_hex(3)}"
    ) as client:
        await client.subscribe(f"{config.topic_root}/#", qos=1)
        observer = Observer(client, topics)
        pump = asyncio.create_task(observer.pump())
        running = Running(config, path, site, daemon, observer, log_path)
        try:
            await observer.wait_for(lambda t, p: t == topics.daemon_online and p == b"1", 20)
            await observer.wait_for(lambda t, p: t == topics.daemon_plan, 20)
            yield running
        finally:
            pump.cancel()
            if running.daemon.returncode is None:
                running.daemon.kill()
                await asyncio.wait_for(running.daemon.wait(), 10)
            site_task.cancel()
            await asyncio.gather(site_task, pump, return_exceptions=True)
