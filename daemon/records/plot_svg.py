"""The compliance report's plots as inline SVG: the event (site power against baseline, target band,
per-interval bars and marks) and each trip's sub-second response curve against the program's deadline.

No script and nothing fetched, so the report opens offline. Times are labelled in the site's zone
(`site.timezone`), kW on round 1-2-5 ticks, time on round minute steps. Every text goes through
html.escape. A sample that is unknown is not in the journal's samples, so it is never drawn as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, tzinfo
from html import escape
from zoneinfo import ZoneInfo

from mullet.daemon.records.report import Report, TripCurve

MAX_PLOT_POINTS = 2000  # a long event is thinned to this many points (min and max kept per bucket)
WIDTH, HEIGHT = 920, 380
LEFT, RIGHT, TOP, BOTTOM = 72, 20, 46, 48
# Time steps (s) tried from the finest; the first giving at most 10 ticks is used.
_TIME_STEPS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_PASS, _FAIL = "#0b8043", "#d93025"
_POWER, _TARGET, _BASELINE, _BAND = "#1a73e8", "#d93025", "#555555", "#f9c74f"


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Ticks at 1, 2 or 5 times a power of ten covering [lo, hi]."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step + 0.0 for k in range(first, last + 1)]


def _tick_label(value: float, step: float) -> str:
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)), 6)
    return f"{value:,.{decimals}f}"


def time_ticks(t0: float, t1: float, zone: tzinfo) -> list[tuple[float, str]]:
    """Round local times (1, 2, 5, 10, 15, 30, 60 minutes... by span) between t0 and t1, labelled
    HH:MM in `zone` (with the date where the span passes a day)."""
    span = max(t1 - t0, 1.0)
    step = next((s for s in _TIME_STEPS_S if span / s <= 10), _TIME_STEPS_S[-1])
    offset = datetime.fromtimestamp(t0, zone).utcoffset()
    off_s = offset.total_seconds() if offset is not None else 0.0
    fmt = "%H:%M" if span < 86400 else "%m-%d %H:%M"
    ticks, t = [], math.ceil((t0 + off_s) / step) * step - off_s
    while t <= t1:
        ticks.append((t, datetime.fromtimestamp(t, zone).strftime(fmt)))
        t += step
    return ticks


def zone_label(t0: float, t1: float, zone: tzinfo) -> str:
    """The zone's abbreviation(s) over the span: "CDT", or "CDT/CST" across a change."""
    names: list[str] = []
    for t in (t0, t1):
        name = datetime.fromtimestamp(t, zone).strftime("%Z")
        if name not in names:
            names.append(name)
    key = getattr(zone, "key", None)
    label = "/".join(names)
    return f"{label}, {key}" if key and key != label else label


def thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_PLOT_POINTS:
        return points
    size = math.ceil(len(points) / (MAX_PLOT_POINTS // 2))
    thinned: list[tuple[float, float]] = []
    for at in range(0, len(points), size):
        bucket = points[at : at + size]
        low, high = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        thinned.extend(sorted({low, high}))
    return thinned


def _f(value: float) -> str:
    return f"{value:.1f}"


def _text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="11"{extra}>{escape(text)}</text>'


def _legend(items: Sequence[tuple[str, str, str]], y: float, width: int = WIDTH) -> list[str]:
    """(colour, label, kind: line|dash|box) per item, in rows of 14 px above the plot (two fit)."""
    parts, x = [], float(LEFT)
    for colour, label, kind in items:
        item_w = 22 + 6.2 * len(label) + 14
        if x + item_w > width - RIGHT and x > LEFT:
            x, y = float(LEFT), y + 15
        if kind == "box":
            swatch = (
                f'<rect x="{_f(x)}" y="{_f(y - 6)}" width="18" height="10" fill="{colour}" '
                'fill-opacity="0.5"/>'
            )
        else:
            dash = ' stroke-dasharray="6 4"' if kind == "dash" else ""
            swatch = (
                f'<line x1="{_f(x)}" x2="{_f(x + 18)}" y1="{_f(y - 1)}" y2="{_f(y - 1)}" '
                f'stroke="{colour}" stroke-width="2.5"{dash}/>'
            )
        parts.append(f'<g class="legend-item">{swatch}{_text(x + 22, y + 3, label, "start")}</g>')
        x += item_w
    return parts


class _Axes:
    """Linear scales for a plot area and the frame drawn around it."""

    def __init__(
        self,
        t0: float,
        t1: float,
        y_ticks: list[float],
        width: int = WIDTH,
        height: int = HEIGHT,
        bottom: int = BOTTOM,
    ):
        self.t0, self.t1 = t0, t1 if t1 > t0 else t0 + 1.0
        self.y_ticks = y_ticks
        self.width, self.height, self.bottom = width, height, bottom

    def x(self, t: float) -> float:
        return LEFT + (t - self.t0) / (self.t1 - self.t0) * (self.width - LEFT - RIGHT)

    def y(self, v: float) -> float:
        lo, hi = self.y_ticks[0], self.y_ticks[-1]
        return TOP + (1 - (v - lo) / (hi - lo)) * (self.height - TOP - self.bottom)

    def frame(self, x_ticks: list[tuple[float, str]], x_title: str, y_title: str) -> list[str]:
        bottom, right = self.height - self.bottom, self.width - RIGHT
        step = self.y_ticks[1] - self.y_ticks[0] if len(self.y_ticks) > 1 else 1.0
        parts = []
        for value in self.y_ticks:
            y = self.y(value)
            parts.append(
                f'<line x1="{LEFT}" x2="{right}" y1="{_f(y)}" y2="{_f(y)}" stroke="#e3e3e3"/>'
                + _text(LEFT - 6, y + 4, _tick_label(value, step), "end")
            )
        for t, label in x_ticks:
            x = self.x(t)
            parts.append(
                f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{TOP}" y2="{bottom}" stroke="#f0f0f0"/>'
                f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{bottom}" y2="{bottom + 5}" stroke="#333"/>'
                + _text(x, bottom + 17, label, extra=' class="x-tick"')
            )
        mid = (TOP + bottom) / 2
        parts.append(
            f'<line x1="{LEFT}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#333"/>'
            f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="#333"/>'
            + _text((LEFT + right) / 2, bottom + 40, x_title, extra=' class="x-title"')
            + f'<text x="16" y="{_f(mid)}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 16 {_f(mid)})">{escape(y_title)}</text>'
        )
        return parts

    def mark(
        self, t: float, label: str, kind: str, colour: str = "#333", row: int = 0, detail: str = ""
    ) -> str:
        """A vertical mark across the plot, labelled at its top (left of it near the right edge)."""
        x = self.x(t)
        near_edge = x + 7 * len(label) > self.width - RIGHT
        return (
            f'<g class="mark" data-mark="{escape(kind)}">'
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{TOP}" y2="{self.height - self.bottom}" stroke="{colour}" '
            f'stroke-width="1.5" stroke-dasharray="4 3"/>'
            + _text(
                x - 3 if near_edge else x + 3,
                TOP + 11 + 12 * row,
                label,
                "end" if near_edge else "start",
                f' fill="{colour}"',
            )
            + f"<title>{escape(detail or label)}</title></g>"
        )


def _interval_lines(report: Report) -> list[tuple[float, float, float | None, float | None]]:
    """(start, end, baseline kW, target kW) per scored interval: the interval's own (matching-day
    baselines differ per interval) where it has them, the event's otherwise."""
    out = []
    for i in report.intervals:
        base = getattr(i, "baseline_kw", None)
        target = getattr(i, "target_kw", None)
        out.append(
            (
                i.start_s,
                i.end_s,
                report.baseline_kw if base is None else base,
                report.target_kw if target is None else target,
            )
        )
    return out


def event_svg(report: Report, zone: tzinfo) -> str:
    """Site power, baseline and target over the event, the target band (full response down to the
    pass line), each scored interval's average as a bar coloured by its factor, and the marks."""
    points = [(s.wall_s, s.kw) for s in report.samples]
    end_s = report.end_s if report.end_s is not None else report.scored_until_s
    spans = _interval_lines(report)
    times = [p[0] for p in points] + [report.notice_s, end_s]
    t0, t1 = min(times), max(times)
    values = (
        [p[1] for p in points]
        + [v for _, _, b, t in spans for v in (b, t) if v is not None]
        + [v for v in (report.baseline_kw, report.target_kw) if v is not None]
    )
    ax = _Axes(t0, t1, nice_ticks(min(0.0, *values) if values else 0.0, max(values, default=1.0) * 1.04))
    pass_factor = report.rule.pass_factor
    zone_name = zone_label(t0, t1, zone)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="event-plot" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="site power, target and baseline">',
        f"<title>site power of {escape(report.event_id)}</title>",
    ]
    legend = [
        (_POWER, "site power", "line"),
        (_BASELINE, "baseline", "dash"),
        (_TARGET, "target (full response)", "line"),
        (_BAND, f"target band (to the {pass_factor:g} x obligated pass line)", "box"),
        (_PASS, f"interval average, factor >= {pass_factor:g}", "box"),
        (_FAIL, f"interval average, factor < {pass_factor:g}", "box"),
    ]
    parts += _legend(legend, 16)
    parts += ax.frame(time_ticks(t0, t1, zone), f"time ({zone_name})", "kW")
    bottom = ax.y(ax.y_ticks[0])
    # The target band: from the full response (target) up to the pass line, baseline - 0.95 x obligated.
    band_spans = [(report.deploy_s, report.scored_from_s, report.baseline_kw, report.target_kw), *spans]
    for a, b, base, target in band_spans:
        if base is None or target is None or b <= a or base <= target:
            continue
        pass_kw = base - pass_factor * (base - target)
        parts.append(
            f'<rect class="target-band" x="{_f(ax.x(a))}" y="{_f(ax.y(pass_kw))}" '
            f'width="{_f(ax.x(b) - ax.x(a))}" '
            f'height="{_f(ax.y(target) - ax.y(pass_kw))}" fill="{_BAND}" fill-opacity="0.45">'
            f"<title>target band {target:.1f} to {pass_kw:.1f} kW</title></rect>"
        )
    for i in report.intervals:  # per-interval bars: the interval's average kW
        label = (
            f"{datetime.fromtimestamp(i.start_s, zone):%H:%M}-{datetime.fromtimestamp(i.end_s, zone):%H:%M}"
        )
        if i.average_kw is None:
            parts.append(
                _text(
                    (ax.x(i.start_s) + ax.x(i.end_s)) / 2, bottom - 6, "no samples", extra=' class="no-data"'
                )
            )
            continue
        ok = i.performance_factor >= pass_factor
        parts.append(
            f'<rect class="interval-bar {"pass" if ok else "fail"}" data-factor="{i.performance_factor:.4f}" '
            f'x="{_f(ax.x(i.start_s) + 1)}" y="{_f(ax.y(i.average_kw))}" '
            f'width="{_f(max(1.0, ax.x(i.end_s) - ax.x(i.start_s) - 2))}" '
            f'height="{_f(bottom - ax.y(i.average_kw))}" fill="{_PASS if ok else _FAIL}" fill-opacity="0.22" '
            f'stroke="{_PASS if ok else _FAIL}"><title>{label}: average {i.average_kw:.1f} kW, '
            f"factor {i.performance_factor:.3f} ({'pass' if ok else 'fail'})</title></rect>"
        )
    if report.baseline_kw is not None:
        if any(getattr(i, "baseline_kw", None) is not None for i in report.intervals):
            steps = " ".join(
                f"{_f(ax.x(a))},{_f(ax.y(b))} {_f(ax.x(e))},{_f(ax.y(b))}" for a, e, b, _ in spans if b
            )
            parts.append(
                f'<polyline fill="none" stroke="{_BASELINE}" stroke-width="1.5" stroke-dasharray="6 4" '
                f'points="{steps}"><title>baseline {report.baseline_kw:.1f} kW (event mean), per interval'
                "</title></polyline>"
            )
        else:
            y = _f(ax.y(report.baseline_kw))
            parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="{_BASELINE}" '
                f'stroke-width="1.5" stroke-dasharray="6 4">'
                f"<title>baseline {report.baseline_kw:.1f} kW</title></line>"
            )
    if report.target_kw is not None:
        target_steps = [(report.deploy_s, report.scored_from_s, report.target_kw)] + [
            (a, e, t) for a, e, _, t in spans if t is not None
        ]
        if not spans:
            target_steps = [(report.deploy_s, end_s, report.target_kw)]
        coords = " ".join(
            f"{_f(ax.x(a))},{_f(ax.y(t))} {_f(ax.x(e))},{_f(ax.y(t))}" for a, e, t in target_steps
        )
        parts.append(
            f'<polyline fill="none" stroke="{_TARGET}" stroke-width="2" points="{coords}">'
            f"<title>target {report.target_kw:.1f} kW</title></polyline>"
        )
    if points:
        coords = " ".join(f"{_f(ax.x(t))},{_f(ax.y(v))}" for t, v in thin(points))
        parts.append(
            f'<polyline fill="none" stroke="{_POWER}" stroke-width="1.5" points="{coords}">'
            "<title>site power</title></polyline>"
        )
    parts.append(ax.mark(report.deploy_s, "deployment", "deployment", "#1b5e20"))
    if report.deadline_s is not None and report.scored_from_s > report.deploy_s:
        parts.append(
            ax.mark(report.scored_from_s, f"end of ramp ({report.deadline_s:g} s)", "deadline", "#b26a00", 1)
        )
    if report.end_s is not None:
        parts.append(ax.mark(report.end_s, "release", "release", "#4a148c", 0, f"release: {report.ended_by}"))
    parts.append("</svg>")
    return "".join(parts)


