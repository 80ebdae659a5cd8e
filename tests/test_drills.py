"""Drills end to end: `mulletd drill` against `mulletd run` and the simulated site (real broker, real
Modbus PDUs and meter): a dry run acts on nothing; a drill runs the real path and scores itself with
factor >= 0.95; with one group ignoring its sleep and its PDU cut failing, the scorecard fails and
names the shortfall. Drills are journaled and counted as drills, never as grid events."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiohttp
from helpers import MULLETD, Running, running_site, until, with_http_api

from mullet.drivers.protocol import GridEvent

# ERS-10's rules with a ramp a test can wait for: 6 s (still >= firmware sleep: the graceful path).
DEADLINE_S = 6.0


def _site(data: dict) -> None:
    with_http_api(data)
    data["control"].update(shed_deadline_s=2.0)  # escalate to the PDU quickly
    data["programs"] = [
        {"name": "ERS-10", "deadline_s": DEADLINE_S, "recall": "explicit", "baseline": "meter_before_event"}
    ]


async def _drill(running: Running, *args: str, command: str = "drill") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(MULLETD),
        command,
        "--config",
        str(running.config_path),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _listed(api: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(f"{api}/v1/drills") as response:
        assert response.status == 200
        return await response.json()


def _rows(running: Running, kind: str) -> list[dict]:
    db = sqlite3.connect(f"file:{running.config.journal.path}?mode=ro", uri=True)
    try:
        return [
            json.loads(d)
            for (d,) in db.execute("SELECT data FROM journal WHERE kind = ? ORDER BY id", (kind,))
        ]
    finally:
        db.close()


async def test_drills_run_the_real_path_score_themselves_and_are_never_grid_events(
    mqtt_broker, tmp_path: Path
) -> None:
    async with running_site(mqtt_broker, tmp_path, _site) as running:
        site, observer = running.site, running.observer
        rated_kw = sum(g.rated_kw for g in running.config.groups)
        api = f"http://127.0.0.1:{running.config.http_api.port}"
        await until(lambda: site.mining_power_kw() >= 0.99 * rated_kw, 60, "full mining load")

        # A dry run plans and acts on nothing.
        code, out, err = await _drill(
            running, "--program", "ERS-10", "--kw", "2000", "--dry-run", "--format", "json"
        )
        assert code == 0, err
        preview = json.loads(out)
        assert preview["accepted"] is True and preview["dry_run"] is True
        assert preview["would_shed_kw"] >= 2000 and preview["would_change"]
        assert preview["actuation"] == "graceful"
        assert all(g.commanded == "run" for g in site.groups.values())
        assert len(_rows(running, "drill_dry_run")) == 1 and _rows(running, "drill") == []

        # Refused before anything happens; scheduled for later, listed, then dropped.
        code, _out, err = await _drill(running, "--program", "NOPE", "--kw", "2000")
        assert code == 1 and "unknown_program" in err
        code, _out, err = await _drill(
            running, "--program", "ERS-10", "--kw", "2000", "--at", f"{time.time() + 40 * 86_400:.0f}"
        )
        assert code == 1 and "too_far" in err
        code, out, err = await _drill(
            running, "--program", "ERS-10", "--kw", "2000", "--at", f"{time.time() + 3600:.0f}"
        )
        assert code == 0 and "scheduled" in out, err
        scheduled_id = out.split()[0]
        listed = await _listed(api)
        assert [d["id"] for d in listed["scheduled"]] == [scheduled_id] and listed["in_force"] == []
        code, out, err = await _drill(running, "--cancel", scheduled_id)
        assert code == 0 and "scheduled" in out, err
        assert (await _listed(api))["scheduled"] == []
        assert [r["id"] for r in _rows(running, "drill_scheduled")] == [scheduled_id]
        assert [r["id"] for r in _rows(running, "drill_cancelled")] == [scheduled_id]
        code, _out, err = await _drill(running, "--cancel", scheduled_id)
        assert code == 1 and "unknown_drill" in err

        # A drill scheduled a few seconds ahead: the daemon deploys it on time through the real path,
        # and its scorecard comes from the journal.
        code, out, err = await _drill(
            running,
            "--program",
            "ERS-10",
            "--kw",
            "2000",
            "--duration",
            "12s",
            "--at",
            f"{time.time() + 8:.3f}",
        )
        assert code == 0 and "scheduled" in out, err
        drill_id = out.split()[0]
        await until(
            lambda: any(r["event"]["id"] == drill_id for r in _rows(running, "drill")), 30, "deployed"
        )
        await until(
            lambda: any(r.get("id") == drill_id for r in _rows(running, "obligation_ended")), 60, "ended"
        )
        code, out, err = await _drill(running, "--event", drill_id, "--format", "json", command="report")
        assert code == 0, err + out
        card = json.loads(out)
        assert card["drill"] is True and card["program"] == "ERS-10"
        assert card["performance_factor"] >= 0.95, card["verdict"]
        assert card["passed"] is True and card["intervals"]
        assert card["event_id"] == drill_id and drill_id.startswith("drill:")
        # Never a grid event: not acked on grid/event/ack, not counted, journaled as a drill.
        assert not any(
            m.topic == running.topics.grid_event_ack and drill_id.encode() in m.payload
            for m in observer.received
        )
        metrics = running.metrics()
        assert metrics['mullet_drills_total{outcome="accepted"}'] == 1.0
        assert metrics.value('mullet_grid_events_total{outcome="accepted"}', 0.0) == 0.0
        assert [r["event"]["id"] for r in _rows(running, "drill")] == [drill_id]
        assert not any(r["event"]["id"] == drill_id for r in _rows(running, "grid_event"))
        # A grid transport cannot pass a test off as a grid event.
        await observer.send(GridEvent(id="drill:fake", kind="limit", kw=9000, source="t"))
        assert (await observer.ack("drill:fake"))["code"] == "reserved_id"

        # Everything back, then one group's firmware ignores its sleep and its PDU goes silent.
        await until(lambda: site.mining_power_kw() >= 0.99 * rated_kw, 60, "mining restored")
        liar = site.groups["c01"]
        liar.stuck = True
        site.pdus["pdu-a"].responding = False
        # All the mining there is: c01's 610 kW cannot be made up by another group.
        sleep_kw = 0.01 * rated_kw
        code, out, err = await _drill(
            running,
            "--program",
            "ERS-10",
            "--kw",
            f"{rated_kw - sleep_kw:.0f}",
            "--duration",
            "12s",
            "--format",
            "json",
        )
        assert code == 3, err + out  # the scorecard was made, and it fails
        card = json.loads(out)
        assert card["passed"] is False
        assert card["performance_factor"] < 0.95
        assert card["max_shortfall_kw"] > 300 and card["shortfall_kwh"] > 0
        assert any("performance factor" in line for line in card["verdict"])
        assert any("c01" in line for line in card["verdict"]), card["verdict"]  # the shortfall named
        assert liar.powered  # its outlets were never cut
