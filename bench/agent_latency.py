"""ASIC agent latency, pyasic and asic-rs backends side by side, against fake LuxOS miners.

Part 1, per call (`--calls` rounds): one fake miner in its own process (port 4028 of its own loopback
address, since asic-rs takes no port), driven from this process by each backend's miner client
(`drivers/miners.py`, `drivers/miners_asic_rs.py`) in turn: `sleep`, `wake`, `read`. The same-run
reference is the least any client must do per call: one bare LuxOS API exchange (connect, send
`{"command": "power"}`, read the reply to the close) to the same miner, timed in every round between
the backends' calls. Each call's median and p99 are printed in ms and as a ratio to the reference's
median and p99 (absolute times move with the machine; the ratio shows what the library adds).

Part 2, the agent (`--agent-backends`): mosquitto, the fake miners (`python -m
mullet.simulators.luxos`, each on port 4028 of its own loopback address, answering through the real
LuxOS JSON API) and the agent (`mulletd agent asic`), three processes besides this one, as on a site.
This script plays the daemon: it publishes `mining/<group>/set`, alternating `curtail` and `run`, and
times

- ack:       publish -> the first `state` with `seq_applied` = the setpoint's `seq`;
- confirmed: publish -> the first `state` with that `seq_applied`, `mode` = the commanded mode and
             no miner unconfirmed, i.e. every miner's own power reading shows the command done.

By default the fake firmware changes power at once (`--curtail-s 0 --resume-s 0`), so `confirmed`
is the agent's own cost: one command and one read-back per miner, all miners at once, and the state
message. Real firmware adds its seconds of ramp.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import p99_note, print_header, print_table, reproduce_command, summary

from mullet.drivers.miner_client import MinerClient, MinerEndpoint
from mullet.drivers.miners import PyasicMinerClient
from mullet.drivers.miners_asic_rs import STANDARD_PORT, AsicRsMinerClient
from mullet.drivers.protocol import GroupSetpoint, Topics, encode
from mullet.simulators.broker import MosquittoBroker, find_mosquitto

GROUP = "bench-rack"
BACKENDS = ("pyasic", "asic-rs")


class Fleet:
    """`python -m mullet.simulators.luxos` in its own process, each miner on port 4028 of its own
    loopback address (a random 127.x.y.1 base, so two runs at once do not meet)."""

    def __init__(self, args: argparse.Namespace, count: int) -> None:
        base = ipaddress.IPv4Address(f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.1")
        cmd = [sys.executable, "-m", "mullet.simulators.luxos", "--count", str(count)]
        cmd += ["--curtail-s", str(args.curtail_s), "--resume-s", str(args.resume_s)]
        cmd += ["--response-delay-s", str(args.response_delay_s), "--base-address", str(base)]
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.close()
            raise SystemExit(f"the fake miners did not start (loopback addresses from {base}, port 4028)")
        self.hosts: list[str] = json.loads(line)["hosts"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(10)


# Part 1: per call


async def bare_exchange(host: str) -> None:
    """The reference: one LuxOS API request and its whole reply, nothing else."""
    reader, writer = await asyncio.open_connection(host, STANDARD_PORT)
    writer.write(b'{"command": "power"}')
    await writer.drain()
    reply = await reader.read()  # the miner closes after its one reply
    writer.close()
    await writer.wait_closed()
    if b'"Watts"' not in reply:
        raise RuntimeError(f"unexpected reply {reply[:80]!r}")


async def measure_calls(args: argparse.Namespace, host: str) -> dict[str, list[float]]:
    """ms per call, keyed "<backend> <call>" and "reference"; rounds interleave every backend."""
    clients: dict[str, MinerClient] = {
        "pyasic": PyasicMinerClient(MinerEndpoint("bench", host, STANDARD_PORT, "luxos"), timeout_s=5.0),
        "asic-rs": AsicRsMinerClient(MinerEndpoint("bench", host), timeout_s=5.0),
    }
    samples: dict[str, list[float]] = {"reference": []}

    async def timed(key: str, call: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool]) -> None:
        started = time.perf_counter()
        result = await call()
        elapsed_ms = (time.perf_counter() - started) * 1000
        if not ok(result):
            raise RuntimeError(f"{key} failed: {result!r}")
        samples.setdefault(key, []).append(elapsed_ms)

    for client in clients.values():  # first contact (asic-rs: identification), not timed
        if await client.read() is None:
            raise SystemExit(f"{type(client).__name__}: no reading from the fake miner at {host}")
    for i in range(args.warmup + args.calls):
        for name, client in clients.items():
            await timed(f"{name} sleep", client.sleep, bool)
            await timed(f"{name} read", client.read, lambda r: r is not None and r.power_w <= 100)
            await timed("reference", lambda: bare_exchange(host), lambda _: True)
            await timed(f"{name} wake", client.wake, bool)
            await timed(f"{name} read", client.read, lambda r: r is not None and r.power_w > 100)
        if i < args.warmup:
            samples = {"reference": []}
    return samples


def print_calls(samples: dict[str, list[float]]) -> None:
    ref50, ref99, _ = summary(samples["reference"])
    rows: list[list[object]] = [
        ["reference", "bare exchange", len(samples["reference"]), ref50, ref99, 1.0, 1.0]
    ]
    for call in ("sleep", "wake", "read"):
        for backend in BACKENDS:
            got = samples[f"{backend} {call}"]
            p50, p99, _ = summary(got)
            rows.append([backend, call, len(got), p50, p99, p50 / ref50, p99 / ref99])
    print_table(["backend", "call", "n", "p50 ms", "p99 ms", "p50 / ref p50", "p99 / ref p99"], rows)
    print()
    print(
        "reference: one bare LuxOS API exchange (`power`) to the same miner, same run, timed every"
        " round between the backends' calls; " + p99_note(len(samples["reference"]))
    )
    for backend in BACKENDS:
        p50s = [summary(samples[f"{backend} {c}"])[0] for c in ("sleep", "wake", "read")]
        print(f"{backend}: sleep + wake + read medians {sum(p50s):.2f} ms")


# Part 2: the agent


def run_agent(args: argparse.Namespace, backend: str) -> list[list[object]]:
    """Start mosquitto, the fake miners and the agent (plain processes), then time setpoints."""
    executable = find_mosquitto()
    if executable is None:
        raise SystemExit("mosquitto not found: install it (apt-get install mosquitto)")
    broker = MosquittoBroker(executable)
    broker.start_blocking()
    workdir = Path(tempfile.mkdtemp(prefix="mullet-agent-bench-"))
    fleet: Fleet | None = None
    agent: subprocess.Popen[bytes] | None = None
    try:
        fleet = Fleet(args, args.miners)
        site_id = f"bench-{secrets.token_hex(3)}"
        config = {
            "mqtt": {"url": broker.url},
            "agent": {
                "site_id": site_id,
                "group_id": GROUP,
                "state_path": str(workdir / "agent.json"),
                "backend": backend,
                "telemetry_period_s": 1.0,
                "poll_period_s": 2.0,
                "confirm_poll_s": args.confirm_poll_s,
                "command_timeout_s": 3.0,
                "confirm_timeout_s": 10.0,
            },
            "miners": [
                {"name": f"m{i:03d}", "host": host, "rated_w": 3500.0} for i, host in enumerate(fleet.hosts)
            ],
        }
        config_path = workdir / "agent.toml"
        config_path.write_text(tomli_w.dumps(config))
        mulletd = Path(sys.executable).with_name("mulletd")
        with (workdir / "agent.log").open("wb") as log:
            agent = subprocess.Popen(
                [str(mulletd), "agent", "asic", "--config", str(config_path), "--log-level", "warning"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return asyncio.run(_measure(args, broker, Topics(f"mullet/{site_id}"), backend))
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        if fleet is not None:
            fleet.close()
        broker.stop_blocking()
        broker.close()


async def _measure(
    args: argparse.Namespace, broker: MosquittoBroker, topics: Topics, backend: str
) -> list[list[object]]:
    states: list[tuple[float, dict]] = []
    changed = asyncio.Event()
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-daemon") as client:
        await client.subscribe(topics.group_state(GROUP), qos=1)

        async def pump() -> None:
            async for message in client.messages:
                if isinstance(message.payload, bytes) and message.payload:
                    states.append((time.perf_counter(), json.loads(message.payload)))
                    changed.set()

        pumping = asyncio.create_task(pump())

        async def first(match, since: int, timeout_s: float) -> tuple[float, dict]:
            seen = since
            async with asyncio.timeout(timeout_s):
                while True:
                    for at, state in states[seen:]:
                        if match(state):
                            return at, state
                    seen = len(states)
                    changed.clear()
                    await changed.wait()

        await client.publish(topics.daemon_online, b"1", qos=1, retain=True)
        # Ready: every miner read once.
        await first(lambda s: s["miners_online"] == args.miners, 0, 60)
        results: dict[str, tuple[list[float], list[float]]] = {"curtail": ([], []), "run": ([], [])}
        for i in range(args.warmup + args.rounds):
            mode = "curtail" if i % 2 == 0 else "run"
            seq = 1000 + i
            since = len(states)
            payload = encode(GroupSetpoint(seq=seq, mode=mode, ts=time.time()))
            sent = time.perf_counter()
            await client.publish(topics.group_set(GROUP), payload, qos=1, retain=True)
            ack_at, _ = await first(lambda s, q=seq: s["seq_applied"] == q, since, 30)
            done_at, _ = await first(
                lambda s, q=seq, m=mode: (
                    s["seq_applied"] == q and s["mode"] == m and not s["miners_unconfirmed"]
                ),
                since,
                60,
            )
            if i >= args.warmup:
                results[mode][0].append((ack_at - sent) * 1000)
                results[mode][1].append((done_at - sent) * 1000)
        pumping.cancel()
        await client.publish(topics.group_set(GROUP), b"", qos=1, retain=True)
        await client.publish(topics.daemon_online, b"", qos=1, retain=True)

    rows: list[list[object]] = []
    for mode, (acks, dones) in results.items():
        a50, a99, _ = summary(acks)
        d50, d99, dmax = summary(dones)
        rows.append([backend, mode, len(dones), a50, a99, d50, d99, dmax])
    everything = results["curtail"][1] + results["run"][1]
    d50, d99, dmax = summary(everything)
    rows.append([backend, "both", len(everything), "", "", d50, d99, dmax])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200, help="part 1: timed rounds per backend (0: skip)")
    parser.add_argument(
        "--agent-backends", nargs="*", choices=BACKENDS, default=list(BACKENDS), help="part 2: agents to time"
    )
    parser.add_argument("--miners", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=100, help="part 2: setpoints timed (half curtail, half run)"
    )
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--curtail-s", type=float, default=0.0, help="fake firmware ramp down (0: at once)")
    parser.add_argument("--resume-s", type=float, default=0.0, help="fake firmware ramp up (0: at once)")
    parser.add_argument("--response-delay-s", type=float, default=0.0, help="fake API answer delay")
    parser.add_argument(
        "--confirm-poll-s", type=float, default=0.05, help="agent re-read period while pending"
    )
    args = parser.parse_args(argv)
    options = [
        ("--calls", args.calls),
        ("--agent-backends", args.agent_backends),
        ("--miners", args.miners),
        ("--rounds", args.rounds),
        ("--warmup", args.warmup),
        ("--curtail-s", args.curtail_s),
        ("--resume-s", args.resume_s),
        ("--response-delay-s", args.response_delay_s),
        ("--confirm-poll-s", args.confirm_poll_s),
    ]
    print_header(
        "ASIC agent: pyasic and asic-rs backends, per call and set -> confirmed state",
        "fake LuxOS miners (separate process, port 4028 of their own loopback addresses) driven through"
        " pyasic 0.79 and asic-rs (pyasic-rs 0.8.6); the agent (`mulletd agent asic`) over mosquitto",
        reproduce_command("agent_latency.py", options),
    )
    if args.calls > 0:
        print(f"-- per call: one miner, {args.calls} rounds per backend after {args.warmup} warm-up --")
        fleet = Fleet(args, 1)
        try:
            print_calls(asyncio.run(measure_calls(args, fleet.hosts[0])))
        finally:
            fleet.close()
        print()
    if args.agent_backends:
        print(f"-- the agent: {args.miners} miners, {args.rounds} setpoints per backend --")
        rows = [row for backend in args.agent_backends for row in run_agent(args, backend)]
        print_table(
            [
                "backend",
                "setpoint",
                "n",
                "ack p50 ms",
                "ack p99 ms",
                "confirmed p50 ms",
                "confirmed p99 ms",
                "max ms",
            ],
            rows,
        )
        print()
        print(p99_note(args.rounds // 2) + " per mode; " + p99_note(args.rounds) + " for both")
    return 0


if __name__ == "__main__":
    sys.exit(main())