def trip_svg(report: Report, curve: TripCurve, zone: tzinfo, width: int = WIDTH, height: int = 340) -> str:
    """One trip's meter samples (kW against seconds from the trip) with the program's deadline."""
    points = [(t, kw) for t, kw, _ in curve.samples]
    deadline_s = report.deadline_s
    xs = [p[0] for p in points] + [0.0] + ([deadline_s] if deadline_s is not None else [])
    t0, t1 = min(xs), max(xs)
    values = [p[1] for p in points] + ([report.target_kw] if report.target_kw is not None else [])
    ax = _Axes(
        t0,
        t1,
        nice_ticks(min(0.0, *values) if values else 0.0, max(values, default=1.0) * 1.04),
        width,
        height,
        BOTTOM + 18,  # room for the spacing note under the axis title
    )
    x_step = nice_ticks(t0, t1, 8)
    when = datetime.fromtimestamp(curve.trip_wall_s, zone)
    title = f"trip seq {curve.seq} (stage {curve.stage}) at {when:%Y-%m-%d %H:%M:%S} {when:%Z}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trip-plot" data-seq="{curve.seq}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    legend = [(_POWER, "site power (meter, each sample)", "line"), ("#b26a00", "deadline", "dash")]
    if report.target_kw is not None:
        legend.append((_TARGET, "target", "line"))
    parts += _legend(legend, 16, width)
    step = x_step[1] - x_step[0] if len(x_step) > 1 else 1.0
    x_ticks = [(t, _tick_label(t, step)) for t in x_step if t0 - 1e-9 <= t <= t1 + 1e-9]
    parts += ax.frame(x_ticks, f"seconds from the trip ({when:%H:%M:%S} {when:%Z})", "kW")
    if report.target_kw is not None:
        y = _f(ax.y(report.target_kw))
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y}" y2="{y}" stroke="{_TARGET}" stroke-width="1.5">'
            f"<title>target {report.target_kw:.1f} kW</title></line>"
        )
    if points:
        coords = " ".join(f"{_f(ax.x(t))},{_f(ax.y(v))}" for t, v in points)
        parts.append(
            f'<polyline class="trip-curve" fill="none" stroke="{_POWER}" stroke-width="1.5" '
            f'points="{coords}">'
            "<title>site power at the poll rate</title></polyline>"
        )
        parts += [
            f'<circle cx="{_f(ax.x(t))}" cy="{_f(ax.y(v))}" r="1.8" fill="{_POWER}"/>' for t, v in points
        ]
    parts.append(ax.mark(0.0, "trip", "trip", "#1b5e20"))
    if deadline_s is not None:
        parts.append(ax.mark(deadline_s, f"deadline {deadline_s:g} s", "deadline", "#b26a00", 1))
    parts.append(_text(LEFT, height - 8, spacing_note(curve, deadline_s), "start", ' class="spacing"'))
    parts.append("</svg>")
    return "".join(parts)


def spacing_note(curve: TripCurve, deadline_s: float | None) -> str:
    """What the samples can prove: a curve at 10 Hz places the response only to within 0.1 s."""
    spacing = curve.spacing_s
    if spacing is None:
        return "fewer than two samples: the response time cannot be read from this curve"
    note = f"samples {spacing:g} s apart ({1 / spacing:.0f} Hz): response time known to {spacing:g} s"
    if deadline_s is not None and spacing >= deadline_s:
        note += f", too coarse to prove the {deadline_s:g} s deadline"
    elif deadline_s is not None:
        note += f" against the {deadline_s:g} s deadline"
    return note


def zone_of(name: str) -> tzinfo:
    return ZoneInfo(name)
