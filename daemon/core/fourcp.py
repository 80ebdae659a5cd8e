"""The 4CP day scheduler: feeds policies/fourcp.py's rule what was known when, at the site's decide
times. The live daemon and `mulletd replay` both drive it, so a backtest runs the same choices.

Deterministic (no clock reads, no I/O): the caller says what arrived (`observe`) and what time it is
(`due`). Memory is bounded: points of this month and the last (by the newest time seen), and at most
`MAX_POINTS` of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from mullet.drivers.protocol import GridEvent
from mullet.policies.fourcp import PROGRAM, DayInputs, FourCpDecision, FourCpRule, decide

# Two months of 5-minute intervals, forecasts and actuals, with room for a week of forecast ahead.
MAX_POINTS = 20_000


class LoadPoint(Protocol):
    """One interval of system load (drivers/ercot_load.py's SystemLoadPoint)."""

    @property
    def start_s(self) -> float: ...
    @property
    def interval_s(self) -> float: ...
    @property
    def actual_mw(self) -> float | None: ...
    @property
    def forecast_mw(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class _Interval:
    interval_s: float
    actual_mw: float | None
    forecast_mw: float | None


class FourCpScheduler:
    """Runs the rule once at each local decide time, with the actuals whose interval has ended and the
    latest forecast for the day."""

    def __init__(self, rule: FourCpRule, timezone: str, decide_at: Sequence[time]) -> None:
        if not decide_at:
            raise ValueError("fourcp: at least one decide_at time is needed")
        self.rule = rule
        self.zone = ZoneInfo(timezone)
        self.decide_at = tuple(sorted(set(decide_at)))
        self._points: dict[float, _Interval] = {}
        self._last_s: float | None = None  # the now of the last `due` call: decide times up to it are done
        self._newest_s = -math.inf
        self.rejected = 0  # points with a non-finite or non-positive load or interval, skipped

    def observe(self, points: Iterable[LoadPoint]) -> None:
        """Take forecasts and actuals as they arrive; a later value for an interval replaces the
        earlier (a newer forecast, a settled actual), an absent one keeps what was known."""
        for point in points:
            if not _usable(point):
                self.rejected += 1
                continue
            old = self._points.get(point.start_s)
            actual, forecast = point.actual_mw, point.forecast_mw
            if old is not None:
                actual = old.actual_mw if actual is None else actual
                forecast = old.forecast_mw if forecast is None else forecast
            self._points[point.start_s] = _Interval(point.interval_s, actual, forecast)
        self._prune()

    def due(self, now_s: float, *, curtail_kw: float, margin_usd_per_kwh: float) -> list[FourCpDecision]:
        """The rule's decision for each day with a decide time passed since the last call (one per day:
        the same inputs would give the same answer twice). The first call catches up today's latest
        passed decide time only. A clock that went back decides nothing."""
        if self._last_s is not None and now_s <= self._last_s:
            return []
        if self._last_s is None:
            today = datetime.fromtimestamp(now_s, self.zone).date()
            times = [t for t in self._instants(today, today) if t <= now_s][-1:]
        else:
            times = self.decide_times(self._last_s, now_s)
        self._last_s = now_s
        self._newest_s = max(self._newest_s, now_s)
        self._prune()
        latest: dict[date, float] = {}
        for t in times:
            latest[datetime.fromtimestamp(t, self.zone).date()] = t
        return [
            decide(self.rule, self._day_inputs(day, now_s, curtail_kw, margin_usd_per_kwh), now_s)
            for day in sorted(latest)
        ]

    def decide_times(self, after_s: float, until_s: float) -> list[float]:
        """Decide instants in (after_s, until_s], in order."""
        first = datetime.fromtimestamp(after_s, self.zone).date()
        last = datetime.fromtimestamp(until_s, self.zone).date()
        return [t for t in self._instants(first, last) if after_s < t <= until_s]

    def _instants(self, first: date, last: date) -> list[float]:
        out: list[float] = []
        day = first
        while day <= last:
            out.extend(datetime.combine(day, t, self.zone).timestamp() for t in self.decide_at)
            day += timedelta(days=1)
        return out

    def _day_inputs(self, day: date, now_s: float, curtail_kw: float, margin: float) -> DayInputs:
        start_s, end_s = day_span_s(day, self.zone)
        month_start_s = datetime.combine(day.replace(day=1), time(0), self.zone).timestamp()
        forecast: list[tuple[float, float]] = []
        actual: list[tuple[float, float]] = []
        month_peak: float | None = None
        interval_s: float | None = None
        daily_peaks: dict[date, float] = {}  # the recent days' actual peaks (this month and the last)
        for t, iv in sorted(self._points.items()):
            ended = t + iv.interval_s <= now_s
            if start_s <= t < end_s:
                interval_s = interval_s or iv.interval_s
                if iv.forecast_mw is not None:
                    forecast.append((t, iv.forecast_mw))
                if ended and iv.actual_mw is not None:
                    actual.append((t, iv.actual_mw))
            elif t < start_s and ended and iv.actual_mw is not None:
                local_day = datetime.fromtimestamp(t, self.zone).date()
                daily_peaks[local_day] = max(daily_peaks.get(local_day, 0.0), iv.actual_mw)
                if month_start_s <= t:
                    month_peak = iv.actual_mw if month_peak is None else max(month_peak, iv.actual_mw)
        next_month = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        return DayInputs(
            label=day.isoformat(),
            month=day.month,
            interval_s=interval_s or 3600.0,
            forecast=forecast,
            actual=actual,
            month_peak_mw=month_peak,
            days_left=(next_month - day).days - 1,
            daily_peaks_mw=tuple(daily_peaks[d] for d in sorted(daily_peaks)),
            curtail_kw=curtail_kw,
            margin_usd_per_kwh=margin,
        )

    def _prune(self) -> None:
        """Keep this month and the last (of the newest time seen), at most MAX_POINTS, newest kept."""
        newest_s = max(self._newest_s, max(self._points, default=-math.inf))
        if math.isfinite(newest_s):
            local = datetime.fromtimestamp(newest_s, self.zone).date().replace(day=1)
            previous = (local - timedelta(days=1)).replace(day=1)
            keep_from_s = datetime.combine(previous, time(0), self.zone).timestamp()
            for t in [t for t in self._points if t < keep_from_s]:
                del self._points[t]
        if len(self._points) > MAX_POINTS:
            for t in sorted(self._points)[: len(self._points) - MAX_POINTS]:
                del self._points[t]

    def __len__(self) -> int:
        return len(self._points)


def day_span_s(day: date, zone: ZoneInfo) -> tuple[float, float]:
    """A local day as Unix seconds [its midnight, the next one): 23 or 25 h long on DST days."""
    start_s = datetime.combine(day, time(0), zone).timestamp()
    return start_s, datetime.combine(day + timedelta(days=1), time(0), zone).timestamp()


def to_event(decision: FourCpDecision, now_s: float) -> GridEvent:
    """A curtail decision as the obligation the controller holds: the site at `limit_kw` in the window."""
    if not decision.curtail or decision.start_s is None or decision.end_s is None:
        raise ValueError(f"fourcp: decision for {decision.label} holds nothing: {decision.reason}")
    return GridEvent(
        id=decision.obligation_id(now_s),
        kind="limit",
        kw=decision.limit_kw,
        start=decision.start_s,
        end=decision.end_s,
        program=PROGRAM,
        source="fourcp",
    )


def _usable(point: LoadPoint) -> bool:
    if not (math.isfinite(point.start_s) and math.isfinite(point.interval_s) and point.interval_s > 0):
        return False
    values = [v for v in (point.actual_mw, point.forecast_mw) if v is not None]
    return bool(values) and all(math.isfinite(v) and v > 0 for v in values)
