"""Journal write throughput and compliance report time, in-process, on a temporary SQLite file.

1. record(): N entries shaped like the daemon's (setpoints, plans, site power) queued without waiting
   while the writer task commits them in batches of up to 500 (WAL, synchronous=FULL): entries per
   second from the first record() to the last commit, the per-commit time, and how many were dropped
   with the daemon's default queue of 10,000 (record() never blocks; loss is counted).
2. durable(): one entry at a time, each awaited to its commit (what an accepted grid event costs).
3. report: a journal holding `--days` of site power at 1 s (the default `journal.site_power_every_s`)
   and one 4-hour ERS-10 event; time of `build_report` (read + compute) with the `pre_notice_intervals`
   baseline (bench/baseline_bench.py times the history baselines) and of the HTML rendering,
   and the database's bytes per site power row (for sizing `journal.retention_days`).

References measured in the same run, on the same disk: the same rows written by bare sqlite3 calls in
this thread (the journal's schema and pragmas, JSON encoded as the journal does, no queue, no thread):
in batches of 500 for 1. (after the journal's runs), one INSERT and COMMIT per row for 2. (each right
after one durable(), so both meet the disk in the same state). Absolute figures move several-fold
between machines and disks; the verdicts are the ratios (1: the journal's rate at least
--min-rate-ratio of the bare rate; 2: durable()'s p99 within --max-durable-ratio of the bare commit's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import p99_note, print_header, print_table, reproduce_command, summary

from mullet.daemon.records.journal import Journal
from mullet.daemon.records.report import build_report
from mullet.daemon.records.report_render import render

INSERT = "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, ?, ?, ?, ?)"
# Verdicts (docs/performance.md gives the runs behind them).
MIN_RATE_RATIO = 0.5
MAX_DURABLE_RATIO = 2.5
SETPOINT = {"seq": 1, "mode": "curtail", "power_kw": None, "trip_stage": None, "ts": 0.0, "reason": "x" * 60}


async def _throughput(path: Path, entries: int, queue_size: int) -> tuple[float, list[float], int]:
    """Offer `entries` setpoint-shaped entries as fast as the loop can; entries committed per second."""
    commits: list[float] = []
    done = asyncio.Event()
    journal: Journal

    def committed(_entries: int, seconds: float) -> None:
        commits.append(seconds)
        # `written` already counts this batch. Done only once nothing is left to commit: cancelling the
        # writer with a batch still in its thread and then closing the database crashed the process.
        if journal.written + journal.dropped >= entries:
            done.set()

    journal = Journal(path, queue_size=queue_size, on_commit=committed)
    writer = asyncio.create_task(journal.run())
    started_s = time.perf_counter()
    for n in range(entries):
        journal.record("setpoint", {**SETPOINT, "seq": n}, subject=f"g{n % 600:03d}")
        if n % 200 == 199:
            await asyncio.sleep(0)  # let the writer run, as the daemon's loop does between messages
    await asyncio.wait_for(done.wait(), 120)
    elapsed_s = time.perf_counter() - started_s
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    journal.close()
    return journal.written / elapsed_s, commits, journal.dropped


async def _durable(path: Path, bare_path: Path, entries: int) -> tuple[list[float], list[float]]:
    """Seconds per entry of durable(), one at a time, each followed by the bare reference's row (one
    INSERT and COMMIT on its own database), so that both meet the disk in the same state."""
    journal = Journal(path)
    writer = asyncio.create_task(journal.run())
    bare = _bare_db(bare_path)
    times, bare_times = [], []
    for n in range(entries):
        started_s = time.perf_counter()
        await journal.durable("grid_event", {"n": n}, subject=str(n))
        times.append(time.perf_counter() - started_s)
        started_s = time.perf_counter()
        data = json.dumps({"n": n}, separators=(",", ":"))
        bare.execute("BEGIN")
        bare.execute(INSERT, (time.time(), time.monotonic(), "grid_event", str(n), data))
        bare.execute("COMMIT")
        bare_times.append(time.perf_counter() - started_s)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    journal.close()
    bare.close()
    return times, bare_times


def _bare_db(path: Path) -> sqlite3.Connection:
    Journal(path).close()  # the journal's schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _bare_throughput(path: Path, entries: int) -> float:
    """Rows per second: the same setpoint rows, encoded as the journal encodes them, in batches of 500."""
    db = _bare_db(path)
    started_s = time.perf_counter()
    for lo in range(0, entries, 500):
        rows = [
            (
                time.time(),
                time.monotonic(),
                "setpoint",
                f"g{n % 600:03d}",
                json.dumps({**SETPOINT, "seq": n}, separators=(",", ":")),
            )
            for n in range(lo, min(entries, lo + 500))
        ]
        db.execute("BEGIN")
        db.executemany(INSERT, rows)
        db.execute("COMMIT")
    elapsed_s = time.perf_counter() - started_s
    db.close()
    return entries / elapsed_s


def _report_journal(path: Path, days: float) -> tuple[str, int]:
    Journal(path).close()
    end_s = 1_750_000_500.0
    start_s = end_s - days * 86_400
    notice_s = end_s - 5 * 3600
    db = sqlite3.connect(path)
    rows = []
    t = start_s
    while t < end_s:
        kw = 9000.0 if notice_s + 300 <= t < notice_s + 4 * 3600 else 12000.0
        rows.append(
            (
                t,
                "site_power",
                None,
                json.dumps({"kw": kw, "hz": 60.0, "ai_kw": 2800.0}, separators=(",", ":")),
            )
        )
        t += 1.0
    event = {"id": "ers-1", "kind": "limit", "kw": 9500.0, "program": "ERS-10"}
    obligation = {
        "kind": "limit",
        "kw": 9500.0,
        "start_s": notice_s,
        "deadline_s": 600.0,
        "explicit_recall": True,
    }
    rows.append((notice_s, "grid_event", "ers-1", json.dumps({"event": event, "obligation": obligation})))
    cancel = {"event": {"id": "ers-1-end", "kind": "cancel"}, "obligation": None, "cancels": "ers-1"}
    rows.append((notice_s + 4 * 3600, "grid_event", "ers-1-end", json.dumps(cancel)))
    rows.sort(key=lambda r: r[0])
    with db:
        db.executemany(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)", rows
        )
    db.execute("VACUUM")
    db.close()
    return "ers-1", len(rows) - 2


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000, help="record() entries to write")
    parser.add_argument("--durable", type=int, default=200, help="durable() entries, one at a time")
    parser.add_argument(
        "--days", type=float, default=1.0, help="days of 1 s site power in the report journal"
    )
    parser.add_argument("--reports", type=int, default=5, help="report runs")
    parser.add_argument(
        "--min-rate-ratio",
        type=float,
        default=MIN_RATE_RATIO,
        help="verdict: record()'s committed/s at least this share of the bare sqlite3 rate",
    )
    parser.add_argument(
        "--max-durable-ratio",
        type=float,
        default=MAX_DURABLE_RATIO,
        help="verdict: durable()'s p99 within this many times the bare commit's p99",
    )
    args = parser.parse_args()
    command = reproduce_command(
        "journal_bench.py",
        [
            ("--entries", args.entries),
            ("--durable", args.durable),
            ("--days", args.days),
            ("--reports", args.reports),
            ("--min-rate-ratio", args.min_rate_ratio),
            ("--max-durable-ratio", args.max_durable_ratio),
        ],
    )
    print_header("journal and report", "journal write throughput, durable() latency, report time", command)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        rates = {}
        for case, queue_size in (
            ("record(), queue = entries", args.entries),
            ("record(), queue 10,000", 10_000),
        ):
            rate, commits, dropped = asyncio.run(
                _throughput(Path(tmp) / f"a{queue_size}.sqlite", args.entries, queue_size)
            )
            rates[queue_size] = rate
            median_s, p99_s, max_s = summary(commits)
            rows.append(
                [case, f"{rate:,.0f}", len(commits), median_s * 1e3, p99_s * 1e3, max_s * 1e3, dropped]
            )
        bare_rate = _bare_throughput(Path(tmp) / "bare-a.sqlite", args.entries)
        rows.append(["ref: bare sqlite3, batches of 500", f"{bare_rate:,.0f}", "", "", "", "", 0])
        print_table(
            ["case", "committed/s", "commits", "commit p50 ms", "commit p99 ms", "commit max ms", "dropped"],
            rows,
        )
        print()
        durable, bare_durable = asyncio.run(
            _durable(Path(tmp) / "b.sqlite", Path(tmp) / "bare-b.sqlite", args.durable)
        )
        median_s, p99_s, max_s = summary(durable)
        bare_median_s, bare_p99_s, bare_max_s = summary(bare_durable)
        print_table(
            ["case", "n", "p50 ms", "p99 ms", "max ms"],
            [
                ["durable() one at a time", len(durable), median_s * 1e3, p99_s * 1e3, max_s * 1e3],
                [
                    "ref: bare INSERT + COMMIT per row",
                    len(bare_durable),
                    bare_median_s * 1e3,
                    bare_p99_s * 1e3,
                    bare_max_s * 1e3,
                ],
            ],
        )
        print()
        rate_ratio = rates[args.entries] / bare_rate
        durable_ratio = p99_s / bare_p99_s
        verdicts = [rate_ratio >= args.min_rate_ratio, durable_ratio <= args.max_durable_ratio]
        print(
            f"target record() committed/s >= {args.min_rate_ratio:g} x the bare rate (same run):"
            f" {rates[args.entries]:,.0f} / {bare_rate:,.0f} = {rate_ratio:.2f}x"
            f" -> {'PASS' if verdicts[0] else 'FAIL'}"
        )
        print(
            f"target durable() p99 <= {args.max_durable_ratio:g} x the bare commit's p99 (same run):"
            f" {p99_s * 1e3:.2f} / {bare_p99_s * 1e3:.2f} ms = {durable_ratio:.2f}x"
            f" (p50 {median_s / bare_median_s:.2f}x) -> {'PASS' if verdicts[1] else 'FAIL'}"
        )
        print(f"({p99_note(len(durable))}; exit status 1 when a target fails)")
        print()
        path = Path(tmp) / "c.sqlite"
        event_id, samples = _report_journal(path, args.days)
        bytes_per_row = os.path.getsize(path) / samples
        build, html = [], []
        for _ in range(args.reports):
            started_s = time.perf_counter()
            report = build_report(path, event_id, baseline="pre_notice_intervals")
            build.append(time.perf_counter() - started_s)
            started_s = time.perf_counter()
            render(report, "html")
            html.append(time.perf_counter() - started_s)
        print_table(
            ["case", "site power rows", "bytes/row", "runs", "build p50 ms", "html p50 ms", "verdict"],
            [
                [
                    f"4 h ERS-10 event in {args.days:g} d",
                    f"{samples:,}",
                    f"{bytes_per_row:.0f}",
                    len(build),
                    statistics.median(build) * 1e3,
                    statistics.median(html) * 1e3,
                    "pass" if report.passed else "fail",
                ]
            ],
        )
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
