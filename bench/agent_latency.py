"""ASIC agent latency: a group `set` to the agent's `state` confirming it, for N fake LuxOS miners.

Three processes besides this one, as on a site: mosquitto, the fake miners (`python -m
mullet.simulators.luxos`, every miner on its own loopback port, answering through the real LuxOS
JSON API) and the agent (`mulletd agent asic`, driving them through pyasic). This script plays the
daemon: it publishes `mining/<group>/set`, alternating `curtail` and `run`, and times

- ack:       publish -> the first `state` with `seq_applied` = the setpoint's `seq`;
- confirmed: publish -> the first `state` with that `seq_applied`, `mode` = the commanded mode and
             no miner unconfirmed, i.e. every miner's own power reading shows the command done.

By default the fake firmware changes power at once (`--curtail-s 0 --resume-s 0`), so `confirmed`
is the agent's own cost: one command and one read-back per miner (each a TCP connection, as pyasic
makes them), all miners at once, and the state message. Real firmware adds its seconds of ramp.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import p99_note, print_header, print_table, reproduce_command, summary

from mullet.drivers.protocol import GroupSetpoint, Topics, encode
from mullet.simulators.broker import MosquittoBroker, find_mosquitto

GROUP = "bench-rack"


def run(args: argparse.Namespace) -> int:
    """Start mosquitto, the fake miners and the agent (plain processes), then time setpoints."""
    executable = find_mosquitto()
    if executable is None:
        print("mosquitto not found: install it (apt-get install mosquitto)", file=sys.stderr)
        return 2
    broker = MosquittoBroker(executable)
    broker.start_blocking()
    workdir = Path(tempfile.mkdtemp(prefix="mullet-agent-bench-"))
    fleet_cmd = [sys.executable, "-m", "mullet.simulators.luxos", "--count", str(args.miners)]
    fleet_cmd += ["--curtail-s", str(args.curtail_s), "--resume-s", str(args.resume_s)]
    fleet_cmd += ["--response-delay-s", str(args.response_delay_s)]
    fleet = subprocess.Popen(fleet_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    agent: subprocess.Popen[bytes] | None = None
    try:
        assert fleet.stdout is not None
        ports = json.loads(fleet.stdout.readline())["ports"]
        site_id = f"bench-{secrets.token_hex(3)}"
        config = {
            "mqtt": {"url": broker.url},
            "agent": {
                "site_id": site_id,
                "group_id": GROUP,
                "state_path": str(workdir / "agent.json"),
                "telemetry_period_s": 1.0,
                "poll_period_s": 2.0,
                "confirm_poll_s": args.confirm_poll_s,
                "command_timeout_s": 3.0,
                "confirm_timeout_s": 10.0,
            },
            "miners": [
                {"name": f"m{i:03d}", "host": "127.0.0.1", "port": port, "rated_w": 3500.0}
                for i, port in enumerate(ports)
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
        return asyncio.run(_measure(args, broker, Topics(f"mullet/{site_id}")))
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        if fleet.stdin is not None:
            fleet.stdin.close()
        fleet.wait(10)
        broker.stop_blocking()
        broker.close()


async def _measure(args: argparse.Namespace, broker: MosquittoBroker, topics: Topics) -> int:
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

    rows = []
    for mode, (acks, dones) in results.items():
        a50, a99, _ = summary(acks)
        d50, d99, dmax = summary(dones)
        rows.append([mode, len(dones), a50, a99, d50, d99, dmax])
    everything = results["curtail"][1] + results["run"][1]
    d50, d99, dmax = summary(everything)
    rows.append(["both", len(everything), "", "", d50, d99, dmax])
    print_table(
        ["setpoint", "n", "ack p50 ms", "ack p99 ms", "confirmed p50 ms", "confirmed p99 ms", "max ms"], rows
    )
    print()
    print(p99_note(len(results["curtail"][1])) + " per mode; " + p99_note(len(everything)) + " for both")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--miners", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=100, help="setpoints timed (half curtail, half run)")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--curtail-s", type=float, default=0.0, help="fake firmware ramp down (0: at once)")
    parser.add_argument("--resume-s", type=float, default=0.0, help="fake firmware ramp up (0: at once)")
    parser.add_argument("--response-delay-s", type=float, default=0.0, help="fake API answer delay")
    parser.add_argument(
        "--confirm-poll-s", type=float, default=0.05, help="agent re-read period while pending"
    )
    args = parser.parse_args()
    options = [
        ("--miners", args.miners),
        ("--rounds", args.rounds),
        ("--warmup", args.warmup),
        ("--curtail-s", args.curtail_s),
        ("--resume-s", args.resume_s),
        ("--response-delay-s", args.response_delay_s),
        ("--confirm-poll-s", args.confirm_poll_s),
    ]
    print_header(
        "ASIC agent: set -> confirmed state",
        f"{args.miners} fake LuxOS miners (separate process) driven by one `mulletd agent asic` through"
        " pyasic, over mosquitto on loopback",
        reproduce_command("agent_latency.py", options),
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
