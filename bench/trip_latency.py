"""Under-frequency trip fan-out: FastPath -> a real mosquitto -> 600 controllers, and 50 PDU hard cuts.

Set-up: a mosquitto process on a free loopback port (MosquittoBroker: `set_tcp_nodelay true`);
600 "controllers" as 600 aiomqtt connections in a SEPARATE process (this script with --role
controllers), each subscribed to `<root>/mining/trip` at QoS 1 and stamping each trip's receipt with
time.monotonic_ns() (CLOCK_MONOTONIC is system-wide on Linux, so stamps compare across processes);
50 simulated coil PDUs (CoilPduSim, netio-coils) in two more processes (--role pdus, --pdu-procs).
In this process: the daemon's hot path without the rest of the daemon: the controller core's verdict on
each sample (SiteController.frequency, its trigger set to the bench's) and FastPath.fire of its order,
with the daemon's own drivers: publish_trip =
MqttLink.publish_now (QoS 1, TCP_NODELAY), pdus = a PduPool over the 50 PDUs, armed by a fake Plan
that puts all 600 groups at stage 1 with hard_cut (one outlet per PDU: groups 0..49 own outlet 1 of
pdu 0..49). Once all is set up it calls mulletd's freeze_heap() (gc.freeze), as mulletd does.

Each trip starts where mulletd's does: a MeterSim in its own process, a relay-grade meter that
refreshes its frequency register every cycle (METER_REFRESH_S), read over Modbus TCP by the daemon's
ModbusMeter at --trip-poll-hz (50). The grid steps 59.93 -> 59.84 Hz at a random phase of the poll
schedule and keeps moving (a new value at every refresh); the meter shows it at its next refresh and
the trigger fires on the second measurement below 59.85 Hz (confirm_samples = 2, pickup = one
refresh), as in mulletd. Measured from that confirming sample (stamped by the meter driver when the
read returned, before decoding):
  (1) daemon added latency = TripRecord.added_latency_s, timed inside FastPath.fire: the sample ->
      the trip PUBLISH written to the broker's socket and every armed PDU write handed to its socket
      (both happen before fire() returns). Also shown: -> PUBLISH written, -> last PDU write issued,
      -> the QoS 1 PUBACK back (an acknowledgement, not part of the daemon's cost).
      And, in the same run after each floor message, the same trip with its three samples fed
      straight to the hot path (the meter is still read at 50 Hz, its samples dropped): no
      read came back just before this sample, so the trip's first send()s meet colder caches. No
      site trips that way (its samples come off a socket) but the row shows that cost.
  (2) sample -> the trip received by the last of the 600 controllers (and by the first)
  (3) sample -> all 50 PDU writes acknowledged (PoolResult.done_s)
  (4) the grid crossing -> the probe controller, for every trip above, and for 30 more trips at each
      other --poll-hz rate (10 Hz). Its reference, same trips: the crossing -> the confirming
      measurement read back (the meter's refreshes and the poll schedule: what any reader waits).
Between trips the outlets are switched back on and the system is left quiet.

Broadcast floor, same run, same 600 controllers, interleaved with the trips: a persistent
`mosquitto_pub -l -q 1` fed one Trip JSON line per trip on stdin; write -> last controller's receipt.

Bare reference trip (BareTrip), same run, interleaved with the trips: the same 50 PDU cut frames and
the same trip PUBLISH written by plain send()s on fresh raw connections identical to the daemon's
(TCP_NODELAY; one to each PDU simulator, one MQTT session), then all 50 answers and the PUBACK awaited
in a selector. Absolute times move 3-4x between machines, so the verdicts are p99 ratios measured in
the same run: (1) against the bare writes (first write -> PUBLISH written), (2) against the floor,
(3) against the bare round trip (first write -> all 50 answers). The bare trip's broadcast also
gives (2) a second reference with the same PDU traffic beside it (the floor has none). (4) is a p99
ratio to its own reference, with the trigger's worst-case fire budget printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import secrets
import selectors
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mullet.policies.trigger import TriggerSettings
from _common import p99_note, print_header, print_table, reproduce_command, set_realtime, summary

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "site.example.toml"
HOST = "127.0.0.1"
SCRIPT = os.path.abspath(__file__)
NS_PER_MS = 1_000_000
FLOOR_SEQ_BASE = 1_000_000
BARE_SEQ_BASE = 2_000_000
# Targets (1)-(3), p99 ratios to same-run references. Measured 2026-12-03 on a loaded 2-core VM
# (docs/performance.md): (1) 1.79-1.97x, (3) 1.09-1.60x in three runs; (2) is issue 4's 1.5x of the floor.
MAX_ADDED_RATIO = 2.5
MAX_BROADCAST_RATIO = 1.5
MAX_ACK_RATIO = 2.0
MAX_CHAIN_RATIO = 1.5  # (4): the fan-out to the probe adds a few ms to a ~50 ms measurement wait
# Chain: the meter steps between these. 59.93 -> 59.84 Hz is 4.5 Hz/s at 50 Hz polling, under the
# trigger's 5 Hz/s rate-of-change plausibility limit, so the first dipped sample counts.
CHAIN_NORMAL_HZ = 59.93
CHAIN_DIP_HZ = 59.84
METER_REFRESH_S = 1 / 60  # a relay-grade meter: frequency recomputed every cycle


# --------------------------------------------------------------------------- controllers process


async def controllers_main(args: argparse.Namespace) -> None:
    import aiomqtt

    from mullet.daemon.logs import configure_logging
    from mullet.drivers.mqtt import NO_DELAY

    configure_logging("warning")
    n = args.controllers
    got: dict[int, list[int]] = {}  # seq -> [first_ns, last_ns, count]

    def emit(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def on_message(_paho: object, _userdata: object, message: object) -> None:
        # Stamped in paho's callback, as the bytes are parsed: aiomqtt's queue and the consuming
        # task are skipped (that hop is the same for Mullet's trips and the floor, but adds ms).
        stamp = time.monotonic_ns()
        seq = json.loads(message.payload)["seq"]  # type: ignore[attr-defined]
        entry = got.get(seq)
        if entry is None:
            got[seq] = entry = [stamp, stamp, 0]
        entry[1] = stamp
        entry[2] += 1
        if entry[2] == n:
            emit({"seq": seq, "first": entry[0], "last": entry[1], "n": n})

    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        clients: list[aiomqtt.Client] = []

        async def connect(i: int) -> None:
            client = aiomqtt.Client(
                args.host,
                args.port,
                identifier=f"ctl-{args.tag}-{i:04d}",
                socket_options=NO_DELAY,
                keepalive=60,
            )
            await stack.enter_async_context(client)
            client._client.on_message = on_message  # bypass aiomqtt's message queue (see above)
            await client.subscribe(args.topic, qos=1)
            clients.append(client)

        for lo in range(0, n, 50):
            await asyncio.wait_for(asyncio.gather(*(connect(i) for i in range(lo, min(n, lo + 50)))), 30)
        emit({"ready": len(clients), "startup_s": time.monotonic() - started})
        loop = asyncio.get_running_loop()
        # Run until stdin closes (the bench's signal to stop); then report incomplete seqs.
        await loop.run_in_executor(None, sys.stdin.read)
        for seq, (first, last, count) in got.items():
            if count < n:
                emit({"seq": seq, "first": first, "last": last, "n": count})
    emit({"bye": True})


# --------------------------------------------------------------------------- PDUs process


async def pdus_main(args: argparse.Namespace) -> None:
    from mullet.daemon.logs import configure_logging
    from mullet.simulators.pdu import make_pdu_sim

    configure_logging("warning")

    sims = [
        make_pdu_sim(f"pdu-{i:02d}", args.outlets, outlet_power_w=lambda _o: 1000.0, host=HOST, port=0)
        for i in range(args.pdus)
    ]
    await asyncio.gather(*(sim.start() for sim in sims))
    sys.stdout.write(json.dumps({"ports": [sim.port for sim in sims]}) + "\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    writes = sum(len(sim.switches) for sim in sims)
    await asyncio.gather(*(sim.stop() for sim in sims), return_exceptions=True)
    sys.stdout.write(json.dumps({"writes": writes}) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- meter process


async def meter_main(args: argparse.Namespace) -> None:
    """A MeterSim whose frequency register the bench steps with `dip` / `normal` lines on stdin."""
    from mullet.daemon.logs import configure_logging
    from mullet.simulators.meter import MeterSim

    configure_logging("warning")
    hz = [CHAIN_NORMAL_HZ]

    def grid_hz() -> float:
        # A real dip keeps moving: every refresh a new measurement (0.001 Hz apart).
        return hz[0] if hz[0] == CHAIN_NORMAL_HZ else hz[0] - 0.001 * (meter.refreshes % 10)

    meter = MeterSim(
        power_kw=lambda: 1000.0, frequency_hz=grid_hz, host=HOST, port=0, frequency_refresh_s=METER_REFRESH_S
    )
    await meter.start()
    sys.stdout.write(json.dumps({"port": meter.port}) + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        hz[0] = CHAIN_DIP_HZ if line.strip() == b"dip" else CHAIN_NORMAL_HZ
        sys.stdout.write(json.dumps({"changed_ns": time.monotonic_ns()}) + "\n")
        sys.stdout.flush()
    await meter.stop()


# --------------------------------------------------------------------------- bench process


# CPUs for everything but the daemon side, when --pin gives the daemon a core of its own.
OTHERS_CPUS: set[int] = set()


def pin_away(pid: int) -> None:
    if OTHERS_CPUS:
        os.sched_setaffinity(pid, OTHERS_CPUS)


async def spawn_role(role: str, extra: list[str]) -> asyncio.subprocess.Process:
    proc = await _spawn_role(role, extra)
    pin_away(proc.pid)
    return proc


async def _spawn_role(role: str, extra: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--role",
        role,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )


async def read_json(proc: asyncio.subprocess.Process, timeout_s: float) -> dict:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child {proc.pid} exited (rc {await proc.wait()})")
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj


async def stop_child(proc: asyncio.subprocess.Process | None) -> list[dict]:
    """Close stdin (the stop signal), collect remaining lines, bounded; kill if it does not exit."""
    if proc is None:
        return []
    lines: list[dict] = []
    with contextlib.suppress(Exception):
        assert proc.stdin is not None
        proc.stdin.close()
    try:
        async with asyncio.timeout(15):
            assert proc.stdout is not None
            async for raw in proc.stdout:
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(raw))
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
    return lines


class BareTrip:
    """The same-run reference for (1) and (3): the least any daemon must do for a trip, in plain
    Python on raw sockets. Fresh connections identical to the daemon's (TCP_NODELAY, one to each PDU
    simulator and one MQTT 3.1.1 session to the broker) carry the same bytes as a trip: each PDU's
    armed cut frame (the PduPool's own prepared request) and a QoS 1 PUBLISH of an `encode_trip`
    payload to the same topic, framed before the clock starts. `fire()` writes the 50 frames, then
    the PUBLISH (the daemon's order), and waits in a selector, blocking the loop, for every PDU's
    answer and the PUBACK."""

    def __init__(self, broker: tuple[str, int], client_id: str, pdus: list[tuple[int, bytes]]) -> None:
        self.mqtt = socket.create_connection(broker, timeout=5)
        self.mqtt.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ident = client_id.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(ident).to_bytes(2, "big") + ident  # keep-alive 0
        self.mqtt.sendall(b"\x10" + _remaining_length(len(body)) + body)
        connack = self.mqtt.recv(4)
        if connack[:1] != b"\x20" or connack[-1:] != b"\x00":
            raise RuntimeError(f"bare MQTT connection refused: {connack!r}")
        self.pdus: list[tuple[socket.socket, bytes]] = []
        for port, tail in pdus:
            sock = socket.create_connection((HOST, port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pdus.append((sock, tail))
        self.selector = selectors.DefaultSelector()
        for sock in [self.mqtt, *(sock for sock, _ in self.pdus)]:
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
        self.tid = 0

    def fire(self, topic: str, seq: int) -> tuple[float, float, float, float | None, float | None]:
        """The first write (monotonic s), then seconds from it: the last PDU write, the PUBLISH
        written, all PDUs answered, the PUBACK (None: no answer within 1 s). Frames are built before
        the clock starts."""
        from mullet.drivers.protocol import encode_trip

        self.tid = self.tid % 0xFFFF + 1
        tid = self.tid.to_bytes(2, "big")
        frames = [(sock, tid + tail) for sock, tail in self.pdus]
        mid = seq % 0xFFFF + 1
        body = len(topic).to_bytes(2, "big") + topic.encode() + mid.to_bytes(2, "big")
        body += encode_trip(seq, 1, time.time(), None)
        publish = b"\x32" + _remaining_length(len(body)) + body
        puback = b"\x40\x02" + mid.to_bytes(2, "big")
        mqtt, clock = self.mqtt, time.monotonic
        started_s = clock()
        for sock, frame in frames:
            sock.send(frame)
        pdus_s = clock()
        mqtt.send(publish)
        published_s = clock()
        buffers = {sock: b"" for sock, _ in self.pdus}
        acked_s = puback_s = None
        deadline_s = started_s + 1.0
        while (buffers or puback_s is None) and (left_s := deadline_s - clock()) > 0:
            for key, _ in self.selector.select(left_s):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(4096)
                if sock is mqtt:
                    if puback in data:
                        puback_s = clock()
                    continue
                buffer = buffers.get(sock)
                if buffer is None:
                    continue
                buffer += data
                if len(buffer) >= 6 and len(buffer) >= 6 + int.from_bytes(buffer[4:6], "big"):
                    del buffers[sock]  # one whole MBAP frame: the answer
                    if not buffers:
                        acked_s = clock()
                else:
                    buffers[sock] = buffer
        return (
            started_s,
            pdus_s - started_s,
            published_s - started_s,
            None if acked_s is None else acked_s - started_s,
            None if puback_s is None else puback_s - started_s,
        )

    def close(self) -> None:
        self.selector.close()
        for sock in [self.mqtt, *(sock for sock, _ in self.pdus)]:
            sock.close()


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (section 2.2.3)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass
class Results:
    added: list[float] = field(default_factory=list)
    added_direct: list[float] = field(default_factory=list)  # samples fed straight to the hot path
    published: list[float] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)
    pdu_issued: list[float] = field(default_factory=list)
    puback: list[float] = field(default_factory=list)
    pdu_done: list[float] = field(default_factory=list)
    ctl_first: list[float] = field(default_factory=list)
    ctl_last: list[float] = field(default_factory=list)
    floor_first: list[float] = field(default_factory=list)
    floor_last: list[float] = field(default_factory=list)
    bare_pdu: list[float] = field(default_factory=list)  # BareTrip, from its first write
    bare_out: list[float] = field(default_factory=list)
    bare_acked: list[float] = field(default_factory=list)
    bare_puback: list[float] = field(default_factory=list)
    bare_last: list[float] = field(default_factory=list)
    bare_missed: int = 0
    incomplete: int = 0
    pdu_failed: int = 0
    chain: dict[float, tuple[list[float], list[float], int, int]] = field(default_factory=dict)
    # crossing -> the confirming measurement read back, per poll rate: (4)'s reference
    chain_read: dict[float, list[float]] = field(default_factory=dict)


def ms(a_ns: int, b_ns: int) -> float:
    return (b_ns - a_ns) / NS_PER_MS


async def bench(args: argparse.Namespace) -> int:
    from mullet.daemon.cli import freeze_heap
    from mullet.daemon.config import load_config
    from mullet.daemon.core.controller import SiteController
    from mullet.daemon.core.trips import arm_stages
    from mullet.daemon.logs import configure_logging
    from mullet.daemon.metrics import Metrics
    from mullet.daemon.site.fastpath import FastPath, TripSettled
    from mullet.drivers.device_profiles import load_meter_profile
    from mullet.drivers.meter import MeterSample, ModbusMeter
    from mullet.drivers.mqtt import MqttLink
    from mullet.drivers.pdu.client import PduClient
    from mullet.drivers.pdu.pool import PduPool
    from mullet.drivers.pdu.types import PoolResult
    from mullet.drivers.protocol import Topics, Trip, encode
    from mullet.policies.model import GroupDecision, Plan, TripStage
    from mullet.policies.trigger import FrequencyTrigger
    from mullet.simulators.broker import MosquittoBroker, find_mosquitto

    configure_logging("warning")
    trigger_settings = chain_trigger()
    mosq = find_mosquitto()
    mosq_pub = shutil.which("mosquitto_pub")
    if mosq is None or mosq_pub is None:
        print("mosquitto / mosquitto_pub not found")
        return 2
    command = reproduce_command(
        "trip_latency.py",
        [
            ("--trips", args.trips),
            ("--controllers", args.controllers),
            ("--pdus", args.pdus),
            ("--gap-ms", args.gap_ms),
            ("--chain-trips", args.chain_trips),
            ("--trip-poll-hz", args.trip_poll_hz),
            ("--poll-hz", [f"{h:g}" for h in args.poll_hz]),
            ("--pdu-procs", args.pdu_procs),
            ("--pin", args.pin),
            ("--rt", args.rt),
            ("--max-added-ratio", args.max_added_ratio),
            ("--max-broadcast-ratio", args.max_broadcast_ratio),
            ("--max-ack-ratio", args.max_ack_ratio),
            ("--max-chain-ratio", args.max_chain_ratio),
        ],
    )
    print_header(
        "under-frequency trip: FastPath -> mosquitto -> controllers, and PDU hard cuts",
        "sample -> commands out (daemon), -> last controller, -> PDU writes acked; and a mosquitto_pub floor",
        command,
    )
    root = f"bench-{secrets.token_hex(4)}"
    topics = Topics(root)
    broker = MosquittoBroker(mosq)
    ctl_proc = probe_proc = floor_proc = None
    pdu_procs: list[asyncio.subprocess.Process] = []
    pool: PduPool | None = None
    bare: BareTrip | None = None
    res = Results()
    try:
        # 1. broker
        if args.pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                print("--pin needs at least 2 CPUs")
                return 2
            OTHERS_CPUS.update(cpus[1:])
            os.sched_setaffinity(0, {cpus[0]})
            print(f"[0] daemon side pinned to CPU {cpus[0]}; broker, controllers, PDUs, meter to {cpus[1:]}")
        print(f"[0] daemon side scheduling: {set_realtime(args.rt)}", flush=True)
        await broker.start()
        assert broker.process is not None
        pin_away(broker.process.pid)
        print(f"[1] broker: mosquitto on {broker.host}:{broker.port} (set_tcp_nodelay true)", flush=True)

        # 2. the probe controller (its own process, subscribed first), then the 600 in another process
        def controllers_role(count: int, tag: str) -> list[str]:
            return [
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--topic",
                topics.trip,
                "--controllers",
                str(count),
                "--tag",
                tag,
            ]

        probe_proc = await spawn_role("controllers", controllers_role(1, f"{root}-probe"))
        await read_json(probe_proc, 30)
        ctl_proc = await spawn_role("controllers", controllers_role(args.controllers, root))
        ready = await read_json(ctl_proc, 120)
        print(
            f"[2] controllers: a probe in pid {probe_proc.pid} (subscribed first), "
            f"{ready['ready']} aiomqtt clients in pid {ctl_proc.pid}, "
            f"connected+subscribed in {ready['startup_s']:.1f} s",
            flush=True,
        )

        # 3a. PDUs, separate process; PduPool here
        # On a site every PDU answers from its own CPU; here the simulators share processes.
        ports = []
        shares = [len(range(i, args.pdus, args.pdu_procs)) for i in range(args.pdu_procs)]
        for share in shares:
            proc = await spawn_role("pdus", ["--pdus", str(share), "--outlets", str(args.outlets)])
            pdu_procs.append(proc)
            ports += (await read_json(proc, 60))["ports"]
        pool = PduPool(
            PduClient(f"pdu-{i:02d}", HOST, port, outlets=args.outlets, profile="netio-coils", timeout_s=0.2)
            for i, port in enumerate(ports)
        )
        await pool.start()
        print(
            f"[3] PDUs: {len(ports)} CoilPduSim (netio-coils) in pids {[p.pid for p in pdu_procs]}, "
            "PduPool connected",
            flush=True,
        )

        stages = (TripStage(stage=1, threshold_hz=59.85, shed_kw=1000.0, hard_cut=True),)
        groups = [f"g{i:03d}" for i in range(args.controllers)]
        outlets_by_group = {groups[i]: [(f"pdu-{i:02d}", 1)] for i in range(min(len(ports), len(groups)))}
        all_outlets = [o for outs in outlets_by_group.values() for o in outs]
        plan = Plan(
            computed_at_s=time.monotonic(),
            site_limit_kw=1e6,
            binding_constraint="none",
            ai_allowance_kw=0.0,
            mining_budget_kw=1e6,
            mining_planned_kw=0.0,
            feasible=True,
            active_obligations=(),
            decisions=tuple(GroupDecision(g, "run", None, "bench", trip_stage=1) for g in groups),
            reasons=(),
        )

        link = MqttLink(
            f"mqtt://{broker.host}:{broker.port}",
            client_id=f"bench-daemon-{root}",
            subscriptions=[],
            on_message=lambda _topic, _payload: None,
        )
        link_task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.connected.wait(), 10)
        try:
            marks: dict[str, float] = {}

            def stamp_puback(_ack: asyncio.Future[bool]) -> None:
                marks["puback"] = time.monotonic()

            def publish_trip(payload: bytes) -> asyncio.Future[bool] | None:
                ack = link.publish_now(topics.trip, payload, qos=1)
                if ack is not None:
                    ack.add_done_callback(stamp_puback)
                return ack

            fired: asyncio.Queue[TripSettled] = asyncio.Queue()
            # The daemon's hot path, as daemon/site/intake.py runs it: the controller core's verdict on
            # the sample (`SiteController.frequency`), then `FastPath.fire` of its order.
            core = SiteController(load_config(EXAMPLE_CONFIG), Metrics(), seq=0, has_pdus=True)
            core.trigger = FrequencyTrigger(stages, trigger_settings)
            fast = FastPath(
                publish_trip=publish_trip,
                on_fired=lambda _record: None,
                on_settled=fired.put_nowait,
                pdus=pool,
            )

            def hot_path(sample: MeterSample) -> None:
                order = core.frequency(sample)
                if order is not None:
                    fast.fire(order)

            def rejected_samples() -> int:
                return int(
                    sum(
                        s.value
                        for m in core.metrics.frequency_rejected.collect()
                        for s in m.samples
                        if s.name.endswith("_total")
                    )
                )

            fast.arm(arm_stages(plan, stages, outlets_by_group))
            print(
                f"[3] FastPath armed: {len(groups)} groups at stage 1, {len(all_outlets)} hard-cut outlets",
                flush=True,
            )
            cut = pool.prepare(PduPool.group(all_outlets), on=False)
            bare = BareTrip(
                (broker.host, broker.port),
                f"bench-bare-{root}",
                [
                    (ports[i], prepared.first.tail)
                    for i in range(len(ports))
                    if (prepared := cut.by_pdu.get(f"pdu-{i:02d}")) is not None and prepared.first is not None
                ],
            )
            print(
                f"[3] bare reference: {len(bare.pdus)} raw PDU connections and a raw MQTT session", flush=True
            )

            # 4. floor publisher: persistent C client
            floor_proc = await asyncio.create_subprocess_exec(
                mosq_pub,
                "-h",
                broker.host,
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-l",
                "-t",
                topics.trip,
                "-i",
                f"bench-floor-{root}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            pin_away(floor_proc.pid)
            await asyncio.sleep(0.5)  # let it connect before the first line

            class Arrivals:
                """seq -> {first, last, n} lines from one controllers process."""

                def __init__(self, proc: asyncio.subprocess.Process) -> None:
                    self.proc = proc
                    self.by_seq: dict[int, dict] = {}
                    self.changed = asyncio.Event()

                async def read(self) -> None:
                    assert self.proc.stdout is not None
                    async for raw in self.proc.stdout:
                        try:
                            obj = json.loads(raw)
                        except ValueError:
                            continue
                        if isinstance(obj, dict) and "seq" in obj:
                            self.by_seq[obj["seq"]] = obj
                            self.changed.set()

                async def wait(self, seq: int) -> dict | None:
                    try:
                        async with asyncio.timeout(5):
                            while seq not in self.by_seq:
                                self.changed.clear()
                                await self.changed.wait()
                    except TimeoutError:
                        return None
                    return self.by_seq[seq]

            fleet, probe = Arrivals(ctl_proc), Arrivals(probe_proc)
            readers = [asyncio.create_task(fleet.read()), asyncio.create_task(probe.read())]
            wait_arrival = fleet.wait

            gap_s = args.gap_ms / 1000.0

            class MeterFeed:
                """A MeterSim in its own process, read by the daemon's ModbusMeter at `poll_hz` and
                feeding the FastPath as in mulletd; `dip()` steps the grid at a random phase of the
                poll schedule and returns the trip it fired."""

                def __init__(self, proc: asyncio.subprocess.Process, port: int, poll_hz: float) -> None:
                    self.proc = proc
                    self.period_s = 1.0 / poll_hz
                    self.feeding = True  # False: samples are read but not given to the FastPath
                    self.rejects_before = rejected_samples()
                    self.sampled = asyncio.Event()
                    poller = ModbusMeter(
                        HOST,
                        port,
                        device_id=1,
                        profile=load_meter_profile("eastron-sdm630"),
                        poll_hz=poll_hz,
                        timeout_s=0.2,
                        on_sample=self._on_sample,
                        on_reject=lambda _reason: None,  # the driver's own refusals (NaN, range)
                    )
                    self.polling = asyncio.create_task(poller.run())

                @classmethod
                async def start(cls, poll_hz: float) -> MeterFeed:
                    proc = await spawn_role("meter", [])
                    feed = cls(proc, (await read_json(proc, 30))["port"], poll_hz)
                    await asyncio.wait_for(feed.sampled.wait(), 10)
                    return feed

                def _on_sample(self, sample: MeterSample) -> None:
                    self.sampled.set()
                    if self.feeding:
                        hot_path(sample)

                async def step(self, command: bytes) -> int:
                    """Step the register; when the meter process changed it (monotonic ns)."""
                    assert self.proc.stdin is not None
                    self.proc.stdin.write(command + b"\n")
                    await self.proc.stdin.drain()
                    return int((await read_json(self.proc, 5))["changed_ns"])

                async def dip(self) -> tuple[TripSettled | None, int]:
                    core.trigger = FrequencyTrigger(stages, trigger_settings)
                    while not fired.empty():
                        fired.get_nowait()
                    await asyncio.sleep(random.uniform(0, self.period_s))
                    change_ns = await self.step(b"dip")
                    try:
                        return await asyncio.wait_for(fired.get(), 5), change_ns
                    except TimeoutError:
                        return None, change_ns

                async def recover(self) -> None:
                    await self.step(b"normal")
                    await asyncio.sleep(3 * self.period_s)  # the meter reads normal again

                async def stop(self) -> None:
                    self.polling.cancel()
                    await asyncio.gather(self.polling, return_exceptions=True)
                    await stop_child(self.proc)

            # 5. the trips: each fired by the sample the ModbusMeter decoded from the meter process,
            # then the broadcast floor, then the same trip fed straight to the hot path
            warmup = 3
            chain_first: list[float] = []
            chain_last: list[float] = []
            chain_read: list[float] = []
            missed = 0
            feed = await MeterFeed.start(args.trip_poll_hz)
            freeze_heap()  # as mulletd does once set up
            print(f"[4] set up; start-up's {gc.get_freeze_count()} objects frozen (gc.freeze)", flush=True)
            try:
                for index in range(warmup + args.trips):
                    keep = index >= warmup
                    # Mullet trip, from the meter
                    settled, change_ns = await feed.dip()
                    if settled is None:
                        missed += keep
                        await feed.recover()
                        continue
                    record = settled.trip
                    got = await wait_arrival(record.seq)
                    probe_got = await probe.wait(record.seq)
                    cut = settled.cut_result
                    if keep:
                        s_ns = int(record.sample_mono_s * 1e9)
                        res.added.append(settled.added_latency_s * 1000)
                        res.published.append((record.published_s - record.sample_mono_s) * 1000)
                        if probe_got is not None:
                            res.probe.append(ms(s_ns, probe_got["first"]))
                        res.puback.append((marks["puback"] - record.sample_mono_s) * 1000)
                        if isinstance(cut, PoolResult):
                            res.pdu_done.append((cut.done_s - record.sample_mono_s) * 1000)
                            if settled.issued_s is not None:
                                res.pdu_issued.append((settled.issued_s - record.sample_mono_s) * 1000)
                            res.pdu_failed += len(cut.failed)
                        else:
                            res.pdu_failed += len(all_outlets)
                        if got is None or got["n"] < args.controllers:
                            res.incomplete += 1
                        else:
                            res.ctl_first.append(ms(s_ns, got["first"]))
                            res.ctl_last.append(ms(s_ns, got["last"]))
                            chain_last.append(ms(change_ns, got["last"]))
                        if probe_got is not None:
                            chain_first.append(ms(change_ns, probe_got["first"]))
                            chain_read.append(ms(change_ns, s_ns))
                    await feed.recover()
                    await pool.switch(all_outlets, on=True)
                    await asyncio.sleep(gap_s)

                    # Broadcast floor
                    fseq = FLOOR_SEQ_BASE + index
                    line = encode(Trip(seq=fseq, stage=1, ts=time.time())).decode().replace("\n", "") + "\n"
                    assert floor_proc.stdin is not None
                    w_ns = time.monotonic_ns()
                    floor_proc.stdin.write(line.encode())
                    await floor_proc.stdin.drain()
                    fgot = await wait_arrival(fseq)
                    await probe.wait(fseq)
                    if keep:
                        if fgot is None or fgot["n"] < args.controllers:
                            res.incomplete += 1
                        else:
                            res.floor_first.append(ms(w_ns, fgot["first"]))
                            res.floor_last.append(ms(w_ns, fgot["last"]))
                    await asyncio.sleep(gap_s)

                    # The bare reference: the same frames on raw sockets, nothing else
                    bseq = BARE_SEQ_BASE + index
                    b_s, *times = bare.fire(topics.trip, bseq)
                    bgot = await wait_arrival(bseq)
                    await probe.wait(bseq)
                    if keep:
                        pdus_s, out_s, acked_s, puback_s = times
                        res.bare_pdu.append(pdus_s * 1000)
                        res.bare_out.append(out_s * 1000)
                        if acked_s is None or puback_s is None:
                            res.bare_missed += 1
                        else:
                            res.bare_acked.append(acked_s * 1000)
                            res.bare_puback.append(puback_s * 1000)
                        if bgot is None or bgot["n"] < args.controllers:
                            res.incomplete += 1
                        else:
                            res.bare_last.append(bgot["last"] / NS_PER_MS - b_s * 1000)
                    await pool.switch(all_outlets, on=True)
                    await asyncio.sleep(gap_s)

                    # The same trip with its samples fed straight in: no meter read just before it
                    feed.feeding = False
                    core.trigger = FrequencyTrigger(stages, trigger_settings)
                    now = time.monotonic()
                    hot_path(MeterSample(0.0, 60.0, now - 0.2))
                    hot_path(MeterSample(0.0, 59.8, now - 0.1))
                    hot_path(MeterSample(0.0, 59.8, time.monotonic()))
                    direct = await asyncio.wait_for(fired.get(), 5)
                    feed.feeding = True
                    await wait_arrival(direct.trip.seq)
                    if keep:
                        res.added_direct.append(direct.added_latency_s * 1000)
                    await pool.switch(all_outlets, on=True)
                    await asyncio.sleep(gap_s)
                    if keep and (index - warmup + 1) % max(1, args.trips // 4) == 0:
                        print(f"  ... {index - warmup + 1}/{args.trips} trips", flush=True)
            finally:
                await feed.stop()
            res.chain[args.trip_poll_hz] = (
                chain_first,
                chain_last,
                missed,
                rejected_samples() - feed.rejects_before,
            )
            res.chain_read[args.trip_poll_hz] = chain_read

            # 6. the whole chain at the other poll rates
            for poll_hz in args.poll_hz:
                if poll_hz == args.trip_poll_hz:
                    continue  # measured by every trip above
                chain_first, chain_last, chain_read, missed = [], [], [], 0
                feed = await MeterFeed.start(poll_hz)
                try:
                    for index in range(args.chain_trips + 1):
                        settled, change_ns = await feed.dip()
                        if settled is None:
                            missed += 1
                            await feed.recover()
                            continue
                        got = await wait_arrival(settled.trip.seq)
                        probe_got = await probe.wait(settled.trip.seq)
                        if index > 0:  # first one is warm-up
                            if got is None or probe_got is None:
                                missed += 1
                            else:
                                chain_first.append(ms(change_ns, probe_got["first"]))
                                chain_last.append(ms(change_ns, got["last"]))
                                chain_read.append(ms(change_ns, int(settled.trip.sample_mono_s * 1e9)))
                        await feed.recover()
                        await pool.switch(all_outlets, on=True)
                        await asyncio.sleep(gap_s)
                finally:
                    await feed.stop()
                res.chain[poll_hz] = (
                    chain_first,
                    chain_last,
                    missed,
                    rejected_samples() - feed.rejects_before,
                )
                res.chain_read[poll_hz] = chain_read
                p50, p99, _ = summary(chain_first)
                print(
                    f"[5] chain at {poll_hz:g} Hz: {len(chain_first)} trips,"
                    f" probe p50 {p50:.1f} / p99 {p99:.1f} ms",
                    flush=True,
                )

            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        finally:
            link_task.cancel()
            await asyncio.gather(link_task, return_exceptions=True)
    finally:
        if floor_proc is not None:
            with contextlib.suppress(Exception):
                assert floor_proc.stdin is not None
                floor_proc.stdin.close()
            try:
                await asyncio.wait_for(floor_proc.wait(), 5)
            except TimeoutError:
                floor_proc.kill()
                await floor_proc.wait()
        if pool is not None:
            await pool.close()
        if bare is not None:
            bare.close()
        await stop_child(ctl_proc)
        await stop_child(probe_proc)
        for proc in pdu_procs:
            await stop_child(proc)
        await broker.stop()

    return 0 if report(args, res) else 1


def chain_trigger() -> TriggerSettings:
    """As mulletd with a relay-grade meter: two measurements, the pickup one refresh."""
    from mullet.policies.trigger import TriggerSettings

    return TriggerSettings(confirm_samples=2, pickup_s=METER_REFRESH_S)


def report(args: argparse.Namespace, res: Results) -> bool:
    """Print the figures; whether targets (1)-(3) hold."""
    print()
    print(
        f"{args.trips} trips (after 3 warm-up), {args.controllers} controllers, {args.pdus} PDUs; "
        f"{p99_note(len(res.added))}"
    )
    print(
        f"incomplete deliveries (timed out or < {args.controllers} receivers): {res.incomplete}; "
        f"PDU outlets not acknowledged: {res.pdu_failed}"
    )
    print()
    rows = []
    for name, data in (
        ("(1) daemon added: TripRecord.added_latency_s", res.added),
        ("    same, samples fed to the hot path directly", res.added_direct),
        ("    sample -> trip PUBLISH written", res.published),
        ("    sample -> last PDU write issued", res.pdu_issued),
        ("    sample -> QoS 1 PUBACK back", res.puback),
        ("    sample -> probe controller", res.probe),
        ("(2) sample -> first of controllers", res.ctl_first),
        ("(2) sample -> last of controllers", res.ctl_last),
        ("    floor: write -> first controller", res.floor_first),
        ("    floor: write -> last controller", res.floor_last),
        ("(3) sample -> all PDU writes acked", res.pdu_done),
        ("ref (1) bare: first write -> PUBLISH written", res.bare_out),
        ("    bare: first write -> last PDU write", res.bare_pdu),
        ("ref (3) bare: first write -> all PDUs answered", res.bare_acked),
        ("    bare: first write -> PUBACK", res.bare_puback),
        ("    bare: first write -> last controller", res.bare_last),
    ):
        p50, p99, mx = summary(data)
        rows.append((name, len(data), p50, p99, mx))
    print_table(("measure (ms)", "n", "p50", "p99", "max"), rows)
    print()
    added50, added99, _ = summary(res.added)
    bare50, bare99, _ = summary(res.bare_out)
    _, last99, _ = summary(res.ctl_last)
    _, floor99, _ = summary(res.floor_last)
    done50, done99, _ = summary(res.pdu_done)
    acked50, acked99, _ = summary(res.bare_acked)

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    r1, r2, r3 = ratio(added99, bare99), ratio(last99, floor99), ratio(done99, acked99)
    ok = [r1 <= args.max_added_ratio, r2 <= args.max_broadcast_ratio, r3 <= args.max_ack_ratio]
    print(f"bare reference trips that missed an answer within 1 s: {res.bare_missed}")
    print("verdicts are p99 ratios to references measured in the same run (absolute figures move 3-4x")
    print("between machines); the p50 ratios are shown beside them:")
    print(
        f"target (1) daemon added p99 <= {args.max_added_ratio:g} x the bare writes' p99 (sample -> PUBLISH"
        " written and all PDU writes issued, vs raw send()s of the same bytes):"
        f" {added99:.2f} / {bare99:.2f} ms"
        f" = {r1:.2f}x (p50 {added50:.2f} / {bare50:.2f} = {ratio(added50, bare50):.2f}x) -> {verdict(ok[0])}"
    )
    _, bare_last99, _ = summary(res.bare_last)
    print(
        f"target (2) last controller p99 <= {args.max_broadcast_ratio:g} x the mosquitto_pub floor's p99:"
        f" {last99:.2f} / {floor99:.2f} ms = {r2:.2f}x -> {verdict(ok[1])}"
    )
    print(
        "           (no verdict) the same against the bare trip's broadcast, which has the same 50 PDU"
        f" writes beside it: {last99:.2f} / {bare_last99:.2f} ms = {ratio(last99, bare_last99):.2f}x"
    )
    print(
        f"target (3) all PDU writes acknowledged p99 <= {args.max_ack_ratio:g} x the bare round trip's p99"
        f" (same frames and broadcast on raw sockets, all 50 answers): {done99:.2f} / {acked99:.2f} ms"
        f" = {r3:.2f}x (p50 {done50:.2f} / {acked50:.2f} = {ratio(done50, acked50):.2f}x) -> {verdict(ok[2])}"
    )
    if res.chain:
        print()
        print("whole chain: the grid steps 59.93 -> 59.84 Hz (and keeps moving) at a random poll phase ->")
        print(
            f"meter refresh ({METER_REFRESH_S * 1000:.1f} ms, MeterSim in its own process) -> ModbusMeter ->"
        )
        print("FastPath (2 measurements, pickup one refresh) -> trip received by the probe controller (own")
        print("process, subscribed first) and by the last of the 600; reference: the crossing -> the")
        print(f"confirming measurement read back. {args.trip_poll_hz:g} Hz: the trips above, other rates:")
        print(f"{args.chain_trips} trips each")
        rows = []
        for poll_hz, (first, last, missed, rejects) in res.chain.items():
            p50, p99, mx = summary(res.chain_read.get(poll_hz, []))
            rows.append(
                (f"{poll_hz:g} Hz: -> confirming sample read", len(first), p50, p99, mx, missed, rejects)
            )
            p50, p99, mx = summary(first)
            rows.append((f"{poll_hz:g} Hz: -> probe controller", len(first), p50, p99, mx, missed, rejects))
            p50, p99, mx = summary(last)
            rows.append((f"{poll_hz:g} Hz: -> last of controllers", len(last), p50, p99, mx, missed, rejects))
        print_table(("measure (ms)", "n", "p50", "p99", "max", "missed", "rejected samples"), rows)
        print()
    if 50.0 in res.chain:
        _, p99_50, _ = summary(res.chain[50.0][0])
        _, read99, _ = summary(res.chain_read.get(50.0, []))
        from mullet.policies.trigger import fire_budget

        worst_s, _ = fire_budget(
            chain_trigger(), refresh_s=METER_REFRESH_S, poll_period_s=1 / 50.0, round_trip_s=0.2
        )
        r4 = ratio(p99_50, read99)
        ok.append(r4 <= args.max_chain_ratio)
        print(
            f"target (4) crossing -> probe controller at 50 Hz polling, p99 <= {args.max_chain_ratio:g} x the"
            f" crossing -> confirming measurement read's p99: {p99_50:.2f} / {read99:.2f} ms = {r4:.2f}x"
            f" -> {verdict(ok[-1])}"
        )
        print(
            f"           (no verdict) against ERCOT FFR's 250 ms and the trigger's worst-case fire budget"
            f" for this meter ({worst_s * 1000:.0f} ms with a 0.2 s read timeout): p99 {p99_50:.2f} ms"
        )
    else:
        print("target (4) whole chain at 50 Hz: NOT MEASURED (--poll-hz without 50)")
    print("exit status 1 when a target fails.")
    return all(ok)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trips", type=int, default=200)
    parser.add_argument("--controllers", type=int, default=600)
    parser.add_argument("--pdus", type=int, default=50)
    parser.add_argument("--outlets", type=int, default=8, help="outlets per simulated PDU")
    parser.add_argument(
        "--pdu-procs", type=int, default=2, help="processes the simulated PDUs are spread over"
    )
    parser.add_argument(
        "--gap-ms", type=float, default=40.0, help="quiet time after each trip and floor message"
    )
    parser.add_argument(
        "--trip-poll-hz", type=float, default=50.0, help="meter poll rate of the trips measured for (1)-(3)"
    )
    parser.add_argument(
        "--poll-hz",
        type=float,
        nargs="*",
        default=[10.0, 50.0],
        help="meter poll rates of the whole chain (4); --trip-poll-hz's is measured by every trip",
    )
    parser.add_argument(
        "--chain-trips", type=int, default=30, help="trips per other poll rate in the whole chain"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="give the daemon side a CPU of its own; the broker and all simulators share the others "
        "(as a site pins mulletd and mosquitto apart, see docs/performance.md)",
    )
    parser.add_argument(
        "--rt",
        type=int,
        default=20,
        metavar="PRIORITY",
        help="SCHED_FIFO priority of the daemon side's loop thread, as the shipped systemd unit gives "
        "mulletd (CPUSchedulingPolicy=fifo); 0: normal scheduling",
    )
    parser.add_argument(
        "--max-added-ratio",
        type=float,
        default=MAX_ADDED_RATIO,
        help="target (1): daemon-added p99 within this many times the bare writes' p99",
    )
    parser.add_argument(
        "--max-broadcast-ratio",
        type=float,
        default=MAX_BROADCAST_RATIO,
        help="target (2): last controller p99 within this many times the mosquitto_pub floor's p99",
    )
    parser.add_argument(
        "--max-ack-ratio",
        type=float,
        default=MAX_ACK_RATIO,
        help="target (3): PDU acknowledgements' p99 within this many times the bare round trip's p99",
    )
    parser.add_argument(
        "--max-chain-ratio",
        type=float,
        default=MAX_CHAIN_RATIO,
        help="target (4): crossing -> probe p99 within this many times crossing -> confirming sample read",
    )
    parser.add_argument(
        "--role", choices=("bench", "controllers", "pdus", "meter"), default="bench", help=argparse.SUPPRESS
    )
    parser.add_argument("--host", default=HOST, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="x", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "controllers":
        asyncio.run(controllers_main(args))
        return 0
    if args.role == "pdus":
        asyncio.run(pdus_main(args))
        return 0
    if args.role == "meter":
        asyncio.run(meter_main(args))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
