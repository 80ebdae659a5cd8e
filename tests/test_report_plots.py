"""The report's plots and text scorecard: what is drawn, where, and labelled in which zone.

The event plot is checked on the recorded ERS-10 event (tests/test_report.py checks its numbers by
hand: baseline 10100 kW, target 6000 kW, intervals averaging 5900 / 6200 / 6310 kW with factors
1 / 0.951 / 0.924); the trip curve on a synthesized FFR event with a 10 Hz `trip_curve`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import EXAMPLE, write_config
from report_journals import event_rows, recorded_rows, write_journal

from mullet.daemon.cli import main as mulletd
from mullet.daemon.records.plot_svg import nice_ticks, time_ticks, zone_label
from mullet.daemon.records.report import build_report
from mullet.daemon.records.report_render import render

SVG = "{http://www.w3.org/2000/svg}"
EVENT = "ers-2025-06-15"
T_FFR = 1_782_900_000  # 2026-07-01 10:00 UTC, a 15-minute boundary


def svgs(html: str) -> list[ET.Element]:
    """Every inline SVG, parsed as XML (so each is well formed)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", html, re.S)]


def texts(svg: ET.Element, cls: str) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == cls]


@pytest.fixture
def ers_html(tmp_path: Path) -> str:
    journal = write_journal(tmp_path / "journal.sqlite", recorded_rows())
    report = build_report(journal, EVENT, baseline="pre_notice_intervals")
    return render(report, "html", timezone="America/Chicago")


def test_event_plot_in_the_site_zone_with_band_bars_and_marks(ers_html: str) -> None:
    (plot,) = svgs(ers_html)
    # T0 = 1_750_000_500 is 2025-06-15 15:15 UTC, 10:15 CDT; samples run to 12:14:30 CDT: a 2-hour span
    # gets 15-minute ticks, on the local quarter hours.
    assert texts(plot, "x-title") == ["time (CDT, America/Chicago)"]
    assert texts(plot, "x-tick") == ["10:30", "10:45", "11:00", "11:15", "11:30", "11:45", "12:00"]
    # kW from 0 to above the 10400 kW peak on 1-2-5 steps: 2,000 apart.
    labels = [t.text for t in plot.iter(f"{SVG}text") if t.get("text-anchor") == "end" and t.text]
    assert labels[:7] == ["0", "2,000", "4,000", "6,000", "8,000", "10,000", "12,000"]
    bars = [r for r in plot.iter(f"{SVG}rect") if "interval-bar" in (r.get("class") or "")]
    assert [(b.get("class"), b.get("data-factor")) for b in bars] == [
        ("interval-bar pass", "1.0000"),
        ("interval-bar pass", "0.9512"),
        ("interval-bar fail", "0.9244"),
    ]
    # The band: target 6000 up to the pass line 10100 - 0.95 x 4100 = 6205 kW.
    bands = [r.findtext(f"{SVG}title") for r in plot.iter(f"{SVG}rect") if r.get("class") == "target-band"]
    assert bands and set(bands) == {"target band 6000.0 to 6205.0 kW"}
    marks = {g.get("data-mark") for g in plot.iter(f"{SVG}g") if g.get("class") == "mark"}
    assert marks == {"deployment", "deadline", "release"}
    legend = [t.text for g in plot.iter(f"{SVG}g") if g.get("class") == "legend-item" for t in g]
    assert {"site power", "baseline", "target (full response)"} <= set(filter(None, legend))


def test_event_plot_in_utc_without_a_zone(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "journal.sqlite", recorded_rows())
    (plot,) = svgs(render(build_report(journal, EVENT, baseline="pre_notice_intervals"), "html"))
    assert texts(plot, "x-title") == ["time (UTC)"]
    assert texts(plot, "x-tick")[0] == "15:30"


def test_trip_curve_drawn_against_the_deadline(tmp_path: Path) -> None:
    rows = event_rows("ffr-1", T_FFR, trip_seq=41)
    # Another trip's curve (seq 99) is not this event's.
    rows.append(
        (T_FFR + 30, "trip_curve", "1", {"seq": 99, "stage": 1, "cause": "x", "samples": [[0, 1, 60]]})
    )
    report = build_report(write_journal(tmp_path / "j.sqlite", rows), "ffr-1")
    (curve,) = report.trip_curves
    assert (curve.seq, curve.spacing_s, len(curve.samples)) == (41, 0.1, 71)  # -2 s .. 5 s at 10 Hz
    _, trip = svgs(render(report, "html"))
    assert trip.get("data-seq") == "41"
    deadline = next(g for g in trip.iter(f"{SVG}g") if g.get("data-mark") == "deadline")
    # x axis -2 .. 5 s over 828 px from x = 72: 0.25 s at 72 + 2.25 / 7 x 828 = 338.1.
    assert deadline.find(f"{SVG}line").get("x1") == "338.1"  # type: ignore[union-attr]
    assert deadline.findtext(f"{SVG}text") == "deadline 0.25 s"
    assert texts(trip, "spacing") == [
        "samples 0.1 s apart (10 Hz): response time known to 0.1 s against the 0.25 s deadline"
    ]
    assert len(list(trip.iter(f"{SVG}circle"))) == 71


