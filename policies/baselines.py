"""ERCOT's baseline families for a demand-response event, per 15-minute interval.

What a load "would have drawn" had it not been deployed: ERCOT's Demand Response Baseline
Methodologies (Middle 8-of-10 Preceding Like Days, Statistical Regression) and the meter-before
baseline of short ERS deployments, reduced to what a site journal holds (no weather, no daylight),
plus the event-day adjustment ERCOT applies to its default baselines (docs/reports.md cites each rule
and says which are our reading). Pure: the caller reads the journal (daemon/records/report.py) and
passes the interval means, the excluded days and the site's time zone.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

INTERVAL_S = 900.0
LIKE_DAYS = 10  # Middle 8-of-10: the 10 most recent like days ...
LIKE_DAYS_DROPPED = 1  # ... less the highest and the lowest (by mean load over the event window)
LIKE_DAY_LOOKBACK_DAYS = 45  # like days are looked for within this many days before the event day
REGRESSION_DAYS = 30  # the regression fits the last 30 non-event days with data ...
REGRESSION_LOOKBACK_DAYS = 60  # ... found within this many days before the event day
MIN_COVERAGE = 0.9  # an interval counts as covered with >= 90 % of its expected samples
# Event-day adjustment (our reading of ERCOT's): the 4 whole intervals ending one hour before the
# interval the notice falls in; the hour just before is skipped, as a load warned of an emergency may
# already move in it.
ADJUSTMENT_INTERVALS = 4
ADJUSTMENT_GAP_S = 3600.0


@dataclass(frozen=True, slots=True)
class Sample:
    wall_s: float
    kw: float


@dataclass(frozen=True, slots=True)
class IntervalMean:
    """One 15-minute interval of the journal: its mean kW and the share of its expected samples it
    holds (0..1)."""

    kw: float
    coverage: float


@dataclass(frozen=True, slots=True)
class Baseline:
    """Per interval (start, UTC s) the baseline kW, and one line of how it was found; `kw` is None when
    there is no baseline and `detail` says why."""

    kw: dict[float, float] | None
    detail: str
    days: tuple[dt.date, ...] = ()  # the days it stands on (history methods), most recent first


def zone(tz: dt.tzinfo | str) -> dt.tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def local_day(wall_s: float, tz: dt.tzinfo | str) -> dt.date:
    return dt.datetime.fromtimestamp(wall_s, zone(tz)).date()


# ---- ERCOT holidays and like days ---------------------------------------------------------------


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    last = dt.date(year, month + 1, 1) - dt.timedelta(days=1) if month < 12 else dt.date(year, 12, 31)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


@functools.lru_cache(maxsize=64)
def ercot_holidays(year: int) -> frozenset[dt.date]:
    """ERCOT's holidays for like-day selection: New Year's Day, Memorial Day, Independence Day, Labor
    Day, Thanksgiving Day, the day after, Christmas Eve and Christmas Day (on their calendar dates)."""
    thanksgiving = _nth_weekday(year, 11, 3, 4)  # 4th Thursday of November
    return frozenset(
        {
            dt.date(year, 1, 1),
            _last_weekday(year, 5, 0),  # last Monday of May
            dt.date(year, 7, 4),
            _nth_weekday(year, 9, 0, 1),  # 1st Monday of September
            thanksgiving,
            thanksgiving + dt.timedelta(days=1),
            dt.date(year, 12, 24),
            dt.date(year, 12, 25),
        }
    )


def weekend_or_holiday(day: dt.date) -> bool:
    return day.weekday() >= 5 or day in ercot_holidays(day.year)


def on_day(start_s: float, event_day: dt.date, day: dt.date, tz: dt.tzinfo | str) -> float:
    """The interval of `day` at the same local clock time as the one starting at `start_s` on
    `event_day` (an event past midnight keeps its offset in days)."""
    z = zone(tz)
    local = dt.datetime.fromtimestamp(start_s, z)
    date = day + (local.date() - event_day)
    return dt.datetime.combine(date, local.time().replace(tzinfo=None), tzinfo=z).timestamp()


def window_slots(from_s: float, until_s: float, interval_s: float = INTERVAL_S) -> list[float]:
    """The clock-aligned interval starts touching [from_s, until_s)."""
    start_s = math.floor(from_s / interval_s) * interval_s
    return [start_s + k * interval_s for k in range(max(0, math.ceil((until_s - start_s) / interval_s)))]


def adjustment_slots(notice_s: float, interval_s: float = INTERVAL_S) -> list[float]:
    """The event-day adjustment's intervals: ADJUSTMENT_INTERVALS whole intervals ending
    ADJUSTMENT_GAP_S before the interval the notice falls in."""
    end_s = math.floor(notice_s / interval_s) * interval_s - ADJUSTMENT_GAP_S
    return [end_s - k * interval_s for k in range(ADJUSTMENT_INTERVALS, 0, -1)]


def history_ranges(
    event_day: dt.date,
    slots: Sequence[float],
    tz: dt.tzinfo | str,
    days: Iterable[dt.date],
    interval_s: float = INTERVAL_S,
) -> list[tuple[float, float]]:
    """The [from, until) UTC ranges of journal rows the history methods read: `slots` (event-day
    interval starts, sorted) moved to each of `days`, runs of consecutive slots merged into one range
    per day."""
    runs: list[list[float]] = []
    for start_s in slots:
        if runs and start_s - runs[-1][-1] == interval_s:
            runs[-1].append(start_s)
        else:
            runs.append([start_s])
    return [
        (on_day(run[0], event_day, day, tz), on_day(run[-1], event_day, day, tz) + interval_s)
        for day in days
        for run in runs
    ]


def candidate_days(
    event_day: dt.date, excluded_days: Collection[dt.date], *, like: bool, lookback_days: int
) -> list[dt.date]:
    """The days a history method may stand on, most recent first, before their data is read: within
    `lookback_days` before the event day, not excluded, and (`like`) of the event day's kind."""
    event_type = weekend_or_holiday(event_day)
    days = (event_day - dt.timedelta(days=back) for back in range(1, lookback_days + 1))
    return [d for d in days if d not in excluded_days and (not like or weekend_or_holiday(d) == event_type)]


