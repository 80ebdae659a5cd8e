"""Every shipped meter profile, served by the simulator over real Modbus TCP and read by the daemon's
meter driver: the Eastron float map, SunSpec models 201-204 found by discovery at several bases, and
the two revenue meters with fixed scales. Plus what a SunSpec meter must never turn into a number."""

from __future__ import annotations

import asyncio
import tomllib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from helpers import EXAMPLE
from prometheus_client import CollectorRegistry
from test_meter_driver import Recorder

from mullet.daemon.config import Config, ConfigError, parse_config
from mullet.daemon.metrics import Metrics
from mullet.daemon.site.simulated import sim_spec
from mullet.daemon.site.wiring import site_meter
from mullet.drivers import device_profiles, sunspec
from mullet.drivers.device_profiles import Point, ProfileError, load_meter_profile
from mullet.drivers.meter import MeterSample, ModbusMeter
from mullet.simulators.meter import MeterSim

POWER_KW, GRID_HZ = 1234.5, 59.95
WAIT_S = 20.0  # generous: the first sample takes a connect and, for SunSpec, a discovery


@asynccontextmanager
async def polling(
    sim: MeterSim, profile: str, port: int | None = None, **driver: Any
) -> AsyncIterator[tuple[ModbusMeter, Recorder]]:
    recorder = Recorder()
    meter = ModbusMeter(
        "127.0.0.1",
        sim.port if port is None else port,
        device_id=1,
        profile=load_meter_profile(profile),
        poll_hz=20.0,
        timeout_s=1.0,
        on_sample=recorder.sample,
        on_reject=recorder.reject,
        **driver,
    )
    task = asyncio.create_task(meter.run())
    try:
        yield meter, recorder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _sim(profile: str, **kwargs: Any) -> MeterSim:
    return MeterSim(
        power_kw=lambda: POWER_KW,
        frequency_hz=lambda: GRID_HZ,
        profile=profile,
        frequency_refresh_s=0,
        **kwargs,
    )


# (profile, simulator options, driver options, power resolution kW, frequency resolution Hz)
CASES = [
    ("eastron-sdm630", {}, {}, 0.001, 1e-4),
    ("sunspec", {"sunspec_model": 201}, {}, 0.1, 0.01),  # W_SF 2 for 1.2 MW in an int16
    ("sunspec", {"sunspec_model": 202, "sunspec_base": 0}, {}, 0.1, 0.01),
    ("sunspec", {"sunspec_model": 203, "sunspec_base": 50000}, {}, 0.1, 0.01),
    ("sunspec", {"sunspec_model": 204, "sunspec_base": 30000}, {"sunspec_bases": (30000,)}, 0.1, 0.01),
    ("schneider-pm5500", {}, {}, 0.001, 1e-4),
    ("schneider-ion-default", {}, {}, 0.1, 0.05),  # kW x 10 and Hz x 10 integers
]


