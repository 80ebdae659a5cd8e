"""The season page: which events and drills a year holds (in the site's zone), the figures of each row,
the per-program totals with drills apart, safe linked file names and the 1000-event bound.

Events (tests/report_journals.py: 10 000 kW before, a 6000 kW limit, recalled after 30 minutes; the
baseline is the meter 10 s before deployment, 10 000 kW, so the obligated reduction is 4000 kW):
  ny-edge          LR   event  2026-01-01 03:00 UTC = 2025-12-31 21:00 CST   5900 kW during
  ffr:2026-07-01   FFR  event  2026-07-01 10:00 UTC, trip seq 41             5900 kW during
  drill-2026-08    LR   drill  2026-08-03 15:00 UTC                          5900 kW during
  lr-2026-09       LR   event  2026-09-14 18:00 UTC                          7000 kW during
"""

from __future__ import annotations

import json
import re
import sqlite3
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import EXAMPLE, write_config
from report_journals import Row, event_rows, write_journal

from mullet.daemon.cli import main as mulletd
from mullet.daemon.records.season import MAX_EVENTS, file_name, season_reports, totals, write_season

CHICAGO = ZoneInfo("America/Chicago")


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    rows = event_rows("ny-edge", 1_767_236_400, program="LR", deadline_s=600.0)
    rows += event_rows("ffr:2026-07-01", 1_782_900_000, trip_seq=41)
    rows += event_rows("drill-2026-08", 1_785_769_200, program="LR", deadline_s=600.0, drill=True)
    rows += event_rows("lr-2026-09", 1_789_408_800, program="LR", deadline_s=600.0, during_kw=7000.0)
    return write_journal(tmp_path / "journal.sqlite", rows)


def test_season_in_the_site_zone_with_totals(journal: Path) -> None:
    reports = season_reports(journal, 2026, CHICAGO)
    # ny-edge was accepted on 2025-12-31 in Chicago: not in the 2026 season there.
    assert [(r.event_id, r.drill) for r in reports] == [
        ("ffr:2026-07-01", False),
        ("drill-2026-08", True),
        ("lr-2026-09", False),
    ]
    got = {(t.program, t.drill): t for t in totals(reports)}
    assert set(got) == {("FFR", False), ("LR", False), ("LR", True)}
    ffr, lr_events, lr_drills = got["FFR", False], got["LR", False], got["LR", True]
    # FFR: deployed 30 min = 0.5 h; scored from 0.25 s after deployment (its deadline) to the recall:
    # 4100 kW delivered x (1800 - 0.25) s / 3600 = 2049.715 kWh = 2.0497 MWh; factor 1, but the 0.25 s
    # deadline cannot be judged from 10 s samples, so the event does not pass: 1 failure.
    assert (ffr.count, ffr.hours_deployed, ffr.mean_factor, ffr.failures) == (1, 0.5, 1.0, 1)
    assert ffr.mwh_delivered == pytest.approx(4100 * 1799.75 / 3600 / 1000)
    # The drill: scored after its 600 s ramp for 1200 s: 4100 kW x 1/3 h = 1.3667 MWh, factor 1, pass.
    assert (lr_drills.count, lr_drills.mean_factor, lr_drills.failures) == (1, 1.0, 0)
    assert lr_drills.mwh_delivered == pytest.approx(4100 / 3 / 1000)
    # lr-2026-09 at 7000 kW: 3000 of 4000 kW delivered, factor 0.75, 1.0 MWh, a failure.
    assert (lr_events.count, lr_events.mean_factor, lr_events.failures) == (1, 0.75, 1)
    assert lr_events.mwh_delivered == pytest.approx(1.0)
    (fail,) = [r for r in reports if r.event_id == "lr-2026-09"]
    # Shortfall: 1000 kW above the target over 1200 s = 333.33 kWh, worst 1000 kW.
    assert (fail.shortfall_kwh, fail.max_shortfall_kw) == (pytest.approx(1000 / 3), 1000.0)
    # In UTC the New Year's Eve event belongs to 2026.
    in_utc = [r.event_id for r in season_reports(journal, 2026, ZoneInfo("UTC"))]
    assert in_utc == ["ny-edge", "ffr:2026-07-01", "drill-2026-08", "lr-2026-09"]
    assert [r.event_id for r in season_reports(journal, 2025, CHICAGO)] == ["ny-edge"]


