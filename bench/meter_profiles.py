"""Meter profiles side by side: what a profile costs the daemon's meter driver (drivers/meter.py).

For each shipped profile (SunSpec at each of its discovery bases and, with `sunspec_base` set, at an
address only configuration finds), the simulated meter (simulators/meter.py) serves it over Modbus TCP
on loopback and the driver polls it at `--poll-hz` for `--polls` samples. Printed per profile:

- first: start -> first sample (connect, plus SunSpec discovery: the marker at up to three bases and
         the model headers);
- rtt p50 / p99: one poll's block read, sent -> answered (power, frequency and, for SunSpec, their
         scale factors in the same request);
- regs:  registers in that read.

Figures are loopback against a Python simulator on this machine: they show what discovery and the
wider SunSpec read add relative to a float map, not a real meter's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import p99_note, print_header, print_table, reproduce_command, summary

from mullet.daemon.logs import configure_logging
from mullet.drivers import sunspec
from mullet.drivers.device_profiles import load_meter_profile
from mullet.drivers.meter import MeterSample, ModbusMeter
from mullet.simulators.meter import MeterSim

CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("eastron-sdm630", "eastron-sdm630", {}, {}),
    ("schneider-pm5500", "schneider-pm5500", {}, {}),
    ("schneider-ion-default", "schneider-ion-default", {}, {}),
    ("sunspec 203 @40000", "sunspec", {"sunspec_base": 40000}, {}),
    ("sunspec 203 @0", "sunspec", {"sunspec_base": 0}, {}),
    ("sunspec 203 @50000", "sunspec", {"sunspec_base": 50000}, {}),
    ("sunspec 203 @1000 (configured)", "sunspec", {"sunspec_base": 1000}, {"sunspec_bases": (1000,)}),
]


async def measure(
    profile: str, sim_options: dict[str, Any], driver_options: dict[str, Any], args: Any
) -> tuple[float, float, float, int, int]:
    """(first sample ms, rtt p50 ms, rtt p99 ms, registers per read, rejected polls)."""
    sim = MeterSim(
        power_kw=lambda: 1234.5,
        frequency_hz=lambda: 60.0,
        profile=profile,
        frequency_refresh_s=0,
        **sim_options,
    )
    await sim.start()
    samples: list[MeterSample] = []
    round_trips_s: list[float] = []
    rejected: list[str] = []
    enough = asyncio.Event()

    def on_sample(sample: MeterSample) -> None:
        samples.append(sample)
        if len(samples) >= args.polls:
            enough.set()

    meter = ModbusMeter(
        "127.0.0.1",
        sim.port,
        device_id=1,
        profile=load_meter_profile(profile),
        poll_hz=args.poll_hz,
        timeout_s=1.0,
        on_sample=on_sample,
        on_reject=rejected.append,
        on_round_trip=round_trips_s.append,
        **driver_options,
    )
    started_s = time.monotonic()
    task = asyncio.create_task(meter.run())
    try:
        async with asyncio.timeout(60 + args.polls / args.poll_hz * 2):
            await enough.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    assert meter.layout is not None
    median_s, p99_s, _ = summary(round_trips_s)
    _, count = meter.layout.block(("power_w", "frequency_hz"))
    return (samples[0].monotonic_s - started_s) * 1000, median_s * 1000, p99_s * 1000, count, len(rejected)


async def amain(args: Any) -> None:
    rows = []
    for label, profile, sim_options, driver_options in CASES:
        rows.append((label, *await measure(profile, sim_options, driver_options, args)))
    print_table(("profile", "first sample ms", "rtt p50 ms", "rtt p99 ms", "registers", "rejected"), rows)
    print()
    print(f"{p99_note(args.polls)}; SunSpec discovery tries {sunspec.DEFAULT_BASES} in that order")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polls", type=int, default=500, help="samples per profile")
    parser.add_argument("--poll-hz", type=float, default=100.0)
    args = parser.parse_args()
    configure_logging("warning", json_output=False)
    print_header(
        "meter profiles",
        "connect (+ SunSpec discovery) to the first sample, and one poll's read round trip, per profile",
        reproduce_command("meter_profiles.py", [("--polls", args.polls), ("--poll-hz", args.poll_hz)]),
    )
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
