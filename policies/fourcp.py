"""4CP avoidance: on which summer days, and when, to hold the site's load down, from ERCOT's forecast.

ERCOT's transmission charges for a whole year are allocated by each customer's average load in the
four monthly 15-minute system peaks of June-September (4CP; PUCT Substantive Rule 25.192 and the
TDSPs' tariffs). Missing one costs a quarter of a year's charge on the load that was running;
curtailing on a day that held no peak costs only the mining margin of the hours held down. The rule
weighs the two explicitly (docs/programs.md, "4CP"):

- p, the chance that the day holds the month's peak: that it tops the month so far, from the day's
  forecast peak F against the month's reference R (the highest actual system load of the month so
  far, or the configured prior if higher) with a normal forecast error of `forecast_error_fraction` x
  F, Phi((F - R) / (sigma F)); times the chance that none of the month's remaining days tops it,
  q(F) ** (days_left / spell_days), q(F) being the share of the last `history_days` days' actual
  peaks below F, counted as (below + 1) / (n + 1) so that with little history it leans towards
  holding, and hot days taken to come in spells of `spell_days`.
- p*, the break-even chance: a window costs `curtail_kw` x hours x margin ($/kWh at the forecast
  price); a miss costs `curtail_kw` x rate ($/kW-year) / 4. Curtail when p >= p*.

The caller passes only what was known at `now_s`: forecasts issued before it and actuals up to it;
today's actuals correct the rest of today's forecast by the ratio they ran at. Times are epoch
seconds; the caller cuts days in Central time and says which month a day is in, so the rule needs no
time-zone data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# ERCOT's 4CP months (PUCT 25.192): June to September.
SUMMER_MONTHS = frozenset({6, 7, 8, 9})
PROGRAM = "4CP"


@dataclass(frozen=True, slots=True)
class FourCpRule:
    """The site's 4CP settings (`[fourcp]` in the site config, docs/configuration.md)."""

    # The site's transmission rate: what a kW in the 4CP intervals costs for a year.
    usd_per_kw_year: float
    months: frozenset[int] = SUMMER_MONTHS
    # Spread of the day-ahead peak forecast's error as a share of the peak (one sigma).
    forecast_error_fraction: float = 0.03
    # Forecast intervals within this share of the day's forecast peak are in the window.
    window_fraction: float = 0.02
    # Added before and after: the 15-minute peak need not fall in the forecast's peak hour.
    guard_s: float = 3600.0
    max_window_s: float = 6 * 3600.0  # the catalogue's longest 4CP deployment
    # The site import held during a window: mining sheds to it; firm AI power is never touched.
    hold_kw: float = 0.0
    # A day less likely than this to top the month is never curtailed, whatever the costs.
    min_probability: float = 0.01
    # Prior for each month's peak (MW): early in a month the actuals so far say little.
    reference_peak_mw: Mapping[int, float] = field(default_factory=dict)
    # How many of today's latest actual intervals correct the rest of today's forecast.
    bias_intervals: int = 3
    # How many of the latest days' actual peaks say how high the rest of the month may go: recent
    # enough to follow the season (September cools, June warms).
    history_days: int = 14
    # Hot days come in spells (a heat dome lasts days): the days left count as this many fewer
    # independent draws. 1 treats every day as independent and runs too often (docs/programs.md).
    spell_days: float = 3.0


@dataclass(frozen=True, slots=True)
class DayInputs:
    """What is known at `now_s` about one day (the caller filters by issue time)."""

    label: str  # the day in Central time, e.g. "2023-08-10": the obligation ids carry it
    month: int
    interval_s: float
    # The day's forecast system load: (interval start, MW), issued before now.
    forecast: Sequence[tuple[float, float]]
    # Today's actual system load so far: (interval start, MW) of intervals that have ended.
    actual: Sequence[tuple[float, float]] = ()
    # Highest actual system load of the month before today (MW); None when nothing is known yet.
    month_peak_mw: float | None = None
    # Days of the month after this one (each could still top it), and the actual daily peaks (MW) of
    # the days before this one, oldest first: how often a day reaches a given peak.
    days_left: int = 0
    daily_peaks_mw: Sequence[float] = ()
    # The mining load a window would take off (kW): what the 4CP charge would otherwise be levied on.
    curtail_kw: float = 0.0
    # Mining margin per kWh at the forecast price (hashprice revenue less energy); may be negative.
    margin_usd_per_kwh: float = 0.0


@dataclass(frozen=True, slots=True)
class FourCpDecision:
    label: str
    curtail: bool
    start_s: float | None
    end_s: float | None
    limit_kw: float
    p_peak: float | None
    p_threshold: float | None
    forecast_peak_mw: float | None
    reference_mw: float | None
    reason: str

    def obligation_id(self, now_s: float) -> str:
        """One id per decision: a later, wider window is a second obligation, never an edit of the
        first (an id with different content is a conflict to the acceptance rules)."""
        return f"4cp-{self.label}-at-{int(now_s)}"


