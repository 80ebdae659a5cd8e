"""The 4CP window rule (policies/fourcp.py): monotone in the forecast's margin to the month's reference
and in the costs, never outside the configured months, never a window in the past, and the asymmetric
cost stated in every decision's figures."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mullet.daemon.config import Config, ConfigError
from mullet.daemon.config import parse_config as _parse
from mullet.policies.fourcp import SUMMER_MONTHS, DayInputs, FourCpRule, decide

EXAMPLES = int(os.environ.get("MULLET_POLICY_EXAMPLES", "150"))
PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
HOUR_S = 3600.0
DAY0_S = 1_691_643_600.0  # 2023-08-10 00:00 CDT


def _day(shape: list[float], *, scale: float = 1.0, month: int = 8, **kw: object) -> DayInputs:
    fields: dict[object, object] = {
        "label": "2023-08-10",
        "month": month,
        "interval_s": HOUR_S,
        "forecast": [(DAY0_S + h * HOUR_S, mw * scale) for h, mw in enumerate(shape)],
        "month_peak_mw": 80_000.0,
        "curtail_kw": 8_000.0,
        "margin_usd_per_kwh": 0.05,
    }
    fields.update(kw)
    return DayInputs(**fields)  # type: ignore[arg-type]


RULE = FourCpRule(usd_per_kw_year=60.0)
SUMMER_SHAPE = [
    *([55_000.0] * 6),
    *[60_000.0 + 2_000.0 * h for h in range(10)],  # morning to afternoon climb
    80_500.0,  # 16:00, the forecast peak
    *([79_000.0, 74_000.0, 70_000.0]),
    *([62_000.0] * 4),
]

shapes = st.lists(st.floats(40_000, 90_000), min_size=24, max_size=24)
scales = st.floats(0.8, 1.2)
months = st.integers(1, 12)


def test_a_day_forecast_over_the_months_peak_is_held_around_its_peak_hour() -> None:
    decision = decide(RULE, _day(SUMMER_SHAPE), now_s=DAY0_S + 6 * HOUR_S)
    assert decision.curtail
    assert decision.start_s is not None and decision.end_s is not None
    peak_s = DAY0_S + 16 * HOUR_S
    assert decision.start_s <= peak_s and peak_s + HOUR_S <= decision.end_s
    assert decision.end_s - decision.start_s <= RULE.max_window_s
    assert decision.p_peak is not None and decision.p_peak > 0.5
    assert "break-even" in decision.reason and decision.reason.startswith("hold: ")
    assert decision.obligation_id(DAY0_S + 6 * HOUR_S) == f"4cp-2023-08-10-at-{int(DAY0_S) + 6 * 3600}"


def test_a_mild_day_far_under_the_months_peak_runs() -> None:
    decision = decide(RULE, _day(SUMMER_SHAPE, scale=0.85), now_s=DAY0_S + 6 * HOUR_S)
    assert not decision.curtail and decision.start_s is None
    assert decision.p_peak is not None and decision.p_threshold is not None
    assert decision.p_peak < decision.p_threshold
    assert decision.reason.startswith("run: ")


def test_the_break_even_chance_is_the_windows_margin_over_a_quarter_years_charge() -> None:
    decision = decide(RULE, _day(SUMMER_SHAPE), now_s=DAY0_S)
    assert decision.start_s is not None and decision.end_s is not None
    hours = (decision.end_s - decision.start_s) / HOUR_S
    expected = 8_000.0 * hours * 0.05 / (8_000.0 * 60.0 / 4.0)
    assert decision.p_threshold == pytest.approx(max(RULE.min_probability, expected))


def test_unknown_reference_is_not_a_low_peak() -> None:
    # Nothing known of the month yet (first day, no prior): the day may well be the peak.
    decision = decide(RULE, _day(SUMMER_SHAPE, scale=0.7, month_peak_mw=None), now_s=DAY0_S)
    assert decision.curtail and decision.p_peak == 1.0


def test_todays_actuals_running_hot_raise_the_rest_of_the_forecast() -> None:
    cool = _day(SUMMER_SHAPE, scale=0.93)
    hot_morning = [(t, mw * 1.08) for t, mw in cool.forecast[:12]]
    now_s = DAY0_S + 12 * HOUR_S
    assert not decide(RULE, cool, now_s=now_s).curtail
    assert decide(RULE, replace(cool, actual=hot_morning), now_s=now_s).curtail


def test_a_window_never_starts_before_now_and_a_past_peak_is_not_chased() -> None:
    now_s = DAY0_S + 15.5 * HOUR_S
    decision = decide(RULE, _day(SUMMER_SHAPE), now_s=now_s)
    assert decision.curtail and decision.start_s is not None
    assert decision.start_s == now_s  # the quarter under way may be the peak one
    late = decide(RULE, _day(SUMMER_SHAPE), now_s=DAY0_S + 17 * HOUR_S)
    assert not late.curtail and "past" in late.reason


def test_nan_and_negative_forecast_intervals_are_ignored_not_read_as_zero() -> None:
    shape = list(SUMMER_SHAPE)
    shape[3], shape[4] = math.nan, -5.0
    decision = decide(RULE, _day(shape), now_s=DAY0_S)
    assert decision.curtail and decision.forecast_peak_mw == pytest.approx(80_500.0)
    empty = decide(RULE, _day([math.nan] * 24), now_s=DAY0_S)
    assert not empty.curtail and "no forecast" in empty.reason


@PROPERTY_SETTINGS
@given(shape=shapes, low=scales, high=scales, reference=st.floats(50_000, 95_000))
def test_monotone_in_the_forecast_margin_to_the_reference(
    shape: list[float], low: float, high: float, reference: float
) -> None:
    """A forecast closer to (or further over) the month's reference is never less likely to be held."""
    low, high = sorted((low, high))
    lo = decide(RULE, _day(shape, scale=low, month_peak_mw=reference), now_s=DAY0_S)
    hi = decide(RULE, _day(shape, scale=high, month_peak_mw=reference), now_s=DAY0_S)
    assert lo.p_peak is not None and hi.p_peak is not None
    assert hi.p_peak >= lo.p_peak
    assert hi.curtail or not lo.curtail
    # The same holds when the reference moves instead of the forecast.
    far = decide(RULE, _day(shape, month_peak_mw=reference * high / low), now_s=DAY0_S)
    near = decide(RULE, _day(shape, month_peak_mw=reference), now_s=DAY0_S)
    assert near.curtail or not far.curtail


