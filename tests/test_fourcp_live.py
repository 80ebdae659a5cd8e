"""4CP avoidance in the live daemon (`[fourcp] enabled`): `mulletd run` against the simulated site over
the real broker reads the forecast file an operator's cron drops. A stale forecast decides nothing (the
state logged once, the metrics say so); a half-written one is refused whole and the last good data
kept; a fresh one with today's peak over the month's reference makes the daemon hold: the decision
journaled with p and p*, a `4CP` limit event accepted through the grid-event queue and journaled,
and mining shed in the window. `mulletd check-config` reads the files as the daemon would."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import tomli_w
from helpers import EXAMPLE, Running, running_site, until

ZONE = ZoneInfo("America/Chicago")
MAX_AGE_S = 3600.0
PEAK_MW, NEAR_PEAK_MW, OTHER_MW, REFERENCE_MW = 80_000.0, 79_900.0, 50_000.0, 70_000.0


def forecast_csv(at_s: float) -> str:
    """Hourly canonical rows from a day before to two days after: the hour holding `at_s` within 2 %
    of the peak, the next hour the peak (so the window holds now, and its peak is still ahead)."""
    hour_s = at_s - at_s % 3600
    rows = ["interval_start,actual_mw,forecast_mw"]
    for hour in range(-24, 48):
        start_s = hour_s + hour * 3600
        at = datetime.fromtimestamp(start_s, ZONE).isoformat()
        mw = {0: NEAR_PEAK_MW, 1: PEAK_MW}.get(hour, OTHER_MW)
        rows.append(f"{at},,{mw:.0f}")
    return "\n".join(rows) + "\n"


def replace_file(path: Path, text: str) -> None:
    """As the operator's cron should: write beside, then rename over."""
    partial = path.with_suffix(".tmp")
    partial.write_text(text)
    os.replace(partial, path)


def journal_rows(running: Running, kind: str) -> list[tuple[float, dict]]:
    db = sqlite3.connect(f"file:{running.config.journal.path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT wall_s, data FROM journal WHERE kind = ? ORDER BY id", (kind,))
        return [(wall_s, json.loads(data)) for wall_s, data in rows]
    finally:
        db.close()