@pytest.mark.parametrize(
    ("profile", "sim_options", "driver_options", "kw_resolution", "hz_resolution"),
    CASES,
    ids=[f"{c[0]}-{c[1].get('sunspec_model', '')}{c[1].get('sunspec_base', '')}" for c in CASES],
)
async def test_the_driver_reads_power_and_frequency_from_each_profile(
    profile: str,
    sim_options: dict[str, Any],
    driver_options: dict[str, Any],
    kw_resolution: float,
    hz_resolution: float,
) -> None:
    sim = _sim(profile, **sim_options)
    await sim.start()
    try:
        async with polling(sim, profile, **driver_options) as (meter, recorder):
            await recorder.until(lambda: len(recorder.samples) >= 2)
            sample = recorder.samples[-1]
            assert sample.power_kw == pytest.approx(POWER_KW, abs=kw_resolution)
            assert sample.frequency_hz == pytest.approx(GRID_HZ, abs=hz_resolution + 1e-9)
            if sim.sunspec_model is not None:
                assert meter.discovered == (sim.sunspec_model, sim.sunspec_model_address)
            assert recorder.rejects == Counter()
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    ("sunspec_point", "raw", "reason"),
    [
        ("W_SF", -0x8000, "not_implemented"),  # the scale factor is not implemented
        ("Hz_SF", -0x8000, "not_implemented"),
        ("W", -0x8000, "not_implemented"),  # int16 0x8000: no measurement
        ("Hz", -0x8000, "not_implemented"),
        ("W_SF", 11, "bad_scale_factor"),  # outside SunSpec's -10..10
    ],
)
async def test_a_sunspec_value_or_scale_factor_not_implemented_is_rejected_never_zero(
    sunspec_point: str, raw: int, reason: str
) -> None:
    sim = _sim("sunspec")
    sim.override_raw(sunspec_point, raw)
    await sim.start()
    try:
        async with polling(sim, "sunspec") as (_meter, recorder):
            await recorder.until(lambda: recorder.rejects[reason] >= 3)
            assert recorder.samples == []
            sim.raw_overrides.clear()  # implemented again: readings come back
            await recorder.until(lambda: len(recorder.samples) >= 1)
            assert recorder.samples[-1].power_kw == pytest.approx(POWER_KW, abs=0.1)
    finally:
        await sim.stop()


async def test_a_device_that_is_not_sunspec_is_a_counted_logged_state_not_a_crash() -> None:
    sim = _sim("eastron-sdm630")  # input registers only: every holding read is a Modbus exception
    await sim.start()
    try:
        async with polling(sim, "sunspec") as (meter, recorder):
            await recorder.until(lambda: recorder.rejects["not_sunspec"] >= 5)
            assert recorder.samples == [] and meter.discovered is None
            assert meter.health.state == "garbage" and "SunS" in meter.health.reason
    finally:
        await sim.stop()


async def test_a_sunspec_device_without_the_configured_meter_model_is_no_meter_model() -> None:
    sim = _sim("sunspec", sunspec_model=203)
    await sim.start()
    try:
        async with polling(sim, "sunspec", sunspec_model=201) as (meter, recorder):
            await recorder.until(lambda: recorder.rejects["no_meter_model"] >= 3)
            assert recorder.samples == []
            assert meter.health.state == "garbage" and "model 201" in meter.health.reason
    finally:
        await sim.stop()


async def test_discovery_runs_again_after_a_reconnect() -> None:
    first = _sim("sunspec", sunspec_model=203)
    await first.start()
    port = first.port
    async with polling(first, "sunspec") as (meter, recorder):
        try:
            await recorder.until(lambda: len(recorder.samples) >= 1)
            assert meter.discovered == (203, first.sunspec_model_address)
        finally:
            await first.stop()
        # Another meter behind the same address: a different model at a different base.
        second = _sim("sunspec", sunspec_model=204, sunspec_base=0, port=port)
        await second.start()
        try:
            await recorder.until(lambda: meter.discovered == (204, second.sunspec_model_address))
            count = len(recorder.samples)
            await recorder.until(lambda: len(recorder.samples) > count)
            assert recorder.samples[-1].power_kw == pytest.approx(POWER_KW, abs=0.1)
        finally:
            await second.stop()


