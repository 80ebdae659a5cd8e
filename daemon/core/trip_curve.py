"""The meter's samples around each trip, at the poll rate: the sub-second response a report draws
against the program's deadline (FFR 0.25 s, an under-frequency relay 0.5 s; docs/programs.md).

The journal keeps the site's power once a second (`site_power`); that cannot show a quarter-second
response. So the last `before_s` of samples are always held (a deque, bounded by time), and a trip
keeps them plus every sample of the next `after_s`, journaled as one `trip_curve` entry when the window
closes, or at the next control cycle after it if the meter went quiet. Nothing here runs before the
trip's commands are out: the controller feeds it after the fast path (docs/architecture.md section 7).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Recording:
    seq: int
    stage: int
    cause: str
    t0_mono_s: float  # the trip's triggering sample (or the grid event's decision)
    until_mono_s: float
    samples: list[tuple[float, float, float]]


@dataclass
class TripCurves:
    before_s: float
    after_s: float
    # Bounds whatever the poll rate: 50 Hz x (2 + 5) s is 350 samples a trip.
    max_samples: int = 2_000
    _recent: deque[tuple[float, float, float]] = field(default_factory=deque)
    _open: list[_Recording] = field(default_factory=list)

    def sample(self, mono_s: float, power_kw: float, frequency_hz: float) -> list[dict[str, Any]]:
        """Hold one meter sample; return the curves whose window it closes."""
        entry = (mono_s, power_kw, frequency_hz)
        self._recent.append(entry)
        while self._recent and (
            self._recent[0][0] < mono_s - self.before_s or len(self._recent) > self.max_samples
        ):
            self._recent.popleft()
        for recording in self._open:
            if mono_s <= recording.until_mono_s and len(recording.samples) < self.max_samples:
                recording.samples.append(entry)
        return self.due(mono_s)

    def trip(self, seq: int, stage: int, cause: str, t0_mono_s: float) -> None:
        """Start a curve: the samples held from `before_s` before the trip, then the window after."""
        held = [s for s in self._recent if s[0] >= t0_mono_s - self.before_s]
        self._open.append(_Recording(seq, stage, cause, t0_mono_s, t0_mono_s + self.after_s, held))

    def due(self, now_mono_s: float) -> list[dict[str, Any]]:
        """The curves whose window has passed by `now_mono_s`, as journal entries."""
        done = [r for r in self._open if now_mono_s > r.until_mono_s]
        if not done:
            return []
        self._open = [r for r in self._open if now_mono_s <= r.until_mono_s]
        return [_entry(r, self.before_s, self.after_s) for r in done]


def _entry(recording: _Recording, before_s: float, after_s: float) -> dict[str, Any]:
    t0 = recording.t0_mono_s
    return {
        "seq": recording.seq,
        "stage": recording.stage,
        "cause": recording.cause,
        "before_s": before_s,
        "after_s": after_s,
        # [seconds from the trip, kW, Hz]: the trip's own sample at 0, the meter's poll rate apart.
        "samples": [[round(m - t0, 4), round(kw, 1), round(hz, 4)] for m, kw, hz in recording.samples],
    }
