"""The QSE link seen from the QSE: how fresh its telemetry is, and how closely mining follows live base
points. `mulletd run` with `[qse]` enabled, against `mulletd simulate` (the example site,
deploy/site.example.toml, as shipped: its ramps, restore ramp, stagger and min on/off times), both
subprocesses on one mosquitto (the embedded amqtt broker where mosquitto is not installed); this
process is only the QSE's gateway: pymodbus clients on loopback.

1. Freshness. The telemetry block (FC 04, addresses 0..31, one request) polled at each `--rates` rate
   for `--freshness-s` each, on a fixed-rate schedule. At each read: `site_mw_age_ms` and
   `mining_mw_age_ms` (the age, at read time, of the meter reading and of the oldest group telemetry
   behind the MW values) and the request's round trip. The ages are compared with their floors, the
   configured meter poll period (1 / meter.poll_hz) and the simulated controllers' telemetry period
   (simulator.telemetry_period_s): a reading is on average half a period old, at most one period plus
   a round trip. Each read is followed by a bare pymodbus read of the simulated meter's power and
   frequency block (the block the daemon's meter driver reads), on its own connection to the simulator:
   the round trip's same-run reference (another pymodbus server on the same loopback, whose answer
   needs no computing).
2. Base points, live. The gateway writes `qse_heartbeat` every `--heartbeat-s` on its control
   connection from the start. Then base points `--base-points-mw` (default 6 -> 4 -> 7 MW: issue 20's
   8 -> 5 -> 9 MW example scaled to the example site's 8 MW of mining), one per interval of
   `--interval-s` (default 300 s: a SCED interval), each written as `base_point_set_mw` and
   `base_point_on` = 1 in one FC 16 request at the interval's start; `mining_mw` is sampled from the
   link at 1 Hz. Per interval: mean mining MW, MAE MW and % of the base point over the whole interval
   and over the part after mining first came within the deadband + 2 % of the base point (the replay's
   "settled" band), and when that was. The figures are the replay's own (daemon/replay/tracking.py's
   TrackingRow), mining taken linear between the 1 Hz samples: a ramp that passes through the band
   settles the interval, as in the replay. Beside them, the mean `mining_budget_mw` (what the plan
   left mining), which tells the plan's granularity from the tracking.

No verdict: the ratios and the tracking figures are printed. Exit status 1 when the link refused a
write, lost its heartbeat, or a process did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import secrets
import signal
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from _common import REPO, p99_note, print_header, print_table, reproduce_command, summary
from pymodbus.client import AsyncModbusTcpClient

from mullet.daemon.config import Config, parse_config
from mullet.daemon.logs import configure_logging
from mullet.daemon.replay.tracking import SETTLE_FRACTION, TrackingRow
from mullet.drivers.device_profiles import load_meter_profile
from mullet.drivers.qse_points import INPUT_POINTS, POINTS, decode, encode
from mullet.simulators.broker import EmbeddedBroker, MosquittoBroker, make_broker
from mullet.simulators.ports import accepts, free_port

EXAMPLE = REPO / "deploy" / "site.example.toml"
MULLETD = Path(sys.executable).with_name("mulletd")
HOST = "127.0.0.1"  # loopback only
DEVICE_ID = 1
TELEMETRY_WORDS = 32  # input registers 0..31: the site block, one request
# While tracking: the site block through the base point's state and value, still one request.
TRACKING_WORDS = POINTS["base_point_mw"].address + POINTS["base_point_mw"].words
UNKNOWN_AGE = 65535.0  # the age points' "older or none"
REQUEST_TIMEOUT_S = 5.0
HEARTBEAT_TIMEOUT_S = 10.0


def site_config(broker_url: str, workdir: Path) -> tuple[Config, Path]:
    """The example site as shipped, on free loopback ports, a private journal and the QSE link on."""
    data = tomllib.loads(EXAMPLE.read_text())
    data["site"]["site_id"] = f"bench-{secrets.token_hex(4)}"
    data["mqtt"]["url"] = broker_url
    data["meter"].update(host=HOST, port=free_port(HOST))
    for pdu in data["pdus"]:
        pdu.update(host=HOST, port=free_port(HOST))
    data["metrics"].update(host=HOST, port=free_port(HOST))
    data["journal"]["path"] = str(workdir / "journal.sqlite")
    data["qse"] = {
        "enabled": True,
        "host": HOST,
        "port": free_port(HOST),
        "allow": [HOST],
        "allow_writes": True,
        "heartbeat_timeout_s": HEARTBEAT_TIMEOUT_S,
        "fail_safe": "hold",
    }
    config = parse_config(data)
    path = workdir / "site.toml"
    path.write_text(tomli_w.dumps(data))
    return config, path


class Gateway:
    """The QSE's RTU/SCADA gateway: a telemetry connection (reads) and a control connection (writes)."""

    def __init__(self, port: int) -> None:
        self.reads = AsyncModbusTcpClient(HOST, port=port, timeout=REQUEST_TIMEOUT_S, retries=0)
        self.control = AsyncModbusTcpClient(HOST, port=port, timeout=REQUEST_TIMEOUT_S, retries=0)
        self.beat = 0
        self.refused: list[str] = []

    async def connect(self) -> None:
        for client in (self.reads, self.control):
            if not await client.connect():
                raise RuntimeError("the QSE link does not accept connections")

    def close(self) -> None:
        self.reads.close()
        self.control.close()

    async def telemetry(self, words: int = TELEMETRY_WORDS) -> tuple[dict[str, float], float]:
        """The points of input registers 0..`words` - 1 by name, and the request's round trip in ms."""
        started = time.perf_counter_ns()
        response = await self.reads.read_input_registers(0, count=words, device_id=DEVICE_ID)
        rtt_ms = (time.perf_counter_ns() - started) / 1e6
        if response.isError():
            raise RuntimeError(f"telemetry read refused: {response}")
        got = response.registers
        points = (p for p in INPUT_POINTS if p.address + p.words <= words)
        return {p.name: decode(p, got[p.address : p.address + p.words]) for p in points}, rtt_ms

    async def write(self, **values: float) -> bool:
        """Contiguous holding points in one FC 16 request; False (and noted) when refused."""
        points = sorted((POINTS[name] for name in values), key=lambda p: p.address)
        words: list[int] = []
        for point in points:
            if point.address != points[0].address + len(words):
                raise ValueError("points must be contiguous")
            words += encode(point, values[point.name])
        response = await self.control.write_registers(points[0].address, words, device_id=DEVICE_ID)
        if response.isError():
            self.refused.append(f"{values}: exception {response.exception_code}")
            return False
        return True

    async def heartbeat_forever(self, period_s: float) -> None:
        while True:
            self.beat = (self.beat + 1) % 65536
            await self.write(qse_heartbeat=self.beat)
            await asyncio.sleep(period_s)