async def test_stale_forecast_decides_nothing_then_a_fresh_peak_holds_mining_down(
    mqtt_broker, tmp_path: Path
) -> None:
    decide_s = time.time() + 3.0
    decide_local = datetime.fromtimestamp(decide_s, ZONE)
    forecast = tmp_path / "forecast.csv"
    forecast.write_text(forecast_csv(decide_s))
    old_s = time.time() - 2 * 86_400
    os.utime(forecast, (old_s, old_s))  # the cron stopped two days ago

    def fourcp(data: dict) -> None:
        data["fourcp"] = {
            "enabled": True,
            "usd_per_kw_year": 50.0,
            "months": [decide_local.month],
            "reference_peak_mw": {str(decide_local.month): REFERENCE_MW},
            "guard_s": 600.0,
            "decide_at": [(decide_local + timedelta(seconds=1)).time().replace(microsecond=0)],
            "forecast_file": str(forecast),
            "poll_s": 0.5,
            "max_forecast_age_s": MAX_AGE_S,
        }

    async with running_site(mqtt_broker, tmp_path, fourcp) as running:
        site = running.site
        # Stale: once a pass has run after the decide time, still no decision.
        await running.until_metric(
            "mullet_fourcp_forecast_age_seconds", lambda age: age >= decide_s + 2.0 - old_s, 30
        )
        metrics = running.metrics()
        assert metrics["mullet_fourcp_forecast_ready"] == 0.0
        assert metrics.value('mullet_fourcp_decisions_total{decision="hold"}', 0.0) == 0.0
        assert journal_rows(running, "fourcp_decision") == []

        # Half-written (the cron caught mid-write): refused whole, the stale data still in use.
        replace_file(forecast, forecast_csv(decide_s)[:-20])
        await running.until_metric(
            'mullet_fourcp_file_loads_total{file="forecast",result="refused"}', lambda n: n == 1.0, 30, 0.0
        )
        assert running.metric("mullet_fourcp_forecast_age_seconds") > MAX_AGE_S
        assert journal_rows(running, "fourcp_decision") == []
        assert all(g.commanded == "run" for g in site.groups.values())

        # Fresh, with today's peak over the reference: the decide time passed meanwhile is taken now.
        fresh_s = time.time()
        replace_file(forecast, forecast_csv(decide_s))
        await until(lambda: journal_rows(running, "fourcp_decision") != [], 30, "a 4CP decision")
        [(decided_s, decision)] = journal_rows(running, "fourcp_decision")
        assert decided_s >= fresh_s
        assert decision["curtail"] is True and decision["p_peak"] >= decision["p_threshold"] > 0
        # The peak hour, or at 23:xx local the hour before it (the next hour is tomorrow's).
        assert decision["forecast_peak_mw"] in (PEAK_MW, NEAR_PEAK_MW)
        assert decision["reference_mw"] == REFERENCE_MW
        assert "margin unknown" in decision["reason"]  # no price on the feed
        assert decision["start_s"] <= time.time() + 1 < decision["end_s"]

        await until(lambda: journal_rows(running, "grid_event") != [], 30, "the 4CP obligation journaled")
        [(_, accepted)] = journal_rows(running, "grid_event")
        event = accepted["event"]
        assert event["program"] == "4CP" and event["kind"] == "limit" and event["source"] == "fourcp"
        assert event["id"].startswith(f"4cp-{decision['label']}-") and event["kw"] == decision["limit_kw"]
        await running.until_metric(
            'mullet_fourcp_events_total{outcome="accepted"}', lambda n: n == 1.0, 30, 0.0
        )
        asleep_kw = sum(g.sleep_kw for g in running.config.site_spec().groups)
        await until(
            lambda: (
                all(g.commanded == "curtail" for g in site.groups.values())
                and site.mining_power_kw() <= asleep_kw + 1.0
            ),
            30,
            "mining shed to sleep for the 4CP window",
        )
        metrics = running.metrics()
        assert metrics["mullet_fourcp_forecast_ready"] == 1.0
        assert metrics['mullet_fourcp_decisions_total{decision="hold"}'] == 1.0
        assert abs(metrics["mullet_fourcp_peak_probability"] - decision["p_peak"]) < 1e-6

        # Each state change was logged once, not every pass.
        records = running.log_records()
        assert [r["state"] for r in records if r.get("event") == "4CP: no decisions"] == ["stale"]
        assert [r["state"] for r in records if r.get("event") == "4CP file unusable"] == ["refused"]


def test_check_config_reads_the_4cp_files_as_the_daemon_would(tmp_path: Path) -> None:
    forecast, actual = tmp_path / "np3-565-cd.csv", tmp_path / "np6-345-cd.csv"
    header = '"DeliveryDate","HourEnding","SystemTotal","Model","InUseFlag","DSTFlag"\n'
    rows = [f'"08/10/2023","{h:02d}:00","{60_000 + h}","E","Y","N"\n' for h in range(1, 25)]
    rows.insert(3, '"08/10/2023","04:00","NaN","E","Y","N"\n')  # line 5
    forecast.write_text(header + "".join(rows))
    data = tomllib.loads(EXAMPLE.read_text())
    data["fourcp"] = {
        "enabled": True,
        "usd_per_kw_year": 50.0,
        "forecast_file": str(forecast),
        "actual_file": str(actual),
        "file_format": "ercot",
        "max_forecast_age_s": MAX_AGE_S,
    }
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(data))

    def check() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mullet.daemon.cli", "check-config", str(path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    result = check()
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "fourcp" in line]
    assert warnings[0].startswith("warning: fourcp.forecast_file: NP3-565-CD, 24 intervals")
    assert "2023-08-10T00:00:00-05:00 to 2023-08-10T23:00:00-05:00, 1 rows rejected" in warnings[0]
    assert warnings[1].endswith("np3-565-cd.csv:5: SystemTotal 'NaN' is not finite")
    assert "fourcp.actual_file" in warnings[2] and "No such file" in warnings[2]

    old_s = time.time() - 2 * MAX_AGE_S
    os.utime(forecast, (old_s, old_s))
    stale = [line for line in check().stderr.splitlines() if "forecast_file: NP3" in line]
    assert stale and "(stale: over max_forecast_age_s 3600 s)" in stale[0]
