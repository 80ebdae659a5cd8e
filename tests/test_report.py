"""Compliance report: a golden test on a recorded ERS-10 event, numbers checked by hand below.

tests/data/report_ers10.jsonl is a journal in the daemon's format (one row per entry): site power every
60 s for two hours from T0 = 1_750_000_500 (a 15-minute boundary), an accepted ERS-10 `limit` of
6000 kW at T0+3720, two curtail setpoints, the recall (`cancel`) at T0+6300 and a restore setpoint.

Site power (kW), samples at T0+30+60k:
  [T0,      T0+900)   10000 x 15      |
  [T0+900,  T0+1800)  10200 x 15      |  the four whole intervals before the notice's interval
  [T0+1800, T0+2700)   9800 x 15      |
  [T0+2700, T0+3600)  10400 x 15      |
  T0+3630, T0+3690    10300           (notice interval, before the notice)
  T0+3750 9000, 3810 8000, 3870 7000, 3930 6500, then 5900 from T0+3990 to T0+4470
  [T0+4500, T0+5400)  5900 x 10, then 6800 x 5
  [T0+5400, T0+6300)  6310 x 15
  from T0+6330        10000 (after the recall)
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from pathlib import Path

import pytest

from mullet.daemon.cli import main as mulletd
from mullet.daemon.records.journal import Journal
from mullet.daemon.records.report import ReportError, build_report
from mullet.daemon.records.report_render import render

RECORDED = Path(__file__).parent / "data" / "report_ers10.jsonl"
T0 = 1_750_000_500
EVENT = "ers-2025-06-15"


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()  # the daemon's schema
    db = sqlite3.connect(path)
    with db:
        for line in RECORDED.read_text().splitlines():
            row = json.loads(line)
            db.execute(
                "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)",
                (row["wall_s"], row["kind"], row["subject"], json.dumps(row["data"])),
            )
    db.close()
    return path


def test_ers_report_numbers_checked_by_hand(journal_path: Path) -> None:
    # Written for the 4 pre-notice intervals, ERS's default before middle_8_of_10 (which needs 10 like
    # days this two-hour journal lacks: tests/test_baselines.py).
    report = build_report(journal_path, EVENT, baseline="pre_notice_intervals")
    # ERS: baseline = mean of the 4 whole 15-min intervals before the notice's interval
    #   (10000 + 10200 + 9800 + 10400) / 4 = 40400 / 4 = 10100 kW.
    assert report.baseline_method == "pre_notice_intervals"
    assert report.baseline_kw == pytest.approx(10100.0)
    # limit 6000 kW: target 6000, obligated reduction 10100 - 6000 = 4100 kW.
    assert report.target_kw == 6000.0
    assert report.obligated_kw == pytest.approx(4100.0)
    # Notice (acceptance) T0+3720; first sample <= 6000 is 5900 at T0+3990: 270 s, within 600 s.
    assert report.notice_s == T0 + 3720
    assert report.time_to_target_s == pytest.approx(270.0)
    assert report.met_deadline is True
    # Scored from the end of the ramp (T0+3720+600 = T0+4320) to the recall (T0+6300).
    assert (report.scored_from_s, report.scored_until_s) == (T0 + 4320, T0 + 6300)
    assert report.ended_by == "cancel 'ers-2025-06-15-recall'"
    got = [(i.start_s - T0, i.end_s - T0, i.samples, i.average_kw) for i in report.intervals]
    assert got == [
        (4320, 4500, 3, pytest.approx(5900.0)),  # T0+4350, 4410, 4470
        (4500, 5400, 15, pytest.approx(6200.0)),  # (10 x 5900 + 5 x 6800) / 15 = 93000 / 15
        (5400, 6300, 15, pytest.approx(6310.0)),
    ]
    # Interval factors: min(1, 4200/4100) = 1; 3900/4100 = 0.951220; 3790/4100 = 0.924390.
    assert [i.performance_factor for i in report.intervals] == pytest.approx(
        [1.0, 0.951220, 0.924390], abs=1e-6
    )
    # Event factor, weighted by seconds scored: (180 x 1 + 900 x 0.951220 + 900 x 0.924390) / 1980
    #   = (180 + 856.098 + 831.951) / 1980 = 1868.049 / 1980 = 0.943459 < 0.95: FAIL.
    assert report.performance_factor == pytest.approx(0.943459, abs=1e-6)
    # Shortfall: 0 + (6200 - 6000) x 0.25 h + (6310 - 6000) x 0.25 h = 50 + 77.5 = 127.5 kWh; max 310 kW.
    assert report.shortfall_kwh == pytest.approx(127.5)
    assert report.max_shortfall_kw == pytest.approx(310.0)
    assert report.passed is False
    assert report.verdict == ["performance factor 0.943 < 0.95"]
    # Every command journaled from the notice on: the two curtails and the restore.
    setpoints = [(c.subject, c.data["seq"], c.data["mode"]) for c in report.commands if c.kind == "setpoint"]
    assert setpoints == [("c01", 5001, "curtail"), ("c02", 5002, "curtail"), ("c01", 5003, "run")]


def test_meter_before_event_baseline(journal_path: Path) -> None:
    report = build_report(journal_path, EVENT, baseline="meter_before_event")
    # Last sample at or before the deployment (T0+3720): 10300 kW at T0+3690, 30 s before.
    assert report.baseline_kw == pytest.approx(10300.0)
    assert report.baseline_detail == "meter 30.0 s before deployment"
    # Obligated 4300 kW: factors 1, 4100/4300 = 0.953488, 3990/4300 = 0.927907;
    # (180 + 858.140 + 835.116) / 1980 = 0.946089. Shortfall is against the same 6000 kW target.
    assert report.performance_factor == pytest.approx(0.946089, abs=1e-6)
    assert report.shortfall_kwh == pytest.approx(127.5)


def test_renderings(journal_path: Path) -> None:
    report = build_report(journal_path, EVENT, baseline="pre_notice_intervals")
    html = render(report, "html")
    # One self-contained file: an inline SVG, no script, nothing fetched from elsewhere.
    assert html.count("<svg") == 1 and "<script" not in html
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    points = re.search(r'<polyline fill="none" stroke="#1a73e8"[^>]* points="([^"]+)"', html)
    assert points is not None and len(points.group(1).split()) == 120  # every site power sample
    assert "target 6000.0 kW" in html and "baseline 10100.0 kW" in html and "FAIL" in html

    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [r["performance_factor"] for r in rows] == ["1.0000", "0.9512", "0.9244", "0.9435"]
    assert rows[-1]["interval_end_utc"] == "fail" and rows[-1]["shortfall_kwh"] == "127.500"

    data = json.loads(render(report, "json"))
    assert data["passed"] is False and data["baseline_kw"] == 10100.0 and len(data["intervals"]) == 3


def test_report_command(journal_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    command = [
        "report",
        "--journal",
        str(journal_path),
        "--event",
        EVENT,
        "--baseline",
        "pre_notice_intervals",
    ]
    assert mulletd([*command, "-o", str(out)]) == 0
    assert "fail: performance factor 0.943 < 0.95" in capsys.readouterr().out
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert mulletd(["report", "--journal", str(journal_path), "--event", "nope", "--format", "json"]) == 1
    assert "no accepted event 'nope' in the journal" in capsys.readouterr().err


def test_refused_event_says_why(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    with db:
        data = {"event": {"id": "bad-1", "kind": "limit"}, "reason": "kw missing"}
        db.execute(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (1, 0, ?, NULL, ?)",
            ("grid_event_rejected", json.dumps(data)),
        )
    db.close()
    with pytest.raises(ReportError, match="event 'bad-1' was refused: kw missing"):
        build_report(path, "bad-1")