def covered(
    history: Mapping[float, IntervalMean],
    event_day: dt.date,
    day: dt.date,
    window: Sequence[float],
    tz: dt.tzinfo | str,
) -> bool:
    """Whether every interval of the event window holds >= MIN_COVERAGE of its samples on `day`."""
    return _day_values(history, event_day, day, window, tz) is not None


def _day_values(
    history: Mapping[float, IntervalMean],
    event_day: dt.date,
    day: dt.date,
    slots: Sequence[float],
    tz: dt.tzinfo | str,
) -> list[float] | None:
    """The day's kW for each of `slots` (event-day starts), or None if one is not covered."""
    out = []
    for start_s in slots:
        mean = history.get(on_day(start_s, event_day, day, tz))
        if mean is None or mean.coverage < MIN_COVERAGE:
            return None
        out.append(mean.kw)
    return out


def _optional_values(
    history: Mapping[float, IntervalMean],
    event_day: dt.date,
    day: dt.date,
    slots: Sequence[float],
    tz: dt.tzinfo | str,
) -> list[float | None]:
    out: list[float | None] = []
    for start_s in slots:
        mean = history.get(on_day(start_s, event_day, day, tz))
        out.append(None if mean is None or mean.coverage < MIN_COVERAGE else mean.kw)
    return out


@dataclass(frozen=True, slots=True)
class _Days:
    days: list[dt.date]  # most recent first
    event_window: list[list[float]]  # per day, kW of each event-window interval
    excluded: int  # days skipped for an event or drill
    uncovered: int  # days skipped for missing data


