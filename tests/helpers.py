"""What the tests share: `until`, one MQTT observer, the example site's config, a /metrics reader, and
the daemon (`mulletd run`, a subprocess) against a simulated site: in the test's process
(`running_site`) or in its own (`site_processes`, `mulletd simulate`).

tests/conftest.py exposes the stateful ones as fixtures (`observe`, `site_config`); the rest are
imported (`from helpers import until`; tests/ is on sys.path through its conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from mullet.daemon.config import Config, parse_config
from mullet.daemon.site.simulated import simulated_site
from mullet.drivers.protocol import GridEvent, Topics, encode
from mullet.simulators.broker import wait_listening
from mullet.simulators.ports import accepts, free_port
from mullet.simulators.site import SimulatedSite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "site.example.toml"
MULLETD = Path(sys.executable).with_name("mulletd")
CURTAIL_S, RESUME_S = 1.0, 2.0  # the simulated ramps of `site_config`: compressed time
ETCD = shutil.which("etcd")


async def until(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.02) -> float:
    """Wait for `predicate` (the simulated world, another process's state); returns the seconds it took."""
    started_s = time.monotonic()
    while not predicate():
        if time.monotonic() - started_s > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(poll_s)
    return time.monotonic() - started_s


# The MQTT observer.


@dataclass(frozen=True, slots=True)
class Seen:
    topic: str
    payload: bytes
    at_s: float  # monotonic arrival, taken on the observer's own thread
    session: int  # the observer's broker session it arrived in (1 = the first)

    def json(self) -> Any:
        return json.loads(self.payload)


class Observer:
    """A subscriber on the test broker: records every message on `subscriptions` in order, with its
    arrival time and session, and lets a test wait for one.

    A paho client on its own thread: it keeps receiving while the test's loop is blocked (a test can
    check that a PUBLISH was on the wire before a call returned), stamps arrivals without waiting for a
    loop turn, and reconnects and re-subscribes by itself when the broker goes away and comes back."""

    def __init__(
        self,
        host: str,
        port: int,
        subscriptions: list[str],
        topics: Topics | None = None,
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.subscriptions = subscriptions
        self._topics = topics
        self.received: list[Seen] = []
        self.sessions = 0
        self.connected = threading.Event()  # subscribed in the current session
        self._arrived = threading.Condition()
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"observer-{secrets.token_hex(4)}"
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls_context is not None:
            self._client.tls_set_context(tls_context)
        self._client.reconnect_delay_set(0.02, 0.5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    @property
    def topics(self) -> Topics:
        assert self._topics is not None, "this observer was made without a site's Topics"
        return self._topics

    async def start(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self._client.connect, self.host, self.port)
        self._client.loop_start()
        await self.wait_state(self.connected.is_set, timeout_s, "observer subscribed")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _notify(self) -> None:
        with self._arrived:
            self._arrived.notify_all()
        with contextlib.suppress(RuntimeError):  # the test's loop is closed: nobody waits there
            self._loop.call_soon_threadsafe(self._changed.set)

    def _on_connect(self, client: paho.Client, _userdata: object, _flags: object, *_: object) -> None:
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(self, *_: object) -> None:
        self.sessions += 1
        self.connected.set()
        self._notify()

    def _on_disconnect(self, *_: object) -> None:
        self.connected.clear()
        self._notify()

    def _on_message(self, _client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        self.received.append(Seen(message.topic, bytes(message.payload), time.monotonic(), self.sessions))
        self._notify()

    def _first(self, match: Callable[[Seen], bool], since: int) -> tuple[Seen | None, int]:
        received = self.received[since:]
        for item in received:
            if match(item):
                return item, since
        return None, since + len(received)

    async def wait_for(
        self, match: Callable[[Seen], bool], timeout_s: float = 10.0, since: int = 0, what: str = "a message"
    ) -> Seen:
        """The first message from index `since` on that matches."""
        seen = since
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    self._changed.clear()
                    found, seen = self._first(match, seen)
                    if found is not None:
                        return found
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None

    def wait_for_blocking(
        self, match: Callable[[Seen], bool], timeout_s: float = 10.0, since: int = 0
    ) -> Seen:
        """`wait_for` that blocks the calling thread (and its loop): only this observer's thread runs."""
        deadline_s = time.monotonic() + timeout_s
        seen = since
        with self._arrived:
            while True:
                found, seen = self._first(match, seen)
                if found is not None:
                    return found
                left_s = deadline_s - time.monotonic()
                assert left_s > 0, f"nothing matched in {timeout_s} s; received {self.received[since:]}"
                self._arrived.wait(left_s)

    def payloads_blocking(self, count: int, timeout_s: float = 30.0) -> list[bytes]:
        """The payloads received, once there are at least `count`; blocks like `wait_for_blocking`."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.received) >= count, timeout_s)
            payloads = [m.payload for m in self.received]
        assert arrived, f"{len(payloads)} of {count} messages in {timeout_s} s: {payloads}"
        return payloads

    async def wait_state(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait for `predicate`, checked whenever a message arrives or the connection changes."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    self._changed.clear()
                    if predicate():
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish once connected; returns when the broker has it (PUBACK for QoS 1)."""
        await self.wait_state(self.connected.is_set, 10, "observer connected")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 10)
        assert info.is_published(), f"{topic}: not acknowledged by the broker in 10 s"

    async def send(self, event: GridEvent | bytes) -> None:
        await self.publish(self.topics.grid_event, event if isinstance(event, bytes) else encode(event))

    async def ack(self, event_id: str, timeout_s: float = 10.0, since: int = 0) -> dict:
        item = await self.wait_for(
            lambda m: m.topic == self.topics.grid_event_ack and m.json().get("id") == event_id,
            timeout_s,
            since,
            what=f"the ack of {event_id}",
        )
        return item.json()

    def latest(self, topics: Iterable[str]) -> dict[str, Seen]:
        """The last non-empty message on each of `topics` seen so far (a topic not seen yet is absent);
        scans back from the newest, so a long run stays cheap to poll."""
        wanted, found = set(topics), dict[str, Seen]()
        for item in reversed(self.received):
            if item.topic in wanted and item.topic not in found and item.payload:
                found[item.topic] = item
                if len(found) == len(wanted):
                    break
        return found

    def group_setpoints(self, since: int = 0) -> list[dict]:
        """Every group setpoint seen (retained re-deliveries included), with its group_id."""
        return [
            {**m.json(), "group_id": m.topic.split("/")[-2]}
            for m in self.received[since:]
            if "/mining/" in m.topic and m.topic.endswith("/set") and m.payload
        ]


@contextlib.asynccontextmanager
async def observing(
    broker: Any, subscriptions: list[str], topics: Topics | None = None, **options: Any
) -> AsyncIterator[Observer]:
    """An Observer on `broker` (anything with .host and .port), subscribed before it is handed out;
    `options` are Observer's (client id, credentials, TLS)."""
    observer = Observer(broker.host, broker.port, subscriptions, topics, **options)
    try:
        await observer.start()
        yield observer
    finally:
        await asyncio.to_thread(observer.close)


async def retained(broker: Any, root: str) -> dict[str, bytes]:
    """Every retained message under `root` (topic -> payload), as a new subscriber gets them: they come
    at SUBSCRIBE, before a marker this subscriber publishes afterwards."""
    marker = f"{root}/test/marker-{secrets.token_hex(3)}"
    async with observing(broker, [f"{root}/#"]) as observer:
        await observer.publish(marker, b"x")
        seen = await observer.wait_for(lambda m: m.topic == marker, 10, what="the retained messages' end")
        return {m.topic: m.payload for m in observer.received[: observer.received.index(seen)]}


# The site's config.


def site_config(
    broker_url: str, tmp_path: Path, mutate: Callable[[dict], None] | None = None
) -> tuple[Config, Path]:
    """The example site with its own topic root, free ports, short ramps and a private journal."""
    data = tomllib.loads(EXAMPLE.read_text())
    data["site"]["site_id"] = f"e2e-{secrets.token_hex(4)}"
    data["mqtt"]["url"] = broker_url
    data["meter"]["port"] = free_port()
    for pdu in data["pdus"]:
        pdu["port"] = free_port()
    data["metrics"]["port"] = free_port()
    data["journal"]["path"] = str(tmp_path / "journal.sqlite")
    data["simulator"].update(curtail_s=CURTAIL_S, resume_s=RESUME_S)
    data["control"].update(min_on_s=0.5, min_off_s=0.5, restore_stagger_s=0.5)  # compressed, like the ramps
    if mutate is not None:
        mutate(data)
    return write_config(data, tmp_path / "site.toml")


# A live daemon's control period here (the example's: 1 s): the restore stagger and min off-time
# above, so a restore goes a group per stagger, not a group per 1 s cycle. Simulated-clock tests
# (tests/test_controller.py) step the example's period and keep it.
LIVE_PERIOD_S = 0.5


def live_site(mutate: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
    """A `site_config` mutator for a running daemon: `LIVE_PERIOD_S`, then `mutate` (which may set
    its own)."""

    def apply(data: dict) -> None:
        data["control"]["period_s"] = LIVE_PERIOD_S
        if mutate is not None:
            mutate(data)

    return apply


API_TOKEN = "test-token-0123456789"


def with_http_api(data: dict) -> None:
    """A `site_config` mutator: the HTTP API on a free port, its bearer token `API_TOKEN` in a 0600 file."""
    token_file = Path(data["journal"]["path"]).with_name("api-token")
    token_file.write_text(API_TOKEN + "\n")
    token_file.chmod(0o600)
    data["http_api"] = {"enabled": True, "port": free_port(), "token_file": str(token_file)}


def write_config(data: dict, path: Path) -> tuple[Config, Path]:
    """`data` checked by the daemon's parser and written where `mulletd --config` will read it."""
    config = parse_config(data)
    path.write_text(tomli_w.dumps(data))
    return config, path


# /metrics.


class Metrics(Mapping[str, float]):
    """One scrape of a /metrics page (parsed by prometheus_client), keyed as the exposition writes a
    sample: `name` or `name{label="value",...}`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
                self._samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value

    def __getitem__(self, key: str) -> float:
        return self._samples[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._samples)

    def __len__(self) -> int:
        return len(self._samples)

    def value(self, key: str, default: float | None = None) -> float:
        """A sample's value; `default` when it is not exported (a labelled counter not yet counted)."""
        if key in self._samples:
            return self._samples[key]
        if default is not None:
            return default
        raise AssertionError(f"metric {key} not exported")

    def total(self, name: str) -> float:
        """The sum of every sample of `name`, whatever its labels."""
        return sum(v for k, v in self._samples.items() if k == name or k.startswith(name + "{"))


def read_metrics(port: int) -> Metrics:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return Metrics(response.read().decode())


# The daemon against a simulated site.


async def start_daemon(
    config_path: Path, log_path: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`mulletd run` on `config_path`, logging to `log_path`; `env` adds to the environment."""
    return await start_mulletd("run", config_path, log_path, env)


async def start_mulletd(
    command: str, config_path: Path, log_path: Path, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`mulletd <command> --config config_path`, its output appended to `log_path`."""
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            str(MULLETD),
            command,
            "--config",
            str(config_path),
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
        )


@dataclass
class Running:
    config: Config
    config_path: Path
    site: SimulatedSite
    daemon: asyncio.subprocess.Process
    observer: Observer
    log_path: Path

    @property
    def topics(self) -> Topics:
        return self.observer.topics

    def metrics(self) -> Metrics:
        return read_metrics(self.config.metrics.port)

    def metric(self, key: str, default: float | None = None) -> float:
        return self.metrics().value(key, default)

    async def until_metric(
        self, key: str, ok: Callable[[float], bool], timeout_s: float, default: float | None = None
    ) -> float:
        """Poll /metrics until `ok(value)`: the daemon is another process, there is no event to await."""
        await until(lambda: ok(self.metric(key, default)), timeout_s, f"{key} to be as wanted", poll_s=0.05)
        return self.metric(key, default)

    async def restart_daemon(self) -> None:
        self.daemon = await start_daemon(self.config_path, self.log_path)

    def log_records(self) -> list[dict]:
        return log_records(self.log_path)


def log_records(log_path: Path) -> list[dict]:
    """The daemon's JSON log lines (stdout is not a TTY: one object a line)."""
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


@contextlib.asynccontextmanager
async def running_site(
    mqtt_broker: Any,
    tmp_path: Path,
    mutate: Callable[[dict], None] | None = None,
    env: dict[str, str] | None = None,
    *,
    sim_ports: dict[str, int] | None = None,
    prepare_site: Callable[[SimulatedSite], None] | None = None,
    before_daemon: Callable[[SimulatedSite], Awaitable[None]] | None = None,
) -> AsyncIterator[Running]:
    """The daemon (`mulletd run`) and a simulated site of `site_config`, ready (online, a plan published).

    `sim_ports` moves simulated devices off the ports the daemon is configured with (`meter` or a
    pdu_id; 0 = any free port), so a proxy can sit in between; `prepare_site` sees the site before it
    runs, `before_daemon` after it started and before the daemon does."""
    config, path = site_config(mqtt_broker.url, tmp_path, live_site(mutate))
    topics = Topics(config.topic_root)
    ports = dict(sim_ports or {})
    meter_port = ports.pop("meter", None)
    site = simulated_site(config, meter_port=meter_port, pdu_ports=ports)
    if prepare_site is not None:
        prepare_site(site)
    site_task = asyncio.create_task(site.run())
    try:
        await asyncio.wait_for(site.started.wait(), timeout=30)
        async with observing(mqtt_broker, [f"{config.topic_root}/#"], topics) as observer:
            if before_daemon is not None:
                await before_daemon(site)
            log_path = tmp_path / "mulletd.log"
            running = Running(config, path, site, await start_daemon(path, log_path, env), observer, log_path)
            try:
                await observer.wait_for(
                    lambda m: m.topic == topics.daemon_online and m.payload == b"1", 30, what="daemon online"
                )
                await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 30, what="a first plan")
                yield running
            finally:
                if running.daemon.returncode is None:  # the test may have restarted it
                    running.daemon.kill()
                    await asyncio.wait_for(running.daemon.wait(), 10)
    finally:
        site_task.cancel()
        await asyncio.gather(site_task, return_exceptions=True)


# The daemon against the simulated site in its own process.


def log_tail(log_path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a process's log (empty when it wrote none)."""
    if not log_path.exists():
        return ""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


async def start_simulator(
    config: Config, config_path: Path, log_path: Path, observer: Observer, timeout_s: float = 30.0
) -> asyncio.subprocess.Process:
    """`mulletd simulate` on `config_path`, logging to `log_path`, returned once its devices are up:
    the meter and every PDU accept a Modbus TCP connection, and `observer` (subscribed under the
    site's root) has seen every group's and every tenant's state. Fails at once if it exits."""
    process = await start_mulletd("simulate", config_path, log_path)
    topics = Topics(config.topic_root)
    states = {topics.group_state(g.group_id) for g in config.groups}
    states |= {topics.tenant_state(t.tenant_id) for t in config.tenants}
    servers = [(config.meter.host, config.meter.port), *((p.host, p.port) for p in config.pdus)]

    def up() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"mulletd simulate exited with {process.returncode}:\n{log_tail(log_path)}")
        return len(observer.latest(states)) == len(states) and all(accepts(h, p) for h, p in servers)

    try:
        await until(up, timeout_s, "the simulated site's devices up", poll_s=0.05)
    except BaseException:
        await stop_process(process)
        raise
    return process


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout_s`."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), timeout_s)


@dataclass
class SiteProcesses:
    """`mulletd run` against `mulletd simulate`, both on `config`, watched by `observer`."""

    config: Config
    config_path: Path
    simulator: asyncio.subprocess.Process
    daemon: asyncio.subprocess.Process
    observer: Observer
    simulator_log: Path
    daemon_log: Path

    @property
    def topics(self) -> Topics:
        return self.observer.topics


@contextlib.asynccontextmanager
async def site_processes(
    mqtt_broker: Any, tmp_path: Path, mutate: Callable[[dict], None] | None = None
) -> AsyncIterator[SiteProcesses]:
    """`mulletd simulate` (its devices up), then `mulletd run` (online, a first plan), on one
    `site_config`, observed on everything under the site's root; both stopped afterwards, the daemon
    first. A failure inside carries the tails of both logs (`tmp_path`/simulate.log, mulletd.log)."""
    config, path = site_config(mqtt_broker.url, tmp_path, live_site(mutate))
    topics = Topics(config.topic_root)
    simulator_log, daemon_log = tmp_path / "simulate.log", tmp_path / "mulletd.log"
    started: list[asyncio.subprocess.Process] = []
    try:
        async with observing(mqtt_broker, [f"{config.topic_root}/#"], topics) as observer:
            try:
                started.append(await start_simulator(config, path, simulator_log, observer))
                started.append(await start_daemon(path, daemon_log))
                await observer.wait_for(
                    lambda m: m.topic == topics.daemon_online and m.payload == b"1", 30, what="daemon online"
                )
                await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 30, what="a first plan")
                yield SiteProcesses(config, path, *started, observer, simulator_log, daemon_log)
            finally:
                for process in reversed(started):
                    await stop_process(process)
    except Exception as exc:
        for log_path in (simulator_log, daemon_log):
            exc.add_note(f"---- {log_path} (last lines) ----\n{log_tail(log_path)}")
        raise


# etcd, for the leader lease.


@contextlib.contextmanager
def etcd_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A one-member etcd on loopback: its client port and process (to kill it mid-test)."""
    client_port, peer_port = free_port(), free_port()
    assert ETCD is not None
    with (tmp_path / "etcd.log").open("wb") as log_file:
        process = subprocess.Popen(
            [
                ETCD,
                "--data-dir", str(tmp_path / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{client_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        asyncio.run(wait_listening("127.0.0.1", client_port, timeout_s=15))
        yield client_port, process
    finally:
        process.kill()
        process.wait(timeout=10)