class BareMeter:
    """The reference: one pymodbus read of the simulated meter's power and frequency block."""

    def __init__(self, config: Config) -> None:
        profile = load_meter_profile(config.meter.profile)
        self.start, self.count = profile.block(("power_w", "frequency_hz"))
        self.device_id = config.meter.device_id
        self.input = profile.table == "input"
        self.client = AsyncModbusTcpClient(
            config.meter.host, port=config.meter.port, timeout=REQUEST_TIMEOUT_S, retries=0
        )

    async def read_ms(self) -> float:
        if not self.client.connected and not await self.client.connect():
            raise RuntimeError("the simulated meter does not accept connections")
        read = self.client.read_input_registers if self.input else self.client.read_holding_registers
        started = time.perf_counter_ns()
        response = await read(self.start, count=self.count, device_id=self.device_id)
        rtt_ms = (time.perf_counter_ns() - started) / 1e6
        if response.isError():
            raise RuntimeError(f"bare meter read refused: {response}")
        return rtt_ms


@dataclass
class Freshness:
    rate_hz: float
    site_age_ms: list[float] = field(default_factory=list)
    mining_age_ms: list[float] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=lambda: {"site": 0, "mining": 0})
    rtt_ms: list[float] = field(default_factory=list)
    bare_ms: list[float] = field(default_factory=list)
    late_slots: int = 0  # reads that started a whole period late (the schedule skipped ahead)


