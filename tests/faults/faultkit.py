"""What the fault tests share: the daemon (`mulletd run`, a subprocess) against a simulated site
(tests/helpers.py's `running_site`), its observer, and a ground-truth watch on the site's physics.

The observer (helpers.Observer) records every message with its arrival time and the session it came in
on, so a test can ask what the daemon re-published after the broker came back. The watch runs inside
the simulator's physics tick (not on a timer of its own), so it sees every state the site passes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers import (
    Metrics,
    Observer,
    log_records,
    read_metrics,
    running_site,
    site_config,
    start_daemon,
    until,
)

from mullet.daemon.config import Config
from mullet.drivers.protocol import GridEvent, Topics
from mullet.simulators.site import SimulatedSite

__all__ = [
    "Faulty",
    "SlowProxy",
    "Watch",
    "faulty_site",
    "limit_leaving_mining",
    "site_at_a_limit",
    "site_config",
    "until",
]


@dataclass
class Watch:
    """Ground truth, checked on every physics tick: site import against a limit, once armed."""

    site: SimulatedSite
    limit_kw: float | None = None
    ticks: int = 0
    over: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, kW) above the limit
    peak_kw: float = 0.0

    def install(self) -> None:
        step = self.site.step

        def watched(dt_s: float) -> None:
            step(dt_s)
            if self.limit_kw is None:
                return
            self.ticks += 1
            site_kw = self.site.site_power_kw()
            self.peak_kw = max(self.peak_kw, site_kw)
            if site_kw > self.limit_kw:
                self.over.append((time.monotonic(), site_kw))

        self.site.step = watched  # type: ignore[method-assign]


@dataclass
class Faulty:
    config: Config
    config_path: Path
    site: SimulatedSite
    daemon: asyncio.subprocess.Process
    observer: Observer
    log_path: Path
    watch: Watch

    @property
    def topics(self) -> Topics:
        return self.observer.topics

    def metrics_text(self) -> str:
        return read_metrics(self.config.metrics.port).text

    async def metrics(self) -> Metrics:
        """Every sample of the daemon's /metrics, by its full name with labels."""
        return await asyncio.to_thread(read_metrics, self.config.metrics.port)

    async def metric(self, name: str, default: float | None = None) -> float:
        return (await self.metrics()).value(name, default)

    async def until_metric(self, name: str, ok: Callable[[float], bool], timeout_s: float, default=None):
        """Poll /metrics until `ok(value)`; the daemon is another process, so there is no event to await."""
        deadline_s = time.monotonic() + timeout_s
        while True:
            value = await self.metric(name, default)
            if ok(value):
                return value
            if time.monotonic() > deadline_s:
                raise AssertionError(f"{name} = {value} after {timeout_s} s")
            await asyncio.sleep(0.05)  # polling another process's endpoint

    async def restart_daemon(self) -> None:
        self.daemon = await start_daemon(self.config_path, self.log_path)

    def log_records(self) -> list[dict]:
        return log_records(self.log_path)


@contextlib.asynccontextmanager
async def faulty_site(
    broker,
    tmp_path: Path,
    mutate: Callable[[dict], None] | None = None,
    *,
    sim_ports: dict[str, int] | None = None,
    before_daemon: Callable[[SimulatedSite], Awaitable[None]] | None = None,
) -> AsyncIterator[Faulty]:
    """helpers.running_site (the example site, compressed timings; ready = online + a plan) with a
    Watch on its physics. `sim_ports` and `before_daemon` put a proxy between daemon and devices."""
    watches: list[Watch] = []

    def install_watch(site: SimulatedSite) -> None:
        watches.append(Watch(site))
        watches[0].install()

    async with running_site(
        broker, tmp_path, mutate, sim_ports=sim_ports, prepare_site=install_watch, before_daemon=before_daemon
    ) as run:
        faulty = Faulty(
            run.config, run.config_path, run.site, run.daemon, run.observer, run.log_path, watches[0]
        )
        try:
            yield faulty
        finally:
            if faulty.daemon.returncode is None:  # a restarted daemon is not the one running_site started
                faulty.daemon.kill()
                await asyncio.wait_for(faulty.daemon.wait(), 30)


async def site_at_a_limit(run: Faulty, event_id: str, fraction: float, program: str = "generic") -> float:
    """Mining at full load, then an accepted `limit` event that leaves mining `fraction` of its rated
    power, waited for until the site is under it; returns the limit (kW)."""
    site = run.site
    rated_kw = sum(g.rated_kw for g in run.config.groups)
    await until(lambda: site.mining_power_kw() >= 0.99 * rated_kw, 30, "full mining load")
    limit_kw = limit_leaving_mining(run.config, fraction)
    event = GridEvent(id=event_id, kind="limit", kw=limit_kw, program=program, source="t")
    await run.observer.send(event)
    assert (await run.observer.ack(event_id))["accepted"] is True
    await until(lambda: site.site_power_kw() <= limit_kw, 30, "site at the limit")
    return limit_kw


def limit_leaving_mining(config: Config, fraction: float) -> float:
    """A limit that leaves mining `fraction` of its rated power after AI allowances and margins."""
    mining_rated_kw = sum(g.rated_kw for g in config.groups)
    ai_allowance_kw = sum(t.reserved_kw + t.headroom_kw for t in config.tenants)
    fixed_kw = config.site.safety_margin_kw + config.site.base_load_kw + ai_allowance_kw
    return fixed_kw + mining_rated_kw * fraction


class SlowProxy:
    """A TCP proxy that hands every answer back `delay_s` late: a Modbus device that answers in 2 s.

    Requests pass through at once (the device sees them); each chunk the device sends back is held for
    `delay_s`, in order. `held` is the number of chunks waiting now, `requests` the chunks passed on."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.target_port: int | None = None
        self.port = 0
        self.held = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        assert self.target_port is not None
        try:
            device_r, device_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        loop = asyncio.get_running_loop()

        def release(chunk: bytes) -> None:
            self.held -= 1
            if not client_w.is_closing():
                client_w.write(chunk)

        async def upstream() -> None:
            while chunk := await client_r.read(4096):
                self.requests += 1
                device_w.write(chunk)
            device_w.close()

        async def downstream() -> None:
            while chunk := await device_r.read(4096):
                self.held += 1
                loop.call_later(self.delay_s, release, chunk)

        for work in (upstream(), downstream()):
            task = asyncio.create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
