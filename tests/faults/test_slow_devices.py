"""Slow devices: a Modbus device that answers in 10 s (behind `SlowProxy`) must not hold up anything else.

With the meter and PDU `pdu-b` both answering 10 s late, the daemon's control loop keeps planning, a
grid event is acknowledged and acted on, and a trip's cut on the healthy PDU `pdu-a` lands as fast as
ever. The bounds (5 s) are half the device's delay: they tell "did not wait for the slow device" from
"waited" even on a loaded machine; they are not speed targets (those live in bench/).
"""

from __future__ import annotations

import json
import time

from faultkit import SlowProxy, faulty_site, until

from mullet.drivers.pdu.client import PduClient
from mullet.drivers.pdu.pool import PduPool
from mullet.drivers.protocol import GridEvent
from mullet.simulators.pdu import make_pdu_sim

DEVICE_DELAY_S = 10.0
NOT_WAITING_S = DEVICE_DELAY_S / 2


async def test_a_slow_meter_and_a_slow_pdu_delay_neither_the_control_loop_nor_the_other_pdu(
    mqtt_broker, tmp_path
) -> None:
    meter_proxy, pdu_proxy = SlowProxy(DEVICE_DELAY_S), SlowProxy(DEVICE_DELAY_S)
    await meter_proxy.start()
    await pdu_proxy.start()

    def mutate(data: dict) -> None:
        data["meter"]["port"] = meter_proxy.port
        next(p for p in data["pdus"] if p["pdu_id"] == "pdu-b")["port"] = pdu_proxy.port
        # Stage 1 arms groups on both PDUs and cuts their outlets when it fires.
        data["control"]["trip_stages"][0].update(shed_kw=5000, hard_cut=True)

    async def wire(site) -> None:
        meter_proxy.target_port = site.meter.port
        pdu_proxy.target_port = site.pdus["pdu-b"].port

    try:
        async with faulty_site(
            mqtt_broker, tmp_path, mutate, sim_ports={"meter": 0, "pdu-b": 0}, before_daemon=wire
        ) as run:
            site, observer, config = run.site, run.observer, run.config
            # The meter answers, late: every read times out, the reading is unknown, never 0 kW.
            await run.until_metric("mullet_meter_stale", lambda v: v == 1.0, 30)
            await run.until_metric(
                'mullet_meter_samples_rejected_total{reason="timeout"}', lambda v: v >= 3, 30, 0.0
            )
            assert meter_proxy.requests > 0 and pdu_proxy.requests > 0

            # The control loop keeps going: three more cycles come before one device answer would.
            cycles = await run.metric("mullet_plan_compute_seconds_count")
            await run.until_metric(
                "mullet_plan_compute_seconds_count", lambda v: v >= cycles + 3, DEVICE_DELAY_S
            )

            item = await observer.wait_for(
                lambda m: (
                    m.topic == run.topics.daemon_plan
                    and any(d["trip_stage"] == 1 for d in json.loads(m.payload)["groups"].values())
                ),
                30,
                what="stage 1 armed",
            )
            armed = {g for g, d in json.loads(item.payload)["groups"].items() if d["trip_stage"] == 1}
            outlets = {(o.pdu, o.outlet) for g in config.groups if g.group_id in armed for o in g.outlets}
            on_a = sorted(o for p, o in outlets if p == "pdu-a")
            assert on_a and any(p == "pdu-b" for p, _ in outlets), outlets
            await until(lambda: all(site.groups[g].trip_stage == 1 for g in armed), 30, "controllers armed")

            sent_s = time.monotonic()
            seen = len(observer.received)
            await observer.send(
                GridEvent(id="slow-ffr", kind="limit", kw=12_000, trip_stage=1, program="FFR", source="t")
            )
            cut_a_s = await until(
                lambda: all(not site.pdus["pdu-a"].is_on(o) for o in on_a), 30, "pdu-a outlets cut"
            )
            ack = await observer.ack("slow-ffr", since=seen)
            acked_s = ack_arrival(observer, "slow-ffr", seen) - sent_s
            print(
                f"\nslow devices: pdu-a cut {1000 * cut_a_s:.0f} ms, ack {1000 * acked_s:.0f} ms after the "
                f"event, with the meter and pdu-b answering {DEVICE_DELAY_S} s late"
            )
            assert ack["accepted"] is True
            assert cut_a_s < NOT_WAITING_S and acked_s < NOT_WAITING_S

            # A graceful event still gets its setpoints out at once.
            seen = len(observer.received)
            sent_s = time.monotonic()
            await observer.send(GridEvent(id="slow-ers", kind="limit", kw=5000, program="ERS-10", source="t"))
            first = await observer.wait_for(
                lambda m: "/mining/" in m.topic and m.topic.endswith("/set"), 30, seen, "a setpoint"
            )
            assert first.at_s - sent_s < NOT_WAITING_S
            assert run.daemon.returncode is None
    finally:
        await meter_proxy.stop()
        await pdu_proxy.stop()


def ack_arrival(observer, event_id: str, since: int) -> float:
    for item in observer.received[since:]:
        if item.topic == observer.topics.grid_event_ack and json.loads(item.payload)["id"] == event_id:
            return item.at_s
    raise AssertionError(f"no ack for {event_id}")


async def test_a_pool_cut_is_not_held_up_by_a_pdu_that_answers_late() -> None:
    fast = make_pdu_sim("fast", 4, outlet_power_w=lambda outlet: 500.0, port=0)
    slow = make_pdu_sim("slow", 4, outlet_power_w=lambda outlet: 500.0, port=0)
    await fast.start()
    await slow.start()
    proxy = SlowProxy(DEVICE_DELAY_S)
    await proxy.start()
    proxy.target_port = slow.port
    pool = PduPool(
        [
            PduClient("fast", fast.host, fast.port, outlets=4),
            PduClient("slow", "127.0.0.1", proxy.port, outlets=4),
        ]
    )
    try:
        await pool.start()
        result = await pool.cut([("fast", 1), ("fast", 2), ("slow", 1)])
        fast_result, slow_result = result.results["fast"], result.results["slow"]
        assert fast_result.ok and not fast.is_on(1) and not fast.is_on(2)
        assert slow_result.reason == "timeout" and slow_result.failed == (1,)
        # The healthy PDU is answered in its own round trips; the whole cut waits one timeout, not 10 s.
        assert fast_result.elapsed_s < NOT_WAITING_S
        assert result.elapsed_s < NOT_WAITING_S
        assert pool.clients["fast"].state == "up"
    finally:
        await pool.close()
        await proxy.stop()
        await fast.stop()
        await slow.stop()
