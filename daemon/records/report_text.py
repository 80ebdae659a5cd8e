"""A compliance report as a one-screen text scorecard: what `mulletd drill` prints at its end and
`mulletd report --format text` writes. Times in the site's zone."""

from __future__ import annotations

import textwrap
from datetime import datetime, tzinfo

from mullet.daemon.records.report import Report

MAX_ROWS = 12  # intervals listed; a longer event says how many more there are (one screen)
WIDTH = 100


def _field(name: str, value: str) -> str:
    """`  name   value`, the value wrapped under itself to WIDTH."""
    return textwrap.fill(
        value, WIDTH, initial_indent=f"  {name:<19}", subsequent_indent=" " * 21, break_on_hyphens=False
    )


def outcome(report: Report) -> str:
    """pass, fail, or not scored (a base point, an event that ended inside its ramp): neither."""
    if not report.scored:
        return "not scored"
    return "pass" if report.passed else "fail"


def _num(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:,.{digits}f}{unit}"


def _at(wall_s: float | None, zone: tzinfo) -> str:
    return "" if wall_s is None else datetime.fromtimestamp(wall_s, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def scorecard(report: Report, zone: tzinfo) -> str:
    verdict = outcome(report).upper()
    what = "drill" if report.drill else "grid event"
    if report.deadline_s is None:
        to_target = (
            _num(report.time_to_target_s, 1, " s") if report.time_to_target_s is not None else "not reached"
        )
    else:
        reached = "not reached" if report.time_to_target_s is None else f"{report.time_to_target_s:.1f} s"
        met = {True: "met", False: "missed", None: "cannot be judged"}[report.met_deadline]
        to_target = f"{reached} (deadline {report.deadline_s:g} s: {met})"
    ended = "in force" if report.end_s is None else f"{_at(report.end_s, zone)} ({report.ended_by})"
    shortfall = f"{_num(report.shortfall_kwh, 2, ' kWh')}, worst {_num(report.max_shortfall_kw, 1, ' kW')}"
    lines = [
        f"{verdict}  {report.event_id}  ({what}, {report.program}, "
        f"{report.kind} {report.event.get('kw')} kW)",
        _field("verdict", "; ".join(report.verdict)),
        _field("factor", f"{_num(report.performance_factor, 3)} (pass at {report.rule.pass_factor:g})"),
        _field(
            "baseline",
            f"{_num(report.baseline_kw, 1, ' kW')}: {report.baseline_method}, {report.baseline_detail}",
        ),
        _field("target", _num(report.target_kw, 1, " kW")),
        _field("obligated", _num(report.obligated_kw, 1, " kW")),
        _field("time to target", to_target),
        _field("shortfall", shortfall),
        _field("deployed", _at(report.deploy_s, zone)),
        _field("ended", ended),
    ]
    if report.intervals:
        lines.append("")
        lines.append(
            f"  {'interval':<13} {'samples':>7} {'baseline kW':>11} {'average kW':>11} "
            f"{'delivered kW':>12} {'factor':>7} {'short kWh':>9}"
        )
        for i in report.intervals[:MAX_ROWS]:
            start, end = datetime.fromtimestamp(i.start_s, zone), datetime.fromtimestamp(i.end_s, zone)
            span = f"{start:%H:%M}-{end:%H:%M}"
            mark = "" if i.performance_factor >= report.rule.pass_factor else "  <"
            base = getattr(i, "baseline_kw", None)  # per interval where the method gives one
            base = report.baseline_kw if base is None else base
            lines.append(
                f"  {span:<13} {i.samples:>7} {_num(base):>11} {_num(i.average_kw):>11} "
                f"{_num(i.delivered_kw):>12} "
                f"{i.performance_factor:>7.3f} {_num(i.shortfall_kwh, 2):>9}{mark}"
            )
        if len(report.intervals) > MAX_ROWS:
            lines.append(f"  ... {len(report.intervals) - MAX_ROWS} more intervals (--format csv lists all)")
    for curve in report.trip_curves:
        lines.append(
            f"  trip seq {curve.seq}: {len(curve.samples)} samples, {_num(curve.spacing_s, 3, ' s')} apart"
        )
    return "\n".join(lines) + "\n"