def test_season_command_writes_linked_pages(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site"
    argv = ["report", "--journal", str(journal), "--season", "2026", "--out-dir", str(out)]
    assert mulletd(argv) == 0
    assert (
        capsys.readouterr().out
        == f"{out / 'season-2026.html'}: 3 grid events, 1 drills, one report each beside it\n"
    )
    page = (out / "season-2026.html").read_text()
    rows = re.findall(
        r"<tr class='season-row (event|drill)'><td class='l'><a href='([^']+)'>([^<]+)</a>", page
    )
    assert [(kind, name) for kind, _, name in rows] == [
        ("event", "ny-edge"),
        ("event", "ffr:2026-07-01"),
        ("drill", "drill-2026-08"),
        ("event", "lr-2026-09"),
    ]
    hrefs = [href for _, href, _ in rows]
    assert hrefs[0] == "ny-edge.html" and re.fullmatch(r"ffr_2026-07-01-[0-9a-f]{8}\.html", hrefs[1])
    for href in hrefs:  # each link resolves to its event's report, which links back
        assert "<a href='season-2026.html'>season 2026</a>" in (out / href).read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([*hrefs, "season-2026.html"])
    # --journal alone: UTC.
    assert "2026-07-01 10:00 UTC" in page
    verdict = "target reached never, deadline 600 s; performance factor 0.750 &lt; 0.95"
    assert f"<td class='fail' title='{verdict}'>fail</td>" in page
    assert (
        "<td class='pass' title='passed: performance factor &gt;= 0.95, target within deadline'>pass</td>"
        in page
    )
    assert "<td>not reached</td></tr>" in page  # lr-2026-09 never got under its target


def test_season_command_reads_the_zone_and_baselines_from_the_config(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    data["site"]["timezone"] = "America/Chicago"
    data["journal"]["path"] = str(journal)
    data["programs"] = [{"name": "LR", "deadline_s": 600.0, "baseline": "meter_before"}]
    _, config = write_config(data, tmp_path / "site.toml")
    out = tmp_path / "site"
    assert mulletd(["report", "--config", str(config), "--season", "2026", "--out-dir", str(out)]) == 0
    assert "2 grid events, 1 drills" in capsys.readouterr().out  # ny-edge is 2025 in Chicago
    page = (out / "season-2026.html").read_text()
    assert "2026-07-01 05:00 CDT" in page and "ny-edge" not in page
    baselines = re.findall(r"<td class='l'>(meter_before[a-z_]*)</td>", page)
    assert baselines == ["meter_before_event", "meter_before", "meter_before"]  # FFR's rule; LR's config


def test_file_names_are_safe_and_distinct() -> None:
    assert file_name("ers-2026-07-01") == "ers-2026-07-01.html"
    names = {file_name(i) for i in ("a:b", "a/b", "a_b", "../x", "season-2026", "")}
    assert len(names) == 6
    assert all(re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.html", n) for n in names)
    assert "season-2026.html" not in names


def test_a_season_over_the_bound_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows: list[Row] = []
    for n in range(MAX_EVENTS + 1):
        event = {"id": f"e{n}", "kind": "limit", "kw": 1.0, "program": "LR"}
        obligation = {"event_id": f"e{n}", "kind": "limit", "kw": 1.0, "deadline_s": 600.0}
        rows.append(
            (1_767_236_400 + 3600 * n, "grid_event", f"e{n}", {"event": event, "obligation": obligation})
        )
    journal = write_journal(tmp_path / "journal.sqlite", rows)
    out = tmp_path / "out"
    assert mulletd(["report", "--journal", str(journal), "--season", "2026", "--out-dir", str(out)]) == 1
    assert "1001 events and drills in 2026: a season page lists at most 1000" in capsys.readouterr().err
    assert not out.exists()
    assert mulletd(["report", "--journal", str(journal), "--season", "2026", "--format", "csv"]) == 2


def test_an_event_ended_in_its_ramp_is_not_scored_nor_a_failure(tmp_path: Path) -> None:
    rows = event_rows("short", 1_782_900_000, program="LR", deadline_s=600.0, duration_s=300.0)
    rows += event_rows("lr-2026-09", 1_789_408_800, program="LR", deadline_s=600.0, during_kw=7000.0)
    journal = write_journal(tmp_path / "journal.sqlite", rows)
    reports = season_reports(journal, 2026, CHICAGO)
    (lr,) = totals(reports)
    assert (lr.count, lr.failures, lr.mean_factor) == (2, 1, 0.75)  # the short one has no factor
    page = write_season(reports, 2026, CHICAGO, tmp_path / "out").read_text()
    assert re.search(r"<td class='not' title='not scored: [^']+'>not scored</td>", page)
    assert re.search(r"<td class='fail' title='[^']+'>fail</td>", page)
    assert (tmp_path / "out" / "short.html").read_text().count("<p class='not'>NOT SCORED: ") == 1


def _add_malformed(journal: Path, event_id: str) -> None:
    """An accepted grid_event whose obligation's kw is not a number (a hand-edited journal)."""
    bad = {"event": {"id": event_id, "kind": "limit"}, "obligation": {"kind": "limit", "kw": "lots"}}
    db = sqlite3.connect(journal)
    with db:
        db.execute(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data)"
            " VALUES (?, 0, 'grid_event', ?, ?)",
            (1_790_000_000, event_id, json.dumps(bad)),
        )
    db.close()


def test_a_malformed_event_is_named_not_a_crash(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_malformed(journal, "bad-1")
    out = tmp_path / "site"
    assert mulletd(["report", "--journal", str(journal), "--season", "2026", "--out-dir", str(out)]) == 0
    captured = capsys.readouterr()
    assert "3 grid events, 1 drills" in captured.out
    assert (
        "mulletd report: 'bad-1' left out of the season: event 'bad-1': its journal entries are malformed"
        " (ValueError: could not convert" in captured.err
    )
    page = (out / "season-2026.html").read_text()
    assert (
        "<h2 class='fail'>Not reported (1)</h2>" in page
        and "<li>bad-1: event &#x27;bad-1&#x27;: its journal entries are malformed (ValueError" in page
    )


def test_a_malformed_event_gets_a_clear_refusal_from_report_event(
    journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_malformed(journal, "bad-2")
    assert mulletd(["report", "--journal", str(journal), "--event", "bad-2", "--format", "text"]) == 1
    err = capsys.readouterr().err
    assert "mulletd report: event 'bad-2': its journal entries are malformed (ValueError" in err
