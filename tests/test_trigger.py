"""The under-frequency trigger (pure): confirm counts, implausible samples, latch and release."""

from __future__ import annotations

import math

from mullet.policies.model import TripStage
from mullet.policies.trigger import FrequencyTrigger, TriggerSettings

FFR = TripStage(1, 59.85, 1000.0)
UFR = TripStage(2, 59.7, 2000.0)


def _trigger(**settings: float) -> FrequencyTrigger:
    return FrequencyTrigger((FFR, UFR), TriggerSettings(**settings))  # type: ignore[arg-type]


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
    _feed(trigger, [60.0, 59.8, 59.8])
    assert trigger.latched == {1}
    # Back to normal for 0.5 s, a wobble, then a full second above the release frequency.
    later = [trigger.observe(59.97, 1.0 + 0.1 * i) for i in range(6)]
    assert not any(v.released for v in later)
    trigger.observe(59.94, 1.6)
    ends = [trigger.observe(59.97, 1.7 + 0.1 * i) for i in range(12)]
    assert [v.released for v in ends].index(True) == 10  # 1.0 s after 1.7 s
    assert trigger.latched == frozenset()
    # Latched stages do not re-fire during the event; after release they can.
    assert [v.fire for v in _feed(trigger, [59.8, 59.8], start_s=10.0)] == [None, 1]


def test_confirming_is_true_only_between_the_first_low_sample_and_the_fire() -> None:
    trigger = _trigger(confirm_samples=3)
    seen = []
    for i, hz in enumerate([60.0, 59.84, 59.84, 59.84, 59.83]):
        trigger.observe(hz, i * 0.1)
        seen.append(trigger.confirming)
    # streak 1 and 2 wait for more; the third fires stage 1 and stage 2 is not below its threshold
    assert seen == [False, True, True, False, False]


def test_close_reads_are_judged_over_the_meters_refresh_window_not_the_gap_between_them() -> None:
    trigger = _trigger(max_rocof_hz_per_s=5.0, rocof_window_s=0.2)
    assert trigger.observe(60.0, 0.0).rejected is None
    # 0.3 Hz between reads 2 ms apart is a new meter value, not a 150 Hz/s grid: accepted
    assert trigger.observe(59.7, 0.002).rejected is None
    # 1.5 Hz within the window is beyond 5 Hz/s x 0.2 s even so
    assert trigger.observe(58.2, 0.004).rejected == "implausible_rocof"