@PROPERTY_SETTINGS
@given(
    shape=shapes,
    rate=st.floats(1, 200),
    factor=st.floats(1, 5),
    margin=st.floats(-0.05, 0.3),
)
def test_a_dearer_miss_or_cheaper_mining_never_makes_the_rule_less_aggressive(
    shape: list[float], rate: float, factor: float, margin: float
) -> None:
    day = _day(shape, margin_usd_per_kwh=margin)
    base = decide(FourCpRule(usd_per_kw_year=rate), day, now_s=DAY0_S)
    dearer = decide(FourCpRule(usd_per_kw_year=rate * factor), day, now_s=DAY0_S)
    cheaper = decide(
        FourCpRule(usd_per_kw_year=rate), replace(day, margin_usd_per_kwh=margin / factor), now_s=DAY0_S
    )
    assert dearer.curtail or not base.curtail
    assert cheaper.curtail or not base.curtail or margin < 0


@PROPERTY_SETTINGS
@given(shape=shapes, month=months, scale=scales, configured=st.sets(months, min_size=1))
def test_never_a_window_outside_the_configured_months(
    shape: list[float], month: int, scale: float, configured: set[int]
) -> None:
    default = decide(RULE, _day(shape, scale=scale, month=month), now_s=DAY0_S)
    if month not in SUMMER_MONTHS:
        assert not default.curtail and default.start_s is None
    rule = FourCpRule(usd_per_kw_year=60.0, months=frozenset(configured))
    chosen = decide(rule, _day(shape, scale=scale, month=month), now_s=DAY0_S)
    if month not in configured:
        assert not chosen.curtail


