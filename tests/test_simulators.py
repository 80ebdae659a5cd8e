"""Simulated site devices, exercised over the real protocols: a mosquitto process and pymodbus clients.

Ramps are shortened (curtail 0.5 s, resume 1.0 s) so the physics is observable in about a second;
every wait is a generously bounded wait on a message (helpers.Observer) or a poll of the ground truth
(helpers.until), never a fixed sleep, and no wall-clock time is bounded tightly: speeds live in bench/.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress

import pytest
from helpers import Observer, observing, until
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from mullet.daemon.config import Config, GroupSection, parse_config
from mullet.daemon.site.simulated import group_spec, simulated_site
from mullet.drivers.device_profiles import PointType, load_meter_profile, load_pdu_profile
from mullet.drivers.protocol import (
    GroupSetpoint,
    GroupState,
    TenantSetpoint,
    TenantState,
    Trip,
    decode,
    decode_online,
    encode,
)
from mullet.simulators.ai import DemandTrace
from mullet.simulators.meter import FrequencyScript
from mullet.simulators.mining import MiningGroup
from mullet.simulators.registers import WordOrder, encode_point
from mullet.simulators.site import SimulatedSite

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
F32 = AsyncModbusTcpClient.DATATYPE.FLOAT32
U32 = AsyncModbusTcpClient.DATATYPE.UINT32
METER = load_meter_profile("eastron-sdm630")
PDU = load_pdu_profile("netio-coils")

BASE_KW, G1_KW, G2_KW, T1_KW, T2_KW = 10.0, 100.0, 200.0, 40.0, 45.0  # T2: 0.9 x reserved 50
CURTAIL_S, RESUME_S = 0.5, 1.0
WAIT_S = 30.0  # the bound of every wait on a message or a predicate
MODBUS_TIMEOUT_S = 10.0  # no healthy answer misses it, even on a loaded machine

# --- site ---------------------------------------------------------------------------------------


def _config(broker_port: int) -> Config:
    return parse_config(
        {
            "site": {
                "site_id": f"sim-{secrets.token_hex(4)}",
                "interconnect_kw": 1000,
                "base_load_kw": BASE_KW,
            },
            "mqtt": {
                "url": f"mqtt://127.0.0.1:{broker_port}",
                "keepalive_s": 5,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.4,
            },
            "meter": {"port": 0},
            "pdus": [{"pdu_id": "pdu-a", "port": 0, "outlets": 4}],
            "groups": [
                {
                    "group_id": "g1",
                    "rated_kw": G1_KW,
                    "efficiency_j_per_th": 20.0,
                    "supports_power_target": True,
                    "outlets": [{"pdu": "pdu-a", "outlet": 1}, {"pdu": "pdu-a", "outlet": 2}],
                },
                {
                    "group_id": "g2",
                    "rated_kw": G2_KW,
                    "efficiency_j_per_th": 25.0,
                    "outlets": [{"pdu": "pdu-a", "outlet": 3}],
                },
            ],
            "tenants": [{"tenant_id": "t1", "reserved_kw": 60}, {"tenant_id": "t2", "reserved_kw": 50}],
            "simulator": {
                "tick_hz": 50,
                "curtail_s": CURTAIL_S,
                "resume_s": RESUME_S,
                "telemetry_period_s": 0.2,
                "frequency_hz": 60.0,
                "frequency_script": [[0.3, 59.7]],
                "tenants": [{"tenant_id": "t1", "demand_trace_kw": [T1_KW], "trace_step_s": 1.0}],
            },
        }
    )


async def _started(site: SimulatedSite) -> asyncio.Task[None]:
    task = asyncio.create_task(site.run())
    waiter = asyncio.create_task(site.started.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task in done:
        task.result()  # raises what made run() end
    assert site.started.is_set(), f"simulated site did not start within {WAIT_S} s"
    return task


@pytest.fixture
async def site(mqtt_broker) -> AsyncIterator[SimulatedSite]:
    sim = simulated_site(_config(mqtt_broker.port))
    task = await _started(sim)
    try:
        yield sim
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


Observe = Callable[..., Awaitable[Observer]]


async def _message(observer: Observer, topic: str, accept: Callable[[bytes], bool], since: int = 0) -> bytes:
    """The first message on `topic` from index `since` on that `accept`s."""
    seen = await observer.wait_for(
        lambda m: m.topic == topic and accept(m.payload),
        WAIT_S,
        since,
        what=f"an accepted message on {topic}",
    )
    return seen.payload


async def _modbus(port: int, timeout_s: float = MODBUS_TIMEOUT_S) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=timeout_s, retries=0)
    assert await client.connect(), f"cannot connect to modbus port {port}"
    return client


def _number(value: object) -> float:
    assert isinstance(value, int | float), value
    return float(value)


async def _read_f32(client: AsyncModbusTcpClient, address: int) -> float:
    response = await client.read_input_registers(address, count=2, device_id=1)
    assert not response.isError(), response
    return _number(client.convert_from_registers(response.registers, F32))


# --- meter --------------------------------------------------------------------------------------


async def test_meter_reads_back_sum_of_loads_and_scripted_frequency(site: SimulatedSite) -> None:
    client = await _modbus(site.meter.port)
    try:
        expected_w = (BASE_KW + G1_KW + G2_KW + T1_KW + T2_KW) * 1000
        assert await _read_f32(client, METER.points["power_w"].address) == pytest.approx(expected_w)
        assert site.site_power_kw() * 1000 == pytest.approx(expected_w)
        for name in ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v"):
            assert await _read_f32(client, METER.points[name].address) == pytest.approx(230.0)

        # One block read across the gaps, as a driver does: power, frequency and energy together.
        start, count = METER.block(("power_w", "frequency_hz", "import_kwh"))
        latest: dict[str, float] = {}

        async def read_block() -> None:
            response = await client.read_input_registers(start, count=count, device_id=1)
            assert not response.isError(), response
            for name in ("frequency_hz", "import_kwh"):
                offset = METER.points[name].address - start
                words = response.registers[offset : offset + 2]
                latest[name] = _number(client.convert_from_registers(words, F32))

        start_s = time.monotonic()
        while not (latest.get("frequency_hz") == pytest.approx(59.7) and latest["import_kwh"] > 0):
            assert time.monotonic() - start_s < WAIT_S, f"meter never showed the scripted step: {latest}"
            await read_block()
            await asyncio.sleep(0.02)  # a poll interval, as a driver's: the step comes at 0.3 s of site time

        # The meter has input registers only: FC 03 is refused.
        holding = await client.read_holding_registers(METER.points["power_w"].address, count=2, device_id=1)
        assert holding.isError()
    finally:
        client.close()


async def test_meter_fault_switches(site: SimulatedSite) -> None:
    power_at = METER.points["power_w"].address
    client = await _modbus(site.meter.port)
    try:
        site.meter.override("power_w", math.nan)
        assert math.isnan(await _read_f32(client, power_at))
        site.meter.clear_overrides()
        assert math.isfinite(await _read_f32(client, power_at))

    finally:
        client.close()

    site.meter.responding = False
    silent = await _modbus(site.meter.port, timeout_s=1.0)  # no answer will come: any timeout will do
    try:
        with pytest.raises(ModbusException):
            await silent.read_input_registers(power_at, count=2, device_id=1)
    finally:
        silent.close()
    site.meter.responding = True

    client = await _modbus(site.meter.port)  # answering again
    try:
        assert await _read_f32(client, power_at) > 0
    finally:
        client.close()

    port = site.meter.port
    await site.meter.stop()
    refused = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.5, retries=0)
    assert not await refused.connect()
    refused.close()
    await site.meter.start()
    assert site.meter.port == port
    client = await _modbus(port)
    try:
        assert await _read_f32(client, power_at) > 0
    finally:
        client.close()


# --- mining -------------------------------------------------------------------------------------


async def _publish_setpoint(observer: Observer, site: SimulatedSite, group_id: str, **fields: object) -> None:
    setpoint = GroupSetpoint.model_validate({"ts": time.time(), **fields})
    await observer.publish(site.topics.group_set(group_id), encode(setpoint), retain=True)


async def test_group_curtails_and_resumes_with_a_ramp(site: SimulatedSite, observe: Observe) -> None:
    g1 = site.groups["g1"]
    state_topic = site.topics.group_state("g1")
    mqtt = await observe([state_topic])
    # The configured ramps, not the defaults (5 s, 10 s): test_ramps_are_linear_and_bounded has the rest.
    assert g1.down_kw_per_s == pytest.approx(G1_KW / CURTAIL_S) and g1.up_kw_per_s == pytest.approx(
        G1_KW / RESUME_S
    )

    since = len(mqtt.received)
    await _publish_setpoint(mqtt, site, "g1", seq=7, mode="curtail")
    published_s = time.monotonic()
    raw = await _message(mqtt, state_topic, lambda r: decode(GroupState, r).seq_applied == 7, since)
    assert decode(GroupState, raw).mode in ("ramping", "curtail")

    sleep_kw = 0.02 * G1_KW
    await until(lambda: g1.power_kw <= sleep_kw + 1e-6, WAIT_S, "g1 asleep")
    took_s = time.monotonic() - published_s
    # A ramp, not a step: (1 - 0.02) x CURTAIL_S at the least; a loaded machine only makes it later.
    assert took_s > 0.3, f"curtail took {took_s:.3f} s"
    assert site.groups["g2"].power_kw == G2_KW  # only the commanded group moved

    raw = await _message(mqtt, state_topic, lambda r: decode(GroupState, r).mode == "curtail", since)
    state = decode(GroupState, raw)
    assert state.seq_applied == 7
    assert state.power_kw == pytest.approx(sleep_kw)
    assert state.hashrate_ths == pytest.approx(sleep_kw * 1000 / 20.0)

    # Partial target (the group supports one), then back to rated.
    await _publish_setpoint(mqtt, site, "g1", seq=8, mode="run", power_kw=60.0)
    await until(lambda: g1.power_kw == pytest.approx(60.0) and g1.mode == "run", WAIT_S, "g1 at 60")
    await _publish_setpoint(mqtt, site, "g1", seq=9, mode="run")
    ramp: list[float] = []  # g1's power at each poll

    def at_rated() -> bool:
        ramp.append(g1.power_kw)
        return g1.power_kw == G1_KW

    await until(at_rated, WAIT_S, "g1 back at rated", poll_s=0.005)
    assert ramp == sorted(ramp), ramp  # up only, to rated (the rate: the assertion at the top)
    assert g1.seq_applied == 9 and g1.mode == "run"
    assert all(t.caps_received == [] for t in site.tenants.values())


async def test_trip_sheds_only_armed_groups(site: SimulatedSite, observe: Observe) -> None:
    g1, g2 = site.groups["g1"], site.groups["g2"]
    mqtt = await observe([site.topics.trip])
    await _publish_setpoint(mqtt, site, "g1", seq=1, mode="run", trip_stage=1)
    await _publish_setpoint(mqtt, site, "g2", seq=1, mode="run", trip_stage=3)
    await until(lambda: g1.trip_stage == 1 and g2.trip_stage == 3, WAIT_S, "both armed")

    trip = Trip(seq=1, stage=2, ts=time.time())
    await mqtt.publish(site.topics.trip, encode(trip))
    await until(lambda: g1.power_kw <= g1.sleep_kw + 1e-6, WAIT_S, "g1 shed on trip")
    # g2's controller has its own connection: the trip reaches it on its own time.
    await until(lambda: site.mining[g2.group_id].trips_received == 1, WAIT_S, "the trip at g2")
    assert g2.power_kw == G2_KW and g2.mode == "run"


async def test_malformed_setpoints_are_counted_not_fatal(site: SimulatedSite, observe: Observe) -> None:
    controller = site.mining["g1"]
    set_topic = site.topics.group_set("g1")
    state_topic = site.topics.group_state("g1")
    mqtt = await observe([state_topic])
    for bad in (b"not json", b"[1, 2]", b'{"v": 1, "seq": 1, "mode": "explode", "ts": 1}', b'{"v": 2}'):
        await mqtt.publish(set_topic, bad)
    await mqtt.publish(site.topics.trip, b'{"seq": -1}')
    await mqtt.publish(site.topics.tenant_set("t1"), b'{"power_cap_kw": "lots"}')
    await until(
        lambda: (
            controller.invalid_setpoints == 4
            and controller.invalid_trips == 1
            and site.ai["t1"].invalid_setpoints == 1
        ),
        WAIT_S,
        "bad payloads counted",
    )
    assert controller.handler_errors == 0
    assert site.groups["g1"].seq_applied is None and site.tenants["t1"].caps_received == []

    # Still alive: the next good setpoint is applied and acknowledged.
    await _publish_setpoint(mqtt, site, "g1", seq=3, mode="curtail")
    await _message(mqtt, state_topic, lambda r: decode(GroupState, r).seq_applied == 3)


# --- PDU ----------------------------------------------------------------------------------------


async def test_pdu_outlet_off_hard_cuts_its_group(site: SimulatedSite) -> None:
    g1 = site.groups["g1"]
    pdu = site.pdus["pdu-a"]
    client = await _modbus(pdu.port)

    async def outlet_w(outlet: int) -> int:
        response = await client.read_input_registers(PDU.power_base + 2 * outlet, count=2, device_id=1)
        assert not response.isError(), response
        return int(_number(client.convert_from_registers(response.registers, U32)))

    try:
        assert await outlet_w(1) == 50_000 and await outlet_w(2) == 50_000  # g1 split over 2 outlets
        assert await outlet_w(3) == 200_000 and await outlet_w(4) == 0  # g2; outlet 4 feeds nothing

        response = await client.write_coil(PDU.coil_base + 1, False, device_id=1)
        assert not response.isError(), response
        assert g1.power_kw == 0.0 and not g1.powered and g1.miners_online == 0  # at once, no ramp
        assert pdu.switches == [(1, False)]
        coils = await client.read_coils(PDU.coil_base + 1, count=4, device_id=1)
        assert coils.bits[:4] == [False, True, True, True]
        assert await outlet_w(1) == 0 and await outlet_w(2) == 0  # the whole group is down
        assert site.site_power_kw() == pytest.approx(BASE_KW + G2_KW + T1_KW + T2_KW)

        bad = await client.write_coil(PDU.coil_base + 5, False, device_id=1)  # no outlet 5
        assert bad.isError()

        response = await client.write_coil(PDU.coil_base + 1, True, device_id=1)
        assert not response.isError(), response
        booting: list[tuple[float, str]] = []  # (power, mode) at each poll

        def booted() -> bool:
            booting.append((g1.power_kw, g1.mode))
            return g1.power_kw > 0

        await until(booted, WAIT_S, "g1 booting", poll_s=0.005)
        assert booting[-1][0] < G1_KW and booting[-1][1] == "ramping"  # a cold start, not a step
        await until(lambda: g1.power_kw == G1_KW, WAIT_S, "g1 back at rated")
        assert g1.miners_online == g1.miners
    finally:
        client.close()


# --- AI tenants ---------------------------------------------------------------------------------


async def test_ai_tenant_obeys_a_cap(site: SimulatedSite, observe: Observe) -> None:
    state_topic = site.topics.tenant_state("t1")
    set_topic = site.topics.tenant_set("t1")
    mqtt = await observe([state_topic])

    await mqtt.publish(set_topic, encode(TenantSetpoint(seq=1, power_cap_kw=25.0, ts=time.time())))
    raw = await _message(mqtt, state_topic, lambda r: decode(TenantState, r).power_kw == 25.0)
    assert decode(TenantState, raw).demand_kw == pytest.approx(T1_KW)
    assert site.ai_power_kw() == pytest.approx(25.0 + T2_KW)

    since = len(mqtt.received)
    await mqtt.publish(set_topic, encode(TenantSetpoint(seq=2, power_cap_kw=None, ts=time.time())))
    await _message(
        mqtt, state_topic, lambda r: decode(TenantState, r).power_kw == pytest.approx(T1_KW), since
    )
    assert site.tenants["t1"].caps_received == [25.0, None]
    assert site.tenants["t2"].caps_received == []


# --- connection faults --------------------------------------------------------------------------


async def test_controller_crash_fires_last_will(site: SimulatedSite, observe: Observe) -> None:
    online_topic = site.topics.group_online("g2")
    mqtt = await observe([online_topic])
    await _message(mqtt, online_topic, decode_online)

    since = len(mqtt.received)
    site.mining["g2"].go_offline()
    await _message(mqtt, online_topic, lambda raw: not decode_online(raw), since)
    since = len(mqtt.received)
    site.mining["g2"].go_online()
    await _message(mqtt, online_topic, decode_online, since)
    assert site.mining["g2"].connects == 2


async def test_controllers_reconnect_after_broker_restart(restartable_broker) -> None:
    site = simulated_site(_config(restartable_broker.port))
    task = await _started(site)
    try:
        restartable_broker.stop_blocking()
        await until(lambda: not any(link.ready.is_set() for link in site.links), WAIT_S, "links down")
        restartable_broker.start_blocking()
        await until(lambda: all(link.ready.is_set() for link in site.links), WAIT_S, "links back")
        assert all(link.connects == 2 for link in site.links)

        state_topic = site.topics.group_state("g2")
        async with observing(restartable_broker, [state_topic]) as client:  # and subscribed again
            await _publish_setpoint(client, site, "g2", seq=11, mode="curtail")
            await until(lambda: site.groups["g2"].seq_applied == 11, WAIT_S, "setpoint after reconnect")
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


# --- physics, no I/O ----------------------------------------------------------------------------


def _group(**overrides: object) -> MiningGroup:
    spec = GroupSection.model_validate(
        {"group_id": "g", "rated_kw": 350.0, "efficiency_j_per_th": 17.5, **overrides}
    )
    return MiningGroup(group_spec(spec), sleep_fraction=0.02, curtail_s=5.0, resume_s=10.0)


def _setpoint(seq: int, mode: str, **fields: object) -> GroupSetpoint:
    return GroupSetpoint.model_validate({"seq": seq, "mode": mode, "ts": 1.0, **fields})


def test_ramps_are_linear_and_bounded() -> None:
    group = _group()
    assert group.apply(_setpoint(1, "curtail"))
    group.advance(2.5)
    assert group.power_kw == pytest.approx(175.0) and group.mode == "ramping"
    group.advance(2.5)
    assert group.power_kw == pytest.approx(7.0) and group.mode == "curtail"  # 2 % of rated
    group.apply(_setpoint(2, "run"))
    group.advance(5.0)
    assert group.power_kw == pytest.approx(182.0)
    group.advance(5.0)
    assert group.power_kw == 350.0 and group.mode == "run"
    assert group.hashrate_ths == pytest.approx(20_000.0)


def test_partial_target_is_clamped_and_needs_support() -> None:
    flexible = _group(supports_power_target=True)
    flexible.apply(_setpoint(1, "run", power_kw=1.0))
    assert flexible.target_kw == pytest.approx(7.0)
    flexible.apply(_setpoint(2, "run", power_kw=9999.0))
    assert flexible.target_kw == 350.0
    fixed = _group()
    fixed.apply(_setpoint(1, "run", power_kw=100.0))
    assert fixed.target_kw == 350.0


def test_trip_needs_an_armed_stage_and_redelivery_does_not_undo_it() -> None:
    group = _group()
    assert not group.trip(5)  # never armed
    armed = _setpoint(1, "run", trip_stage=2)
    group.apply(armed)
    assert not group.trip(1)
    assert group.trip(2) and group.target_kw == pytest.approx(7.0)
    assert not group.apply(armed)  # the retained setpoint again, e.g. after a reconnect
    assert group.target_kw == pytest.approx(7.0)
    assert group.apply(_setpoint(2, "run")) and group.target_kw == 350.0


def test_power_cut_is_immediate_and_restart_is_cold() -> None:
    group = _group()
    group.set_powered(False)
    assert group.power_kw == 0.0 and group.miners_online == 0
    group.advance(1.0)
    assert group.power_kw == 0.0
    group.set_powered(True)
    group.advance(5.0)
    assert group.power_kw == pytest.approx(175.0) and 0 < group.miners_online < group.miners
    group.advance(5.0)
    assert group.power_kw == 350.0 and group.miners_online == group.miners == 100


def test_stuck_firmware_acknowledges_but_does_not_move() -> None:
    group = _group()
    group.stuck = True
    group.apply(_setpoint(4, "curtail"))
    group.advance(10.0)
    assert group.seq_applied == 4 and group.power_kw == 350.0 and group.mode == "ramping"


def test_demand_trace_interpolates_and_loops() -> None:
    trace = DemandTrace([0.0, 10.0, 20.0], step_s=2.0)
    assert [trace.at(t) for t in (0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0)] == [0, 5, 10, 20, 10, 0, 5]
    assert DemandTrace([42.0], step_s=1.0).at(123.4) == 42.0


def test_frequency_script_holds_each_step() -> None:
    script = FrequencyScript(60.0, [(2.0, 59.8), (1.0, 59.9)])
    assert [script.at(t) for t in (0.0, 0.99, 1.0, 1.5, 2.0, 100.0)] == [60.0, 60.0, 59.9, 59.9, 59.8, 59.8]


@pytest.mark.parametrize(
    ("value", "point_type", "word_order", "datatype"),
    [
        (1234.5, "float32", "big", F32),
        (-1.25, "float32", "little", F32),
        (700_000, "uint32", "big", U32),
        (-300, "int16", "big", AsyncModbusTcpClient.DATATYPE.INT16),
    ],
)
def test_register_encoding_matches_pymodbus_decoding(
    value: float, point_type: PointType, word_order: WordOrder, datatype: AsyncModbusTcpClient.DATATYPE
) -> None:
    words = encode_point(value, point_type, word_order)
    decoded = AsyncModbusTcpClient.convert_from_registers(words, datatype, word_order=word_order)
    assert decoded == pytest.approx(value)
    nan_words = encode_point(math.nan, "float32")
    assert math.isnan(_number(AsyncModbusTcpClient.convert_from_registers(nan_words, F32)))
    assert encode_point(-5, "uint32") == [0, 0]  # saturates instead of wrapping
