"""`mulletd replay --journal`: a recorded period (its grid events, prices, site power and trips) re-run
from the site's own journal. In-process on the simulated clock: no broker, no sockets."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mullet.daemon.cli import main
from mullet.daemon.config import Config, parse_config
from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.obligation_book import ObligationBook
from mullet.daemon.records.journal import Journal
from mullet.daemon.replay.engine import Replay
from mullet.daemon.replay.from_journal import ALL_TENANTS, frequency_points, scenario_from_journal
from mullet.daemon.replay.results import summarize
from mullet.daemon.replay.scenario import ScenarioError
from mullet.drivers.protocol import GridEvent

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "site.example.toml"
T0_S = datetime(2023, 8, 1, 12, 0, tzinfo=UTC).timestamp()
HOURS = 3.0
SITE_KW, AI_KW = 11_000.0, 2_800.0
TRIP_S, RELEASE_S = T0_S + 6000.0, T0_S + 6100.0


def example() -> Config:
    return parse_config(tomllib.loads(EXAMPLE.read_text()))


def _rows(path: Path, rows: list[tuple[float, str, str | None, str]]) -> None:
    """Rows as the daemon's writer stores them (its schema, from the real `Journal`)."""
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)",
            rows,
        )
    sqlite3.connect(path).close()


def _event_row(book: ObligationBook, event: GridEvent, at_s: float) -> tuple[float, str, str, str]:
    """A `grid_event` row as the daemon journals it: the book's decision, the core's entry."""
    decision = book.decide(event, now_s=at_s, site_power_kw=SITE_KW)
    assert decision.accepted
    book.apply(event, decision, now_s=at_s)
    entry = SiteController.grid_event_entry(event, decision)
    return at_s, "grid_event", event.id, json.dumps(entry)


def write_journal(path: Path) -> None:
    """Three hours: site power every 10 s (AI total included), a price spike, an ERS-10 reduce and its
    recall, an under-frequency trip and its release, and three rows of garbage."""
    rows: list[tuple[float, str, str | None, str]] = []
    t = T0_S
    while t <= T0_S + HOURS * 3600.0:
        ai = None if T0_S + 300.0 <= t < T0_S + 330.0 else AI_KW  # a tenant unknown for 30 s
        rows.append((t, "site_power", None, json.dumps({"kw": SITE_KW, "hz": 60.0, "ai_kw": ai})))
        t += 10.0
    for offset_s, price in ((0.0, 30.0), (3600.0, 250.0), (5400.0, 30.0)):
        rows.append((T0_S + offset_s, "price", None, json.dumps({"usd_per_mwh": price})))
    book = ObligationBook.from_config(example())
    reduce = GridEvent(id="ers-1", kind="reduce", kw=2500.0, program="ERS-10", source="test")
    rows.append(_event_row(book, reduce, T0_S + 2400.0))
    rows.append(_event_row(book, GridEvent(id="ers-1", kind="cancel", source="test"), T0_S + 4500.0))
    trip = {"seq": 1001, "stage": 2, "cause": "frequency", "hz": 59.62, "groups": ["c01"], "outlets": []}
    rows.append((TRIP_S, "trip", "2", json.dumps(trip)))
    rows.append((RELEASE_S, "trip_released", None, json.dumps({"obligations": ["ufr-1001"]})))
    rows.append((T0_S + 100.0, "setpoint", "c01", json.dumps({"seq": 1, "mode": "run"})))  # not read
    # Garbage: NaN power, a price that is not a number, data that is not JSON.
    rows.append((T0_S + 15.0, "site_power", None, '{"kw": NaN, "hz": 60.0}'))
    rows.append((T0_S + 700.0, "price", None, json.dumps({"usd_per_mwh": "abc"})))
    rows.append((T0_S + 800.0, "site_power", None, "{not json"))
    _rows(path, rows)


