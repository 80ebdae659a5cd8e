"""Soak: 12 simulated hours in seconds (tests/faults/soak.py), and a real-time soak behind a flag.

Compressed (always runs): MULLET_SOAK_HOURS (default 12; longer ones, e.g. 168, off CI) simulated
hours of the policy, the grid-event book, the trigger, the journal and the mining physics on a
simulated clock, with random events, dips, price swings, broker restarts and controller dropouts; the
invariant tallies are printed.

Real time (off by default): MULLET_SOAK_REAL_S=1800 runs `mulletd run` against the simulated site on
a mosquitto of its own for that many seconds, with the same kinds of random faults, checking the
site's ground truth on every physics tick.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time

import pytest
from faultkit import faulty_site, limit_leaving_mining, until
from soak import run_soak

from mullet.drivers.protocol import GridEvent
from mullet.simulators.meter import FrequencyScript

SOAK_HOURS = float(os.environ.get("MULLET_SOAK_HOURS", "12"))
REAL_S = float(os.environ.get("MULLET_SOAK_REAL_S", "0"))


async def test_compressed_soak_keeps_every_invariant(tmp_path) -> None:
    tallies, wall_s = await run_soak(
        SOAK_HOURS, seed=int(os.environ.get("MULLET_SOAK_SEED", "1")), journal_path=tmp_path / "soak.sqlite"
    )
    print(
        f"\nsoak: {SOAK_HOURS:g} simulated h in {wall_s:.1f} s wall; checks {dict(tallies.checks)}; "
        f"violations {dict(tallies.violations)}; events {dict(sorted(tallies.events.items()))}"
    )
    assert tallies.events["simulated_s"] >= SOAK_HOURS * 3600
    for what in ("dip_59.8", "broker_restart", "controller_dropout", "price_swing", "event_accepted"):
        assert tallies.events[what] > 0 or SOAK_HOURS < 6, what
    assert not tallies.violations, tallies.examples


@pytest.mark.skipif(REAL_S <= 0, reason="real-time soak: set MULLET_SOAK_REAL_S (e.g. 1800)")
async def test_real_time_soak(restartable_broker, tmp_path) -> None:
    broker, rng = restartable_broker, random.Random(int(os.environ.get("MULLET_SOAK_SEED", "1")))
    tallies: dict[str, int] = {}

    def count(what: str) -> None:
        tallies[what] = tallies.get(what, 0) + 1

    def fast(data: dict) -> None:
        data["mqtt"].update(reconnect_min_s=0.1, reconnect_max_s=1.0)
        data["control"].update(release_after_s=5.0)

    async with faulty_site(broker, tmp_path, fast) as run:
        site, observer, config = run.site, run.observer, run.config
        deadline_s = time.monotonic() + REAL_S
        n = 0
        active: str | None = None
        resync_s: list[float] = []
        while time.monotonic() < deadline_s:
            action = rng.choice(["event", "cancel", "dip", "broker", "dropout", "price", "event"])
            if action == "event" and active is None:
                n += 1
                active = f"rt-{n}"
                limit_kw = limit_leaving_mining(config, rng.uniform(0.2, 0.8))
                seen = len(observer.received)
                await observer.send(GridEvent(id=active, kind="limit", kw=limit_kw, source="soak"))
                assert (await observer.ack(active, 10, seen))["accepted"] is True
                await until(lambda kw=limit_kw: site.site_power_kw() <= kw, 15, f"{active} met")
                run.watch.limit_kw = limit_kw  # armed once met: from now on, every tick
                count("events_met")
            elif action == "cancel" and active is not None:
                run.watch.limit_kw = None
                seen = len(observer.received)
                await observer.send(GridEvent(id=active, kind="cancel", source="soak"))
                await observer.ack(active, 10, seen)
                active = None
                count("cancels")
            elif action == "dip":
                site.frequency = FrequencyScript(rng.choice([59.8, 59.65]))
                ticks = site.ticks
                await until(lambda t=ticks: site.ticks > t + 20, 10, "a dip lasting 20 ticks")
                site.frequency = FrequencyScript(60.0)
                count("dips")
            elif action == "broker":
                broker.kill()
                await run.until_metric("mullet_mqtt_connected", lambda v: v == 0.0, 10)
                await broker.start()
                back_s = time.monotonic()
                await run.until_metric("mullet_mqtt_connected", lambda v: v == 1.0, 30)
                resync_s.append(time.monotonic() - back_s)  # to within a control period (the gauge)
                count("broker_restarts")
            elif action == "dropout":
                link = rng.choice(list(site.mining.values()))
                link.go_offline()
                ticks = site.ticks
                await until(lambda t=ticks: site.ticks > t + 20, 10, "a dropout lasting 20 ticks")
                link.go_online()
                await asyncio.wait_for(link.ready.wait(), 15)
                count("dropouts")
            elif action == "price":
                payload = {"v": 1, "usd_per_mwh": rng.uniform(-20, 300), "ts": time.time()}
                await observer.publish(run.topics.grid_price, json.dumps(payload).encode(), retain=True)
                count("price_swings")
            assert run.daemon.returncode is None
            assert run.watch.over == [], run.watch.over[:5]
        # Firm AI never capped (no event allowed AI flex); the journal holds every last setpoint sent.
        caps = [
            json.loads(m.payload)["power_cap_kw"]
            for m in observer.received
            if "/ai/" in m.topic and m.topic.endswith("/set")
        ]
        assert all(cap is None for cap in caps)
        last_sent = {sp["group_id"]: sp["seq"] for sp in observer.group_setpoints()}
        with sqlite3.connect(config.journal.path) as db:
            rows = db.execute(
                "SELECT subject, MAX(CAST(json_extract(data, '$.seq') AS INTEGER)) FROM journal"
                " WHERE kind = 'setpoint' GROUP BY subject"
            ).fetchall()
        assert {g: seq for g, seq in rows if g in last_sent} == last_sent
        worst = f"{max(resync_s):.1f} s" if resync_s else "-"
        print(
            f"\nreal-time soak: {REAL_S:g} s, {run.watch.ticks} ticks watched, {tallies}, violations 0, "
            f"worst broker resync (gauge, 1 s resolution) {worst}"
        )