async def freshness(gateway: Gateway, bare: BareMeter, rate_hz: float, seconds: float) -> Freshness:
    out = Freshness(rate_hz)
    period_s = 1.0 / rate_hz
    next_s = time.monotonic()
    end_s = next_s + seconds
    while next_s < end_s:
        values, rtt_ms = await gateway.telemetry()
        out.rtt_ms.append(rtt_ms)
        for key, name, samples in (
            ("site", "site_mw_age_ms", out.site_age_ms),
            ("mining", "mining_mw_age_ms", out.mining_age_ms),
        ):
            if values[name] >= UNKNOWN_AGE:
                out.unknown[key] += 1
            else:
                samples.append(values[name])
        out.bare_ms.append(await bare.read_ms())
        next_s += period_s
        now_s = time.monotonic()
        if next_s < now_s:
            out.late_slots += 1
            next_s = now_s + period_s
        await asyncio.sleep(next_s - now_s)
    return out


@dataclass
class Interval:
    base_point_mw: float
    band_mw: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (s since the write, mining MW)
    budget_mw: list[float] = field(default_factory=list)  # mining_budget_mw: what the plan left mining
    unknown: int = 0
    deployed_after_s: float | None = None  # first sample with base_point_state 2 and the value in force

    def tracked(self) -> TrackingRow:
        """The replay's tracking row (same band, same exact integration), mining linear between samples."""
        row = TrackingRow(0.0, "qse", self.base_point_mw * 1000.0, self.band_mw * 1000.0)
        for (t0_s, m0_mw), (t1_s, m1_mw) in itertools.pairwise(self.samples):
            row.add(t0_s, t1_s - t0_s, m0_mw * 1000.0, m1_mw * 1000.0)
        return row

    def rows(self) -> tuple[list[object], list[object]]:
        bp_kw = self.base_point_mw * 1000.0
        row = self.tracked()

        def figures(seconds: float, mining_kws: float, error_kws: float) -> list[object]:
            if seconds <= 0:
                return [math.nan, math.nan, math.nan]
            mae_kw = error_kws / seconds
            return [mining_kws / seconds / 1000.0, mae_kw / 1000.0, 100.0 * mae_kw / bp_kw]

        budget = sum(self.budget_mw) / len(self.budget_mw) if self.budget_mw else math.nan
        whole = [
            f"{self.base_point_mw:g}",
            len(self.samples),
            *figures(row.seconds, row.mining_kws, row.error_kws),
            budget,
            self.unknown,
        ]
        settled = [
            f"{self.base_point_mw:g}",
            f"{self.band_mw:.3f}",
            "not settled" if row.settled_at_s is None else f"{row.settled_at_s:.1f}",
            row.settled_s,
            *figures(row.settled_s, row.settled_mining_kws, row.settled_error_kws),
            "n/a" if self.deployed_after_s is None else f"{self.deployed_after_s:.0f}",
        ]
        return whole, settled


async def follow(gateway: Gateway, base_point_mw: float, seconds: float, deadband_mw: float) -> Interval:
    """Write the base point at the interval's start, then sample the link at 1 Hz to its end."""
    out = Interval(base_point_mw, deadband_mw + SETTLE_FRACTION * base_point_mw)
    start_s = time.monotonic()
    if not await gateway.write(base_point_set_mw=base_point_mw, base_point_on=1):
        raise RuntimeError(f"base point {base_point_mw} MW refused: {gateway.refused[-1]}")
    tick = 0
    while (at_s := start_s + tick) < start_s + seconds:
        await asyncio.sleep(max(0.0, at_s - time.monotonic()))
        values, _ = await gateway.telemetry(TRACKING_WORDS)
        since_s = time.monotonic() - start_s
        in_force = values["base_point_state"] == 2 and math.isclose(
            values["base_point_mw"], base_point_mw, abs_tol=1e-3
        )
        if in_force and out.deployed_after_s is None:
            out.deployed_after_s = since_s
        if not math.isnan(values["mining_budget_mw"]):
            out.budget_mw.append(values["mining_budget_mw"])
        if math.isnan(values["mining_mw"]):
            out.unknown += 1
        else:
            out.samples.append((since_s, values["mining_mw"]))
        tick += 1
    return out


