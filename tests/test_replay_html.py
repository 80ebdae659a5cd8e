"""The HTML report of `mulletd replay` on a real replay of a small hand-made scenario: it parses with
balanced tags, holds one SVG per plot, escapes what comes from file names, is byte-identical across
renders, leaves an unpriced interval as a gap, and keeps every line within the point bound."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from mullet.daemon.replay.configs import load_configs
from mullet.daemon.replay.engine import Replay
from mullet.daemon.replay.render_html import render_html
from mullet.daemon.replay.render_text import ROWS
from mullet.daemon.replay.results import interval_table, summarize
from mullet.daemon.replay.scenario import load_scenario
from mullet.daemon.replay.svg import MAX_POINTS, downsample

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "site.example.toml"
HOSTILE = "<script>"
VOID = {"meta", "br", "hr", "img", "input", "link"}

SCENARIO = """\
[scenario]
name = "html-test"
start = 2023-08-01T00:00:00Z
end = 2023-08-01T06:00:00Z
[prices]
file = "prices.csv"
[hashprice]
usd_per_th_day = 0.05
[events]
file = "events.csv"
"""
# No price for the first hour: those four intervals are unpriced, not free.
PRICES = """\
interval_start,usd_per_mwh
2023-08-01T01:00:00Z,30.0
2023-08-01T03:00:00Z,250.0
2023-08-01T04:00:00Z,30.0
"""
EVENTS = """\
time,id,kind,kw,start,end,program
2023-08-01T02:00:00Z,ers-1,reduce,3000,,2023-08-01T02:30:00Z,ERS-10
2023-08-01T02:35:00Z,ers-1,cancel,,,,
"""


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[list[dict]]]:
    """Two configurations over six hours: the example site, and an overlay named `<script>` (economics on)."""
    base = tmp_path_factory.mktemp("replay")
    (base / "scenario.toml").write_text(SCENARIO)
    (base / "prices.csv").write_text(PRICES)
    (base / "events.csv").write_text(EVENTS)
    hostile = base / f"{HOSTILE}.toml"
    hostile.write_text("[economics]\nenabled = true\n")
    scenario = load_scenario(base / "scenario.toml")
    results, tables = [], []
    for label, config in load_configs(EXAMPLE, [hostile]):
        replay = Replay(config, scenario).run()
        results.append(summarize(replay, label))
        tables.append(interval_table(replay))
    return results, tables


class Tags(HTMLParser):
    """Every start tag, and whether each end tag closed the innermost open one."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.started: list[tuple[str, dict[str, str | None]]] = []
        self.mismatched: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.started.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.mismatched.append(tag)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    tags.close()
    return tags


def polylines(html: str, series: str) -> list[list[tuple[float, float]]]:
    return [
        [(float(x), float(y)) for x, y in (p.split(",") for p in attrs["points"].split())]
        for tag, attrs in parse(html).started
        if tag == "polyline" and attrs.get("data-series") == series and attrs["points"]
    ]


def test_the_report_parses_with_balanced_tags_and_one_svg_per_plot(replayed: Any) -> None:
    results, tables = replayed
    html = render_html(results, tables)
    tags = parse(html)
    assert tags.mismatched == [] and tags.stack == []
    # Site power per configuration, the price, curtailment, time to target, performance factor.
    assert [t for t, _ in tags.started].count("svg") == len(results) + 4
    assert "html-test" in html and "2023-08-01 00:00:00Z" in html and "control step 1 s" in html
    for name, _ in ROWS:
        assert f"<th>{name}</th>" in html
    assert all(r["events"] for r in results)
    assert ">ers-1<" in html and "passed: performance factor" in html


def test_a_label_from_a_file_name_is_escaped(replayed: Any) -> None:
    results, tables = replayed
    html = render_html(results, tables)
    assert results[1]["label"] == HOSTILE
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert "script" not in [t for t, _ in parse(html).started]


def test_two_renders_are_byte_identical(replayed: Any) -> None:
    results, tables = replayed
    first = render_html(results, tables).encode()
    assert render_html(copy.deepcopy(results), copy.deepcopy(tables)).encode() == first


