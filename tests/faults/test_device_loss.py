"""Device loss: the meter, a PDU or a group controller goes silent in the middle of things.

- meter silent -> the reading goes stale (NaN, never 0), `mullet_meter_stale` rises, timeouts are
  counted, and nothing is restored while it lasts;
- PDU silent -> its outlet readings become unknown (driver), and an escalation that cannot cut takes
  another path: the failure is journaled and counted, the group counts at rated kW so other groups are
  shed in its place, firmware sleep is re-sent under a new seq, and the cut is retried at the next
  deadline (it succeeds once the PDU answers again);
- a group controller's LWT fires -> the group is unknown and, while an obligation is active, counted at
  its rated kW in the plan.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3

from faultkit import faulty_site, limit_leaving_mining, site_at_a_limit, until

from mullet.drivers.pdu.client import PduClient
from mullet.drivers.protocol import GridEvent
from mullet.simulators.pdu import make_pdu_sim


async def test_a_silent_meter_goes_stale_never_zero_raises_the_alert_and_blocks_restores(
    mqtt_broker, tmp_path
) -> None:
    async with faulty_site(mqtt_broker, tmp_path) as run:
        site, observer = run.site, run.observer
        await site_at_a_limit(run, "ml-1", 0.6)
        curtailed = {g.group_id for g in site.groups.values() if g.commanded == "curtail"}
        assert await run.metric("mullet_meter_stale") == 0.0
        timeouts_before = await run.metric('mullet_meter_samples_rejected_total{reason="timeout"}', 0.0)

        site.meter.responding = False  # connected, never answers
        await run.until_metric("mullet_meter_stale", lambda v: v == 1.0, 30)
        assert math.isnan(await run.metric("mullet_site_power_watts"))
        timeouts = await run.metric('mullet_meter_samples_rejected_total{reason="timeout"}')
        assert timeouts > timeouts_before

        seen = len(observer.received)
        await observer.send(GridEvent(id="ml-1", kind="cancel", source="t"))
        assert (await observer.ack("ml-1", since=seen))["accepted"] is True
        item = await observer.wait_for(
            lambda m: m.topic == run.topics.daemon_plan and json.loads(m.payload)["active_obligations"] == [],
            5,
            seen,
            "the plan after the cancel",
        )
        plan = json.loads(item.payload)
        assert any("site meter" in reason and "unknown" in reason for reason in plan["reasons"])
        # Three more control cycles with the meter still silent: nothing restored.
        cycles = await run.metric("mullet_plan_compute_seconds_count")
        await run.until_metric("mullet_plan_compute_seconds_count", lambda v: v >= cycles + 3, 30)
        assert not [sp for sp in observer.group_setpoints(seen) if sp["mode"] == "run"]
        assert {g.group_id for g in site.groups.values() if g.commanded == "curtail"} == curtailed

        site.meter.responding = True
        await run.until_metric("mullet_meter_stale", lambda v: v == 0.0, 30)
        await until(lambda: all(g.commanded == "run" for g in site.groups.values()), 30, "restored")


def _short_deadline(data: dict) -> None:
    data["control"].update(shed_deadline_s=2.0)


def _escalations(journal_path: str) -> list[dict]:
    with sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT data FROM journal WHERE kind = 'escalation' ORDER BY id").fetchall()
    return [json.loads(data) for (data,) in rows]


async def test_a_silent_pdu_makes_escalation_take_another_path_and_it_is_journaled(
    mqtt_broker, tmp_path
) -> None:
    async with faulty_site(mqtt_broker, tmp_path, _short_deadline) as run:
        site, observer = run.site, run.observer
        rated_kw = sum(g.rated_kw for g in run.config.groups)
        await until(lambda: site.mining_power_kw() >= 0.99 * rated_kw, 30, "full mining load")
        liar = site.groups["c01"]  # least efficient: shed first; fed by pdu-a outlets 1 and 2
        liar.stuck = True  # firmware answers OK and keeps hashing
        site.pdus["pdu-a"].responding = False  # and its PDU has gone silent
        limit_kw = 11_500.0
        await observer.send(GridEvent(id="pl-1", kind="limit", kw=limit_kw, source="t"))
        assert (await observer.ack("pl-1"))["accepted"] is True
        await until(lambda: liar.commanded == "curtail", 30, "c01 told to curtail")
        first_seq = liar.seq_applied
        assert first_seq is not None

        await run.until_metric('mullet_escalations_total{result="failed"}', lambda v: v >= 1, 30, 0.0)
        # The metric counts at once; the journal row follows with the next durable write.
        await until(
            lambda: any(e["group_id"] == "c01" for e in _escalations(run.config.journal.path)),
            30,
            "c01's escalation journaled",
        )
        failed = [e for e in _escalations(run.config.journal.path) if e["group_id"] == "c01"]
        assert failed[0]["result"] == "failed" and "timeout" in failed[0]["detail"]
        assert liar.powered and liar.power_kw == liar.rated_kw  # the cut did not happen
        # Another path: firmware sleep re-sent under a new seq, and the plan sheds others in its place.
        await until(lambda: (liar.seq_applied or 0) > first_seq, 30, "curtail re-sent to c01")
        await until(lambda: site.site_power_kw() <= limit_kw, 30, "site at the limit without c01")
        item = await observer.wait_for(
            lambda m: (
                m.topic == run.topics.daemon_plan
                and any("group c01 unknown" in r for r in json.loads(m.payload)["reasons"])
            ),
            30,
            what="a plan counting c01 as unknown (at rated)",
        )
        plan = json.loads(item.payload)
        assert plan["active_obligations"] == ["pl-1"]
        assert plan["groups"]["c01"]["mode"] == "curtail"
        assert liar.power_kw == liar.rated_kw  # still lying: the others carried the shed

        # The PDU answers again: the next deadline's escalation cuts c01.
        site.pdus["pdu-a"].responding = True
        await until(lambda: not liar.powered, 30, "c01 cut at its PDU on the retry")
        await run.until_metric('mullet_escalations_total{result="ok"}', lambda v: v >= 1, 30, 0.0)
        # The metric counts at once; the journal row follows with the next durable write.
        await until(
            lambda: [e["result"] for e in _escalations(run.config.journal.path)][-1] == "ok",
            30,
            "the cut's escalation journaled as ok",
        )


async def test_a_silent_pdu_has_its_outlets_unknown_never_zero() -> None:
    sim = make_pdu_sim("pdu-x", 4, outlet_power_w=lambda outlet: 1000.0 * outlet, port=0)
    await sim.start()
    client = PduClient("pdu-x", sim.host, sim.port, outlets=4, keepalive_s=0.05, stale_after_s=0.3)
    try:
        await client.start()
        await until(lambda: client.outlet_power_w(3) == 3000.0, 30, "outlet 3 read")
        sim.responding = False
        await until(lambda: client.outlet_power_w(3) is None, 30, "outlet 3 unknown")
        assert client.stale and client.outlets_power_w([1, 2, 3, 4]) is None
        assert client.state == "unresponsive"
        assert client.failures["timeout"] >= 1
        result = await client.switch([1], on=False)
        assert result.failed == (1,) and result.reason == "timeout"
        assert sim.is_on(1)
    finally:
        await client.close()
        await sim.stop()


async def test_a_controller_lwt_during_an_obligation_counts_its_group_at_rated(mqtt_broker, tmp_path) -> None:
    async with faulty_site(mqtt_broker, tmp_path) as run:
        site, observer = run.site, run.observer
        rated_kw = sum(g.rated_kw for g in run.config.groups)
        await until(lambda: site.mining_power_kw() >= 0.99 * rated_kw, 30, "full mining load")
        limit_kw = limit_leaving_mining(run.config, 0.6)
        await observer.send(GridEvent(id="lwt-1", kind="limit", kw=limit_kw, source="t"))
        assert (await observer.ack("lwt-1"))["accepted"] is True
        item = await observer.wait_for(
            lambda m: m.topic == run.topics.daemon_plan and "lwt-1" in m.payload.decode(), 5, what="plan"
        )
        before = json.loads(item.payload)
        curtailed = {g for g, d in before["groups"].items() if d["mode"] == "curtail"}
        # A curtailed group's controller dies: its sleep draw is no longer known.
        victim = sorted(curtailed)[0]
        spec = next(g for g in run.config.groups if g.group_id == victim)
        seen = len(observer.received)
        site.mining[victim].go_offline()
        await observer.wait_for(
            lambda m: m.topic == run.topics.group_online(victim) and m.payload == b"0", 30, seen, "the LWT"
        )
        item = await observer.wait_for(
            lambda m: m.topic == run.topics.daemon_plan and f"group {victim}" in m.payload.decode(),
            5,
            seen,
            "a plan that knows the group is unknown",
        )
        plan = json.loads(item.payload)
        sleep_kw = spec.sleep_kw if spec.sleep_kw is not None else spec.rated_kw * 0.02
        # Counted at rated: the planned mining load grows by (rated - sleep) or more groups are shed.
        more_shed = {g for g, d in plan["groups"].items() if d["mode"] == "curtail"} - curtailed
        grew_kw = plan["mining_planned_kw"] - before["mining_planned_kw"]
        assert more_shed or grew_kw >= spec.rated_kw - sleep_kw - 1.0, (grew_kw, more_shed)
        assert any(f"group {victim}" in reason and "unknown" in reason for reason in plan["reasons"])
        site.mining[victim].go_online()
        await asyncio.wait_for(site.mining[victim].ready.wait(), 30)