def test_a_curve_too_coarse_for_its_deadline_says_so(tmp_path: Path) -> None:
    rows = event_rows("ffr-2", T_FFR, trip_seq=7, curve_hz=4.0)
    report = build_report(write_journal(tmp_path / "j.sqlite", rows), "ffr-2")
    assert "samples 0.25 s apart (4 Hz): response time known to 0.25 s, too coarse to prove the 0.25 s" in (
        render(report, "html")
    )


def test_text_scorecard_fits_a_screen(tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "journal.sqlite", recorded_rows())
    text = render(
        build_report(journal, EVENT, baseline="pre_notice_intervals"), "text", timezone="America/Chicago"
    )
    lines = text.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 100
    assert lines[0].startswith("FAIL  ers-2025-06-15  (grid event, ERS-10, limit 6000.0 kW)")
    assert "  factor             0.943 (pass at 0.95)" in lines
    assert "  baseline           10,100.0 kW: pre_notice_intervals, average of 4 of 4" in text
    assert "  obligated          4,100.0 kW" in lines
    assert "  time to target     270.0 s (deadline 600 s: met)" in lines
    assert "  shortfall          127.50 kWh, worst 310.0 kW" in lines
    rows = [line for line in lines if re.match(r"  \d\d:\d\d-\d\d:\d\d ", line)]
    # Local times: the first interval runs from the end of the ramp, 11:27 CDT, to 11:30.
    assert [r.split()[0] for r in rows] == ["11:27-11:30", "11:30-11:45", "11:45-12:00"]
    assert rows[-1].endswith("<")  # the failing interval is marked


def test_ticks() -> None:
    assert nice_ticks(0, 10816) == [0, 2000, 4000, 6000, 8000, 10000, 12000]
    assert nice_ticks(0, 0.9) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    chicago = ZoneInfo("America/Chicago")
    t0 = 1_782_900_000 + 17  # 05:00:17 CDT
    steps = {}
    for span_s in (300, 900, 1800, 3600, 7200, 5 * 3600):
        ticks = time_ticks(t0, t0 + span_s, chicago)
        steps[span_s] = ticks[1][0] - ticks[0][0]
        assert all(t % 60 == 0 for t, _ in ticks)
    assert steps == {300: 60, 900: 120, 1800: 300, 3600: 600, 7200: 900, 5 * 3600: 1800}
    # Across the fall-back change (2026-11-01 02:00 CDT -> 01:00 CST): both names.
    assert zone_label(1_793_512_800, 1_793_520_000, chicago) == "CDT/CST, America/Chicago"
    # A zone offset by half an hour still gets round local ticks.
    kolkata = time_ticks(1_782_900_000, 1_782_903_600, ZoneInfo("Asia/Kolkata"))
    assert [label for _, label in kolkata][:2] == ["15:30", "15:40"]


def test_per_interval_baselines_are_drawn_and_listed(tmp_path: Path) -> None:
    """Matching-day baselines differ per interval: the plot steps, the CSV and the table follow them."""
    journal = write_journal(tmp_path / "journal.sqlite", recorded_rows())
    report = build_report(journal, EVENT, baseline="pre_notice_intervals")
    # The recorded intervals with their own baselines 10,000 / 10,200 / 10,400 kW (target 6000 kW).
    report.intervals = [
        dataclasses.replace(i, baseline_kw=b, target_kw=6000.0)
        for i, b in zip(report.intervals, (10_000.0, 10_200.0, 10_400.0), strict=True)
    ]
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert [(r["baseline_kw"], r["obligated_kw"]) for r in rows[:3]] == [
        ("10000.000", "4000.000"),
        ("10200.000", "4200.000"),
        ("10400.000", "4400.000"),
    ]
    (plot,) = svgs(render(report, "html"))
    steps = next(
        p for p in plot.iter(f"{SVG}polyline") if "per interval" in (p.findtext(f"{SVG}title") or "")
    )
    assert len({y for _, y in (xy.split(",") for xy in (steps.get("points") or "").split())}) == 3
    # Each band's pass line is its own: 10000 - 0.95 x 4000 = 6200, 6210, 6220 kW.
    bands = [r.findtext(f"{SVG}title") for r in plot.iter(f"{SVG}rect") if r.get("class") == "target-band"]
    assert bands[1:] == [f"target band 6000.0 to {kw:.1f} kW" for kw in (6200, 6210, 6220)]


def test_report_command_text_and_zone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = write_journal(tmp_path / "journal.sqlite", recorded_rows())
    argv = ["report", "--journal", str(journal), "--event", EVENT, "--baseline", "pre_notice_intervals"]
    assert mulletd([*argv, "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FAIL  ers-2025-06-15") and "2025-06-15 16:17:00 UTC" in out  # --journal alone
    data = tomllib.loads(EXAMPLE.read_text())
    data["site"]["timezone"] = "America/Chicago"
    data["journal"]["path"] = str(journal)
    _, config = write_config(data, tmp_path / "site.toml")
    argv = ["report", "--config", str(config), "--event", EVENT, "--baseline", "pre_notice_intervals"]
    assert mulletd([*argv, "--format", "text"]) == 0
    assert "  deployed           2025-06-15 11:17:00 CDT" in capsys.readouterr().out.splitlines()
