"""`mulletd export`: interval data from the journal, on fixed series whose energy is worked out by hand
(daemon/records/export.py)."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers import MULLETD

from mullet.daemon.records.export import HEADER, intervals
from mullet.daemon.records.journal import Journal

T0 = 1_800_000_000 - 1_800_000_000 % 900  # a quarter hour: 2027-01-15T08:00:00Z


def _series(seconds: int, site_kw: float, mining_kw: float | None, ai_kw: float | None, start: float = T0):
    return [(start + i, (site_kw, mining_kw, ai_kw)) for i in range(seconds)]


def test_a_steady_quarter_hour_is_its_power_times_a_quarter_hour() -> None:
    # 1 sample a second for 900 s: 1000 kW x 0.25 h = 250 kWh; mining 600 kW -> 150 kWh; AI known only
    # for the first 450 s at 300 kW -> 300 x 450 / 3600 = 37.5 kWh over half the interval, mean 300 kW.
    samples = _series(450, 1000.0, 600.0, 300.0) + _series(450, 1000.0, 600.0, None, start=T0 + 450)
    (row,) = intervals(iter(samples), T0, T0 + 900, 900.0)
    assert row.end_s == T0 + 900  # named by its end
    assert row.kwh == pytest.approx((250.0, 150.0, 37.5))
    assert row.mean_kw == pytest.approx((1000.0, 600.0, 300.0))
    assert row.coverage == pytest.approx((1.0, 1.0, 0.5))


def test_a_gap_is_unknown_never_zero_and_partial_intervals_say_so() -> None:
    # Samples at T0+0..299, silence, samples at T0+700..899; max gap 10 s. The first run covers 299 s
    # between its samples plus 10 s held by its last (309 s); the second 199 s plus 1 s to the
    # interval's end (200 s): 509 s in all; energy 2000 kW x 509 s / 3600 = 282.778 kWh (mean 2000).
    samples = _series(300, 2000.0, 1500.0, 400.0) + _series(200, 2000.0, 1500.0, 400.0, start=T0 + 700)
    (row,) = intervals(iter(samples), T0, T0 + 900, 900.0, max_gap_s=10.0)
    assert row.coverage[0] == pytest.approx(509 / 900)
    assert row.kwh[0] == pytest.approx(2000 * 509 / 3600)
    assert row.mean_kw[0] == pytest.approx(2000.0)
    # An hour asked, 15 minutes recorded: the later quarters are there, empty, never 0 kWh (the last
    # sample holds 9 s into the second: 2000 kW x 9 s = 5 kWh).
    rows = list(intervals(iter(samples), T0, T0 + 3600, 900.0, max_gap_s=10.0))
    assert [r.end_s - T0 for r in rows] == [900, 1800, 2700, 3600]
    assert rows[1].kwh[0] == pytest.approx(5.0) and rows[1].coverage[0] == pytest.approx(9 / 900)
    assert rows[2].kwh == rows[3].kwh == (None, None, None) and rows[3].coverage == (0.0, 0.0, 0.0)
    assert rows[3].cells()[2:5] == ["", "", "0.0000"]


def test_one_minute_intervals_and_a_start_inside_an_interval() -> None:
    # From T0 + 90 s: the first 1-minute interval (T0+60..T0+120) is still whole, since the samples of
    # its first 30 s exist; 3 minutes of samples at 600 kW -> 10 kWh a minute.
    samples = _series(240, 600.0, 500.0, 100.0)
    rows = list(intervals(iter(samples), T0 + 90, T0 + 240, 60.0))
    assert [r.end_s - T0 for r in rows] == [120, 180, 240]
    assert all(r.kwh[0] == pytest.approx(10.0) and r.coverage[0] == pytest.approx(1.0) for r in rows)


def test_mulletd_export_writes_the_journal_as_csv(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data)"
            " VALUES (?, 0, 'site_power', NULL, ?)",
            [
                (T0 + i, json.dumps({"kw": 1200.0, "hz": 60.0, "ai_kw": 200.0, "mining_kw": 900.0}))
                for i in range(0, 1800)
            ],
        )
    out = tmp_path / "intervals.csv"
    done = subprocess.run(
        [
            str(MULLETD),
            "export",
            "--journal",
            str(path),
            "--from",
            "2027-01-15T08:00:00Z",
            "--to",
            str(T0 + 1800),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "2 intervals of 15m" in done.stdout
    rows = list(csv.reader(out.open()))
    assert rows[0] == HEADER
    assert rows[1][:5] == ["2027-01-15T08:15:00Z", "900", "300.000", "1200.000", "1.0000"]
    assert rows[2][0] == "2027-01-15T08:30:00Z" and rows[2][5:8] == ["225.000", "900.000", "1.0000"]
    # A time without a UTC offset is refused: an interval moved by a DST shift would be wrong quietly.
    refused = subprocess.run(
        [str(MULLETD), "export", "--journal", str(path), "--from", "2027-01-15T08:00:00", "--to", str(T0)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and "no UTC offset" in refused.stderr


def test_report_and_export_need_a_journal_and_say_how_to_give_one() -> None:
    for argv in (
        ["export", "--from", "2027-01-15T08:00:00Z", "--to", "2027-01-15T09:00:00Z"],
        ["report", "--event", "e1"],
    ):
        done = subprocess.run([str(MULLETD), *argv], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2, done.stderr
        assert f"mulletd {argv[0]}: give --config FILE or --journal PATH" in done.stderr
