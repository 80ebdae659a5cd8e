"""A compliance report as a one-screen text scorecard: what `mulletd drill` prints at its end and
`mulletd report --format text` writes. Times in the site's zone."""

from __future__ import annotations

from datetime import datetime, tzinfo

from mullet.daemon.records.report import Report

MAX_ROWS = 12  # intervals listed; a longer event says how many more there are (one screen)


def _num(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:,.{digits}f}{unit}"


def _at(wall_s: float | None, zone: tzinfo) -> str:
    return "" if wall_s is None else datetime.fromtimestamp(wall_s, zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def scorecard(report: Report, zone: tzinfo) -> str:
    verdict = "PASS" if report.passed else "FAIL"
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
    lines = [
        f"{verdict}  {report.event_id}  ({what}, {report.program}, "
        f"{report.kind} {report.event.get('kw')} kW)",
        f"  verdict            {'; '.join(report.verdict)}",
        f"  factor             {_num(report.performance_factor, 3)} (pass at {report.rule.pass_factor:g})",
        f"  baseline           {_num(report.baseline_kw, 1, ' kW')}: {report.baseline_method}, "
        f"{report.baseline_detail}",
        f"  target             {_num(report.target_kw, 1, ' kW')}",
        f"  obligated          {_num(report.obligated_kw, 1, ' kW')}",
        f"  time to target     {to_target}",
        f"  shortfall          {_num(report.shortfall_kwh, 2, ' kWh')}, "
        f"worst {_num(report.max_shortfall_kw, 1, ' kW')}",
        f"  deployed           {_at(report.deploy_s, zone)}",
        f"  ended              {ended}",
    ]
    if report.intervals:
        lines.append("")
        lines.append(
            f"  {'interval':<13} {'samples':>7} {'average kW':>11} {'delivered kW':>12} {'factor':>7} "
            f"{'short kWh':>9}"
        )
        for i in report.intervals[:MAX_ROWS]:
            start, end = datetime.fromtimestamp(i.start_s, zone), datetime.fromtimestamp(i.end_s, zone)
            span = f"{start:%H:%M}-{end:%H:%M}"
            mark = "" if i.performance_factor >= report.rule.pass_factor else "  <"
            lines.append(
                f"  {span:<13} {i.samples:>7} {_num(i.average_kw):>11} {_num(i.delivered_kw):>12} "
                f"{i.performance_factor:>7.3f} {_num(i.shortfall_kwh, 2):>9}{mark}"
            )
        if len(report.intervals) > MAX_ROWS:
            lines.append(f"  ... {len(report.intervals) - MAX_ROWS} more intervals (--format csv lists all)")
    for curve in report.trip_curves:
        lines.append(
            f"  trip seq {curve.seq}: {len(curve.samples)} samples, {_num(curve.spacing_s, 3, ' s')} apart"
        )
    return "\n".join(lines) + "\n"