def _pick_days(
    history: Mapping[float, IntervalMean],
    event_day: dt.date,
    window: Sequence[float],
    excluded_days: Collection[dt.date],
    tz: dt.tzinfo | str,
    *,
    want: int,
    lookback_days: int,
    like: bool,
) -> _Days:
    event_type = weekend_or_holiday(event_day)
    days: list[dt.date] = []
    values: list[list[float]] = []
    excluded = uncovered = 0
    for back in range(1, lookback_days + 1):
        if len(days) == want:
            break
        day = event_day - dt.timedelta(days=back)
        if like and weekend_or_holiday(day) != event_type:
            continue
        if day in excluded_days:
            excluded += 1
            continue
        day_kw = _day_values(history, event_day, day, window, tz)
        if day_kw is None:
            uncovered += 1
            continue
        days.append(day)
        values.append(day_kw)
    return _Days(days, values, excluded, uncovered)


def _skipped(days: _Days) -> str:
    return (
        f"{days.excluded} skipped for an event or drill, {days.uncovered} for data below {MIN_COVERAGE:.0%}"
    )


# ---- the baselines ------------------------------------------------------------------------------


def middle_8_of_10(
    history: Mapping[float, IntervalMean],
    *,
    event_day: dt.date,
    window: Sequence[float],
    excluded_days: Collection[dt.date],
    tz: dt.tzinfo | str,
    extra: Sequence[float] = (),
) -> Baseline:
    """ERCOT's Middle 8-of-10 Preceding Like Days: the 10 most recent like days (weekdays that are not
    ERCOT holidays for a weekday event; weekend days and holidays otherwise) within
    LIKE_DAY_LOOKBACK_DAYS, without events or drills and with every event-window interval covered; the
    days with the highest and the lowest mean load over the event window dropped; each interval's
    baseline the mean of its load over the 8 left. `extra` slots (the adjustment's) get a baseline
    where all 8 days cover them."""
    if not window:
        return Baseline(None, "no interval in the event window")
    picked = _pick_days(
        history,
        event_day,
        window,
        excluded_days,
        tz,
        want=LIKE_DAYS,
        lookback_days=LIKE_DAY_LOOKBACK_DAYS,
        like=True,
    )
    kind = "weekend/holiday" if weekend_or_holiday(event_day) else "weekday"
    if len(picked.days) < LIKE_DAYS:
        return Baseline(
            None,
            f"{len(picked.days)} {kind} like days with data in the {LIKE_DAY_LOOKBACK_DAYS} days before "
            f"{event_day}, {LIKE_DAYS} needed ({_skipped(picked)})",
        )
    ranked = sorted(range(LIKE_DAYS), key=lambda k: (sum(picked.event_window[k]), picked.days[k]))
    kept = sorted(ranked[LIKE_DAYS_DROPPED : LIKE_DAYS - LIKE_DAYS_DROPPED])
    per_slot: dict[float, float] = {}
    for j, start_s in enumerate(window):
        per_slot[start_s] = sum(picked.event_window[k][j] for k in kept) / len(kept)
    for start_s in extra:
        known = [_optional_values(history, event_day, picked.days[k], [start_s], tz)[0] for k in kept]
        values = [v for v in known if v is not None]
        if len(values) == len(kept):
            per_slot[start_s] = sum(values) / len(values)
    dropped = [picked.days[ranked[0]], picked.days[ranked[-1]]]
    return Baseline(
        per_slot,
        f"middle 8 of 10 {kind} like days {picked.days[-1]}..{picked.days[0]} "
        f"(dropped lowest {dropped[0]}, highest {dropped[1]}; {_skipped(picked)})",
        tuple(picked.days[k] for k in kept),
    )


