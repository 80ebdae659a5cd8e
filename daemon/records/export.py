"""Interval data from the journal: energy and mean power of the site, mining and AI per 15-minute (or
1-minute) interval, as the CSV an aggregator or a QSE ingests (`mulletd export`, docs/reports.md).

Energy integrates the journaled power samples (`site_power` rows, one a second by default): each is
held until the next, for at most `max_gap_s`; a longer silence, or a reading that was unknown, is a
gap, never zero, and each channel's coverage says what share of the interval its figures stand on.
Intervals are aligned to the clock and named by their end, as ERCOT names settlement intervals
("interval ending"), here in UTC. The meter's own kWh register, which the journal does not keep, is
the settlement figure; these are the site's own evidence beside it.

Rows are read from the database in order and written as each interval closes: a year of 1-minute
intervals never sits in memory.
"""

from __future__ import annotations

import csv
import math
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

CHANNELS = (("site", "kw"), ("mining", "mining_kw"), ("ai", "ai_kw"))
HEADER = ["interval_ending_utc", "interval_s"] + [
    f"{name}_{what}" for name, _key in CHANNELS for what in ("kwh", "kw_mean", "coverage")
]
DEFAULT_MAX_GAP_S = 10.0


@dataclass
class _Accumulator:
    """The open interval's energy (kWh) and covered seconds per channel."""

    start_s: float
    kwh: list[float] = field(default_factory=lambda: [0.0] * len(CHANNELS))
    covered_s: list[float] = field(default_factory=lambda: [0.0] * len(CHANNELS))

    def next(self, interval_s: float) -> None:
        self.start_s += interval_s
        self.kwh = [0.0] * len(CHANNELS)
        self.covered_s = [0.0] * len(CHANNELS)


@dataclass(frozen=True, slots=True)
class IntervalRow:
    end_s: float
    interval_s: float
    kwh: tuple[float | None, ...]  # per channel; None: no coverage at all (unknown, never zero)
    mean_kw: tuple[float | None, ...]
    coverage: tuple[float, ...]

    def cells(self) -> list[str]:
        stamp = datetime.fromtimestamp(self.end_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = [stamp, f"{self.interval_s:g}"]
        for kwh, mean_kw, coverage in zip(self.kwh, self.mean_kw, self.coverage, strict=True):
            out += [_num(kwh), _num(mean_kw), f"{coverage:.4f}"]
        return out


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def intervals(
    samples: Iterable[tuple[float, tuple[float | None, ...]]],
    from_s: float,
    to_s: float,
    interval_s: float,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
) -> Iterator[IntervalRow]:
    """Every clock-aligned interval overlapping [from_s, to_s), from (wall_s, kW per channel) samples in
    time order. A sample's kW holds until the next sample, at most `max_gap_s`."""
    first_s = math.floor(from_s / interval_s) * interval_s
    last_end_s = math.ceil(to_s / interval_s) * interval_s
    current = _Accumulator(first_s)
    previous: tuple[float, tuple[float | None, ...]] | None = None
    for wall_s, values in samples:
        if previous is not None:
            yield from _hold(current, previous, min(wall_s, previous[0] + max_gap_s), interval_s, last_end_s)
        previous = (wall_s, values)
        if wall_s >= last_end_s:
            break
    if previous is not None:
        yield from _hold(current, previous, min(previous[0] + max_gap_s, last_end_s), interval_s, last_end_s)
    while current.start_s < last_end_s:  # the intervals after the last sample: no coverage
        yield _close(current, interval_s)
        current.next(interval_s)


def _hold(
    current: _Accumulator,
    sample: tuple[float, tuple[float | None, ...]],
    until_s: float,
    interval_s: float,
    last_end_s: float,
) -> Iterator[IntervalRow]:
    """Credit `sample`'s kW from its time to `until_s`, closing every interval it crosses."""
    t_s, values = sample
    t_s = max(t_s, current.start_s)
    while t_s < until_s:
        end_s = current.start_s + interval_s
        if t_s >= end_s:
            if end_s > last_end_s:
                return
            yield _close(current, interval_s)
            current.next(interval_s)
            continue
        stop_s = min(until_s, end_s)
        for index, kw in enumerate(values):
            if kw is not None and math.isfinite(kw):
                current.kwh[index] += kw * (stop_s - t_s) / 3600.0
                current.covered_s[index] += stop_s - t_s
        t_s = stop_s


def _close(current: _Accumulator, interval_s: float) -> IntervalRow:
    kwh: list[float | None] = []
    mean_kw: list[float | None] = []
    for energy, covered_s in zip(current.kwh, current.covered_s, strict=True):
        kwh.append(energy if covered_s > 0 else None)
        mean_kw.append(energy * 3600.0 / covered_s if covered_s > 0 else None)
    coverage = tuple(min(1.0, c / interval_s) for c in current.covered_s)
    return IntervalRow(current.start_s + interval_s, interval_s, tuple(kwh), tuple(mean_kw), coverage)


def journal_samples(
    db: sqlite3.Connection, from_s: float, to_s: float, max_gap_s: float
) -> Iterator[tuple[float, tuple[float | None, ...]]]:
    """The journal's `site_power` rows from just before `from_s` (one may hold into it) to `to_s`."""
    keys = ", ".join(f"json_extract(data, '$.{key}')" for _name, key in CHANNELS)
    cursor = db.execute(
        f"SELECT wall_s, {keys} FROM journal WHERE kind = 'site_power' AND wall_s >= ? AND wall_s < ?"
        " ORDER BY wall_s",
        (from_s - max_gap_s, to_s),
    )
    for wall_s, *values in cursor:
        yield float(wall_s), tuple(None if v is None else float(v) for v in values)


def write_csv(rows: Iterable[IntervalRow], out: IO[str]) -> int:
    """The rows as CSV with its header; returns how many rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    count = 0
    for row in rows:
        writer.writerow(row.cells())
        count += 1
    return count