def test_a_journal_period_replays_its_events_trip_prices_and_power(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    write_journal(path)
    scenario = scenario_from_journal(path)
    assert (scenario.start_s, scenario.end_s) == (T0_S, T0_S + HOURS * 3600.0)
    assert scenario.sources["journal_skipped"] == "3 rows skipped (bad data: 1 price, 2 site_power)"
    assert "3 site_power rows without ai_kw" in scenario.sources["journal_ai_unknown"]
    assert scenario.prices == ((T0_S, 30.0), (T0_S + 3600.0, 250.0), (T0_S + 5400.0, 30.0))
    assert [(e.id, e.kind) for _t, e in scenario.events] == [("ers-1", "reduce"), ("ers-1", "cancel")]
    assert {v for _t, v in scenario.demand_kw[ALL_TENANTS]} == {AI_KW}

    replay = Replay(example(), scenario).run()
    result = summarize(replay, "site.example")
    # The AI total is split over the configured tenants: the replay draws what the site recorded.
    assert result["energy_mwh"]["ai"] == pytest.approx(AI_KW * HOURS / 1000.0, rel=1e-3)
    [event] = result["events"]
    assert (event["event_id"], event["program"], event["ended_by"]) == ("ers-1", "ERS-10", "recall")
    assert event["end_s"] == T0_S + 4500.0
    assert event["passed"] is not None and event["baseline_kw"] is not None
    # The trip fires again, on the frequency, within the recorded lead before the recorded trip.
    [trip] = result["trips"]
    assert trip["cause"] == "frequency" and trip["stage"] == 2
    assert TRIP_S - 3.0 <= trip["t_s"] <= TRIP_S
    assert result["usd"]["site_energy_cost"] > 0 and result["unpriced_hours"] == 0
    recorded = result["recorded"]
    assert recorded["site_mwh"] == pytest.approx(SITE_KW * HOURS / 1000.0, rel=1e-6)
    expected_usd = SITE_KW / 1000.0 * (1.0 * 30.0 + 0.5 * 250.0 + 1.5 * 30.0)
    assert recorded["site_energy_cost_usd"] == pytest.approx(expected_usd, rel=1e-6)
    assert recorded["unrecorded_hours"] == 0
    assert result["sources"]["journal"] == str(path)


def test_since_until_and_a_gap_in_the_record(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    write_journal(path)
    scenario = scenario_from_journal(path, since_s=T0_S + 3000.0, until_s=T0_S + 5000.0)
    assert (scenario.start_s, scenario.end_s) == (T0_S + 3000.0, T0_S + 5000.0)
    assert scenario.prices[0] == (T0_S + 3000.0, 30.0)  # the price in force at the start
    assert [e.kind for _t, e in scenario.events] == ["cancel"]
    assert scenario.frequency == ()
    with sqlite3.connect(path) as db:  # the daemon was down for 20 minutes
        db.execute(
            "DELETE FROM journal WHERE kind = 'site_power' AND wall_s >= ? AND wall_s < ?",
            (T0_S + 3600.0, T0_S + 4800.0),
        )
    db.close()
    replay = Replay(example(), scenario_from_journal(path)).run()
    recorded = summarize(replay, "x")["recorded"]
    assert recorded["unrecorded_hours"] == pytest.approx(1200.0 / 3600.0, abs=0.02)
    assert recorded["site_mwh"] == pytest.approx(SITE_KW * (HOURS - 1200.0 / 3600.0) / 1000.0, rel=0.01)


def test_overlapping_trips_hold_the_lowest_frequency_until_the_release() -> None:
    points = frequency_points([(100.0, 59.8), (110.0, 59.6)], [200.0])
    hz = dict(points)
    assert hz[98.0] == 59.8 and hz[108.0] == 59.6 and hz[200.0] == 60.0
    assert all(a[0] < b[0] for a, b in itertools.pairwise(points))
    assert points[0][1] == 60.0 and points[-1][1] == 60.0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"this is not a database, it is a text file\n" * 20, "not an SQLite database"),
    ],
)
def test_a_missing_corrupt_or_empty_journal_is_a_clear_error(
    tmp_path: Path, content: bytes | None, says: str
) -> None:
    path = tmp_path / "journal.sqlite"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ScenarioError) as caught:
        scenario_from_journal(path)
    assert says in "\n".join(caught.value.problems)
    assert str(path) in caught.value.problems[0]


def test_a_journal_without_rows_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    before = path.read_bytes()
    with pytest.raises(ScenarioError, match="no rows to replay"):
        scenario_from_journal(path)
    assert path.read_bytes() == before  # opened read-only


def test_cli_refuses_a_corrupt_journal_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"\x00garbage" * 100)
    code = main(["replay", "--config", str(EXAMPLE), "--journal", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"journal {path}: not an SQLite database" in err


def test_cli_replays_a_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.sqlite"
    write_journal(path)
    out_json = tmp_path / "out.json"
    args = ["replay", "--config", str(EXAMPLE), "--journal", str(path), "--json", str(out_json)]
    code = main(args)
    assert code in (0, 1)  # 1: an AI SLA violation, which this test does not judge
    [result] = json.loads(out_json.read_text())
    assert result["recorded"]["site_mwh"] == pytest.approx(33.0)
    assert not math.isnan(result["energy_mwh"]["site"])
    printed = capsys.readouterr().out
    assert "journal.sqlite" in printed
    assert "recorded: site 33.00 MWh" in printed and "journal: 3 rows skipped" in printed

    since = datetime.fromtimestamp(T0_S + 3000.0, UTC).isoformat()
    assert main([*args, "--since", since, "--until", str(T0_S + 5000.0)]) in (0, 1)
    [result] = json.loads(out_json.read_text())
    assert (result["scenario"]["start_s"], result["scenario"]["end_s"]) == (T0_S + 3000.0, T0_S + 5000.0)
    assert result["recorded"]["site_mwh"] == pytest.approx(SITE_KW * 2000.0 / 3.6e6, abs=1e-3)
    assert main([*args, "--since", "yesterday"]) == 2
    assert "--since: time 'yesterday' is neither ISO-8601 nor Unix seconds" in capsys.readouterr().err
