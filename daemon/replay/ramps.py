"""How fast the site's import moved: the largest change within any 10 s and any 60 s, and how often it
moved faster than a ramp limit (issue 23: what a grid operator scrutinises in a large load).

Streaming, in bounded memory: a sliding maximum and minimum over the window (monotone deques hold at
most the samples inside it), never the whole run. The engine samples the site's power at every instant
twice, before the inputs due then and after the control cycle, so a step that comes after a long quiet
hold is measured against the held value (power is constant between two quiet instants and linear
within a ramping step, so its extremes are at the samples).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

_EPS_S = 1e-9
_EPS_KW = 1e-6


@dataclass
class WindowSpan:
    """The largest max - min of site power over any `window_s`, and the episodes above `limit_kw`."""

    window_s: float
    limit_kw: float | None = None
    largest_kw: float = 0.0
    at_s: float | None = None
    # Episodes: a sample at which the window's span first exceeds the limit after one at which it did
    # not. None without a limit (not counted is not zero).
    violations: int | None = None
    _above: bool = False
    _max: deque[tuple[float, float]] = field(default_factory=deque)
    _min: deque[tuple[float, float]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.limit_kw is not None:
            self.violations = 0

    def observe(self, t_s: float, kw: float) -> None:
        for queue, sign in ((self._max, 1.0), (self._min, -1.0)):
            while queue and sign * queue[-1][1] <= sign * kw:
                queue.pop()
            queue.append((t_s, kw))
            while queue[0][0] < t_s - self.window_s - _EPS_S:
                queue.popleft()
        span_kw = self._max[0][1] - self._min[0][1]
        if span_kw > self.largest_kw + _EPS_KW:
            self.largest_kw, self.at_s = span_kw, t_s
        if self.limit_kw is not None:
            above = span_kw > self.limit_kw + _EPS_KW
            if above and not self._above:
                self.violations = (self.violations or 0) + 1
            self._above = above


@dataclass(frozen=True, slots=True)
class RampLimits:
    """The yardstick the import is judged against, kW per window (None: not judged)."""

    kw_per_10s: float | None = None
    kw_per_min: float | None = None


class ImportRamps:
    """The 10-s and 60-s windows side by side."""

    def __init__(self, limits: RampLimits) -> None:
        self.limits = limits
        self.ten = WindowSpan(10.0, limits.kw_per_10s)
        self.sixty = WindowSpan(60.0, limits.kw_per_min)

    def observe(self, t_s: float, kw: float) -> None:
        self.ten.observe(t_s, kw)
        self.sixty.observe(t_s, kw)