async def wait_ready(
    what: str, check, timeout_s: float, processes: list[asyncio.subprocess.Process], poll_s: float = 0.2
) -> None:
    deadline_s = time.monotonic() + timeout_s
    while True:
        for process in processes:
            if process.returncode is not None:
                raise RuntimeError(f"a mulletd process exited ({process.returncode}) before {what}")
        if await check():
            return
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(poll_s)


async def start_mulletd(command: str, path: Path, log_path: Path, level: str) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            str(MULLETD),
            command,
            "--config",
            str(path),
            "--log-level",
            level,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )


async def stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, then SIGKILL after 10 s; the exit status."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
    assert process.returncode is not None
    return process.returncode


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def measure(args: argparse.Namespace, broker_url: str, workdir: Path) -> dict:
    config, path = site_config(broker_url, workdir)
    out: dict = {"config": config}
    logs = {"simulate": workdir / "simulate.log", "run": workdir / "mulletd.log"}
    processes: dict[str, asyncio.subprocess.Process] = {}
    gateway = Gateway(config.qse.port)
    bare = BareMeter(config)
    beating: asyncio.Task[None] | None = None
    try:
        processes["simulate"] = await start_mulletd("simulate", path, logs["simulate"], args.log_level)
        servers = [(config.meter.host, config.meter.port), *((p.host, p.port) for p in config.pdus)]

        async def devices_up() -> bool:
            return all(accepts(h, p) for h, p in servers)

        await wait_ready("the simulated devices", devices_up, 30, list(processes.values()))
        processes["run"] = await start_mulletd("run", path, logs["run"], args.log_level)

        async def link_up() -> bool:
            return accepts(HOST, config.qse.port)

        await wait_ready("the QSE link listening", link_up, 30, list(processes.values()))
        await gateway.connect()
        beating = asyncio.create_task(gateway.heartbeat_forever(args.heartbeat_s), name="heartbeat")

        async def telemetry_known() -> bool:
            values, _ = await gateway.telemetry()
            known = not (math.isnan(values["site_mw"]) or math.isnan(values["mining_mw"]))
            return known and values["qse_link"] == 1

        await wait_ready("the link up and its MW known", telemetry_known, 60, list(processes.values()))
        out["freshness"] = [
            await freshness(gateway, bare, rate_hz, args.freshness_s) for rate_hz in args.rates
        ]
        deadband_mw = config.control.deadband_kw / 1000.0
        before, _ = await gateway.telemetry()
        out["mining_before_mw"] = before["mining_mw"]
        intervals = []
        for index, base_point_mw in enumerate(args.base_points_mw, 1):
            print(
                f"  ... interval {index}/{len(args.base_points_mw)}: base point {base_point_mw:g} MW",
                flush=True,
            )
            intervals.append(await follow(gateway, base_point_mw, args.interval_s, deadband_mw))
        out["intervals"] = intervals
        out["cleared"] = await gateway.write(base_point_on=0)
        final, _ = await gateway.telemetry()
        out["link_final"] = final["qse_link"]
        out["refused"] = list(gateway.refused)
        if beating.done():
            beating.result()  # a heartbeat write failed: say why
    except BaseException:
        for name, log_path in logs.items():
            print(f"mulletd {name} log (tail):\n{_log_tail(log_path)}", file=sys.stderr)
        raise
    finally:
        if beating is not None:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        gateway.close()
        bare.client.close()
        out["exit"] = {name: await stop(processes[name]) for name in ("run", "simulate") if name in processes}
        for name, code in out["exit"].items():
            if code != 0:  # e.g. -9: it did not stop within 10 s of SIGTERM; its log says where it hung
                print(f"mulletd {name} exited {code}; log (tail):\n{_log_tail(logs[name])}", file=sys.stderr)
    return out


