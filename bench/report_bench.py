"""What the reports people read cost: one event's HTML (plots) and text scorecard, and a season page.

1. A 4-hour `limit` event with site power every second (~16,000 samples in the report, thinned to
   2,000 plot points) and one trip curve at 50 Hz (351 samples): `render` as html and text, beside
   json (the summary serialised, no plot: the least a rendering does) as the same-run reference.
2. A season of `--events` events and drills (one every 3 days, 10 s samples, 30 minutes each):
   `season_reports` (a report built per event) and `write_season` (the season page and one HTML
   report per row).
No verdict: the figures, with the html / json ratio, say what a report costs on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from _common import print_header, print_table, reproduce_command

from mullet.daemon.records.journal import write_rows
from mullet.daemon.records.report import build_report
from mullet.daemon.records.report_render import render
from mullet.daemon.records.season import season_reports, write_season

T0 = 1_782_900_000  # 2026-07-01 10:00 UTC
ZONE = "America/Chicago"


def event(
    event_id: str, notice_s: float, duration_s: float, every_s: float, trip_hz: float | None
) -> list[tuple]:
    """Rows of one event: an hour of 10 MW before, 5.9 MW during, a recall; a trip and its curve."""
    rows: list[tuple] = []
    t = notice_s - 3600
    while t < notice_s + duration_s + 900:
        kw = 5900.0 + (t % 7) if notice_s < t <= notice_s + duration_s else 10000.0
        rows.append((t, "site_power", None, {"kw": kw}))
        t += every_s
    obligation = {
        "event_id": event_id,
        "kind": "limit",
        "kw": 6000.0,
        "start_s": notice_s,
        "deadline_s": 600.0,
    }
    body = {"id": event_id, "kind": "limit", "kw": 6000.0, "program": "LR"}
    rows.append(
        (notice_s, "grid_event", event_id, {"event": body, "obligation": obligation, "cancels": None})
    )
    recall = {"event": {"id": f"{event_id}-r", "kind": "cancel"}, "obligation": None, "cancels": event_id}
    rows.append((notice_s + duration_s, "grid_event", None, recall))
    if trip_hz is not None:
        rows.append((notice_s + 0.05, "trip", "1", {"seq": 1, "stage": 1, "cause": event_id}))
        n = range(round(-2 * trip_hz), round(5 * trip_hz) + 1)
        samples = [[k / trip_hz, 10000.0 if k < 10 else 5900.0, 59.8] for k in n]
        rows.append((notice_s + 5.2, "trip_curve", "1", {"seq": 1, "stage": 1, "samples": samples}))
    return rows


def timed(fn: Callable[[], object], runs: int) -> float:
    """Median milliseconds of `runs` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=4.0, help="the event's length (1 s samples)")
    parser.add_argument("--events", type=int, default=100, help="events and drills in the season")
    parser.add_argument("--runs", type=int, default=20, help="renderings timed (median)")
    args = parser.parse_args(argv)
    command = reproduce_command(
        "report_bench.py", [("--hours", args.hours), ("--events", args.events), ("--runs", args.runs)]
    )
    print_header("reports people read", "event HTML / text / json rendering, season page", command)
    with tempfile.TemporaryDirectory() as tmp:
        journal = write_rows(Path(tmp) / "event.sqlite", event("big", T0, args.hours * 3600, 1.0, 50.0))
        report = build_report(journal, "big")
        measured = {}
        for fmt in ("json", "text", "html"):
            size = len(render(report, fmt, timezone=ZONE).encode())
            measured[fmt] = (timed(lambda fmt=fmt: render(report, fmt, timezone=ZONE), args.runs), size)
        json_ms = measured["json"][0]
        rows = [
            (fmt, len(report.samples), ms, ms / json_ms, size / 1024) for fmt, (ms, size) in measured.items()
        ]
        print_table(("format", "samples", "median ms", "x json", "KiB"), rows)
        print()
        season_rows = []
        for n in range(args.events):
            season_rows += event(f"e{n}", T0 - 180 * 86400 + 3 * 86400 * n, 1800.0, 10.0, None)
        season = write_rows(Path(tmp) / "season.sqlite", season_rows)
        zone = ZoneInfo(ZONE)
        start = time.perf_counter()
        reports = season_reports(season, 2026, zone)
        built = time.perf_counter()
        write_season(reports, 2026, zone, Path(tmp) / "out")
        done = time.perf_counter()
        print_table(
            ("season", "events", "reports s", "pages s", "ms / event"),
            [
                (
                    "2026",
                    len(reports),
                    built - start,
                    done - built,
                    (done - start) / max(1, len(reports)) * 1000,
                )
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