def test_sunspec_points_come_from_the_sunspec_model_definitions() -> None:
    profile = sunspec.resolve(load_meter_profile("sunspec"), 203, 40070)
    # SunSpec model 203 (pysunspec2's model_203.json): Hz at offset 16, Hz_SF 17, W 18, W_SF 22.
    assert profile.points["frequency_hz"] == Point(
        "frequency_hz", 40086, "int16", 1.0, "frequency_hz.sf", -0x8000
    )
    assert profile.points["power_w"].address == 40088 and profile.points["power_w.sf"].address == 40092
    assert profile.points["import_kwh"].type == "uint32" and profile.points["import_kwh"].not_implemented == 0
    # One read holds both values and both scale factors.
    assert profile.block(("power_w", "frequency_hz")) == (40086, 7)
    with pytest.raises(ProfileError, match="after discovery"):
        load_meter_profile("sunspec").block(("power_w", "frequency_hz"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"points": {"power_w": {"address": 0, "type": "float32", "scale": 0}}}, "scale must be"),
        ({"points": {"power_w": {"address": 0, "type": "float32", "scale": -1.0}}}, "scale must be"),
        (
            {"points": {"power_w": {"address": 0, "type": "float32", "scale": "1"}}},
            "scale must be an integer or a number",
        ),
        ({"points": {"power_w": {"address": 0, "type": "float64"}}}, "type must be one of"),
        ({"points": {"power_w": {"address": 70000, "type": "float32"}}}, "address must be"),
        ({"points": {"power_w": {"address": 0, "type": "float32", "sf": "x"}}}, "unknown keys"),
        (
            {
                "points": {
                    "power_w": {"address": 0, "type": "float32"},
                    "frequency_hz": {"address": 200, "type": "float32"},
                }
            },
            "> 125",
        ),
        ({"table": "coils"}, "table must be"),
        ({"sunspec": True, "table": "input"}, "holding registers"),
        (
            {"sunspec": True, "points": {"power_w": {"sunspec": "W"}, "frequency_hz": {"address": 1}}},
            "unknown keys",
        ),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_invalid_meter_profiles_are_profile_errors(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], message: str
) -> None:
    data: dict[str, Any] = {
        "name": "m",
        "kind": "meter",
        "table": "holding",
        "word_order": "big",
        "frequency_refresh_s": 1.0,
        "points": {
            "power_w": {"address": 0, "type": "float32"},
            "frequency_hz": {"address": 2, "type": "float32"},
        },
    }
    data.update({key: value for key, value in change.items() if key != "points"})
    data["points"] = {**data["points"], **change.get("points", {})}
    monkeypatch.setattr(device_profiles, "_read", lambda _name: data)
    with pytest.raises(ProfileError, match=message):
        load_meter_profile("m")


def _meter_config(**meter: Any) -> Config:
    data = tomllib.loads(EXAMPLE.read_text())
    data["meter"].update(meter)
    return parse_config(data)


def test_the_sunspec_meter_keys_are_checked_by_the_config() -> None:
    config = _meter_config(profile="sunspec", sunspec_base=1000, sunspec_model=204)
    assert (config.meter.sunspec_base, config.meter.sunspec_model) == (1000, 204)
    assert config.meter_frequency_refresh_s() == load_meter_profile("sunspec").frequency_refresh_s
    served = sim_spec(config).meter  # `mulletd demo` serves the map the daemon will look for
    assert (served.profile, served.sunspec_base, served.sunspec_model) == ("sunspec", 1000, 204)
    for bad, message in (
        ({"profile": "eastron-sdm630", "sunspec_base": 1000}, "applies to a SunSpec profile only"),
        ({"profile": "sunspec", "sunspec_model": 205}, "sunspec_model"),
        ({"profile": "sunspec", "sunspec_base": 70000}, "sunspec_base"),
        ({"profile": "no-such-meter"}, "no device profile named"),
    ):
        with pytest.raises(ConfigError, match=message):
            _meter_config(**bad)


async def test_the_daemon_wires_the_configured_sunspec_base_and_model() -> None:
    sim = _sim("sunspec", sunspec_model=202, sunspec_base=1000)
    await sim.start()
    config = _meter_config(
        profile="sunspec", port=sim.port, sunspec_base=1000, sunspec_model=202, poll_hz=20, timeout_s=1.0
    )
    samples: list[MeterSample] = []
    got = asyncio.Event()

    def on_sample(sample: MeterSample) -> None:
        samples.append(sample)
        got.set()

    meter = site_meter(config, Metrics(CollectorRegistry()), on_sample)
    task = asyncio.create_task(meter.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await got.wait()
        assert meter.discovered == (202, sim.sunspec_model_address)
        assert samples[-1].power_kw == pytest.approx(POWER_KW, abs=0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
