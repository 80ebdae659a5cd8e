"""Under-frequency trigger: which armed stage to fire, sample by sample. Pure and O(stages) per sample.

A stage fires when `confirm_samples` independent meter measurements in a row are at or below its
threshold (ERCOT FFR deploys at 59.85 Hz within 15 cycles; under-frequency relays for load resources
trip at 59.7 Hz). A meter recomputes frequency over a window of cycles and refreshes its register a
few times a second, so two reads a few ms apart usually return one measurement twice: the second
confirms the transport, not the grid. A sample is a new measurement only when its value differs from
the streak's last counted one (`confirm_on_change`) or it was requested at least `pickup_s` after
that one was read (set it to the meter's refresh interval); any other sample at or below the
threshold is the same measurement read again and neither counts nor resets the streak. So one bad
refresh, held for one refresh window, can never trip a stage on its own.

Implausible samples are refused with a reason and neither count nor reset a streak, so one bad
reading inside a real dip cannot delay the trip by more than itself. A fired stage stays latched
until the frequency has been back at or above `release_hz` for `release_after_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mullet.policies.model import Obligation, TripStage

MAX_PLAUSIBLE_HZ = 100.0

# An under-frequency trip leaves an obligation named `ufr-<seq>` (the trip's seq); grid events may not
# use the prefix, so a hold is never confused with (or cancelled as) a grid event.
UFR_PREFIX = "ufr-"


def ufr_obligation_id(seq: int) -> str:
    """The id of the hold that the trip with `seq` leaves behind."""
    return f"{UFR_PREFIX}{seq}"


def is_ufr_obligation(event_id: str) -> bool:
    """Whether `event_id` names an under-frequency hold (not a grid event)."""
    return event_id.startswith(UFR_PREFIX)


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    confirm_samples: int = 2
    # Two counted samples must be at least this far apart (the confirming read sent at least this long
    # after the previous counted one came back), unless the value changed: the meter's refresh
    # interval, so that one refresh of a bad value can never supply two samples.
    pickup_s: float = 0.2
    # A changed value is a new measurement whatever the time between: confirms at the next refresh.
    confirm_on_change: bool = True
    # Grid frequency does not move faster than a few Hz/s even after a large unit trips; a jump beyond
    # this between two samples is a meter or transport fault.
    max_rocof_hz_per_s: float = 5.0
    # A meter recomputes frequency over a window of cycles and refreshes it a few times a second, so
    # two reads close together can show a whole window's change: a jump is judged against the rate
    # over at least this long (5 Hz/s x 0.2 s = 1 Hz between any two reads).
    rocof_window_s: float = 0.2
    release_hz: float = 59.95
    release_after_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Verdict:
    fire: int | None = None  # highest stage that fires on this sample, if any
    rejected: str | None = None  # why the sample was not used
    released: bool = False  # every latched stage was released on this sample


@dataclass(frozen=True, slots=True)
class _Streak:
    count: int  # independent measurements at or below the stage's threshold, in a row
    hz: float  # the last counted one
    t_s: float  # when it was read


@dataclass
class FrequencyTrigger:
    stages: tuple[TripStage, ...]
    settings: TriggerSettings = field(default_factory=TriggerSettings)
    _streaks: dict[int, _Streak] = field(default_factory=dict)
    _latched: set[int] = field(default_factory=set)
    _last: tuple[float, float] | None = None  # (hz, t_s) of the last plausible sample
    _normal_since_s: float | None = None

    def observe(self, hz: float, t_s: float, requested_s: float | None = None) -> Verdict:
        """`t_s`: when the read that gave `hz` came back; `requested_s`: when it was sent (default
        `t_s`). The meter measured `hz` between the two, so `requested_s` minus the previous read's
        `t_s` is the least time that can separate the two measurements."""
        reason = self._implausible(hz, t_s)
        if reason is not None:
            return Verdict(rejected=reason)
        self._last = (hz, t_s)
        fire: int | None = None
        for stage in self.stages:
            if hz > stage.threshold_hz:
                self._streaks.pop(stage.stage, None)
                continue
            streak = self._streaks.get(stage.stage)
            if streak is None:
                streak = _Streak(1, hz, t_s)
            elif self._independent(streak, hz, t_s if requested_s is None else requested_s):
                streak = _Streak(streak.count + 1, hz, t_s)
            else:
                continue  # the same measurement read again
            self._streaks[stage.stage] = streak
            if streak.count >= self.settings.confirm_samples and stage.stage not in self._latched:
                self._latched.add(stage.stage)
                fire = stage.stage if fire is None else max(fire, stage.stage)
        return Verdict(fire=fire, released=self._release(hz, t_s))

    def _independent(self, streak: _Streak, hz: float, requested_s: float) -> bool:
        if self.settings.confirm_on_change and hz != streak.hz:
            return True
        return requested_s - streak.t_s >= self.settings.pickup_s

    @property
    def latched(self) -> frozenset[int]:
        return frozenset(self._latched)

    def latch(self, stages: frozenset[int]) -> None:
        """Hold `stages` as fired (a restart during an event): they release as after a real trip."""
        self._latched |= {stage.stage for stage in self.stages if stage.stage in stages}

    def _implausible(self, hz: float, t_s: float) -> str | None:
        if not math.isfinite(hz):
            return "not_finite"
        if hz <= 0 or hz > MAX_PLAUSIBLE_HZ:
            return "frequency_out_of_range"
        if self._last is not None:
            last_hz, last_t_s = self._last
            dt_s = t_s - last_t_s
            if dt_s <= 0:
                return "out_of_order"
            if abs(hz - last_hz) / max(dt_s, self.settings.rocof_window_s) > self.settings.max_rocof_hz_per_s:
                return "implausible_rocof"
        return None

    def _release(self, hz: float, t_s: float) -> bool:
        if not self._latched:
            return False
        if hz < self.settings.release_hz:
            self._normal_since_s = None
            return False
        if self._normal_since_s is None:
            self._normal_since_s = t_s
        if t_s - self._normal_since_s < self.settings.release_after_s:
            return False
        self._latched.clear()
        self._normal_since_s = None
        return True


def trip_hold(seq: int, stage: int, interconnect_kw: float, start_s: float) -> Obligation:
    """The obligation a frequency trip leaves behind: restores wait for the trigger's release, like
    any obligation; its limit is the interconnect, so it holds without shedding more (`ufr-<seq>`)."""
    return Obligation(
        event_id=ufr_obligation_id(seq),
        kind="limit",
        kw=interconnect_kw,
        start_s=start_s,
        end_s=None,
        program=f"under-frequency stage {stage}",
    )


@dataclass(frozen=True, slots=True)
class StageBudget:
    """How late a stage can fire after a sustained crossing of its threshold, against the deadline of
    the program it deploys (None: no frequency-triggered program sits at its threshold)."""

    stage: int
    threshold_hz: float
    worst_fire_s: float  # a dip whose measured value stays the same: confirmed by the pickup
    moving_fire_s: float  # a dip whose value changes at every refresh (with confirm_on_change)
    program: str | None
    deadline_s: float | None

    @property
    def meets_deadline(self) -> bool | None:
        return None if self.deadline_s is None else self.worst_fire_s <= self.deadline_s


def fire_budget(
    settings: TriggerSettings, *, refresh_s: float, poll_period_s: float, round_trip_s: float
) -> tuple[float, float]:
    """(worst, moving-dip) seconds from a sustained crossing to the sample that fires.

    The crossing can land just after a refresh, and that refresh just after a read: the first sample
    at or below the threshold is back within refresh + poll period + round trip. Each further
    measurement of a dip that keeps its value needs the pickup counted from that read's return, then
    the next poll slot and its round trip; a dip whose value changes confirms at the next refresh
    instead. The meter's own measuring window (cycles averaged before a refresh) comes on top and is
    the meter's to state."""
    first_s = refresh_s + poll_period_s + round_trip_s
    extra = max(settings.confirm_samples - 1, 0)
    worst_s = first_s + extra * (settings.pickup_s + poll_period_s + round_trip_s)
    step_s = min(settings.pickup_s, refresh_s) if settings.confirm_on_change else settings.pickup_s
    moving_s = first_s + extra * (step_s + poll_period_s + round_trip_s)
    return worst_s, moving_s


def stage_budgets(
    stages: tuple[TripStage, ...],
    deadlines: dict[float, tuple[str, float]],
    settings: TriggerSettings,
    *,
    refresh_s: float,
    poll_period_s: float,
    round_trip_s: float,
) -> list[StageBudget]:
    """Each stage's fire budget; `deadlines` maps a program's relay setting (Hz) to its (name,
    deadline in s), e.g. ERCOT FFR: 59.85 Hz -> 0.25 s."""
    worst_s, moving_s = fire_budget(
        settings, refresh_s=refresh_s, poll_period_s=poll_period_s, round_trip_s=round_trip_s
    )
    out: list[StageBudget] = []
    for stage in stages:
        match = next(
            (v for hz, v in deadlines.items() if math.isclose(hz, stage.threshold_hz, abs_tol=1e-9)), None
        )
        out.append(
            StageBudget(
                stage=stage.stage,
                threshold_hz=stage.threshold_hz,
                worst_fire_s=worst_s,
                moving_fire_s=moving_s,
                program=None if match is None else match[0],
                deadline_s=None if match is None else match[1],
            )
        )
    return out
