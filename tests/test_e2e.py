"""End to end: `mulletd run` as a subprocess against the simulated site, over a real broker and Modbus.

The test plays the aggregator: it publishes `grid/event`, reads the acks, and checks the site's
ground truth (the simulator's physics, which the meter reports over Modbus).
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time

import pytest
from helpers import MULLETD, Observer, Running, observing, start_daemon, until
from pymodbus.client import AsyncModbusTcpClient

from mullet.drivers.protocol import GridEvent, Topics


def _ai_caps(observer: Observer) -> list[object]:
    caps = []
    for m in observer.received:
        if m.topic.endswith("/set") and "/ai/" in m.topic:
            caps.append(m.json()["power_cap_kw"])
    return caps


async def test_limit_is_met_within_the_ramp_and_released_on_cancel(running: Running) -> None:
    site, observer, config = running.site, running.observer, running.config
    await until(
        lambda: site.mining_power_kw() >= 0.99 * sum(g.rated_kw for g in config.groups),
        30,
        "full mining load",
    )
    mining_rated_kw = sum(g.rated_kw for g in config.groups)
    ai_allowance_kw = sum(t.reserved_kw + t.headroom_kw for t in config.tenants)
    # A limit that leaves mining about two thirds of its rated power.
    limit_kw = (
        config.site.safety_margin_kw + config.site.base_load_kw + ai_allowance_kw + mining_rated_kw * 2 / 3
    )
    assert site.site_power_kw() > limit_kw

    await observer.send(
        GridEvent(id="ev-limit-1", kind="limit", kw=limit_kw, program="ERS-10", source="test")
    )
    ack = await observer.ack("ev-limit-1")
    assert ack == {"v": 1, "id": "ev-limit-1", "accepted": True, "reason": "accepted", "code": "accepted"}

    # Within the ramp by design (CURTAIL_S; `make demo` prints the time): here only that it is met.
    await until(lambda: site.site_power_kw() <= limit_kw, 30, "site at the limit")
    # Held there: the site stays under the limit while the obligation is active.
    for _ in range(10):
        await asyncio.sleep(0.1)
        assert site.site_power_kw() <= limit_kw
    curtailed = [g for g in site.groups.values() if g.mode == "curtail"]
    assert 0 < len(curtailed) < len(site.groups)
    assert running.metric("mullet_grid_obligations_active") == 1.0
    assert running.metric("mullet_site_limit_watts") == pytest.approx(limit_kw * 1000)

    # The least efficient groups went first.
    shed_efficiency = max(g.efficiency_j_per_th for g in site.groups.values() if g.mode == "run")
    assert all(g.efficiency_j_per_th >= shed_efficiency for g in curtailed)

    await observer.send(GridEvent(id="ev-limit-1", kind="cancel", source="test"))
    assert (await observer.ack("ev-limit-1"))["accepted"] is True
    await until(lambda: site.mining_power_kw() >= 0.98 * mining_rated_kw, 30, "mining load back")
    assert running.metric("mullet_grid_obligations_active") == 0.0

    # AI firm power untouched: every cap the daemon ever sent says "uncapped", and the tenants agree.
    caps = _ai_caps(observer)
    assert caps and all(cap is None for cap in caps)
    assert all(cap is None for t in site.tenants.values() for cap in t.caps_received)

    # Clean stop: SIGTERM -> exit 0 and an explicit offline.
    running.daemon.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.daemon.wait(), 30) == 0
    await observer.wait_for(lambda m: m.topic == observer.topics.daemon_online and m.payload == b"0", 30)


async def test_bad_grid_events_are_rejected_with_a_reason_and_never_acted_on(running: Running) -> None:
    observer = running.observer
    now_s = time.time()
    cases = [
        (b'{"v": 1, "id": "bad-1", "kind": "limit", "kw": "lots"}', "invalid_field"),
        (GridEvent(id="bad-2", kind="limit", kw=-5), "kw must be >= 0"),
        (GridEvent(id="bad-3", kind="limit", kw=1e9), "absurd"),
        (
            GridEvent(id="bad-4", kind="limit", kw=5000, start=now_s - 100, end=now_s - 10),
            "end is in the past",
        ),
        (GridEvent(id="bad-5", kind="cancel"), "cancel of unknown event"),
        (GridEvent(id="bad-6", kind="reduce"), "kw is required"),
    ]
    for raw, _ in cases:
        await observer.send(raw)
    for index, (_, reason) in enumerate(cases, start=1):
        ack = await observer.ack(f"bad-{index}")
        assert ack["accepted"] is False
        assert reason in ack["reason"]
    # Garbage without an id cannot be acked, but is counted; an unknown group's state too.
    await observer.send(b"\x00\xff not json")
    await observer.publish(f"{running.config.topic_root}/mining/ghost/state", b"{}")

    def rejected(reason: str) -> float:
        return running.metric(f'mullet_rejected_messages_total{{reason="{reason}"}}', 0.0)

    await until(
        lambda: rejected("not_json") >= 1 and rejected("unknown_subject") >= 1, 30, "rejections counted"
    )
    assert rejected("invalid_field") >= 1
    # Nothing was acted on: no obligation, nothing curtailed, the daemon is still serving.
    assert running.metric("mullet_grid_obligations_active") == 0.0
    assert running.metric("mullet_groups_curtailed") == 0.0
    assert running.daemon.returncode is None

    # A duplicate of an accepted event is idempotent; a different event under the same id is not.
    event = GridEvent(id="dup-1", kind="limit", kw=12_000, source="test")
    await observer.send(event)
    assert (await observer.ack("dup-1"))["reason"] == "accepted"
    await observer.send(event)
    await observer.wait_for(
        lambda m: (
            m.topic == observer.topics.grid_event_ack
            and m.json()
            == {
                "v": 1,
                "id": "dup-1",
                "accepted": True,
                "reason": "duplicate: already accepted",
                "code": "duplicate",
            }
        ),
        30,
    )
    await observer.send(GridEvent(id="dup-1", kind="limit", kw=11_000, source="test"))
    await observer.wait_for(
        lambda m: (
            m.topic == observer.topics.grid_event_ack
            and m.json().get("accepted") is False
            and m.json()["id"] == "dup-1"
        ),
        30,
    )
    # The gauge follows the next control cycle, not the ack: wait for it rather than read it once.
    await running.until_metric("mullet_grid_obligations_active", lambda active: active == 1.0, 30)
    assert not math.isnan(running.metric("mullet_site_power_watts"))


async def test_unknown_meter_is_never_zero_and_blocks_restores(running: Running) -> None:
    site, observer, config = running.site, running.observer, running.config
    topics = observer.topics
    await until(
        lambda: site.mining_power_kw() >= 0.99 * sum(g.rated_kw for g in config.groups), 30, "full load"
    )
    await observer.send(GridEvent(id="ev-stale", kind="limit", kw=9500, source="test"))
    assert (await observer.ack("ev-stale"))["accepted"] is True
    await until(lambda: any(g.mode == "curtail" for g in site.groups.values()), 30, "shedding")
    curtailed = {g.group_id for g in site.groups.values() if g.mode == "curtail"}

    # The meter starts answering NaN: every sample is refused, the reading goes stale, not to 0.
    site.meter.override("power_w", math.nan)
    await until(lambda: math.isnan(running.metric("mullet_site_power_watts")), 30, "site power unknown")
    assert running.metric("mullet_meter_stale") == 1.0
    assert running.metric('mullet_meter_samples_rejected_total{reason="not_finite"}') >= 1

    # The obligation ends while the meter is unknown: nothing may be restored.
    seen = len(observer.received)
    await observer.send(GridEvent(id="ev-stale", kind="cancel", source="test"))
    assert (await observer.ack("ev-stale"))["accepted"] is True
    plan_raw = await observer.wait_for(
        lambda m: m.topic == topics.daemon_plan and m.json()["active_obligations"] == [],
        30,
        since=seen,
    )
    plan = plan_raw.json()
    assert {g for g, d in plan["groups"].items() if d["mode"] == "curtail"} == curtailed
    assert any("no load increase: site meter unknown" in reason for reason in plan["reasons"])
    assert all("no restore while site meter" in plan["groups"][g]["reason"] for g in curtailed)
    for _ in range(2 * int(config.control.period_s * 10)):  # two control periods
        await asyncio.sleep(0.1)
        assert {g.group_id for g in site.groups.values() if g.mode == "curtail"} == curtailed
    run_sent = [
        m.topic
        for m in observer.received[seen:]
        if m.topic.endswith("/set") and "/mining/" in m.topic and m.json()["mode"] == "run"
    ]
    assert run_sent == []

    # The meter recovers: now the restore goes ahead.
    site.meter.clear_overrides()
    await until(lambda: all(g.mode != "curtail" for g in site.groups.values()), 30, "restore after recovery")
    await until(lambda: running.metric("mullet_meter_stale") == 0.0, 30, "meter known again")


async def test_logs_are_json_lines_and_a_killed_daemon_is_announced_by_its_will(running: Running) -> None:
    observer = running.observer
    await observer.send(GridEvent(id="ev-log", kind="limit", kw=12_000, source="test"))
    await observer.ack("ev-log")
    seen = len(observer.received)
    running.daemon.kill()  # SIGKILL: no goodbye, the broker's last will speaks for the daemon
    await asyncio.wait_for(running.daemon.wait(), 30)
    await observer.wait_for(
        lambda m: m.topic == observer.topics.daemon_online and m.payload == b"0", 30, since=seen
    )

    lines = running.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # stdout is not a TTY: one JSON object a line
    assert all({"event", "level", "timestamp"} <= record.keys() for record in records)
    assert any(r["event"] == "grid event" and r["event_id"] == "ev-log" for r in records)


async def test_simulate_command_serves_the_site_of_a_config(mqtt_broker, site_config) -> None:
    config, path = site_config()
    topics = Topics(config.topic_root)
    async with observing(mqtt_broker, [f"{config.topic_root}/+/+/state"], topics) as observer:
        proc = await asyncio.create_subprocess_exec(
            str(MULLETD), "simulate", "--config", str(path), stdout=asyncio.subprocess.DEVNULL
        )
        try:
            expected = {topics.group_state(g.group_id) for g in config.groups}
            expected |= {topics.tenant_state(t.tenant_id) for t in config.tenants}
            await observer.wait_state(
                lambda: expected <= {m.topic for m in observer.received},
                30,
                "every group's and tenant's state",
            )
            modbus = AsyncModbusTcpClient("127.0.0.1", port=config.meter.port, timeout=10, retries=0)
            await modbus.connect()
            try:
                registers = (await modbus.read_input_registers(0x34, count=2, device_id=1)).registers
                power_w = modbus.convert_from_registers(registers, data_type=modbus.DATATYPE.FLOAT32)
            finally:
                modbus.close()
            rated_kw = sum(g.rated_kw for g in config.groups)
            assert isinstance(power_w, float) and power_w / 1000 > config.site.base_load_kw + rated_kw * 0.9
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_a_restarted_daemon_recovers_its_obligation_and_never_reuses_a_seq(running: Running) -> None:
    site, observer = running.site, running.observer
    topics = observer.topics
    await observer.send(GridEvent(id="ev-crash", kind="limit", kw=9500, source="test"))
    assert (await observer.ack("ev-crash"))["accepted"] is True
    await until(lambda: site.site_power_kw() <= 9500, 30, "site at the limit")
    curtailed = {g.group_id for g in site.groups.values() if g.commanded == "curtail"}
    assert curtailed

    published_before = {sp["seq"] for sp in observer.group_setpoints()}
    highest_seq = max(published_before)
    running.daemon.kill()  # SIGKILL mid-obligation
    await asyncio.wait_for(running.daemon.wait(), 30)
    seen = len(observer.received)
    running.daemon = await start_daemon(running.config_path, running.log_path)
    await observer.wait_for(lambda m: m.topic == topics.daemon_online and m.payload == b"1", 30, since=seen)
    plan = await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 30, since=seen)
    assert plan.json()["active_obligations"] == ["ev-crash"]
    # Controllers held their retained setpoints throughout, and the new daemon keeps them.
    for _ in range(10):
        await asyncio.sleep(0.1)
        assert {g.group_id for g in site.groups.values() if g.commanded == "curtail"} == curtailed
        assert site.site_power_kw() <= 9500
    # Republished setpoints keep their seq (byte-identical); anything new is numbered above them all.
    fresh = [sp["seq"] for sp in observer.group_setpoints(seen) if sp["seq"] not in published_before]
    assert all(seq > highest_seq for seq in fresh)

    before_cancel = len(observer.received)
    await observer.send(GridEvent(id="ev-crash", kind="cancel", source="test"))
    assert (await observer.ack("ev-crash"))["accepted"] is True
    await until(lambda: all(g.commanded == "run" for g in site.groups.values()), 30, "restore after cancel")
    restores = [
        sp["seq"]
        for sp in observer.group_setpoints(before_cancel)
        if sp["mode"] == "run" and sp["group_id"] in curtailed
    ]
    restored = {sp["group_id"] for sp in observer.group_setpoints(before_cancel) if sp["mode"] == "run"}
    assert curtailed <= restored
    assert restores and min(restores) > highest_seq


def _economics_on(data: dict) -> None:
    data["economics"].update(enabled=True, hashprice_usd_per_th_day=0.05, price_deadband_usd_per_mwh=5)


@pytest.mark.parametrize("running", [_economics_on], indirect=True)
async def test_a_price_spike_curtails_the_groups_it_makes_unprofitable_and_restores_them_after(
    running: Running,
) -> None:
    site, observer, config = running.site, running.observer, running.config
    topics = observer.topics
    # $0.05/TH/day: break-even $70.6/MWh at 29.5 J/TH ... $119/MWh at 17.5 J/TH.
    price = {"v": 1, "usd_per_mwh": 100.0, "ts": time.time()}
    await observer.publish(topics.grid_price, json.dumps(price).encode(), retain=True)
    losing = {g.group_id for g in config.groups if 0.05 / (g.efficiency_j_per_th * 2.4e-5) < 100.0}
    assert losing == {"c01", "c02", "c03", "c04", "c05", "c06"}  # 29.5, 26 and 21.5 J/TH
    await until(
        lambda: {g.group_id for g in site.groups.values() if g.commanded == "curtail"} == losing,
        30,
        "unprofitable groups curtailed",
    )
    plan = await observer.wait_for(
        lambda m: m.topic == topics.daemon_plan and m.json()["groups"]["c01"]["mode"] == "curtail",
        30,
    )
    assert "economics: $100.00/MWh > break-even $70.62/MWh" in plan.json()["groups"]["c01"]["reason"]
    assert plan.json()["active_obligations"] == []

    price["usd_per_mwh"], price["ts"] = 30.0, time.time()
    await observer.publish(topics.grid_price, json.dumps(price).encode(), retain=True)
    # Staggered: about one container per control period (each is bigger than a 0.5 s slice of the ramp).
    await until(
        lambda: all(g.commanded == "run" for g in site.groups.values()), 30, "restored after the spike"
    )


def _flexible_ai(data: dict) -> None:
    data["control"]["trip_stages"] = []


@pytest.mark.parametrize("running", [_flexible_ai], indirect=True)
async def test_an_emergency_that_allows_ai_flex_caps_only_the_flexible_share_after_all_mining(
    running: Running,
) -> None:
    site, observer, config = running.site, running.observer, running.config
    topics = observer.topics
    tenant = next(t for t in config.tenants if t.flexible_kw > 0)
    firm_kw = tenant.reserved_kw - tenant.flexible_kw
    # Below what all mining asleep leaves: only capping the flexible AI share can get there.
    limit_kw = 4000.0
    seen = len(observer.received)
    await observer.send(GridEvent(id="eea-1", kind="limit", kw=limit_kw, allow_ai_flex=True, source="test"))
    assert (await observer.ack("eea-1"))["accepted"] is True
    raw = await observer.wait_for(
        lambda m: m.topic == topics.tenant_set(tenant.tenant_id) and m.json()["power_cap_kw"] is not None,
        30,
        since=seen,
    )
    cap_kw = raw.json()["power_cap_kw"]
    assert firm_kw <= cap_kw < tenant.reserved_kw + tenant.headroom_kw
    await until(lambda: all(g.commanded == "curtail" for g in site.groups.values()), 30, "all mining shed")
    await until(lambda: site.tenants[tenant.tenant_id].cap_kw == cap_kw, 30, "the tenant applied its cap")
    # Tenants without a flexible share are never capped.
    for other in config.tenants:
        if other.flexible_kw == 0:
            assert all(c is None for c in site.tenants[other.tenant_id].caps_received)

    await observer.send(GridEvent(id="eea-1", kind="cancel", source="test"))
    await observer.wait_for(
        lambda m: m.topic == topics.tenant_set(tenant.tenant_id) and m.json()["power_cap_kw"] is None,
        30,
        since=seen,
    )


async def armed_stages(running: Running, wanted: set[int]) -> dict[str, int | None]:
    """Each group's trip stage, once the daemon's plan arms every stage in `wanted` and the controllers
    have applied it."""
    topics = running.observer.topics
    raw = await running.observer.wait_for(
        lambda m: (
            m.topic == topics.daemon_plan and wanted <= {g["trip_stage"] for g in m.json()["groups"].values()}
        ),
        30,
    )
    stages: dict[str, int | None] = {g: d["trip_stage"] for g, d in raw.json()["groups"].items()}
    armed = [g for g, stage in stages.items() if stage is not None]
    await until(lambda: all(running.site.groups[g].trip_stage == stages[g] for g in armed), 30, "armed")
    return stages


def _quick_release(data: dict) -> None:
    data["control"].update(release_after_s=1.0)


@pytest.mark.parametrize("running", [_quick_release], indirect=True)
async def test_an_under_frequency_dip_trips_the_groups_armed_at_that_stage_and_only_them(
    running: Running,
) -> None:
    from mullet.simulators.meter import FrequencyScript

    site, observer, config = running.site, running.observer, running.config
    topics = observer.topics
    stage_1 = {g for g, stage in (await armed_stages(running, {1})).items() if stage == 1}
    assert stage_1 and len(stage_1) < len(config.groups)

    seen = len(observer.received)
    site.frequency = FrequencyScript(59.8)  # below 59.85 Hz (stage 1), above 59.7 Hz (stage 2)
    trip = await observer.wait_for(lambda m: m.topic == topics.trip, 30, since=seen)
    assert trip.json()["stage"] == 1
    await until(
        lambda: {g.group_id for g in site.groups.values() if g.commanded == "curtail"} == stage_1, 30, "shed"
    )
    assert running.metric('mullet_trips_total{cause="frequency",stage="1"}') == 1.0
    # The supervisor takes over: the tripped groups are now commanded to curtail, and stay so.
    await observer.wait_for(
        lambda m: (
            m.topic == topics.daemon_plan
            and {g for g, d in m.json()["groups"].items() if d["mode"] == "curtail"} == stage_1
        ),
        30,
        since=seen,
    )

    site.frequency = FrequencyScript(60.0)
    await until(lambda: all(g.commanded == "run" for g in site.groups.values()), 30, "restored after release")


def _slow_release(data: dict) -> None:
    data["control"].update(release_after_s=600.0, min_off_s=0.0)


@pytest.mark.parametrize("running", [_slow_release], indirect=True)
async def test_a_daemon_restarted_during_an_under_frequency_event_keeps_the_tripped_groups_shed(
    running: Running,
) -> None:
    from mullet.simulators.meter import FrequencyScript

    site, observer = running.site, running.observer
    topics = observer.topics
    stage_1 = {g for g, stage in (await armed_stages(running, {1})).items() if stage == 1}
    seen = len(observer.received)
    site.frequency = FrequencyScript(59.8)
    await observer.wait_for(lambda m: m.topic == topics.trip, 30, since=seen)
    await until(
        lambda: {g.group_id for g in site.groups.values() if g.commanded == "curtail"} == stage_1, 30, "shed"
    )
    # A plan after the trip: its setpoints were journaled durably after the trip entry, so both are in.
    await observer.wait_for(
        lambda m: (
            m.topic == topics.daemon_plan
            and any(o.startswith("ufr-") for o in m.json()["active_obligations"])
        ),
        30,
        since=seen,
    )
    # Recovering, but not yet for release_after_s: above the 59.85 Hz threshold, below release_hz.
    site.frequency = FrequencyScript(59.9)
    running.daemon.kill()
    await asyncio.wait_for(running.daemon.wait(), 30)
    seen = len(observer.received)
    running.daemon = await start_daemon(running.config_path, running.log_path)
    await observer.wait_for(lambda m: m.topic == topics.daemon_online and m.payload == b"1", 30, since=seen)
    # The first plan after the restart holds the trip's obligation and the tripped groups ...
    plan = (await observer.wait_for(lambda m: m.topic == topics.daemon_plan, 30, since=seen)).json()
    assert [o for o in plan["active_obligations"] if o.startswith("ufr-")], plan
    assert {g for g, d in plan["groups"].items() if d["mode"] == "curtail"} >= stage_1
    # ... and so do the next control cycles (each computes a plan).
    cycles = running.metric("mullet_plan_compute_seconds_count")
    await until(lambda: running.metric("mullet_plan_compute_seconds_count") >= cycles + 3, 30, "3 cycles")
    assert all(site.groups[g].commanded == "curtail" for g in stage_1)
    assert "recovered under-frequency holds" in running.log_path.read_text()


async def test_an_immediate_grid_event_fires_the_armed_stage_on_the_fast_path(running: Running) -> None:
    site, observer = running.site, running.observer
    topics = observer.topics
    stage_1 = {g for g, stage in (await armed_stages(running, {1})).items() if stage == 1}
    seen = len(observer.received)
    await observer.send(
        GridEvent(id="ffr-1", kind="limit", kw=13_000, trip_stage=1, program="FFR", source="test")
    )
    trip = await observer.wait_for(lambda m: m.topic == topics.trip, 30, since=seen)
    assert trip.json()["stage"] == 1
    assert (await observer.ack("ffr-1"))["accepted"] is True
    await until(
        lambda: {g.group_id for g in site.groups.values() if g.commanded == "curtail"} == stage_1, 30, "shed"
    )
    assert running.metric('mullet_trips_total{cause="grid_event",stage="1"}') == 1.0
    # A stage the site has not armed is refused, and nothing fires.
    await observer.send(GridEvent(id="ffr-9", kind="limit", kw=13_000, trip_stage=9, source="test"))
    assert "not an armed stage" in (await observer.ack("ffr-9"))["reason"]


def _short_deadline(data: dict) -> None:
    data["control"].update(shed_deadline_s=2.0)


@pytest.mark.parametrize("running", [_short_deadline], indirect=True)
async def test_a_group_whose_firmware_ignores_the_shed_is_cut_at_its_pdu_within_the_deadline(
    running: Running,
) -> None:
    site, observer = running.site, running.observer
    await until(
        lambda: site.mining_power_kw() >= 0.99 * sum(g.rated_kw for g in running.config.groups), 30, "load"
    )
    liar = site.groups["c01"]  # the least efficient: shed first
    liar.stuck = True  # answers OK, keeps hashing
    sent_s = time.monotonic()
    await observer.send(GridEvent(id="ev-liar", kind="limit", kw=11_500, source="test"))
    assert (await observer.ack("ev-liar"))["accepted"] is True
    await until(lambda: liar.commanded == "curtail", 30, "c01 told to curtail")
    assert liar.power_kw == liar.rated_kw  # the lie
    await until(lambda: not liar.powered, 30, "c01 cut at its PDU")
    assert time.monotonic() - sent_s >= 2.0  # firmware got its deadline first
    assert liar.power_kw == 0.0
    assert all(not site.pdus["pdu-a"].is_on(outlet) for outlet in (1, 2))
    metrics = running.metrics()
    assert metrics['mullet_escalations_total{result="ok"}'] == 1.0
    assert metrics['mullet_pdu_up{pdu="pdu-a"}'] == 1.0
    assert metrics['mullet_pdu_request_failures_total{pdu="pdu-a",reason="timeout"}'] == 0.0

    # After the event the group gets its outlets back before its run command: a cold start, ramped.
    liar.stuck = False
    await observer.send(GridEvent(id="ev-liar", kind="cancel", source="test"))
    await until(lambda: liar.powered and liar.commanded == "run", 30, "c01 back")
    assert all(site.pdus["pdu-a"].is_on(outlet) for outlet in (1, 2))


def _hard_cut_stage_2(data: dict) -> None:
    data["control"].update(release_after_s=1.0)
    data["control"]["trip_stages"][1]["hard_cut"] = True


@pytest.mark.parametrize("running", [_hard_cut_stage_2], indirect=True)
async def test_a_deep_dip_fires_both_stages_and_cuts_the_outlets_of_the_hard_cut_stage(
    running: Running,
) -> None:
    from mullet.simulators.meter import FrequencyScript

    site, config = running.site, running.config
    stages = await armed_stages(running, {1, 2})
    stage_2 = {g for g, s in stages.items() if s == 2}
    armed = {g for g, s in stages.items() if s is not None}

    site.frequency = FrequencyScript(59.65)  # below both 59.85 and 59.7 Hz
    await until(lambda: all(not site.groups[g].powered for g in stage_2), 30, "stage 2 outlets cut")
    await until(
        lambda: all(site.groups[g].commanded == "curtail" for g in armed - stage_2), 30, "stage 1 shed"
    )
    assert all(site.groups[g].commanded == "run" for g in set(stages) - armed)  # unarmed: untouched
    outlets = {(o.pdu, o.outlet) for g in config.groups if g.group_id in stage_2 for o in g.outlets}
    assert all(not site.pdus[pdu].is_on(outlet) for pdu, outlet in outlets)

    site.frequency = FrequencyScript(60.0)
    await until(lambda: all(site.groups[g].powered for g in stage_2), 30, "outlets back after release")
    await until(lambda: all(g.commanded == "run" for g in site.groups.values()), 30, "all restored")
