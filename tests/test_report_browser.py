"""A real browser (headless Chromium through Playwright) opens a generated event report, with its trip
curve, and a season page: no console or page errors, nothing fetched from the network, and what is
drawn is there (the deadline mark, one bar per scored interval, the zone label, the season's rows,
each link resolving to a file). Skipped, saying why, without playwright or /usr/bin/chromium
(.ci/run installs Debian's chromium; playwright is in the dev extra)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from zoneinfo import ZoneInfo

import pytest
from report_journals import event_rows, write_journal

from mullet.daemon.records.report import build_report
from mullet.daemon.records.report_render import render
from mullet.daemon.records.season import season_reports, write_season

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
if not CHROMIUM.exists() and shutil.which("chromium") is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian's chromium package)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


class Page:
    """A page that records console errors, page errors and any request that is not a local file."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page()
        self.errors: list[str] = []
        self.fetched: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: None if r.url.startswith("file://") else self.fetched.append(r.url))

    def open(self, path: Path) -> Any:
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")
        assert self.errors == [] and self.fetched == []
        return self.page


def test_event_report_with_trip_curve(browser: Any, tmp_path: Path) -> None:
    journal = write_journal(tmp_path / "j.sqlite", event_rows("ffr-1", 1_782_900_000, trip_seq=41))
    report = build_report(journal, "ffr-1")
    html = tmp_path / "ffr-1.html"
    html.write_text(render(report, "html", timezone="America/Chicago"))
    page = Page(browser).open(html)
    assert page.locator("svg.event-plot .x-title").text_content() == "time (CDT, America/Chicago)"
    bars = page.locator("svg.event-plot rect.interval-bar")
    assert bars.count() == len(report.intervals) == 2
    for n in range(bars.count()):
        box = bars.nth(n).bounding_box()
        assert box is not None and box["width"] > 10 and box["height"] > 10
    deadline = page.locator("svg.trip-plot g[data-mark='deadline'] line")
    assert deadline.count() == 1
    assert page.locator("svg.trip-plot g[data-mark='deadline'] text").text_content() == "deadline 0.25 s"
    trip = page.locator("svg.trip-plot g[data-mark='trip'] line").bounding_box()
    mark = deadline.bounding_box()  # a vertical line: drawn across the plot's height
    assert trip is not None and mark is not None and mark["height"] > 200
    assert mark["x"] - trip["x"] == pytest.approx(0.25 / 7 * 828, abs=1.5)  # 0.25 s of the 7 s axis
    assert "0.1 s apart (10 Hz)" in (page.locator("svg.trip-plot .spacing").text_content() or "")
    assert page.locator("svg.trip-plot circle").count() == 71


def test_season_page_links(browser: Any, tmp_path: Path) -> None:
    rows = event_rows("ffr:2026-07-01", 1_782_900_000, trip_seq=41)
    rows += event_rows("drill-2026-08", 1_785_769_200, program="LR", deadline_s=600.0, drill=True)
    rows += event_rows("lr-2026-09", 1_789_408_800, program="LR", deadline_s=600.0, during_kw=7000.0)
    journal = write_journal(tmp_path / "j.sqlite", rows)
    zone = ZoneInfo("America/Chicago")
    season = write_season(season_reports(journal, 2026, zone), 2026, zone, tmp_path / "out")
    viewer = Page(browser)
    page = viewer.open(season)
    assert page.locator("tr.season-row").count() == 3
    assert page.locator("tr.season-row.drill").count() == 1
    assert page.locator("tr.total-row").count() == 3  # FFR events, LR events, LR drills
    links = [
        (a.text_content(), a.get_attribute("href"), a.evaluate("a => a.href"))
        for a in page.locator("tr.season-row a").all()
    ]
    assert [text for text, _, _ in links] == ["ffr:2026-07-01", "drill-2026-08", "lr-2026-09"]
    for text, href, url in links:
        assert "/" not in href and ":" not in href  # relative, a safe file name
        assert Path(unquote(urlparse(url).path)).is_file()
        event_page = viewer.open(tmp_path / "out" / href)
        assert event_page.locator("h1").text_content() == f"Compliance report: {text}"
        assert event_page.locator("svg.event-plot").count() == 1
