"""The season page: every accepted grid event and drill of a calendar year (in the site's zone), one
row each with its scorecard figures, the payment-relevant totals per program (drills apart: they are
never counted as grid events), and one linked event report per row.

`mulletd report --season 2026` writes DIR/season-2026.html and DIR/<event id>.html (a safe file name)
per row; the links are relative, so the folder can be copied or zipped as it is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from mullet.daemon.records.report import Report, ReportError, build_report, open_journal
from mullet.daemon.records.report_render import to_html
from mullet.daemon.records.report_text import outcome

if TYPE_CHECKING:
    from mullet.daemon.config import Config

MAX_EVENTS = 1000  # a season page lists at most this many events and drills

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.pass { color: #0b8043; font-weight: bold; } .fail { color: #d93025; font-weight: bold; }
.not { color: #666; font-weight: bold; }
tr.drill td { background: #f7f7ff; }
"""


class SeasonError(Exception):
    """The season cannot be listed (too many events); says why."""


@dataclass(frozen=True, slots=True)
class ProgramTotals:
    program: str
    drill: bool
    count: int
    hours_deployed: float
    mwh_delivered: float  # delivered kW x interval hours over the scored intervals
    mean_factor: float | None
    failures: int


def year_bounds(year: int, zone: tzinfo) -> tuple[float, float]:
    """Unix seconds of the year's first instant and the next year's, in `zone`."""
    return (
        datetime(year, 1, 1, tzinfo=zone).timestamp(),
        datetime(year + 1, 1, 1, tzinfo=zone).timestamp(),
    )


def season_ids(path: str | Path, year: int, zone: tzinfo) -> list[str]:
    """The ids of the events and drills accepted in `year` (local), in the order accepted. More than
    MAX_EVENTS is refused before any report is built."""
    from_s, until_s = year_bounds(year, zone)
    db = open_journal(path)
    try:
        query = (
            " FROM journal WHERE kind IN ('grid_event', 'drill') AND wall_s >= ? AND wall_s < ?"
            " AND json_extract(data, '$.obligation') IS NOT NULL"
        )
        (count,) = db.execute(
            "SELECT COUNT(DISTINCT json_extract(data, '$.event.id'))" + query, (from_s, until_s)
        ).fetchone()
        if count > MAX_EVENTS:
            raise SeasonError(
                f"{count} events and drills in {year}: a season page lists at most {MAX_EVENTS};"
                " report them one by one with --event"
            )
        ids: dict[str, None] = {}
        for (event_id,) in db.execute(
            "SELECT json_extract(data, '$.event.id')" + query + " ORDER BY id", (from_s, until_s)
        ):
            if isinstance(event_id, str):
                ids.setdefault(event_id)
    finally:
        db.close()
    return list(ids)


def season_reports(
    path: str | Path,
    year: int,
    zone: tzinfo,
    config: Config | None = None,
    unreadable: list[tuple[str, str]] | None = None,
) -> list[Report]:
    """Each event's report, its baseline by the config's choice for its program (else the program's).
    An event whose entry cannot be scored (malformed) is left out and named, with why, in `unreadable`."""
    reports = []
    for event_id in season_ids(path, year, zone):
        try:
            reports.append(build_report(path, event_id, config=config))
        except ReportError as exc:  # build_report names what is malformed
            if unreadable is not None:
                unreadable.append((event_id, str(exc)))
    return reports


