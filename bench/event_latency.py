"""Grid event to load shed, end to end: `mulletd run` (a subprocess) against the simulated site over a
real mosquitto on loopback, with a raw broker round trip measured in the same run as the baseline.

Set-up: a mosquitto process on a free loopback port; the example site (deploy/site.example.toml:
12 mining groups, 2 AI tenants) simulated in this process with free ports, short ramps and a private
journal; `mulletd run` as a subprocess; an observer client playing the aggregator. Each of K rounds:

  publish grid/event `limit` (leaves mining ~2/3 of rated), then measure from just before the publish
    (a) ack        -> grid/event/ack for that id received by the observer (includes the journal commit)
    (b) command    -> first mining/<group>/set with mode "curtail" received by the observer
    (c) at limit   -> simulator ground truth site_power_kw() <= the limit (includes the simulated ramp)
  publish grid/event `cancel`, then
    (d) restore    -> simulator mining power >= 98 % of rated again (includes the simulated ramp)

Baseline (same broker, same run): one small QoS 1 message between two aiomqtt clients, publish start
-> receipt, one at a time; measured on the quiet broker before the site starts and again while the
site and the daemon are running (the "loaded" hop is the one (b) is compared with). Path (b) crosses
the broker twice (observer -> daemon, daemon -> observer), so its overhead is (b) - 2 x hop.

Setups (--setups): "shipped" runs everything as the project ships it: MosquittoBroker's config has
`set_tcp_nodelay true`, and every project client (MqttLink in the daemon, the simulated devices) passes
`socket_options=NO_DELAY` (mullet.drivers.mqtt), as do this script's own clients. "nagle" is the
behaviour before that fix, for comparison: mosquitto gets `set_tcp_nodelay false` (its default) and
NO_DELAY is set to TCP_NODELAY 0 (Nagle on, the socket default): in this process by patching the module
attribute in mullet.drivers.mqtt and in each loaded mullet module that imported it by name, and in the
daemon subprocess by a `python -c` wrapper that patches mullet.drivers.mqtt before it imports the CLI.
Both run by default, one after the other, each with its own broker, site and daemon, so the ratio
between them is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import tomli_w
from _common import REPO, p99_note, print_header, print_table, reproduce_command, summary

import mullet.drivers.mqtt
from mullet.daemon.config import Config, parse_config
from mullet.daemon.logs import configure_logging
from mullet.daemon.site.simulated import simulated_site
from mullet.drivers.protocol import GridEvent, Topics, encode
from mullet.simulators.broker import MosquittoBroker, find_mosquitto
from mullet.simulators.ports import free_port
from mullet.simulators.site import SimulatedSite

EXAMPLE = REPO / "deploy" / "site.example.toml"
MULLETD = Path(sys.executable).with_name("mulletd")
HOST = "127.0.0.1"  # loopback only
NS_PER_MS = 1_000_000
SocketOptions = tuple[tuple[int, int, int], ...]
NODELAY_OPTION = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
# The project's client socket options as shipped (TCP_NODELAY 1), read before anything patches them.
SHIPPED_OPTIONS: SocketOptions = mullet.drivers.mqtt.NO_DELAY
NAGLE_OPTIONS: SocketOptions = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 0),)
# `mulletd` with Nagle on: NO_DELAY is patched before the CLI (and so MqttLink) is imported.
NAGLE_DAEMON = """
import socket, sys
import mullet.drivers.mqtt
mullet.drivers.mqtt.NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 0),)
from mullet.daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


