"""Inline SVG charts for the replay report: time series with gaps, grouped bars, axes, ticks, legends.

No script and no external resource, so the report opens offline and carries nothing active. Every
text goes through html.escape and every coordinate through one fixed format, so the same input gives
the same bytes. A missing value (None) breaks a line or leaves a bar out: unknown is never drawn as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

# A line holds at most this many points: a year of 15-minute rows (35,040) is averaged down to it.
MAX_POINTS = 2000
WIDTH, PLOT_H = 760, 220
LEFT, RIGHT, TOP_PAD, BOTTOM = 72, 16, 10, 44
LEGEND_ROW_H = 18
MAX_BAR_W = 28.0
MIN_LABELLED_BAR_W = 16.0
LEGEND_LABEL_CHARS = 40
_TIME_STEPS_S = (900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 1209600, 2419200)

Point = tuple[float, float | None]


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    color: str
    points: Sequence[Point] = ()  # (Unix s, value) for lines
    values: Sequence[float | None] = ()  # one per bar group, for bars
    dash: str | None = None
    width: float = 1.5  # stroke width: wider under narrower, so equal lines stay visible


def downsample(points: Sequence[Point], max_points: int = MAX_POINTS) -> list[Point]:
    """At most `max_points`: consecutive buckets of equal size, each at its first time with the mean
    of its known values; a bucket with none known stays a gap."""
    if len(points) <= max_points:
        return list(points)
    size = math.ceil(len(points) / max_points)
    out: list[Point] = []
    for i in range(0, len(points), size):
        bucket = points[i : i + size]
        known = [v for _, v in bucket if v is not None]
        out.append((bucket[0][0], sum(known) / len(known) if known else None))
    return out


def segments(points: Sequence[Point]) -> list[list[tuple[float, float]]]:
    """The runs of known values between gaps."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [run for run in runs if run]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Ticks at 1, 2, 2.5 or 5 times a power of ten, the first at or below `lo`, the last at or above `hi`."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step + 0.0 for k in range(first, last + 1)]


def _number(value: float, step: float) -> str:
    """A tick label with as many decimals as the step needs (2.5 -> 1, 250 -> 0)."""
    decimals = next((d for d in range(7) if abs(round(step, d) - step) < 1e-9 * max(1.0, step)), 6)
    return f"{value:,.{decimals}f}"


def _f(value: float) -> str:
    return f"{value:.1f}"


def _line(x1: float, y1: float, x2: float, y2: float, css: str) -> str:
    return f'<line class="{css}" x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}"/>'


def _text(x: float, y: float, text: str, *, anchor: str = "middle", css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"{cls}>{escape(text)}</text>'


def _legend(series: Sequence[Series]) -> tuple[list[str], float]:
    """Swatch and label per series, wrapped into rows; the SVG elements and the height they take."""
    parts: list[str] = []
    x, row = float(LEFT), 0
    for s in series:
        label = s.label if len(s.label) <= LEGEND_LABEL_CHARS else s.label[: LEGEND_LABEL_CHARS - 1] + "…"
        item_w = 26 + 7.0 * len(label) + 14
        if x + item_w > WIDTH - RIGHT and x > LEFT:
            x, row = float(LEFT), row + 1
        y = 4 + row * LEGEND_ROW_H + LEGEND_ROW_H / 2
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        parts.append(
            f'<line x1="{_f(x)}" y1="{_f(y)}" x2="{_f(x + 20)}" y2="{_f(y)}" '
            f'stroke="{s.color}" stroke-width="3"{dash}/>'
        )
        parts.append(_text(x + 26, y + 4, label, anchor="start"))
        x += item_w
    return parts, 4 + (row + 1) * LEGEND_ROW_H + 4 if series else 0.0


def _frame(
    title: str,
    series: Sequence[Series],
    y_ticks: list[float],
    y_title: str,
    x_ticks: list[tuple[float, str]],
    x_title: str,
) -> tuple[list[str], float, float]:
    """The SVG opening, legend, y grid and ticks, x ticks; the parts, the plot's top and its height."""
    legend, legend_h = _legend(series)
    top = legend_h + TOP_PAD
    height = top + PLOT_H + BOTTOM
    y0, y1 = y_ticks[0], y_ticks[-1]
    step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{_f(height)}" '
        f'viewBox="0 0 {WIDTH} {_f(height)}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        *legend,
    ]
    for tick in y_ticks:
        y = top + PLOT_H * (1 - (tick - y0) / (y1 - y0))
        parts.append(_line(LEFT, y, WIDTH - RIGHT, y, "grid"))
        parts.append(_text(LEFT - 6, y + 4, _number(tick, step), anchor="end"))
    for x, label in x_ticks:
        parts.append(_line(x, top + PLOT_H, x, top + PLOT_H + 5, "axis"))
        parts.append(_text(x, top + PLOT_H + 18, label))
    parts.append(_line(LEFT, top + PLOT_H, WIDTH - RIGHT, top + PLOT_H, "axis"))
    parts.append(_line(LEFT, top, LEFT, top + PLOT_H, "axis"))
    parts.append(_text((LEFT + WIDTH - RIGHT) / 2, top + PLOT_H + 36, x_title))
    mid = top + PLOT_H / 2
    parts.append(
        f'<text x="14" y="{_f(mid)}" text-anchor="middle" transform="rotate(-90 14 {_f(mid)})">'
        f"{escape(y_title)}</text>"
    )
    return parts, top, height