def test_events_are_drawn_in_notice_order_whatever_their_ids(replayed: Any) -> None:
    """The order comes from the data, not from a set's or dict's iteration (which varies by process)."""
    results, tables = replayed
    template = results[0]["events"][0]
    ids = [f"ev-{name}" for name in ("q", "c", "x", "a", "m", "z", "b", "k")]
    events = [
        {**template, "event_id": i, "notice_s": template["notice_s"] + 60.0 * n} for n, i in enumerate(ids)
    ]
    html = render_html(
        [{**r, "events": events[::-1] if k else events} for k, r in enumerate(results)], tables
    )
    ttt = html[html.index("Time to target") :]
    assert [i for i in ids if f">{i}<" in ttt] == ids
    assert sorted(ids, key=ttt.index) == ids


def test_an_unpriced_interval_is_a_gap_not_zero(replayed: Any) -> None:
    results, tables = replayed
    priced = [row for row in tables[0] if row["price_usd_per_mwh"] is not None]
    assert 0 < len(priced) == len(tables[0]) - 4  # the first hour has no price
    runs = polylines(render_html(results, tables), "price")
    assert sum(len(run) for run in runs) == len(priced)
    # The first drawn point is the first priced interval (an hour in), not a 0 at the start.
    all_x = [x for run in polylines(render_html(results, tables), "site") for x, _ in run]
    assert runs[0][0][0] > min(all_x)
    # A hole in the middle splits the line in two.
    holed = copy.deepcopy(tables)
    holed[0][len(tables[0]) // 2]["price_usd_per_mwh"] = None
    assert len(polylines(render_html(results, holed), "price")) == 2


def test_no_prices_and_no_events_say_so_instead_of_drawing(replayed: Any) -> None:
    results, tables = replayed
    bare_tables = copy.deepcopy(tables)
    for table in bare_tables:
        for row in table:
            row["price_usd_per_mwh"] = None
    bare = [{**r, "events": []} for r in results]
    html = render_html(bare, bare_tables)
    assert "no price data" in html and "no grid events" in html
    assert parse(html).mismatched == []
    assert [t for t, _ in parse(html).started].count("svg") == len(results) + 1


def test_a_year_of_rows_is_drawn_with_at_most_the_bound_per_line(replayed: Any) -> None:
    results, tables = replayed
    rows = 35_040  # a year of 15-minute intervals
    start_s = tables[0][0]["start_s"]
    year = [
        {
            "start_s": start_s + 900.0 * i,
            "price_usd_per_mwh": 30.0 + i % 7,
            "site_kw": 100.0 * (i % 2),  # alternating: each even bucket averages to 50
            "ai_kw": 10.0,
            "mining_kw": None if 10_000 <= i < 12_000 else 40.0,
            "curtailed_kw": 0.0,
        }
        for i in range(rows)
    ]
    html = render_html(results, [year, year])
    for series in ("site", "AI", "mining", "price", *(r["label"] for r in results)):
        runs = polylines(html, series)
        assert runs, series
        # per chart: the site power charts are one per configuration
        charts = 2 if series in ("site", "AI", "mining") else 1
        assert sum(len(run) for run in runs) <= MAX_POINTS * charts, series
    assert len(polylines(html, "mining")) == 4  # the unknown stretch is a gap in both charts
    assert len(html) < 2_000_000


def test_downsample_averages_buckets_and_keeps_unknown_buckets_unknown() -> None:
    points = [(float(i), float(i % 2) if i < 8 else None) for i in range(12)]
    assert downsample(points, max_points=3) == [(0.0, 0.5), (4.0, 0.5), (8.0, None)]
    assert downsample(points, max_points=20) == points
    assert len(downsample([(float(i), 1.0) for i in range(35_040)])) <= MAX_POINTS


def test_no_external_resource_or_script(replayed: Any) -> None:
    html = render_html(*replayed)
    assert re.search(r"(src|href)\s*=", html) is None
    assert "http://www.w3.org/2000/svg" in html  # the SVG namespace only, never fetched
    assert "javascript:" not in html.lower()