async def amain(args: argparse.Namespace) -> int:
    command = reproduce_command(
        "qse_bench.py",
        [
            ("--freshness-s", args.freshness_s),
            ("--rates", args.rates),
            ("--interval-s", args.interval_s),
            ("--base-points-mw", args.base_points_mw),
            ("--heartbeat-s", args.heartbeat_s),
            ("--log-level", args.log_level),
        ],
    )
    print_header(
        "QSE link: telemetry freshness and live base-point tracking, mulletd run + mulletd simulate",
        "ages of the MW points at read time vs their poll periods; round trip vs a bare meter read;"
        " mining vs base points at 1 Hz",
        command,
    )
    broker: MosquittoBroker | EmbeddedBroker = make_broker()
    started_s = time.monotonic()
    await broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mullet-qse-bench-") as tmp:
            budget_s = (
                2 * len(args.rates) * args.freshness_s + len(args.base_points_mw) * args.interval_s + 180
            )
            async with asyncio.timeout(budget_s):
                out = await measure(args, broker.url, Path(tmp))
    finally:
        await broker.stop()
    elapsed_s = time.monotonic() - started_s

    config: Config = out["config"]
    meter_period_ms = 1000.0 / config.meter.poll_hz
    telemetry_period_ms = config.simulator.telemetry_period_s * 1000.0
    rated_mw = sum(g.rated_kw for g in config.groups) / 1000.0
    broker_name = broker.name
    print(
        f"\nsite:     deploy/site.example.toml as shipped: {len(config.groups)} mining groups"
        f" ({rated_mw:g} MW rated), meter polled at {config.meter.poll_hz:g} Hz, group telemetry every"
        f" {config.simulator.telemetry_period_s:g} s; broker {broker_name}"
    )
    print()
    print("1. freshness: FC 04 of input registers 0..31 in one request; ages as read from the link")
    rows = []
    for fresh in out["freshness"]:
        for label, samples, floor_ms, key in (
            ("site_mw_age_ms", fresh.site_age_ms, meter_period_ms, "site"),
            ("mining_mw_age_ms", fresh.mining_age_ms, telemetry_period_ms, "mining"),
        ):
            median, p99, top = summary(samples)
            rows.append(
                [
                    f"{fresh.rate_hz:g} Hz {label}",
                    len(samples),
                    fresh.unknown[key],
                    median,
                    p99,
                    top,
                    floor_ms,
                    f"{median / floor_ms:.2f}x",
                    f"{p99 / floor_ms:.2f}x",
                    f"{top / floor_ms:.2f}x",
                ]
            )
    print_table(
        [
            "age",
            "n",
            "unknown",
            "p50 ms",
            "p99 ms",
            "max ms",
            "floor ms",
            "p50/floor",
            "p99/floor",
            "max/floor",
        ],
        rows,
    )
    print(
        f"floors: the meter's poll period (1 / meter.poll_hz = {meter_period_ms:g} ms) for site_mw,"
        " the simulated controllers' telemetry period"
        f" (simulator.telemetry_period_s = {telemetry_period_ms:g} ms) for mining_mw"
        f" (the oldest of {len(config.groups)} groups' readings): a reading is about half a period old"
        " on average, at most one period plus its delivery; unknown = 65535 (older than 65.5 s or none)"
    )
    print()
    rows = []
    for fresh in out["freshness"]:
        qse = summary(fresh.rtt_ms)
        ref = summary(fresh.bare_ms)
        rows.append([f"{fresh.rate_hz:g} Hz QSE telemetry read (32 regs)", len(fresh.rtt_ms), *qse])
        rows.append([f"{fresh.rate_hz:g} Hz ref: bare meter read (simulator)", len(fresh.bare_ms), *ref])
        rows.append(
            [
                f"{fresh.rate_hz:g} Hz ratio QSE / ref",
                "",
                f"{qse[0] / ref[0]:.2f}x",
                f"{qse[1] / ref[1]:.2f}x",
                "",
            ]
        )
    print_table(["round trip", "n", "p50 ms", "p99 ms", "max ms"], rows)
    late = {f"{f.rate_hz:g} Hz": f.late_slots for f in out["freshness"]}
    counts = sorted({len(f.rtt_ms) for f in out["freshness"]})
    print(
        f"reference: the same pymodbus client, one read of the meter's power/frequency block right after each"
        f" QSE read, on its own connection; {'; '.join(p99_note(n) for n in counts)}; reads started a period"
        f" late: {late}"
    )
    print()

    intervals: list[Interval] = out["intervals"]
    path = " -> ".join(f"{bp:g}" for bp in args.base_points_mw)
    print(
        f"2. base points {path} MW, {args.interval_s:g} s each, mining_mw sampled from the link at 1 Hz"
        f" (mining {out['mining_before_mw']:.2f} MW before the first); heartbeat every {args.heartbeat_s:g} s"
    )
    whole_rows, settled_rows = zip(*(i.rows() for i in intervals), strict=True)
    print_table(["base point MW", "n", "mean MW", "MAE MW", "MAE %", "budget MW", "unknown"], whole_rows)
    print()
    print("once the ramp allows: from when mining first came within deadband + 2 % of the base point")
    print_table(
        [
            "base point MW",
            "band MW",
            "settled after s",
            "for s",
            "mean MW",
            "MAE MW",
            "MAE %",
            "in force after s",
        ],
        settled_rows,
    )
    print(
        f"band = control.deadband_kw ({config.control.deadband_kw:g} kW) + 2 % of the base point; mining is"
        " taken linear between the 1 Hz samples and integrated as mulletd replay does (its TrackingRow),"
        " so a ramp passing through the band settles it; times from the base point's write;"
        " budget = mean mining_budget_mw (what the plan left mining); 'in force after s' = first"
        " sample showing base_point_state 2 with the value written"
    )
    print()
    problems = list(out["refused"])
    if not out["cleared"]:
        problems.append("the base point's clear was refused")
    if out["link_final"] != 1:
        problems.append(f"qse_link = {out['link_final']:g} at the end (1 = up)")
    problems += [f"mulletd {name} exited {rc}" for name, rc in out["exit"].items() if rc != 0]
    print(
        f"exit status after SIGTERM: {out['exit']}; refused writes: {len(out['refused'])}; {elapsed_s:.0f} s"
    )
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freshness-s", type=float, default=60.0, help="seconds of polling at each rate")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[1.0, 10.0], help="telemetry poll rates, Hz"
    )
    parser.add_argument("--interval-s", type=float, default=300.0, help="seconds per base point (SCED: 300)")
    parser.add_argument(
        "--base-points-mw", type=float, nargs="+", default=[6.0, 4.0, 7.0], help="base points, in order"
    )
    parser.add_argument("--heartbeat-s", type=float, default=2.0, help="QSE heartbeat write period")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if not 0.5 <= args.freshness_s <= 3600:
        parser.error("--freshness-s: 0.5 to 3600")
    if not all(0.1 <= r <= 50 for r in args.rates):
        parser.error("--rates: 0.1 to 50 Hz each")
    if not 1 <= args.interval_s <= 3600:
        parser.error("--interval-s: 1 to 3600")
    if not 1 <= len(args.base_points_mw) <= 12 or not all(0 < bp <= 1000 for bp in args.base_points_mw):
        parser.error("--base-points-mw: 1 to 12 values in (0, 1000]")
    if not 0.1 <= args.heartbeat_s <= HEARTBEAT_TIMEOUT_S / 2:
        parser.error(
            f"--heartbeat-s: 0.1 to {HEARTBEAT_TIMEOUT_S / 2:g}"
            f" (the link's heartbeat timeout is {HEARTBEAT_TIMEOUT_S:g} s)"
        )
    if not MULLETD.exists():
        parser.error(f"{MULLETD} not found: run with the project's venv (.venv/bin/python)")
    configure_logging("warning", json_output=False)
    try:
        return asyncio.run(amain(args))
    except (TimeoutError, RuntimeError) as exc:
        print(f"qse_bench: gave up: {exc or 'the run overran its budget'}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