def file_name(event_id: str) -> str:
    """A file name for the event's report: ids may hold ':' or '/'; a changed name gets a hash of the
    id so two ids never share a file (nor the season page's name)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", event_id)[:80].lstrip(".") or "event"
    if safe != event_id or safe.lower().startswith("season-"):
        safe += "-" + hashlib.sha256(event_id.encode()).hexdigest()[:8]
    return safe + ".html"


def _hours(report: Report) -> float:
    end_s = report.end_s if report.end_s is not None else report.scored_until_s
    return max(0.0, end_s - report.deploy_s) / 3600.0


def _mwh(report: Report) -> float:
    return (
        sum(
            i.delivered_kw * (i.end_s - i.start_s) / 3600.0
            for i in report.intervals
            if i.delivered_kw is not None
        )
        / 1000.0
    )


def totals(reports: list[Report]) -> list[ProgramTotals]:
    """Per program, grid events and drills apart."""
    groups: dict[tuple[str, bool], list[Report]] = {}
    for r in reports:
        groups.setdefault((r.program, r.drill), []).append(r)
    out = []
    for (program, drill), rs in sorted(groups.items()):
        factors = [r.performance_factor for r in rs if r.performance_factor is not None]
        out.append(
            ProgramTotals(
                program=program,
                drill=drill,
                count=len(rs),
                hours_deployed=sum(_hours(r) for r in rs),
                mwh_delivered=sum(_mwh(r) for r in rs),
                mean_factor=sum(factors) / len(factors) if factors else None,
                failures=sum(1 for r in rs if r.scored and not r.passed),
            )
        )
    return out


def _num(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _row(report: Report, zone: tzinfo) -> str:
    notice = datetime.fromtimestamp(report.notice_s, zone).strftime("%Y-%m-%d %H:%M %Z")
    duration_min = _hours(report) * 60
    result = outcome(report)
    cls = "drill" if report.drill else "event"
    to_target = "not reached" if report.time_to_target_s is None else f"{report.time_to_target_s:.1f} s"
    return (
        f"<tr class='season-row {cls}'>"
        f"<td class='l'><a href='{escape(file_name(report.event_id))}'>{escape(report.event_id)}</a></td>"
        f"<td class='l'>{escape(report.program)}</td><td class='l'>{escape(report.kind)}</td>"
        f"<td class='l'>{'drill' if report.drill else 'event'}</td><td class='l'>{escape(notice)}</td>"
        f"<td>{duration_min:,.0f} min{'' if report.end_s is not None else ' (in force)'}</td>"
        f"<td>{_num(report.obligated_kw)}</td><td class='l'>{escape(report.baseline_method)}</td>"
        f"<td>{_num(report.performance_factor, 3)}</td>"
        f"<td class='{result.split()[0]}' title='{escape('; '.join(report.verdict))}'>{result}</td>"
        f"<td>{_num(report.shortfall_kwh, 2)}</td><td>{_num(report.max_shortfall_kw)}</td>"
        f"<td>{to_target}</td></tr>"
    )


def season_html(
    reports: list[Report], year: int, zone: tzinfo, unreadable: Sequence[tuple[str, str]] = ()
) -> str:
    rows = "".join(_row(r, zone) for r in reports)
    sums = "".join(
        f"<tr class='total-row'><td class='l'>{escape(t.program)}</td>"
        f"<td class='l'>{'drills (not grid events)' if t.drill else 'grid events'}</td><td>{t.count}</td>"
        f"<td>{t.hours_deployed:,.2f}</td><td>{t.mwh_delivered:,.3f}</td><td>{_num(t.mean_factor, 3)}</td>"
        f"<td>{t.failures}</td></tr>"
        for t in totals(reports)
    )
    zone_name = getattr(zone, "key", str(zone))
    events = sum(1 for r in reports if not r.drill)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Mullet season {year}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Season {year}</h1><p>{events} grid event(s) and {len(reports) - events} drill(s) accepted in"
        f" {year} ({escape(zone_name)}). Drills are listed apart and never counted as grid events.</p>"
        "<h2>Per program</h2><table><tr><th class='l'>program</th><th class='l'>what</th><th>count</th>"
        "<th>hours deployed</th><th>MWh delivered</th><th>mean factor</th><th>failures</th></tr>"
        f"{sums}</table>"
        "<h2>Events and drills</h2><table><tr><th class='l'>id</th><th class='l'>program</th>"
        "<th class='l'>kind</th><th class='l'>event or drill</th><th class='l'>notice</th><th>duration</th>"
        "<th>obligated kW</th><th class='l'>baseline</th><th>factor</th><th>result</th>"
        "<th>shortfall kWh</th><th>worst shortfall kW</th><th>time to target</th></tr>"
        f"{rows}</table>{_unreadable(unreadable)}"
        "<p>MWh delivered: the delivered reduction (baseline - interval average) times the hours of each"
        " scored interval (the ramp is not scored). Generated by mulletd report from the site journal.</p>"
        "</body></html>\n"
    )


def _unreadable(unreadable: Sequence[tuple[str, str]]) -> str:
    if not unreadable:
        return ""
    items = "".join(f"<li>{escape(i)}: {escape(why)}</li>" for i, why in unreadable)
    return (
        f"<h2 class='fail'>Not reported ({len(unreadable)})</h2><p>Accepted in the journal, but its entry"
        f" could not be scored; not in the rows or totals above:</p><ul class='unreadable'>{items}</ul>"
    )


def write_season(
    reports: list[Report],
    year: int,
    zone: tzinfo,
    out_dir: str | Path,
    unreadable: Sequence[tuple[str, str]] = (),
) -> Path:
    """DIR/season-YEAR.html and one linked report per row; the season page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    back = f"<body><p><a href='season-{year}.html'>season {year}</a></p>"
    for report in reports:
        (out / file_name(report.event_id)).write_text(to_html(report, zone).replace("<body>", back, 1))
    page = out / f"season-{year}.html"
    page.write_text(season_html(reports, year, zone, unreadable))
    return page
