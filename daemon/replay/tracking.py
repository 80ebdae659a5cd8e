"""How closely mining followed its base points (a CLR's SCED dispatch), per 5-minute interval aligned
to the clock: the base point, mean mining kW, mean absolute error, and the same over the part of the
interval after mining first came within the deadband + 2 % of the base point ("settled"), so how well
it tracks once the restore ramp allows can be read off.

Mining kW is the physics' draw, linear within a step (ramps are linear), so each error is integrated
exactly, crossings of the base point and of the settling band included. The engine stops at every
5-minute boundary while a scenario has base points, so a step never straddles one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SCED_INTERVAL_S = 300.0
SETTLE_FRACTION = 0.02  # of the base point, beyond the deadband


def abs_integral(a: float, b: float, dt_s: float) -> float:
    """The integral of |e| over `dt_s` for e linear from `a` to `b`."""
    if a * b >= 0:
        return abs(a + b) / 2.0 * dt_s
    return (a * a + b * b) / (2.0 * (abs(a) + abs(b))) * dt_s


@dataclass
class TrackingRow:
    """One base point within one 5-minute interval: integrals in kW x s."""

    start_s: float
    event_id: str
    base_point_kw: float
    band_kw: float
    seconds: float = 0.0
    mining_kws: float = 0.0
    error_kws: float = 0.0
    settled_at_s: float | None = None
    settled_s: float = 0.0
    settled_mining_kws: float = 0.0
    settled_error_kws: float = 0.0

    def add(self, t0_s: float, dt_s: float, m0_kw: float, m1_kw: float) -> None:
        bp = self.base_point_kw
        a, b = m0_kw - bp, m1_kw - bp
        self.seconds += dt_s
        self.mining_kws += (m0_kw + m1_kw) / 2.0 * dt_s
        self.error_kws += abs_integral(a, b, dt_s)
        if self.settled_at_s is None:
            entry = _entry(a, b, self.band_kw)
            if entry is None:
                return
            self.settled_at_s = t0_s + entry * dt_s
            a = a + (b - a) * entry
            m0_kw = a + bp
            dt_s *= 1.0 - entry
        self.settled_s += dt_s
        self.settled_mining_kws += (m0_kw + m1_kw) / 2.0 * dt_s
        self.settled_error_kws += abs_integral(a, b, dt_s)


def _entry(a: float, b: float, band_kw: float) -> float | None:
    """The fraction of the step at which an error linear from `a` to `b` first enters |e| <= band."""
    if abs(a) <= band_kw:
        return 0.0
    if abs(b) > band_kw and a * b > 0:
        return None  # stays outside on one side
    target = band_kw if a > 0 else -band_kw
    return (a - target) / (a - b)


class Tracker:
    """The rows, in time order, of every base point the replay was under."""

    def __init__(self, deadband_kw: float) -> None:
        self.deadband_kw = deadband_kw
        self.rows: list[TrackingRow] = []

    def add(self, t0_s: float, dt_s: float, event_id: str, kw: float, m0_kw: float, m1_kw: float) -> None:
        start_s = math.floor(t0_s / SCED_INTERVAL_S) * SCED_INTERVAL_S
        rows = self.rows
        if not rows or rows[-1].start_s != start_s or rows[-1].event_id != event_id:
            band_kw = self.deadband_kw + SETTLE_FRACTION * kw
            rows.append(TrackingRow(start_s, event_id, kw, band_kw))
        rows[-1].add(t0_s, dt_s, m0_kw, m1_kw)

    def summary(self) -> list[dict[str, Any]]:
        return [_row(row) for row in self.rows]


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits) + 0.0


def _pct(error_kw: float | None, base_kw: float) -> float | None:
    return None if error_kw is None or base_kw <= 0 else _round(100.0 * error_kw / base_kw, 3)


def _row(row: TrackingRow) -> dict[str, Any]:
    mean_kw = row.mining_kws / row.seconds if row.seconds > 0 else None
    mae_kw = row.error_kws / row.seconds if row.seconds > 0 else None
    settled_kw = row.settled_mining_kws / row.settled_s if row.settled_s > 0 else None
    settled_mae_kw = row.settled_error_kws / row.settled_s if row.settled_s > 0 else None
    return {
        "interval_start_s": row.start_s,
        "event_id": row.event_id,
        "base_point_kw": _round(row.base_point_kw),
        "seconds": _round(row.seconds),
        "mining_kw": _round(mean_kw),
        "mae_kw": _round(mae_kw),
        "mae_pct": _pct(mae_kw, row.base_point_kw),
        "settle_band_kw": _round(row.band_kw),
        "settled_after_s": None if row.settled_at_s is None else _round(row.settled_at_s - row.start_s),
        "settled_mining_kw": _round(settled_kw),
        "settled_mae_kw": _round(settled_mae_kw),
        "settled_mae_pct": _pct(settled_mae_kw, row.base_point_kw),
    }
