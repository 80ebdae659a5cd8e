"""What the fault tests share: the daemon (`mulletd run`, a subprocess) against a simulated site, an
observer that survives broker restarts, and a ground-truth watch on the site's physics.

The observer records every message with its arrival time and the session it came in on, so a test can
ask what the daemon re-published after the broker came back. The watch runs inside the simulator's
physics tick (not on a timer of its own), so it sees every state the site passes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from test_e2e import site_config, start_daemon
from test_e2e import until as e2e_until

from mullet.daemon.config import Config
from mullet.drivers.wire import GridEvent, Topics, encode
from mullet.simulators.site import SimulatedSite


@dataclass(frozen=True, slots=True)
class Seen:
    at_s: float  # monotonic arrival
    session: int  # the observer's broker session it arrived in (1 = the first)
    topic: str
    payload: bytes


@dataclass
class Observer:
    """Subscribes to the whole site root and reconnects (every 20 ms) when the broker goes away."""

    host: str
    port: int
    topics: Topics
    received: list[Seen] = field(default_factory=list)
    sessions: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _client: aiomqtt.Client | None = None

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=f"faults-obs-{secrets.token_hex(3)}"
                ) as client:
                    await client.subscribe(f"{self.topics.root}/#", qos=1)
                    self._client = client
                    self.sessions += 1
                    self.connected.set()
                    self.changed.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.received.append(
                            Seen(time.monotonic(), self.sessions, message.topic.value, payload)
                        )
                        self.changed.set()
            except aiomqtt.MqttError:
                pass
            finally:
                self._client = None
                self.connected.clear()
                self.changed.set()
            await asyncio.sleep(0.02)  # reconnect pace, not synchronisation

    async def wait_for(
        self, match: Callable[[Seen], bool], timeout_s: float, since: int = 0, what: str = "a message"
    ) -> Seen:
        """The first message from index `since` on that matches."""
        seen = since
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for item in self.received[seen:]:
                        if match(item):
                            return item
                    seen = len(self.received)
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None

    async def wait_state(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        await self.wait_state(lambda: self._client is not None, 10, "observer connected")
        assert self._client is not None
        await self._client.publish(topic, payload, qos=qos, retain=retain)

    async def send(self, event: GridEvent | bytes) -> None:
        await self.publish(self.topics.grid_event, event if isinstance(event, bytes) else encode(event))

    async def ack(self, event_id: str, timeout_s: float = 5.0, since: int = 0) -> dict:
        item = await self.wait_for(
            lambda m: m.topic == self.topics.grid_event_ack and json.loads(m.payload).get("id") == event_id,
            timeout_s,
            since,
            what=f"the ack of {event_id}",
        )
        return json.loads(item.payload)

    def group_setpoints(self, since: int = 0) -> list[dict]:
        """Every group setpoint seen (retained re-deliveries included), with its group_id."""
        return [
            {**json.loads(m.payload), "group_id": m.topic.split("/")[-2]}
            for m in self.received[since:]
            if "/mining/" in m.topic and m.topic.endswith("/set") and m.payload
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
        url = f"http://127.0.0.1:{self.config.metrics.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    async def metrics(self) -> dict[str, float]:
        """Every sample of the daemon's /metrics, by its full name with labels."""
        text = await asyncio.to_thread(self.metrics_text)
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    async def metric(self, name: str, default: float | None = None) -> float:
        samples = await self.metrics()
        if name in samples:
            return samples[name]
        if default is not None:
            return default
        raise AssertionError(f"metric {name} not exported")

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
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """test_e2e.until polling every 20 ms: the fault tests time recoveries in tens of ms."""
    return await e2e_until(predicate, timeout_s, what, poll_s=0.02)


@contextlib.asynccontextmanager
async def faulty_site(
    broker,
    tmp_path: Path,
    mutate: Callable[[dict], None] | None = None,
    *,
    sim_ports: dict[str, int] | None = None,
    before_daemon: Callable[[SimulatedSite], Awaitable[None]] | None = None,
) -> AsyncIterator[Faulty]:
    """The example site (tests/test_e2e.py's compressed timings) and the daemon, ready = online + a plan.

    `sim_ports` moves simulated devices off the ports the daemon is configured with (`meter` or a
    pdu_id; 0 = any free port), so a proxy can sit in between; `before_daemon` wires it up."""
    config, path = site_config(broker.url, tmp_path, mutate)
    topics = Topics(config.topic_root)
    ports = dict(sim_ports or {})
    meter_port = ports.pop("meter", None)
    site = SimulatedSite(config, meter_port=meter_port, pdu_ports=ports)
    watch = Watch(site)
    watch.install()
    site_task = asyncio.create_task(site.run())
    await asyncio.wait_for(site.started.wait(), timeout=15)
    log_path = tmp_path / "mulletd.log"
    observer = Observer(broker.host, broker.port, topics)
    pump = asyncio.create_task(observer.run())
    await observer.wait_state(observer.connected.is_set, 10, "observer connected")
    if before_daemon is not None:
        await before_daemon(site)
    daemon = await start_daemon(path, log_path)
    faulty = Faulty(config, path, site, daemon, observer, log_path, watch)
    try:
        await observer.wait_for(
            lambda m: m.topic == topics.daemon_online and m.payload == b"1", 20, what="daemon online"
        )
        await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 20, what="first plan")
        yield faulty
    finally:
        if faulty.daemon.returncode is None:
            faulty.daemon.kill()
            await asyncio.wait_for(faulty.daemon.wait(), 10)
        pump.cancel()
        site_task.cancel()
        await asyncio.gather(site_task, pump, return_exceptions=True)


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