def _solve3(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-9:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return [m[r][3] / m[r][r] for r in range(3)]


def regression(
    history: Mapping[float, IntervalMean],
    *,
    event_day: dt.date,
    window: Sequence[float],
    excluded_days: Collection[dt.date],
    tz: dt.tzinfo | str,
    extra: Sequence[float] = (),
) -> Baseline:
    """ERCOT's Statistical Regression baseline reduced to what a journal holds: per interval of the day,
    ordinary least squares of its kW on [1, weekend_or_holiday, day index] over the last
    REGRESSION_DAYS non-event days with data, evaluated at the event day. ERCOT's model also has
    weather and daylight terms, which a site journal lacks."""
    if not window:
        return Baseline(None, "no interval in the event window")
    picked = _pick_days(
        history,
        event_day,
        window,
        excluded_days,
        tz,
        want=REGRESSION_DAYS,
        lookback_days=REGRESSION_LOOKBACK_DAYS,
        like=False,
    )
    if len(picked.days) < REGRESSION_DAYS:
        return Baseline(
            None,
            f"{len(picked.days)} non-event days with data in the {REGRESSION_LOOKBACK_DAYS} days before "
            f"{event_day}, {REGRESSION_DAYS} needed ({_skipped(picked)})",
        )
    rows = [[1.0, float(weekend_or_holiday(d)), float((d - event_day).days)] for d in picked.days]
    xtx = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
    at = [1.0, float(weekend_or_holiday(event_day)), 0.0]

    def fit(ys: Sequence[float]) -> float | None:
        coef = _solve3(xtx, [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(3)])
        return None if coef is None else sum(c * x for c, x in zip(coef, at, strict=True))

    per_slot: dict[float, float] = {}
    for j, start_s in enumerate(window):
        value = fit([day_kw[j] for day_kw in picked.event_window])
        if value is None:
            return Baseline(
                None,
                f"regression of {len(picked.days)} days cannot be solved: they are all "
                f"{'weekend/holiday' if rows[0][1] else 'weekday'} days",
            )
        per_slot[start_s] = value
    for start_s in extra:
        known = [_optional_values(history, event_day, d, [start_s], tz)[0] for d in picked.days]
        values = [v for v in known if v is not None]
        if len(values) == len(rows):
            value = fit(values)
            if value is not None:
                per_slot[start_s] = value
    weekends = sum(1 for r in rows if r[1])
    return Baseline(
        per_slot,
        f"regression on [1, weekend/holiday, day] over {len(rows)} days {picked.days[-1]}..{picked.days[0]} "
        f"({weekends} weekend/holiday; {_skipped(picked)}); no weather or daylight terms (not journaled)",
        tuple(picked.days),
    )


def meter_before(
    samples: Sequence[Sample], *, notice_s: float, window: Sequence[float], interval_s: float = INTERVAL_S
) -> Baseline:
    """ERCOT's meter-before baseline for short deployments: the mean load of the whole interval
    immediately before the interval the notice falls in, for every interval of the window."""
    end_s = math.floor(notice_s / interval_s) * interval_s
    lo = bisect.bisect_left(samples, end_s - interval_s, key=lambda s: s.wall_s)
    hi = bisect.bisect_left(samples, end_s, key=lambda s: s.wall_s)
    inside = [s.kw for s in samples[lo:hi]]
    if not inside:
        return Baseline(
            None, f"no site power sample in the {interval_s / 60:g}-min interval before the notice's"
        )
    kw = sum(inside) / len(inside)
    return Baseline(
        dict.fromkeys(window, kw),
        f"mean of {len(inside)} samples in the {interval_s / 60:g}-min interval before the notice's",
    )


def adjusted(
    base: Baseline, event_day_history: Mapping[float, IntervalMean], slots: Iterable[float]
) -> Baseline:
    """ERCOT's additive event-day adjustment: mean(actual - unadjusted baseline) over the adjustment
    intervals (`slots`, adjustment_slots()) added to every interval; left unadjusted, and said so, when
    none of them has both an actual (covered) and a baseline."""
    if base.kw is None:
        return base
    differences = []
    for start_s in slots:
        actual = event_day_history.get(start_s)
        if actual is not None and actual.coverage >= MIN_COVERAGE and start_s in base.kw:
            differences.append(actual.kw - base.kw[start_s])
    if not differences:
        return Baseline(
            base.kw, base.detail + "; no event-day adjustment: no data before the notice", base.days
        )
    shift_kw = sum(differences) / len(differences)
    return Baseline(
        {start_s: kw + shift_kw for start_s, kw in base.kw.items()},
        base.detail + f"; event-day adjustment {shift_kw:+.1f} kW over {len(differences)} intervals",
        base.days,
    )