class NagleMosquitto(MosquittoBroker):
    """MosquittoBroker's config (simulators/broker.py) with `set_tcp_nodelay false`, mosquitto's default."""

    def spawn(self) -> None:
        conf = self._dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay false\nmax_inflight_messages 0\nmax_queued_messages 100000\n"
        )
        with (self._dir / "mosquitto.log").open("wb") as log_file:
            self.process = subprocess.Popen(
                [self.executable, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log_file
            )


@dataclass(frozen=True)
class Setup:
    name: str
    broker: type[MosquittoBroker]
    socket_options: SocketOptions  # every MQTT client's: the project's and this script's
    daemon: tuple[str, ...]  # the program that runs `mulletd`


SETUPS = {
    "shipped": Setup("shipped", MosquittoBroker, SHIPPED_OPTIONS, (str(MULLETD),)),
    "nagle": Setup("nagle", NagleMosquitto, NAGLE_OPTIONS, (sys.executable, "-c", NAGLE_DAEMON)),
}


@contextlib.contextmanager
def project_socket_options(options: SocketOptions) -> Iterator[list[str]]:
    """While active, NO_DELAY is `options` in mullet.drivers.mqtt and in every loaded mullet module that
    imported it by name (drivers/device_link.py does); yields those modules' names."""
    modules = [
        module
        for name, module in list(sys.modules.items())
        if name.startswith("mullet.") and getattr(module, "NO_DELAY", None) is SHIPPED_OPTIONS
    ]
    if options is SHIPPED_OPTIONS:
        yield []
        return
    if mullet.drivers.mqtt not in modules:
        raise RuntimeError("mullet.drivers.mqtt.NO_DELAY is not the tuple this script read at import")
    for module in modules:
        module.NO_DELAY = options
    try:
        yield sorted(module.__name__ for module in modules)
    finally:
        for module in modules:
            module.NO_DELAY = SHIPPED_OPTIONS


def _tcp_nodelay(options: SocketOptions) -> str:
    values = [str(value) for level, name, value in options if (level, name) == NODELAY_OPTION]
    return values[-1] if values else "unset"


def _broker_nodelay(broker: MosquittoBroker) -> str:
    """`set_tcp_nodelay` as the broker's config file has it (mosquitto's default is false)."""
    try:
        for line in (broker._dir / "mosquitto.conf").read_text().splitlines():
            if line.split()[:1] == ["set_tcp_nodelay"]:
                return line.strip()
    except OSError:
        return "set_tcp_nodelay unknown"
    return "set_tcp_nodelay false (default)"


def site_config(
    broker_url: str, workdir: Path, *, curtail_s: float, resume_s: float, tick_hz: float
) -> tuple[Config, Path]:
    """The example site with its own topic root, free loopback ports, short ramps, a private journal."""
    data = tomllib.loads(EXAMPLE.read_text())
    data["site"]["site_id"] = f"bench-{secrets.token_hex(4)}"
    data["mqtt"]["url"] = broker_url
    data["meter"]["host"] = HOST
    data["meter"]["port"] = free_port(HOST)
    for pdu in data["pdus"]:
        pdu["host"] = HOST
        pdu["port"] = free_port(HOST)
    data["metrics"]["host"] = HOST
    data["metrics"]["port"] = free_port(HOST)
    data["journal"]["path"] = str(workdir / "journal.sqlite")
    data["simulator"].update(curtail_s=curtail_s, resume_s=resume_s, tick_hz=tick_hz)
    # Compressed time like the ramps: anti-flapping holds and the restore stagger in fractions of a
    # second, and a ramp that rounds a few seconds apart do not exhaust (this measures events, not the
    # restore policy).
    data["control"].update(
        min_on_s=0.5, min_off_s=0.5, restore_stagger_s=0.5, restore_ramp_kw_per_min=100_000
    )
    config = parse_config(data)
    path = workdir / "site.toml"
    path.write_text(tomli_w.dumps(data))
    return config, path


@dataclass
class Observer:
    """The aggregator's view: every message on its subscriptions, with the receipt time."""

    client: aiomqtt.Client
    topics: Topics
    received: list[tuple[int, str, bytes]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def pump(self) -> None:
        async for message in self.client.messages:
            stamp = time.perf_counter_ns()
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.received.append((stamp, message.topic.value, payload))
            self.changed.set()

    async def wait_for(
        self, match: Callable[[str, bytes], bool], timeout_s: float, since: int = 0
    ) -> tuple[int, str, bytes]:
        """The first message from index `since` on that matches: (receipt ns, topic, payload)."""
        seen = since
        async with asyncio.timeout(timeout_s):
            while True:
                for stamp, topic, payload in self.received[seen:]:
                    if match(topic, payload):
                        return stamp, topic, payload
                seen = len(self.received)
                self.changed.clear()
                await self.changed.wait()

    async def ack(self, event_id: str, since: int, timeout_s: float) -> tuple[int, dict]:
        stamp, _, payload = await self.wait_for(
            lambda t, p: t == self.topics.grid_event_ack and json.loads(p).get("id") == event_id,
            timeout_s,
            since,
        )
        return stamp, json.loads(payload)


async def until(predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float) -> int:
    """Poll the simulated world until `predicate` holds; perf_counter_ns when it was first seen true."""
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(poll_s)
    return time.perf_counter_ns()


async def broker_round_trip(
    host: str, port: int, messages: int, warmup: int, socket_options: SocketOptions
) -> list[float]:
    """Milliseconds from publish start to receipt, one 64-byte QoS 1 message at a time."""
    topic = f"bench/rtt/{secrets.token_hex(4)}"
    samples: list[float] = []
    async with (
        aiomqtt.Client(
            host, port, identifier=f"bench-rx-{secrets.token_hex(3)}", socket_options=socket_options
        ) as rx,
        aiomqtt.Client(
            host, port, identifier=f"bench-tx-{secrets.token_hex(3)}", socket_options=socket_options
        ) as tx,
    ):
        await rx.subscribe(topic, qos=1)
        arrivals: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()

        async def pump() -> None:
            async for message in rx.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                arrivals.put_nowait((time.perf_counter_ns(), payload))

        pumping = asyncio.create_task(pump())
        try:
            for index in range(warmup + messages):
                payload = f"rtt {index:08d}".ljust(64).encode()
                started = time.perf_counter_ns()
                await tx.publish(topic, payload, qos=1, timeout=5)
                stamp, got = await asyncio.wait_for(arrivals.get(), 5)
                if got != payload:
                    raise RuntimeError(f"round trip out of order: sent {payload!r}, got {got!r}")
                if index >= warmup:
                    samples.append((stamp - started) / NS_PER_MS)
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
    return samples


@dataclass
class Rounds:
    ack: list[float] = field(default_factory=list)
    command: list[float] = field(default_factory=list)
    at_limit: list[float] = field(default_factory=list)
    restore: list[float] = field(default_factory=list)
    shed_groups: list[int] = field(default_factory=list)


async def one_round(
    index: int, site: SimulatedSite, observer: Observer, limit_kw: float, args: argparse.Namespace
) -> tuple[float, float, float, float, int]:
    topics = observer.topics
    mining_rated_kw = sum(g.rated_kw for g in site.groups.values())
    if site.site_power_kw() <= limit_kw:
        raise RuntimeError(f"round {index}: site already at {site.site_power_kw():.0f} kW <= limit")
    event_id = f"bench-{index:03d}-{secrets.token_hex(3)}"
    poll_s = args.poll_ms / 1000.0

    def curtail_set(topic: str, payload: bytes) -> bool:
        return topic.endswith("/set") and "/mining/" in topic and json.loads(payload).get("mode") == "curtail"

    since = len(observer.received)
    started = time.perf_counter_ns()
    await observer.client.publish(
        topics.grid_event,
        encode(GridEvent(id=event_id, kind="limit", kw=limit_kw, program="ERS-10", source="bench")),
        qos=1,
        timeout=5,
    )
    (ack_ns, ack), (cmd_ns, _, _), limit_ns = await asyncio.gather(
        observer.ack(event_id, since, timeout_s=5),
        observer.wait_for(curtail_set, 5, since),
        until(lambda: site.site_power_kw() <= limit_kw, args.curtail_s + 5, "site at the limit", poll_s),
    )
    if ack != {"v": 1, "id": event_id, "accepted": True, "reason": "accepted"}:
        raise RuntimeError(f"round {index}: limit not accepted: {ack}")
    shed = sum(1 for g in site.groups.values() if g.commanded == "curtail")

    since = len(observer.received)
    cancel_started = time.perf_counter_ns()
    await observer.client.publish(
        topics.grid_event, encode(GridEvent(id=event_id, kind="cancel", source="bench")), qos=1, timeout=5
    )
    _, cancel_ack = await observer.ack(event_id, since, timeout_s=5)
    if cancel_ack.get("accepted") is not True:
        raise RuntimeError(f"round {index}: cancel not accepted: {cancel_ack}")
    restored_ns = await until(
        lambda: site.mining_power_kw() >= 0.98 * mining_rated_kw,
        args.resume_s + 15,  # restores are staggered: about one group per control period here
        "mining load back",
        poll_s,
    )
    # Not measured: let every ramp settle so each round starts from the same state.
    await until(
        lambda: all(g.mode == "run" for g in site.groups.values()), args.resume_s + 5, "ramps settled", poll_s
    )
    return (
        (ack_ns - started) / NS_PER_MS,
        (cmd_ns - started) / NS_PER_MS,
        (limit_ns - started) / NS_PER_MS,
        (restored_ns - cancel_started) / NS_PER_MS,
        shed,
    )


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no daemon log)"


async def measure(args: argparse.Namespace, broker: MosquittoBroker, workdir: Path, setup: Setup) -> dict:
    out: dict = {}
    out["rtt_quiet"] = await broker_round_trip(
        broker.host, broker.port, args.rtt_messages, args.rtt_warmup, setup.socket_options
    )

    config, path = site_config(
        broker.url, workdir, curtail_s=args.curtail_s, resume_s=args.resume_s, tick_hz=args.tick_hz
    )
    topics = Topics(config.topic_root)
    site = simulated_site(config)
    site_task = asyncio.create_task(site.run(), name="simulated-site")
    daemon: asyncio.subprocess.Process | None = None
    log_path = workdir / "mulletd.log"
    try:
        await asyncio.wait_for(site.started.wait(), timeout=15)
        with log_path.open("wb") as log_file:
            daemon = await asyncio.create_subprocess_exec(
                *setup.daemon,
                "run",
                "--config",
                str(path),
                "--log-level",
                args.daemon_log_level,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=f"bench-agg-{secrets.token_hex(3)}",
            socket_options=setup.socket_options,
        ) as client:
            for topic in (
                topics.grid_event_ack,
                f"{config.topic_root}/mining/+/set",
                topics.daemon_online,
                topics.daemon_plan,
            ):
                await client.subscribe(topic, qos=1)
            observer = Observer(client, topics)
            pump = asyncio.create_task(observer.pump(), name="observer")
            try:
                await observer.wait_for(lambda t, p: t == topics.daemon_online and p == b"1", 20)
                await observer.wait_for(lambda t, p: t == topics.daemon_plan, 20)
                mining_rated_kw = sum(g.rated_kw for g in config.groups)
                await until(
                    lambda: site.mining_power_kw() >= 0.99 * mining_rated_kw, 15, "full mining load", 0.01
                )
                out["rtt_loaded"] = await broker_round_trip(
                    broker.host, broker.port, args.rtt_messages, args.rtt_warmup, setup.socket_options
                )
                ai_allowance_kw = sum(t.reserved_kw + t.headroom_kw for t in config.tenants)
                limit_kw = (
                    config.site.safety_margin_kw
                    + config.site.base_load_kw
                    + ai_allowance_kw
                    + mining_rated_kw * 2.0 / 3.0
                )
                out["limit_kw"] = limit_kw
                out["mining_rated_kw"] = mining_rated_kw
                out["groups"] = len(config.groups)
                rounds = Rounds()
                for index in range(args.rounds):
                    ack_ms, cmd_ms, limit_ms, restore_ms, shed = await one_round(
                        index, site, observer, limit_kw, args
                    )
                    rounds.ack.append(ack_ms)
                    rounds.command.append(cmd_ms)
                    rounds.at_limit.append(limit_ms)
                    rounds.restore.append(restore_ms)
                    rounds.shed_groups.append(shed)
                out["rounds"] = rounds

                # Clean stop: SIGTERM -> exit 0 and an explicit offline.
                since = len(observer.received)
                daemon.send_signal(signal.SIGTERM)
                out["daemon_rc"] = await asyncio.wait_for(daemon.wait(), 10)
                await observer.wait_for(lambda t, p: t == topics.daemon_online and p == b"0", 5, since=since)
            finally:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
    except BaseException:
        print("daemon log (tail):\n" + _log_tail(log_path), file=sys.stderr)
        raise
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.kill()
            await asyncio.wait_for(daemon.wait(), 10)
        site_task.cancel()
        await asyncio.gather(site_task, return_exceptions=True)
    return out


def _fs_type(path: Path) -> str:
    """The filesystem the journal is on (its fsync is in path (a)), from /proc/mounts."""
    try:
        best, fstype = "", "unknown"
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mount, kind, *_ = line.split()
            if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, fstype = mount, kind
        return f"{fstype} ({best})"
    except OSError:
        return "unknown"


def _mosquitto_version(executable: str) -> str:
    try:
        text = subprocess.run([executable, "-h"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "mosquitto"
    return text.splitlines()[0].strip() if text else "mosquitto"


async def run_setup(args: argparse.Namespace, executable: str, setup: Setup) -> dict:
    """One setup from scratch: its own broker, simulated site and daemon."""
    broker = setup.broker(executable, host=HOST)
    started_s = time.monotonic()
    with project_socket_options(setup.socket_options) as patched:
        try:
            await broker.start()
            broker_nodelay = _broker_nodelay(broker)
            with tempfile.TemporaryDirectory(prefix="mullet-bench-", dir=args.journal_dir) as tmp:
                workdir = Path(tmp)
                if setup.name == args.setups[0]:
                    print(
                        f"broker:   {_mosquitto_version(executable)} on {broker.host} (free port per setup);"
                        f" journal on {_fs_type(workdir)}; daemon log level {args.daemon_log_level}"
                    )
                async with asyncio.timeout(args.deadline_s):
                    out = await measure(args, broker, workdir, setup)
        finally:
            await broker.stop()
    nodelay = _tcp_nodelay(setup.socket_options)
    how = f"NO_DELAY patched in {', '.join(patched)} and in the daemon" if patched else "as shipped"
    out["setup_note"] = f"mosquitto {broker_nodelay}; every client TCP_NODELAY {nodelay} ({how})"
    out["elapsed_s"] = time.monotonic() - started_s
    return out


async def amain(args: argparse.Namespace) -> int:
    executable = find_mosquitto()
    if executable is None:
        print("mosquitto not found (tried PATH and /usr/sbin); this benchmark needs it", file=sys.stderr)
        return 2
    command = reproduce_command(
        "event_latency.py",
        [
            ("--setups", ",".join(args.setups)),
            ("--rounds", args.rounds),
            ("--rtt-messages", args.rtt_messages),
            ("--curtail-s", args.curtail_s),
            ("--resume-s", args.resume_s),
            ("--tick-hz", args.tick_hz),
            ("--poll-ms", args.poll_ms),
            ("--daemon-log-level", args.daemon_log_level),
            *([("--journal-dir", args.journal_dir)] if args.journal_dir else []),
        ],
    )
    print_header(
        "grid event -> ack / setpoint / site at limit, mulletd subprocess + mosquitto + simulated site",
        "latency from just before the aggregator's publish; baseline = one mosquitto hop, same run",
        command,
    )
    results: dict[str, dict] = {}
    for setup in args.setups:
        results[setup] = await run_setup(args, executable, SETUPS[setup])

    first = results[args.setups[0]]
    sheds = [n for out in results.values() for n in out["rounds"].shed_groups]
    print(
        f"site:     {first['groups']} mining groups ({first['mining_rated_kw']:.0f} kW rated), limit"
        f" {first['limit_kw']:.0f} kW sheds {min(sheds)}-{max(sheds)} groups;"
        f" ramps curtail {args.curtail_s:g} s / resume {args.resume_s:g} s; physics {args.tick_hz:g} Hz,"
        f" ground truth polled every {args.poll_ms:g} ms"
    )
    for setup, out in results.items():
        print(f"{setup + ':':9} {out['setup_note']}")
    print()

    def series(out: dict) -> list[tuple[str, list[float]]]:
        rounds: Rounds = out["rounds"]
        return [
            ("baseline: mosquitto hop, quiet", out["rtt_quiet"]),
            ("baseline: mosquitto hop, loaded", out["rtt_loaded"]),
            ("(a) publish -> grid/event/ack", rounds.ack),
            ("(b) publish -> first curtail set", rounds.command),
            ("(c) publish -> site <= limit", rounds.at_limit),
            ("(d) cancel -> mining >= 98% rated", rounds.restore),
        ]

    headers = ["path", "n"]
    for setup in args.setups:
        headers += [f"{setup} median ms", f"{setup} p99 ms"]
    both = len(args.setups) == 2
    if both:
        headers.append("median nagle/shipped")
    rows = []
    columns = {setup: series(out) for setup, out in results.items()}
    for index, (name, samples) in enumerate(columns[args.setups[0]]):
        row: list[object] = [name, len(samples)]
        medians = {}
        for setup in args.setups:
            median, p99, _max = summary(columns[setup][index][1])
            row += [median, p99]
            medians[setup] = median
        if both:
            row.append(f"{medians['nagle'] / medians['shipped']:.1f}x")
        rows.append(row)
    print_table(headers, rows)
    print()

    for setup, out in results.items():
        rounds = out["rounds"]
        hop_ms = summary(out["rtt_loaded"])[0]
        ack_ms = summary(rounds.ack)[0]
        cmd_ms = summary(rounds.command)[0]
        print(
            f"{setup}: (b) median = {cmd_ms / hop_ms:.0f}x the loaded hop; (b) crosses the broker twice, so"
            f" daemon + client stacks ~ (b) - 2 x hop = {cmd_ms - 2 * hop_ms:.2f} ms;"
            f" (a) - 2 x hop = {ack_ms - 2 * hop_ms:.2f} ms"
        )
    n_rounds = len(first["rounds"].ack)
    print(
        f"baselines: {p99_note(len(first['rtt_loaded']))}; rounds: {p99_note(n_rounds)}."
        " (c) and (d) are dominated by the simulated ramps."
    )
    codes = {setup: out["daemon_rc"] for setup, out in results.items()}
    elapsed = {setup: round(out["elapsed_s"], 1) for setup, out in results.items()}
    print(f"daemon exit status after SIGTERM: {codes}; seconds per setup: {elapsed}")
    return 0 if all(rc == 0 for rc in codes.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help="comma-separated, in run order: shipped (as the project ships: TCP_NODELAY on),"
        " nagle (the old behaviour: TCP_NODELAY off on mosquitto and every client)",
    )
    parser.add_argument("--rounds", type=int, default=10, help="limit/cancel cycles per setup (1-100)")
    parser.add_argument("--rtt-messages", type=int, default=500, help="baseline messages per phase")
    parser.add_argument("--rtt-warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--curtail-s", type=float, default=1.0, help="simulated firmware sleep ramp")
    parser.add_argument("--resume-s", type=float, default=2.0, help="simulated firmware resume ramp")
    parser.add_argument("--tick-hz", type=float, default=100.0, help="simulator physics rate (max 100)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="ground-truth poll period")
    parser.add_argument("--daemon-log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--journal-dir", default=None, help="where the temp dir (journal) goes")
    parser.add_argument("--deadline-s", type=float, default=300.0, help="give up after this long")
    args = parser.parse_args(argv)
    args.setups = [x.strip() for x in args.setups.split(",") if x.strip()]
    if not args.setups or len(set(args.setups)) != len(args.setups) or not set(args.setups) <= set(SETUPS):
        parser.error(f"--setups: one or both of {', '.join(SETUPS)}, no repeats")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds: 1 to 100")
    if not 10 <= args.rtt_messages <= 10_000:
        parser.error("--rtt-messages: 10 to 10000")
    if not (0 < args.curtail_s <= 30 and 0 < args.resume_s <= 30):
        parser.error("--curtail-s / --resume-s: (0, 30]")
    if not 0 < args.tick_hz <= 100:
        parser.error("--tick-hz: (0, 100]")
    if not 0.5 <= args.poll_ms <= 100:
        parser.error("--poll-ms: 0.5 to 100")
    if not 10 <= args.deadline_s <= 1800:
        parser.error("--deadline-s: 10 to 1800")
    if not MULLETD.exists():
        parser.error(f"{MULLETD} not found: run with the project's venv (.venv/bin/python)")
    # The simulated site logs through structlog in this process: keep it to warnings.
    configure_logging("warning", json_output=False)
    try:
        return asyncio.run(amain(args))
    except TimeoutError as exc:
        reason = str(exc) or "--deadline-s or a bounded wait ran out"
        print(f"event_latency: gave up: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
