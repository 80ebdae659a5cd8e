"""Under-frequency trigger: which armed stage to fire, sample by sample. Pure and O(stages) per sample.

A stage fires when `confirm_samples` consecutive plausible samples are at or below its threshold
(ERCOT FFR deploys at 59.85 Hz within 15 cycles; under-frequency relays for load resources trip at
59.7 Hz). Implausible samples are refused with a reason and neither count nor reset a streak, so one
bad reading can never trip, and one bad reading inside a real dip cannot delay the trip by more than
itself. A fired stage stays latched until the frequency has been back at or above `release_hz` for
`release_after_s`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mullet.policies.model import Obligation, TripStage

MAX_PLAUSIBLE_HZ = 100.0


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    confirm_samples: int = 2
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


@dataclass
class FrequencyTrigger:
    stages: tuple[TripStage, ...]
    settings: TriggerSettings = field(default_factory=TriggerSettings)
    _streaks: dict[int, int] = field(default_factory=dict)
    _latched: set[int] = field(default_factory=set)
    _last: tuple[float, float] | None = None  # (hz, t_s) of the last plausible sample
    _normal_since_s: float | None = None

    def observe(self, hz: float, t_s: float) -> Verdict:
        reason = self._implausible(hz, t_s)
        if reason is not None:
            return Verdict(rejected=reason)
        self._last = (hz, t_s)
        fire: int | None = None
        for stage in self.stages:
            if hz <= stage.threshold_hz:
                streak = self._streaks.get(stage.stage, 0) + 1
                self._streaks[stage.stage] = streak
                if streak >= self.settings.confirm_samples and stage.stage not in self._latched:
                    self._latched.add(stage.stage)
                    fire = stage.stage if fire is None else max(fire, stage.stage)
            else:
                self._streaks[stage.stage] = 0
        return Verdict(fire=fire, released=self._release(hz, t_s))

    @property
    def latched(self) -> frozenset[int]:
        return frozenset(self._latched)

    def latch(self, stages: frozenset[int]) -> None:
        """Hold `stages` as fired (a restart during an event): they release as after a real trip."""
        self._latched |= {stage.stage for stage in self.stages if stage.stage in stages}

    @property
    def confirming(self) -> bool:
        """A streak below some stage's threshold has begun but not yet fired that stage."""
        return any(streak and stage not in self._latched for stage, streak in self._streaks.items())

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
        event_id=f"ufr-{seq}",
        kind="limit",
        kw=interconnect_kw,
        start_s=start_s,
        end_s=None,
        program=f"under-frequency stage {stage}",
    )
