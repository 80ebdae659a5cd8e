"""The SDM630 meter driver against the simulated meter over real Modbus TCP."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter

import pytest

from mullet.drivers.device_profiles import load_meter_profile
from mullet.drivers.meter import MeterSample, ModbusMeter, plausibility_error
from mullet.simulators.meter import MeterSim

PROFILE = load_meter_profile("eastron-sdm630")


class Recorder:
    def __init__(self) -> None:
        self.samples: list[MeterSample] = []
        self.rejects: Counter[str] = Counter()
        self.round_trips_s: list[float] = []
        self.changed = asyncio.Event()

    def sample(self, sample: MeterSample) -> None:
        self.samples.append(sample)
        self.changed.set()

    def reject(self, reason: str) -> None:
        self.rejects[reason] += 1
        self.changed.set()

    async def until(self, predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        """Generous: a first sample takes a connect and, for SunSpec, a discovery."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def meter_sim():
    power_kw = {"value": 1234.5}
    sim = MeterSim(power_kw=lambda: power_kw["value"], frequency_hz=lambda: 59.95, host="127.0.0.1", port=0)
    await sim.start()
    sim.power = power_kw  # type: ignore[attr-defined]
    yield sim
    await sim.stop()


def _driver(
    sim: MeterSim, recorder: Recorder, *, port: int | None = None, poll_hz: float = 20.0
) -> ModbusMeter:
    return ModbusMeter(
        "127.0.0.1",
        sim.port if port is None else port,
        device_id=1,
        profile=PROFILE,
        poll_hz=poll_hz,
        timeout_s=0.1,
        on_sample=recorder.sample,
        on_reject=recorder.reject,
        on_round_trip=recorder.round_trips_s.append,
    )


async def test_reads_within_one_refresh_window_return_one_measurement_and_a_glitch_holds_one_window() -> None:
    grid_hz = {"value": 60.0}
    sim = MeterSim(
        power_kw=lambda: 1000.0, frequency_hz=lambda: grid_hz["value"], port=0, frequency_refresh_s=0.2
    )
    await sim.start()
    recorder = Recorder()
    task = asyncio.create_task(_driver(sim, recorder, poll_hz=50.0).run())
    try:
        await recorder.until(lambda: sim.refreshes >= 2)
        grid_hz["value"] = 59.9  # the grid moves mid-window: the register keeps the window's value
        window = sim.refreshes
        sim.glitch_frequency(59.5)
        await recorder.until(lambda: sim.refreshes >= window + 2)
        seen = [round(s.frequency_hz, 3) for s in recorder.samples]
        assert 59.5 in seen
        first_bad, last_bad = seen.index(59.5), len(seen) - 1 - seen[::-1].index(59.5)
        bad = recorder.samples[first_bad : last_bad + 1]
        assert all(round(s.frequency_hz, 3) == 59.5 for s in bad)  # one run of reads, one window
        assert bad[-1].requested_s is not None and bad[-1].requested_s - bad[0].monotonic_s < 0.2
        assert seen[last_bad + 1] == 59.9  # the window after the glitch reports the grid again
        assert all(s.requested_s is not None and s.requested_s <= s.monotonic_s for s in recorder.samples)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()


async def test_reads_power_and_frequency_in_kw_and_hz(meter_sim: MeterSim) -> None:
    recorder = Recorder()
    task = asyncio.create_task(_driver(meter_sim, recorder).run())
    try:
        await recorder.until(lambda: len(recorder.samples) >= 5)
        sample = recorder.samples[-1]
        assert sample.power_kw == pytest.approx(1234.5, abs=0.01)
        assert sample.frequency_hz == pytest.approx(59.95, abs=1e-4)
        assert recorder.round_trips_s and max(recorder.round_trips_s) < 0.1
        meter_sim.power["value"] = 800.0  # type: ignore[attr-defined]
        await recorder.until(lambda: recorder.samples[-1].power_kw == pytest.approx(800.0, abs=0.01))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("point", "value", "reason"),
    [
        ("power_w", math.nan, "not_finite"),
        ("power_w", math.inf, "not_finite"),
        ("power_w", -5000.0, "negative_power"),
        ("frequency_hz", 0.0, "frequency_out_of_range"),
        ("frequency_hz", 400.0, "frequency_out_of_range"),
    ],
)
async def test_implausible_readings_are_rejected_and_counted(
    meter_sim: MeterSim, point: str, value: float, reason: str
) -> None:
    meter_sim.override(point, value)
    recorder = Recorder()
    task = asyncio.create_task(_driver(meter_sim, recorder).run())
    try:
        await recorder.until(lambda: recorder.rejects[reason] >= 3)
        assert recorder.samples == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_silent_meter_times_out_quickly_and_recovers(meter_sim: MeterSim) -> None:
    recorder = Recorder()
    task = asyncio.create_task(_driver(meter_sim, recorder).run())
    try:
        await recorder.until(lambda: len(recorder.samples) >= 2)
        meter_sim.responding = False
        silent_from_s = time.monotonic()
        await recorder.until(lambda: recorder.rejects["timeout"] + recorder.rejects["unreachable"] >= 3)
        # No retries on this path: three misses take about three timeouts, not pymodbus' 3 s x 4 each.
        assert time.monotonic() - silent_from_s < 2.0
        count = len(recorder.samples)
        meter_sim.responding = True
        await recorder.until(lambda: len(recorder.samples) >= count + 3, timeout_s=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unreachable_meter_is_reported_not_fatal() -> None:
    from mullet.simulators.ports import free_port

    recorder = Recorder()
    dead = MeterSim(power_kw=lambda: 0.0, frequency_hz=lambda: 60.0, host="127.0.0.1", port=0)
    task = asyncio.create_task(_driver(dead, recorder, port=free_port()).run())
    try:
        await recorder.until(lambda: recorder.rejects["unreachable"] >= 3)
        assert recorder.samples == []
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_plausibility_rules() -> None:
    assert plausibility_error(1000.0, 60.0) is None
    assert plausibility_error(0.0, 50.0) is None  # a fully shed site can read 0 W
    assert plausibility_error(math.nan, 60.0) == "not_finite"
    assert plausibility_error(1000.0, math.nan) == "not_finite"
