"""How fast the site's import moved: the largest change within any 10 s and any 60 s, and how often it
moved faster than a ramp limit (issue 23: what a grid operator scrutinises in a large load).

Streaming, in bounded memory: a sliding maximum and minimum over the window (monotone deques hold at
most the samples inside it), never the whole run. The engine samples the site's power at every instant
twice, before the inputs due then and after the control cycle, so a step that comes after a long quiet
hold is measured against the held value (power is constant between two quiet instants and linear
within a ramping step, so its extremes are at the samples).
"""

from __future__ import annotations

from dataclasses import dataclass

from mullet.daemon.core.import_ramp import WindowSpan

__all__ = ["ImportRamps", "RampLimits", "WindowSpan"]


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
