"""A compliance report as JSON, CSV (one row per scored interval), a text scorecard or one
self-contained HTML file.

The HTML has no scripts and no external references: a summary, the verdict, inline SVG plots (the
event, daemon/records/plot_svg.py, and each trip's sub-second curve), the intervals and the commands,
readable from a file. Times in the HTML and the text are in the site's zone (`site.timezone`); the CSV
and JSON stay in UTC, like the journal.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, tzinfo
from html import escape
from zoneinfo import ZoneInfo

from mullet.daemon.records.plot_svg import event_svg, trip_svg
from mullet.daemon.records.report import Interval, Report
from mullet.daemon.records.report_text import outcome, scorecard

FORMATS = ("html", "csv", "json", "text")


def render(report: Report, fmt: str, *, timezone: str = "UTC") -> str:
    """`report` in `fmt`; `timezone` (an IANA name, the config's site.timezone) for html and text."""
    if fmt == "json":
        return json.dumps(report.summary(), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(report)
    if fmt == "html":
        return to_html(report, ZoneInfo(timezone))
    if fmt == "text":
        return scorecard(report, ZoneInfo(timezone))
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _utc(wall_s: float | None) -> str:
    if wall_s is None:
        return ""
    return datetime.fromtimestamp(wall_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: float | None, digits: int = 1) -> str:
    return "unknown" if value is None else f"{value:.{digits}f}"


def interval_figures(report: Report, i: Interval) -> tuple[float | None, float | None, float | None]:
    """The interval's baseline, target and obligated kW: its own where its baseline method gives one
    per interval (matching days), the event's otherwise."""
    baseline_kw = report.baseline_kw if i.baseline_kw is None else i.baseline_kw
    target_kw = report.target_kw if i.target_kw is None else i.target_kw
    if i.baseline_kw is None or i.target_kw is None:
        return baseline_kw, target_kw, report.obligated_kw
    return baseline_kw, target_kw, i.baseline_kw - i.target_kw


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "event_id",
            "interval_start_utc",
            "interval_end_utc",
            "samples",
            "average_kw",
            "baseline_kw",
            "target_kw",
            "obligated_kw",
            "delivered_kw",
            "performance_factor",
            "shortfall_kw",
            "shortfall_kwh",
        ]
    )

    def cell(value: float | None, digits: int = 3) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for i in report.intervals:
        baseline_kw, target_kw, obligated_kw = interval_figures(report, i)
        writer.writerow(
            [
                report.event_id,
                _utc(i.start_s),
                _utc(i.end_s),
                i.samples,
                cell(i.average_kw),
                cell(baseline_kw),
                cell(target_kw),
                cell(obligated_kw),
                cell(i.delivered_kw),
                cell(i.performance_factor, 4),
                cell(i.shortfall_kw),
                cell(i.shortfall_kwh),
            ]
        )
    writer.writerow(
        [
            report.event_id,
            "event",
            outcome(report),
            len(report.samples),
            "",
            cell(report.baseline_kw),
            cell(report.target_kw),
            cell(report.obligated_kw),
            "",
            cell(report.performance_factor, 4),
            cell(report.max_shortfall_kw),
            cell(report.shortfall_kwh),
        ]
    )
    return out.getvalue()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.pass { color: #0b8043; font-weight: bold; } .fail { color: #d93025; font-weight: bold; }
.not { color: #666; font-weight: bold; }
"""


def _local(wall_s: float | None, zone: tzinfo) -> str:
    return "" if wall_s is None else datetime.fromtimestamp(wall_s, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _trip_section(report: Report, zone: tzinfo) -> str:
    if not report.trip_curves:
        return ""
    plots = "".join(f"<figure>{trip_svg(report, c, zone)}</figure>" for c in report.trip_curves)
    return f"<h2>Trip response ({len(report.trip_curves)})</h2>{plots}"


def to_html(report: Report, zone: tzinfo = UTC) -> str:
    def row(name: str, value: str) -> str:
        return f'<tr><th class="l">{escape(name)}</th><td class="l">{escape(value)}</td></tr>'

    verdict_class = outcome(report).split()[0]  # pass, fail, not
    summary = [
        row("event", f"{report.event_id} ({report.kind} {report.event.get('kw')} kW)"),
        row("program", f"{report.program}: {report.rule.source}"),
        row("kind", "drill (never counted as a grid event)" if report.drill else "grid event"),
        row("notice (accepted)", _local(report.notice_s, zone)),
        row("deployment", _local(report.deploy_s, zone)),
        row("deadline", "none" if report.deadline_s is None else f"{report.deadline_s:g} s"),
        row(
            "ended",
            "in force" if report.end_s is None else f"{_local(report.end_s, zone)} ({report.ended_by})",
        ),
        row("baseline", f"{_num(report.baseline_kw)} kW: {report.baseline_method}, {report.baseline_detail}"),
        row("target", f"{_num(report.target_kw)} kW"),
        row("obligated reduction", f"{_num(report.obligated_kw)} kW"),
        row(
            "time to target",
            "not reached" if report.time_to_target_s is None else f"{report.time_to_target_s:.1f} s",
        ),
        row("performance factor", _num(report.performance_factor, 3)),
        row("shortfall", f"{_num(report.shortfall_kwh, 2)} kWh (max {_num(report.max_shortfall_kw)} kW)"),
        row("site power samples", f"{len(report.samples)}, {_num(report.sample_spacing_s, 1)} s apart"),
    ]
    intervals = "".join(
        "<tr>"
        f"<td>{_local(i.start_s, zone)}</td><td>{_local(i.end_s, zone)}</td><td>{i.samples}</td>"
        f"<td>{_num(interval_figures(report, i)[0])}</td><td>{_num(interval_figures(report, i)[1])}</td>"
        f"<td>{_num(i.average_kw)}</td><td>{_num(i.delivered_kw)}</td>"
        f"<td>{i.performance_factor:.3f}</td><td>{_num(i.shortfall_kw)}</td>"
        f"<td>{_num(i.shortfall_kwh, 2)}</td>"
        "</tr>"
        for i in report.intervals
    )
    commands = "".join(
        f"<tr><td>{_local(c.wall_s, zone)}</td><td class='l'>{escape(c.kind)}</td>"
        f"<td class='l'>{escape(c.subject or '')}</td>"
        f"<td class='l'>{escape(json.dumps(c.data, separators=(',', ':'))[:300])}</td></tr>"
        for c in report.commands
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Mullet report {escape(report.event_id)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Compliance report: {escape(report.event_id)}</h1>"
        f"<p class='{verdict_class}'>{outcome(report).upper()}: "
        f"{escape('; '.join(report.verdict))}</p>"
        f"<table>{''.join(summary)}</table>"
        f"<h2>Site power</h2>{event_svg(report, zone)}{_trip_section(report, zone)}"
        "<h2>Intervals</h2><table><tr><th>start</th><th>end</th><th>samples</th>"
        "<th>baseline kW</th><th>target kW</th>"
        "<th>average kW</th><th>delivered kW</th><th>factor</th><th>shortfall kW</th>"
        f"<th>shortfall kWh</th></tr>{intervals}</table>"
        f"<h2>Commands ({len(report.commands)})</h2><table><tr><th>time</th><th class='l'>kind</th>"
        f"<th class='l'>subject</th><th class='l'>detail</th></tr>{commands}</table>"
        "<p>Generated by mulletd report from the site journal.</p></body></html>\n"
    )
