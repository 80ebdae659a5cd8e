"""Time of a compliance report with an ERCOT history baseline (middle_8_of_10, regression), in-process.

A temporary journal holds `--days` days of site power at 1 s (the default `journal.site_power_every_s`,
~86,400 rows a day) in America/Chicago (the example site's zone), a few past grid events on earlier
days (left out as like days), and one 4-hour ERS-10 event at 14:02 local on the last day. Each run is
`build_report` from opening the journal to the scored report: the like days' 15-minute means come from
one GROUP BY over the `site_power` rows of their event windows (the journal_wall index finds each
range), never from the samples in Python. The `pre_notice_intervals` row is the same report with the
baseline that reads only the event's own hours, for reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

from _common import p99_note, print_header, print_table, reproduce_command, summary

from mullet.daemon.config import parse_config
from mullet.daemon.records.journal import Journal
from mullet.daemon.records.report import build_report

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "site.example.toml"
ZONE = ZoneInfo("America/Chicago")
EVENT_DAY = dt.date(2026, 8, 18)  # a Tuesday
EVENT = "ers-bench"
INSERT = "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)"


def _journal(path: Path, days: int) -> tuple[int, float]:
    """Write the journal; (site power rows, seconds it took)."""
    started_s = time.perf_counter()
    Journal(path).close()
    start = dt.datetime.combine(EVENT_DAY - dt.timedelta(days=days), dt.time(), tzinfo=ZONE)
    notice_s = dt.datetime.combine(EVENT_DAY, dt.time(14, 2), tzinfo=ZONE).timestamp()
    end_s = notice_s + 4 * 3600
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    rows = 0
    t = start.timestamp()
    while t < end_s + 3600:
        batch = []
        for _ in range(86_400):
            if t >= end_s + 3600:
                break
            day_index = math.floor((t - start.timestamp()) / 86_400)
            kw = 12_000.0 + 800.0 * math.sin(2 * math.pi * (t % 86_400) / 86_400) + 37.0 * (day_index % 11)
            if notice_s + 300 <= t < end_s:
                kw = 8_000.0
            data = {"kw": round(kw, 1), "hz": 60.0, "ai_kw": 2800.0, "mining_kw": 9000.0}
            batch.append((t, "site_power", None, json.dumps(data, separators=(",", ":"))))
            t += 1.0
        with db:
            db.executemany(INSERT, batch)
        rows += len(batch)
    events = []
    for back in (3, 9, 16):  # past events: their days are not like days
        past_s = dt.datetime.combine(
            EVENT_DAY - dt.timedelta(days=back), dt.time(15), tzinfo=ZONE
        ).timestamp()
        event = {"id": f"past-{back}", "kind": "limit", "kw": 9000.0, "program": "ERS-10"}
        obligation = {
            "kind": "limit",
            "kw": 9000.0,
            "start_s": past_s,
            "end_s": past_s + 3600,
            "deadline_s": 600,
        }
        events.append(
            (past_s, "grid_event", event["id"], json.dumps({"event": event, "obligation": obligation}))
        )
    event = {"id": EVENT, "kind": "limit", "kw": 9500.0, "program": "ERS-10"}
    obligation = {
        "kind": "limit",
        "kw": 9500.0,
        "start_s": notice_s,
        "deadline_s": 600.0,
        "explicit_recall": True,
    }
    events.append((notice_s, "grid_event", EVENT, json.dumps({"event": event, "obligation": obligation})))
    cancel = {"event": {"id": f"{EVENT}-end", "kind": "cancel"}, "obligation": None, "cancels": EVENT}
    events.append((end_s, "grid_event", f"{EVENT}-end", json.dumps(cancel)))
    with db:
        db.executemany(INSERT, events)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return rows, time.perf_counter() - started_s


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=45, help="days of 1 s site power before the event day")
    parser.add_argument("--runs", type=int, default=20, help="report builds per method")
    args = parser.parse_args()
    command = reproduce_command("baseline_bench.py", [("--days", args.days), ("--runs", args.runs)])
    print_header("baseline", "time of mulletd report with a history baseline", command)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        rows, write_s = _journal(path, args.days)
        data = tomllib.loads(EXAMPLE.read_text())
        data["journal"]["path"] = str(path)
        config = parse_config(data)
        print(
            f"journal: {rows:,} site power rows ({args.days} days + the event day at 1 s),"
            f" {os.path.getsize(path) / 1e6:,.0f} MB, written in {write_s:.0f} s; zone {config.site.timezone}"
        )
        table = []
        for method in ("middle_8_of_10", "regression", "pre_notice_intervals"):
            times = []
            report = None
            for _ in range(args.runs):
                started_s = time.perf_counter()
                report = build_report(path, EVENT, baseline=method, config=config)
                times.append(time.perf_counter() - started_s)
            assert report is not None
            median_s, p99_s, _max_s = summary(times)
            table.append(
                [
                    method,
                    len(times),
                    median_s * 1e3,
                    p99_s * 1e3,
                    "none" if report.baseline_kw is None else f"{report.baseline_kw:,.0f}",
                    report.baseline_detail[:70],
                ]
            )
        print_table(["method", "runs", "build p50 ms", "build p99 ms", "baseline kW", "detail"], table)
        print(f"({p99_note(args.runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