def decide(rule: FourCpRule, day: DayInputs, now_s: float) -> FourCpDecision:
    """Whether and when to hold the site down on `day`, with the figures the choice came from."""
    if day.month not in rule.months:
        return _no(rule, day, f"month {day.month} is outside the 4CP months {sorted(rule.months)}")
    forecast = _corrected(rule, day)
    if not forecast:
        return _no(rule, day, "no forecast for the day")
    peak_start_s, peak_mw = max(forecast, key=lambda iv: iv[1])
    if peak_start_s + day.interval_s <= now_s:
        return _no(rule, day, "the day's forecast peak is past", peak_mw=peak_mw)
    reference_mw = max(day.month_peak_mw or 0.0, rule.reference_peak_mw.get(day.month, 0.0))
    p_peak = _p_top(rule, peak_mw, reference_mw) * _p_stays(rule, peak_mw, day)
    start_s, end_s = _window(rule, forecast, day.interval_s, peak_start_s, peak_mw)
    # From now, not the next quarter hour: the quarter under way may be the peak one.
    start_s = max(start_s, math.ceil(now_s))
    hours = max(0.0, end_s - start_s) / 3600.0
    miss_usd = day.curtail_kw * rule.usd_per_kw_year / 4.0
    window_usd = day.curtail_kw * hours * max(0.0, day.margin_usd_per_kwh)
    p_threshold = max(rule.min_probability, window_usd / miss_usd if miss_usd > 0 else 1.0)
    figures = (
        f"forecast peak {peak_mw:,.0f} MW vs reference {reference_mw:,.0f} MW,"
        f" {day.days_left} day(s) left: p {p_peak:.3f};"
        f" a {hours:.2f} h window costs ${window_usd:,.0f} against ${miss_usd:,.0f} for a miss:"
        f" break-even p {p_threshold:.3f}"
    )
    curtail = p_peak >= p_threshold and end_s > start_s
    return FourCpDecision(
        label=day.label,
        curtail=curtail,
        start_s=start_s if curtail else None,
        end_s=end_s if curtail else None,
        limit_kw=rule.hold_kw,
        p_peak=p_peak,
        p_threshold=p_threshold,
        forecast_peak_mw=peak_mw,
        reference_mw=reference_mw,
        reason=("hold: " if curtail else "run: ") + figures,
    )


def _corrected(rule: FourCpRule, day: DayInputs) -> list[tuple[float, float]]:
    """Today's forecast, its later intervals scaled by how today's latest actuals ran against it."""
    forecast = sorted((t, mw) for t, mw in day.forecast if math.isfinite(mw) and mw > 0)
    by_start = dict(forecast)
    ratios = [
        mw / by_start[t]
        for t, mw in sorted(day.actual)[-rule.bias_intervals :]
        if t in by_start and math.isfinite(mw) and mw > 0
    ]
    if not ratios or rule.bias_intervals <= 0:
        return forecast
    ratio = sum(ratios) / len(ratios)
    seen = {t for t, _ in day.actual}
    return [(t, mw if t in seen else mw * ratio) for t, mw in forecast]


def _p_top(rule: FourCpRule, peak_mw: float, reference_mw: float) -> float:
    """Chance the day's actual peak tops the reference; 1 when no reference is known (unknown is not
    a low load)."""
    if reference_mw <= 0:
        return 1.0
    sigma_mw = rule.forecast_error_fraction * peak_mw
    if sigma_mw <= 0:
        return 1.0 if peak_mw >= reference_mw else 0.0
    z = (peak_mw - reference_mw) / sigma_mw
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _p_stays(rule: FourCpRule, peak_mw: float, day: DayInputs) -> float:
    """Chance that none of the month's remaining days tops `peak_mw`, the days taken as independent
    draws from the recent days' peaks: with no history, 1 (unknown is not a mild rest of the month)."""
    recent = list(day.daily_peaks_mw)[-rule.history_days :] if rule.history_days > 0 else []
    peaks = [mw for mw in recent if math.isfinite(mw) and mw > 0]
    if day.days_left <= 0:
        return 1.0
    below = sum(1 for mw in peaks if mw < peak_mw)
    return float(((below + 1) / (len(peaks) + 1)) ** (day.days_left / rule.spell_days))


def _window(
    rule: FourCpRule,
    forecast: Sequence[tuple[float, float]],
    interval_s: float,
    peak_start_s: float,
    peak_mw: float,
) -> tuple[float, float]:
    """The contiguous run of intervals near the forecast peak, widened by the guard, at most
    `max_window_s` long and centred on the peak when cut."""
    floor_mw = peak_mw * (1.0 - rule.window_fraction)
    starts = [t for t, _ in forecast]
    i = j = starts.index(peak_start_s)
    while i > 0 and forecast[i - 1][1] >= floor_mw and starts[i - 1] == starts[i] - interval_s:
        i -= 1
    while (
        j + 1 < len(forecast) and forecast[j + 1][1] >= floor_mw and starts[j + 1] == starts[j] + interval_s
    ):
        j += 1
    start_s = starts[i] - rule.guard_s
    end_s = starts[j] + interval_s + rule.guard_s
    if end_s - start_s > rule.max_window_s:
        centre_s = peak_start_s + interval_s / 2.0
        start_s = max(start_s, centre_s - rule.max_window_s / 2.0)
        end_s = start_s + rule.max_window_s
    return start_s, end_s


def _no(rule: FourCpRule, day: DayInputs, why: str, *, peak_mw: float | None = None) -> FourCpDecision:
    return FourCpDecision(
        label=day.label,
        curtail=False,
        start_s=None,
        end_s=None,
        limit_kw=rule.hold_kw,
        p_peak=None,
        p_threshold=None,
        forecast_peak_mw=peak_mw,
        reference_mw=None,
        reason="run: " + why,
    )