def _time_ticks(t0: float, t1: float) -> list[tuple[float, str]]:
    span = max(t1 - t0, 1.0)
    step = next(
        (s for s in _TIME_STEPS_S if span / s <= 8),
        _TIME_STEPS_S[-1] * math.ceil(span / 8 / _TIME_STEPS_S[-1]),
    )
    fmt = "%m-%d %H:%M" if step < 86400 else "%Y-%m-%d"
    first = math.ceil(t0 / step) * step
    ticks, t = [], float(first)
    while t <= t1:
        ticks.append((t, datetime.fromtimestamp(t, UTC).strftime(fmt)))
        t += step
    return ticks


def time_chart(title: str, lines: Sequence[Series], y_title: str, *, y_max: float | None = None) -> str:
    """Lines over time, each downsampled to MAX_POINTS and broken where a value is unknown. `y_max`
    shares one scale across charts that are compared side by side."""
    drawn = [(s, downsample(s.points)) for s in lines]
    times = [t for _, pts in drawn for t, _ in pts]
    known = [v for _, pts in drawn for _, v in pts if v is not None]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    t1 = t1 if t1 > t0 else t0 + 1.0
    lo = min(0.0, *known) if known else 0.0
    hi = max([*known, y_max or 0.0]) if known or y_max else 1.0
    y_ticks = nice_ticks(lo, hi)
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(t: float) -> float:
        return LEFT + plot_w * (t - t0) / (t1 - t0)

    x_ticks = [(x_of(t), label) for t, label in _time_ticks(t0, t1)]
    parts, top, _ = _frame(title, lines, y_ticks, y_title, x_ticks, "time (UTC)")
    ya, yb = y_ticks[0], y_ticks[-1]
    for s, pts in drawn:
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        for run in segments(pts):
            coords = " ".join(
                f"{_f(x_of(t))},{_f(top + PLOT_H * (1 - (v - ya) / (yb - ya)))}" for t, v in run
            )
            parts.append(
                f'<polyline data-series="{escape(s.label)}" points="{coords}" fill="none" '
                f'stroke="{s.color}" stroke-width="{s.width:g}"{dash}/>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart(
    title: str,
    groups: Sequence[str],
    bars: Sequence[Series],
    y_title: str,
    *,
    unit: str = "",
    markers: Sequence[float | None] = (),
    marker_label: str = "",
    missing: str = "n/a",
) -> str:
    """One group of bars per entry of `groups` (one bar per series), with an optional dashed marker
    across each group (a deadline); a missing value is written as `missing`, not drawn."""
    known = [v for s in bars for v in s.values if v is not None] + [m for m in markers if m is not None]
    y_ticks = nice_ticks(min(0.0, *known) if known else 0.0, max(known) if known else 1.0)
    ya, yb = y_ticks[0], y_ticks[-1]
    plot_w = WIDTH - LEFT - RIGHT
    group_w = plot_w / max(1, len(groups))
    bar_w = min(group_w * 0.8 / max(1, len(bars)), MAX_BAR_W)
    every = math.ceil(len(groups) / 12) if groups else 1  # at most ~12 group labels fit
    x_ticks = [(LEFT + group_w * (i + 0.5), g[:16]) for i, g in enumerate(groups) if i % every == 0]
    legend = list(bars)
    if marker_label and any(m is not None for m in markers):
        legend.append(Series(marker_label, "#000000", dash="4 3"))
    parts, top, _ = _frame(title, legend, y_ticks, y_title, x_ticks, "grid event")

    def y_of(v: float) -> float:
        return top + PLOT_H * (1 - (v - ya) / (yb - ya))

    for i, group in enumerate(groups):
        gx = LEFT + group_w * (i + 0.5) - bar_w * len(bars) / 2
        for j, s in enumerate(bars):
            value = s.values[i] if i < len(s.values) else None
            x = gx + bar_w * j
            tip = f"{group} / {s.label}: " + (missing if value is None else f"{value:g} {unit}".rstrip())
            if value is None:
                parts.append(
                    f'<text class="missing" x="{_f(x + bar_w / 2)}" y="{_f(y_of(0.0) - 4)}" '
                    f'text-anchor="middle">{escape(missing)}<title>{escape(tip)}</title></text>'
                )
                continue
            y_top, y_base = sorted((y_of(value), y_of(0.0)))
            parts.append(
                f'<rect x="{_f(x)}" y="{_f(y_top)}" width="{_f(bar_w)}" height="{_f(y_base - y_top)}" '
                f'fill="{s.color}"><title>{escape(tip)}</title></rect>'
            )
            if (
                bar_w >= MIN_LABELLED_BAR_W
            ):  # the value over the bar: a 4 s bar under a 600 s deadline is flat
                parts.append(_text(x + bar_w / 2, y_top - 3, f"{value:g}", css="value"))
        marker = markers[i] if i < len(markers) else None
        if marker is not None:
            y = y_of(marker)
            parts.append(_line(gx - 4, y, gx + bar_w * len(bars) + 4, y, "marker"))
    parts.append("</svg>")
    return "\n".join(parts)