@PROPERTY_SETTINGS
@given(shape=shapes, now_h=st.floats(0, 24), guard_h=st.floats(0, 3), max_h=st.floats(0.5, 6))
def test_a_window_is_bounded_inside_the_future_and_holds_the_configured_import(
    shape: list[float], now_h: float, guard_h: float, max_h: float
) -> None:
    rule = FourCpRule(
        usd_per_kw_year=60.0, guard_s=guard_h * HOUR_S, max_window_s=max_h * HOUR_S, hold_kw=1_500.0
    )
    now_s = DAY0_S + now_h * HOUR_S
    decision = decide(rule, _day(shape, month_peak_mw=None), now_s=now_s)
    if decision.curtail:
        assert decision.start_s is not None and decision.end_s is not None
        assert now_s <= decision.start_s < decision.end_s
        assert decision.end_s - decision.start_s <= rule.max_window_s + 1e-6
        assert decision.limit_kw == 1_500.0


def parse_config(text: str) -> Config:
    return _parse(tomllib.loads(text))


def test_the_config_section_builds_the_rule_and_refuses_an_unpriced_program() -> None:
    base = '[site]\nsite_id = "s"\ninterconnect_kw = 1000\n[[groups]]\ngroup_id = "g"\nrated_kw = 500\n'
    base += "efficiency_j_per_th = 20\n"
    config = parse_config(
        base + "[fourcp]\nenabled = true\nusd_per_kw_year = 55\nmonths = [7, 8]\n"
        "reference_peak_mw = { 7 = 83000 }\ndecide_at = [06:30:00]\n"
    )
    rule = config.fourcp.rule()
    assert rule.usd_per_kw_year == 55 and rule.months == {7, 8} and rule.reference_peak_mw == {7: 83_000}
    with pytest.raises(ConfigError, match="usd_per_kw_year"):
        parse_config(base + "[fourcp]\nenabled = true\n")
    with pytest.raises(ConfigError, match="time zone"):
        parse_config(base + '[fourcp]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="months"):
        parse_config(base + "[fourcp]\nmonths = [13]\n")


def test_a_day_that_tops_the_month_so_far_early_in_the_month_is_less_likely_its_peak() -> None:
    """Beating the month so far on the 3rd is not holding the month's peak: 27 days remain, and the
    recent days show how often a day gets that high."""
    history = [60_000.0] * 20 + [76_000.0, 78_000.0, 81_000.0, 74_000.0, 79_000.0, 82_000.0, 77_000.0] * 2
    early = _day(SUMMER_SHAPE, days_left=27, daily_peaks_mw=history, margin_usd_per_kwh=0.3)
    last = _day(SUMMER_SHAPE, days_left=0, daily_peaks_mw=history, margin_usd_per_kwh=0.3)
    p_early = decide(RULE, early, now_s=DAY0_S).p_peak
    p_last = decide(RULE, last, now_s=DAY0_S).p_peak
    assert p_early is not None and p_last is not None
    # Only the last 14 days count (older, cooler days are another season): 80,500 MW tops 10 of
    # them, (10 + 1) / (14 + 1) per independent draw, 27 days left in spells of 3: 9 draws.
    assert (RULE.history_days, RULE.spell_days) == (14, 3.0)
    assert p_early == pytest.approx(p_last * (11 / 15) ** 9)
    assert not decide(RULE, early, now_s=DAY0_S).curtail and decide(RULE, last, now_s=DAY0_S).curtail
    # No history: the rest of the month is unknown, not mild.
    blind = decide(RULE, _day(SUMMER_SHAPE, days_left=27), now_s=DAY0_S).p_peak
    assert blind == pytest.approx(p_last)


@PROPERTY_SETTINGS
@given(
    shape=shapes,
    low=scales,
    high=scales,
    days_left=st.integers(0, 30),
    history=st.lists(st.floats(40_000, 95_000), max_size=62),
)
def test_monotone_in_the_forecast_whatever_the_days_left_and_the_history(
    shape: list[float], low: float, high: float, days_left: int, history: list[float]
) -> None:
    low, high = sorted((low, high))
    extra = {"days_left": days_left, "daily_peaks_mw": history}
    lo = decide(RULE, _day(shape, scale=low, **extra), now_s=DAY0_S)
    hi = decide(RULE, _day(shape, scale=high, **extra), now_s=DAY0_S)
    assert lo.p_peak is not None and hi.p_peak is not None and hi.p_peak >= lo.p_peak
    assert hi.curtail or not lo.curtail
    fewer = decide(
        RULE, _day(shape, scale=low, **{**extra, "days_left": max(0, days_left - 1)}), now_s=DAY0_S
    )
    assert fewer.curtail or not lo.curtail
