"""A compliance report as JSON, CSV (one row per scored interval) or one self-contained HTML file.

The HTML has no scripts and no external references: a summary, the verdict, an inline SVG plot of
site power against target and baseline, the intervals and the commands, readable from a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from html import escape

from mullet.daemon.records.report import Report

FORMATS = ("html", "csv", "json")
_MAX_PLOT_POINTS = 2000  # a long event is thinned to this many points (min and max kept per bucket)


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.summary(), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(report)
    if fmt == "html":
        return to_html(report)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _utc(wall_s: float | None) -> str:
    if wall_s is None:
        return ""
    return datetime.fromtimestamp(wall_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(value: float | None, digits: int = 1) -> str:
    return "unknown" if value is None else f"{value:.{digits}f}"


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
        writer.writerow(
            [
                report.event_id,
                _utc(i.start_s),
                _utc(i.end_s),
                i.samples,
                cell(i.average_kw),
                cell(report.baseline_kw),
                cell(report.target_kw),
                cell(report.obligated_kw),
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
            "pass" if report.passed else "fail",
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


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= _MAX_PLOT_POINTS:
        return points
    size = math.ceil(len(points) / (_MAX_PLOT_POINTS // 2))
    thinned: list[tuple[float, float]] = []
    for at in range(0, len(points), size):
        bucket = points[at : at + size]
        low, high = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        thinned.extend(sorted({low, high}))
    return thinned


def plot_svg(report: Report, width: int = 920, height: int = 340) -> str:
    """Site power (line), target (red steps during the event), baseline (dashed), scored window (band)."""
    left, right, top, bottom = 70, 20, 20, 40
    points = [(s.wall_s, s.kw) for s in report.samples]
    end_s = report.end_s if report.end_s is not None else report.scored_until_s
    times = [p[0] for p in points] + [report.notice_s, end_s]
    t0, t1 = min(times), max(times)
    if t1 <= t0:
        t1 = t0 + 1.0
    values = [p[1] for p in points] + [v for v in (report.baseline_kw, report.target_kw) if v is not None]
    v1 = max(values, default=1.0) * 1.08 or 1.0

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - v / v1) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="site power, target and baseline">',
        f'<rect x="{x(report.scored_from_s):.1f}" y="{top}" '
        f'width="{max(0.0, x(report.scored_until_s) - x(report.scored_from_s)):.1f}" '
        f'height="{height - top - bottom}" fill="#e8f0fe"><title>scored window</title></rect>',
    ]
    for n in range(6):  # y axis: 0 .. max in 5 steps
        value = v1 * n / 5
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" font-size="11">'
            f"{value:,.0f}</text>"
        )
    step_s = report.rule.interval_s
    while (t1 - t0) / step_s > 12:
        step_s *= 2
    tick = math.ceil(t0 / step_s) * step_s
    while tick <= t1:
        label = datetime.fromtimestamp(tick, UTC).strftime("%H:%M")
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>'
            f'<text x="{x(tick):.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11">'
            f"{label}</text>"
        )
        tick += step_s
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="11">time (UTC)</text>'
        f'<text x="14" y="{top + 10}" font-size="11" transform="rotate(-90 14 {top + 10})" '
        f'text-anchor="end">kW</text>'
    )
    if report.baseline_kw is not None:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(report.baseline_kw):.1f}" '
            f'y2="{y(report.baseline_kw):.1f}" stroke="#555" stroke-dasharray="6 4">'
            f"<title>baseline {report.baseline_kw:.1f} kW</title></line>"
        )
    if report.target_kw is not None:
        parts.append(
            f'<polyline fill="none" stroke="#d93025" stroke-width="2" points="'
            f"{x(report.deploy_s):.1f},{y(report.target_kw):.1f} {x(end_s):.1f},{y(report.target_kw):.1f}"
            f'"><title>target {report.target_kw:.1f} kW</title></polyline>'
        )
    if points:
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in _thin(points))
        parts.append(
            f'<polyline fill="none" stroke="#1a73e8" stroke-width="1.5" points="{coords}">'
            "<title>site power</title></polyline>"
        )
    legend = (("#1a73e8", "site power"), ("#d93025", "target"), ("#555", "baseline"))
    for n, (colour, name) in enumerate(legend):
        lx = width - right - 300 + n * 100
        parts.append(
            f'<rect x="{lx}" y="{top + 4}" width="14" height="3" fill="{colour}"/>'
            f'<text x="{lx + 18}" y="{top + 10}" font-size="11">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.pass { color: #0b8043; font-weight: bold; } .fail { color: #d93025; font-weight: bold; }
"""


def to_html(report: Report) -> str:
    def row(name: str, value: str) -> str:
        return f'<tr><th class="l">{escape(name)}</th><td class="l">{escape(value)}</td></tr>'

    verdict_class = "pass" if report.passed else "fail"
    summary = [
        row("event", f"{report.event_id} ({report.kind} {report.event.get('kw')} kW)"),
        row("program", f"{report.program}: {report.rule.source}"),
        row("notice (accepted)", _utc(report.notice_s)),
        row("deployment", _utc(report.deploy_s)),
        row("deadline", "none" if report.deadline_s is None else f"{report.deadline_s:g} s"),
        row("ended", "in force" if report.end_s is None else f"{_utc(report.end_s)} ({report.ended_by})"),
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
        f"<td>{_utc(i.start_s)}</td><td>{_utc(i.end_s)}</td><td>{i.samples}</td>"
        f"<td>{_num(i.average_kw)}</td><td>{_num(i.delivered_kw)}</td>"
        f"<td>{i.performance_factor:.3f}</td><td>{_num(i.shortfall_kw)}</td>"
        f"<td>{_num(i.shortfall_kwh, 2)}</td>"
        "</tr>"
        for i in report.intervals
    )
    commands = "".join(
        f"<tr><td>{_utc(c.wall_s)}</td><td class='l'>{escape(c.kind)}</td>"
        f"<td class='l'>{escape(c.subject or '')}</td>"
        f"<td class='l'>{escape(json.dumps(c.data, separators=(',', ':'))[:300])}</td></tr>"
        for c in report.commands
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Mullet report {escape(report.event_id)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Compliance report: {escape(report.event_id)}</h1>"
        f"<p class='{verdict_class}'>{'PASS' if report.passed else 'FAIL'}: "
        f"{escape('; '.join(report.verdict))}</p>"
        f"<table>{''.join(summary)}</table>"
        f"<h2>Site power</h2>{plot_svg(report)}"
        "<h2>Intervals</h2><table><tr><th>start (UTC)</th><th>end (UTC)</th><th>samples</th>"
        "<th>average kW</th><th>delivered kW</th><th>factor</th><th>shortfall kW</th>"
        f"<th>shortfall kWh</th></tr>{intervals}</table>"
        f"<h2>Commands ({len(report.commands)})</h2><table><tr><th>time (UTC)</th><th class='l'>kind</th>"
        f"<th class='l'>subject</th><th class='l'>detail</th></tr>{commands}</table>"
        "<p>Generated by mulletd report from the site journal.</p></body></html>\n"
    )
