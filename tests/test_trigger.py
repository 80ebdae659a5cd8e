"""The under-frequency trigger (pure): independent confirmations, implausible samples, latch, release
and the fire budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mullet.policies.model import TripStage
from mullet.policies.trigger import FrequencyTrigger, TriggerSettings, fire_budget, stage_budgets

FFR = TripStage(1, 59.85, 1000.0)
UFR = TripStage(2, 59.7, 2000.0)


def _trigger(**options: float) -> FrequencyTrigger:
    return FrequencyTrigger((FFR, UFR), TriggerSettings(**options))  # type: ignore[arg-type]


def _feed(trigger: FrequencyTrigger, samples: list[float], start_s: float = 0.0, period_s: float = 0.1):
    return [trigger.observe(hz, start_s + i * period_s) for i, hz in enumerate(samples)]


def test_a_stage_fires_on_the_confirm_count_and_only_once() -> None:
    verdicts = _feed(_trigger(), [60.0, 59.84, 59.83, 59.82, 59.82])
    assert [v.fire for v in verdicts] == [None, None, 1, None, None]


def test_a_deep_dip_fires_the_deepest_confirmed_stage() -> None:
    verdicts = _feed(_trigger(confirm_samples=2), [60.0, 59.9, 59.8, 59.69, 59.68])
    assert [v.fire for v in verdicts] == [None, None, None, 1, 2]


def test_a_single_bad_sample_never_trips() -> None:
    trigger = _trigger(confirm_samples=1)
    verdicts = _feed(trigger, [60.0, math.nan, 0.0, -59.0, 120.0, 55.0, 60.0])
    assert all(v.fire is None for v in verdicts)
    assert [v.rejected for v in verdicts] == [
        None,
        "not_finite",
        "frequency_out_of_range",
        "frequency_out_of_range",
        "frequency_out_of_range",
        "implausible_rocof",  # 5 Hz in 0.1 s: a meter fault, not the grid
        None,
    ]
    assert trigger.latched == frozenset()


def test_a_dip_that_recovers_before_the_confirm_count_never_trips() -> None:
    verdicts = _feed(_trigger(confirm_samples=3), [60.0, 59.84, 59.84, 59.86, 59.84, 59.84, 59.9])
    assert all(v.fire is None for v in verdicts)


def test_a_bad_sample_inside_a_real_dip_neither_counts_nor_resets() -> None:
    verdicts = _feed(_trigger(confirm_samples=3), [60.0, 59.84, math.nan, 59.84, 59.83])
    assert [v.fire for v in verdicts] == [None, None, None, None, 1]


def test_a_fired_stage_stays_latched_until_the_frequency_has_recovered_for_the_release_time() -> None:
    trigger = _trigger(release_hz=59.95, release_after_s=1.0)
    _feed(trigger, [60.0, 59.8, 59.79])
    assert trigger.latched == {1}
    # Back to normal for 0.5 s, a wobble, then a full second above the release frequency.
    later = [trigger.observe(59.97, 1.0 + 0.1 * i) for i in range(6)]
    assert not any(v.released for v in later)
    trigger.observe(59.94, 1.6)
    ends = [trigger.observe(59.97, 1.7 + 0.1 * i) for i in range(12)]
    assert [v.released for v in ends].index(True) == 10  # 1.0 s after 1.7 s
    assert trigger.latched == frozenset()
    # Latched stages do not re-fire during the event; after release they can.
    assert [v.fire for v in _feed(trigger, [59.8, 59.79], start_s=10.0)] == [None, 1]


def test_one_refresh_of_a_bad_value_read_many_times_never_trips() -> None:
    # A meter refreshing every 0.2 s, read at 50 Hz: one refresh window holds 59.5 Hz between two
    # windows of 60.0 Hz. Ten reads return that one measurement; none confirms another.
    for on_change in (True, False):
        trigger = _trigger(pickup_s=0.2, confirm_on_change=on_change)
        reads = [60.0] * 10 + [59.5] * 10 + [60.0] * 10
        verdicts = [trigger.observe(hz, 0.001 + i * 0.02, requested_s=i * 0.02) for i, hz in enumerate(reads)]
        assert all(v.fire is None and v.rejected is None for v in verdicts)
        assert trigger.latched == frozenset()


def test_a_sustained_dip_with_one_value_fires_once_the_pickup_has_passed() -> None:
    trigger = _trigger(pickup_s=0.2)
    fired_at = [
        round(i * 0.02, 2)
        for i in range(30)
        if trigger.observe(59.8, 0.001 + i * 0.02, requested_s=i * 0.02).fire
    ]
    # first read back at 0.001 s; the read sent at 0.22 s is the first sent 0.2 s after it
    assert fired_at == [0.22]


def test_a_changed_value_is_a_new_measurement_unless_only_the_pickup_counts() -> None:
    on_change = _trigger(pickup_s=1.0)
    assert [on_change.observe(hz, t).fire for hz, t in ((59.84, 0.0), (59.83, 0.05))] == [None, 1]
    pickup_only = _trigger(pickup_s=1.0, confirm_on_change=False)
    reads = ((59.84, 0.0), (59.83, 0.05), (59.82, 0.5), (59.81, 1.0))
    assert [pickup_only.observe(hz, t).fire for hz, t in reads] == [None, None, None, 1]


def test_a_read_sent_before_the_pickup_ended_is_not_a_new_measurement_however_late_it_returns() -> None:
    trigger = _trigger(pickup_s=0.2, confirm_on_change=False)
    assert trigger.observe(59.8, 0.01, requested_s=0.0).fire is None
    # Sent at 0.15 s (the meter may have measured then), back at 0.25 s: inside the pickup.
    assert trigger.observe(59.8, 0.25, requested_s=0.15).fire is None
    assert trigger.observe(59.8, 0.27, requested_s=0.26).fire == 1


@settings(max_examples=100, deadline=None)
@given(
    refresh_s=st.floats(0.05, 2.0),
    bad_hz=st.floats(58.5, 59.85),
    phase=st.floats(0.0, 1.0),
    poll_s=st.floats(0.005, 0.2),
    jitter=st.lists(st.floats(0.0, 0.004), min_size=400, max_size=400),
)
def test_no_single_refresh_window_can_trip_whatever_the_poll_rate_phase_and_round_trips(
    refresh_s: float, bad_hz: float, phase: float, poll_s: float, jitter: list[float]
) -> None:
    """A meter (refresh `refresh_s`) holds `bad_hz` for one window amid 60 Hz; the daemon polls it at
    any rate and phase with round trips up to 4 ms; the pickup is the refresh interval."""
    trigger = _trigger(pickup_s=refresh_s, confirm_samples=2)
    bad_start_s = 3 * refresh_s
    for i, rtt_s in enumerate(jitter):
        sent_s = (phase + i) * poll_s
        measured_s = sent_s + rtt_s / 2  # the meter answers from the window this instant falls in
        hz = bad_hz if bad_start_s <= measured_s < bad_start_s + refresh_s else 60.0
        assert trigger.observe(hz, sent_s + rtt_s, requested_s=sent_s).fire is None


def test_the_fire_budget_adds_refresh_poll_pickup_and_round_trips() -> None:
    worst_s, moving_s = fire_budget(
        TriggerSettings(confirm_samples=2, pickup_s=0.1),
        refresh_s=0.05,
        poll_period_s=0.02,
        round_trip_s=0.01,
    )
    assert worst_s == pytest.approx(0.08 + 0.13)  # first measurement, then the pickup for a static dip
    assert moving_s == pytest.approx(0.08 + 0.08)  # a changing dip confirms at the next refresh
    budgets = stage_budgets(
        (FFR, UFR),
        {59.85: ("FFR", 0.25)},
        TriggerSettings(confirm_samples=2, pickup_s=1.0),
        refresh_s=1.0,
        poll_period_s=0.1,
        round_trip_s=0.2,
    )
    assert [(b.stage, b.program, b.meets_deadline) for b in budgets] == [(1, "FFR", False), (2, None, None)]


def test_close_reads_are_judged_over_the_meters_refresh_window_not_the_gap_between_them() -> None:
    trigger = _trigger(max_rocof_hz_per_s=5.0, rocof_window_s=0.2)
    assert trigger.observe(60.0, 0.0).rejected is None
    # 0.3 Hz between reads 2 ms apart is a new meter value, not a 150 Hz/s grid: accepted
    assert trigger.observe(59.7, 0.002).rejected is None
    # 1.5 Hz within the window is beyond 5 Hz/s x 0.2 s even so
    assert trigger.observe(58.2, 0.004).rejected == "implausible_rocof"
