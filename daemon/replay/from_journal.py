"""A replay scenario from a site's own journal: the period it recorded, re-run under any configuration
("what would these settings have done last month"). docs/replay.md, "Replaying a journal".

Read from the journal (opened read-only, so a copy or a running daemon's file will do):
- the period: the span of its `site_power` rows (recovery kinds outlive them under retention), cut to
  `since_s`/`until_s`;
- prices: `price` rows (written when the price changes), a step series;
- AI demand: `site_power.ai_kw`, the AI tenants' total, averaged per minute, as the pseudo-tenant "*"
  that the engine splits over the configured tenants by reserved kW (the journal has no config);
- grid events: `grid_event` rows (accepted events and cancels) and refused ones that carry the event,
  each delivered at its row's time, so a changed configuration decides them again;
- frequency: each under-frequency `trip` at its confirming hz from `TRIP_LEAD_S` before the trip until
  the `trip_released` row, so the trigger fires again;
- recorded site power (`site_power.kw`, per minute) for recorded-against-replayed figures.
Rows with a missing, non-finite or malformed field are skipped and counted (`Scenario.sources`), not
fatal: one bad row must not make a month unreplayable, and the count says how much was left out.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mullet.daemon.records.journal import JournalError, open_read_only
from mullet.daemon.replay.scenario import (
    MAX_DURATION_S,
    MAX_ROWS,
    NOMINAL_HZ,
    PhysicsSection,
    Scenario,
    ScenarioError,
)
from mullet.drivers.protocol import GridEvent

# The AI total's pseudo-tenant: the engine splits it over the configured tenants (engine.py).
ALL_TENANTS = "*"
# Site power and AI demand are averaged over this long: a month of 1 s rows is 2.6 million steps to
# replay, a month of minutes 43,200, and the controller sees AI demand change no faster than this anyway.
POWER_RESOLUTION_S = 60.0
# A recorded trip's frequency starts this long before the trip: long enough for any trigger the config
# allows (confirm samples x pickup) to confirm it again, short next to the trip's hold.
TRIP_LEAD_S = 2.0
_EDGE_S = 1e-3  # a frequency step: the old level until this long before the new one
_KINDS = ("site_power", "price", "grid_event", "grid_event_rejected", "trip", "trip_released")


def scenario_from_journal(
    path: str | Path, *, since_s: float | None = None, until_s: float | None = None
) -> Scenario:
    """The scenario the journal at `path` recorded, from `since_s` until `until_s` (Unix s) when given;
    ScenarioError says what is wrong with a missing, corrupt or empty journal."""
    path = Path(path)
    try:
        db = open_read_only(path)
    except JournalError as exc:
        raise ScenarioError([str(exc)]) from None
    try:
        return _Reader(db, path, since_s, until_s).scenario()
    except sqlite3.DatabaseError as exc:
        raise ScenarioError([f"journal {path}: unreadable part way through: {exc}"]) from None
    finally:
        db.close()


@dataclass
class _Buckets:
    """Per-minute means of a reading, and the minutes without one (unknown, not zero)."""

    points: list[tuple[float, float]] = field(default_factory=list)
    _start_s: float | None = None
    _sum: float = 0.0
    _count: int = 0

    def add(self, t_s: float, value: float) -> None:
        start_s = math.floor(t_s / POWER_RESOLUTION_S) * POWER_RESOLUTION_S
        if start_s != self._start_s:
            self._close(start_s)
            self._start_s, self._sum, self._count = start_s, 0.0, 0
        self._sum += value
        self._count += 1

    def _close(self, next_start_s: float | None) -> None:
        if self._start_s is None or not self._count:
            return
        self.points.append((self._start_s, self._sum / self._count))
        gap_s = self._start_s + POWER_RESOLUTION_S
        if next_start_s is not None and next_start_s > gap_s:
            self.points.append((gap_s, math.nan))  # nothing recorded from here

    def finish(self) -> tuple[tuple[float, float], ...]:
        self._close(None)
        self._start_s = None
        return tuple(self.points)


class _Reader:
    def __init__(self, db: sqlite3.Connection, path: Path, since_s: float | None, until_s: float | None):
        self.db, self.path = db, path
        self.since_s, self.until_s = since_s, until_s
        self.skipped: Counter[str] = Counter()

    def _where(self) -> tuple[str, tuple[float, ...]]:
        clauses, args = [], []
        if self.since_s is not None:
            clauses.append("wall_s >= ?")
            args.append(self.since_s)
        if self.until_s is not None:
            clauses.append("wall_s <= ?")
            args.append(self.until_s)
        return "".join(f" AND {c}" for c in clauses), tuple(args)

    def period(self) -> tuple[float, float]:
        where, args = self._where()
        for kinds in (("site_power",), _KINDS):
            marks = ", ".join("?" * len(kinds))
            row = self.db.execute(
                "SELECT MIN(wall_s), MAX(wall_s) FROM journal"
                f" WHERE kind IN ({marks}) AND typeof(wall_s) IN ('real', 'integer'){where}",
                (*kinds, *args),
            ).fetchone()
            if row is not None and row[0] is not None:
                break
        else:
            within = "" if not args else " in the period asked for"
            raise ScenarioError([f"journal {self.path}: no rows to replay{within} (empty journal?)"])
        start_s = float(row[0]) if self.since_s is None else self.since_s
        end_s = float(row[1]) if self.until_s is None else self.until_s
        problems = []
        if not end_s > start_s:
            problems.append(f"journal {self.path}: the rows cover no time ({start_s:.3f} to {end_s:.3f})")
        elif end_s - start_s > MAX_DURATION_S:
            problems.append(
                f"journal {self.path}: {(end_s - start_s) / 86400:.1f} days is more than"
                f" {MAX_DURATION_S / 86400:g}; replay a part of it (since/until)"
            )
        if problems:
            raise ScenarioError(problems)
        return start_s, end_s

    def rows(self, start_s: float, end_s: float) -> Iterator[tuple[float, str, dict[str, Any]]]:
        """(wall_s, kind, data) in time order, the bad ones counted and left out."""
        marks = ", ".join("?" * len(_KINDS))
        cursor = self.db.execute(
            f"SELECT wall_s, kind, data FROM journal WHERE kind IN ({marks})"
            " AND wall_s >= ? AND wall_s <= ? ORDER BY wall_s, id",
            (*_KINDS, start_s, end_s),
        )
        count = 0
        for wall_s, kind, raw in cursor:
            count += 1
            if count > MAX_ROWS * 10:
                raise ScenarioError(
                    [f"journal {self.path}: more than {MAX_ROWS * 10} rows; replay a part (since/until)"]
                )
            data, t_s = _json(raw), _number(wall_s)
            if t_s is None or data is None:
                self.skipped[kind] += 1
                continue
            yield t_s, kind, data

    def price_before(self, start_s: float) -> tuple[float, float] | None:
        """The price in force at the start: the newest valid `price` row before it."""
        cursor = self.db.execute(
            "SELECT wall_s, data FROM journal WHERE kind = 'price' AND wall_s < ?"
            " ORDER BY wall_s DESC, id DESC",
            (start_s,),
        )
        for _wall_s, raw in cursor:
            value = _number((_json(raw) or {}).get("usd_per_mwh"))
            if value is not None:
                return start_s, value
        return None

    def scenario(self) -> Scenario:
        start_s, end_s = self.period()
        before = self.price_before(start_s)
        prices: list[tuple[float, float]] = [before] if before is not None else []
        site, ai = _Buckets(), _Buckets()
        ai_unknown = 0
        events: list[tuple[float, GridEvent]] = []
        trips: list[tuple[float, float]] = []  # (t, hz) of under-frequency trips
        releases: list[float] = []
        for t_s, kind, data in self.rows(start_s, end_s):
            if kind == "site_power":
                kw, ai_kw = _number(data.get("kw")), _number(data.get("ai_kw"))
                if kw is None or kw < 0 or (data.get("ai_kw") is not None and (ai_kw is None or ai_kw < 0)):
                    self.skipped[kind] += 1
                    continue
                site.add(t_s, kw)
                if ai_kw is None:
                    ai_unknown += 1  # a tenant unknown then (or a journal from before ai_kw)
                else:
                    ai.add(t_s, ai_kw)
            elif kind == "price":
                value = _number(data.get("usd_per_mwh"))
                if value is None:
                    self.skipped[kind] += 1
                elif prices and prices[-1][0] == t_s:
                    prices[-1] = (t_s, value)
                else:
                    prices.append((t_s, value))
            elif kind in ("grid_event", "grid_event_rejected"):
                if kind == "grid_event_rejected" and "event" not in data:
                    continue  # refused before it could be read: nothing to deliver again
                try:
                    events.append((t_s, GridEvent.model_validate(data.get("event"))))
                except ValidationError:
                    self.skipped[kind] += 1
            elif kind == "trip":
                hz = _number(data.get("hz"))
                if data.get("cause") != "frequency":
                    continue  # a grid event's trip: the event, replayed, fires it
                if hz is None or not 40.0 < hz < NOMINAL_HZ:
                    self.skipped[kind] += 1
                else:
                    trips.append((t_s, hz))
            else:  # trip_released
                releases.append(t_s)
        sources = {"journal": str(self.path)}
        if self.skipped:
            detail = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items()))
            sources["journal_skipped"] = f"{sum(self.skipped.values())} rows skipped (bad data: {detail})"
        if ai_unknown:
            sources["journal_ai_unknown"] = (
                f"{ai_unknown} site_power rows without ai_kw: AI demand held from the previous minute"
            )
        demand = ai.finish()
        demand = tuple(p for p in demand if not math.isnan(p[1]))
        return Scenario(
            name=f"journal {self.path.name}",
            start_s=start_s,
            end_s=end_s,
            step_s=None,
            meter_poll_s=None,
            prices=_steps(prices),
            hashprice=(),
            demand_kw={ALL_TENANTS: demand} if demand else {},
            events=tuple(events),
            frequency=frequency_points(trips, releases),
            fourcp=None,
            programs=(),
            physics=PhysicsSection(),
            sources=sources,
            recorded_kw=site.finish(),
        )


def frequency_points(
    trips: list[tuple[float, float]], releases: list[float]
) -> tuple[tuple[float, float], ...]:
    """Frequency steps that trip again: each trip's hz from TRIP_LEAD_S before it until the next release
    (the lowest level where trips overlap), nominal otherwise; a trip without a release in the period
    is back at nominal TRIP_LEAD_S after it (its hold then ends by the trigger's own release)."""
    spans = []
    for t_s, hz in trips:
        until_s = next((r for r in releases if r > t_s), t_s + TRIP_LEAD_S)
        spans.append((t_s - TRIP_LEAD_S, until_s, hz))
    moments = sorted({s for s, _u, _h in spans} | {u for _s, u, _h in spans})
    points: list[tuple[float, float]] = []
    level = NOMINAL_HZ
    for moment in moments:
        new = min((hz for s, u, hz in spans if s <= moment < u), default=NOMINAL_HZ)
        if new == level:
            continue
        if not points or moment - _EDGE_S > points[-1][0]:
            points.append((moment - _EDGE_S, level))
        points.append((moment, new))
        level = new
    return tuple(points)


def _steps(series: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """A step series with each change once (strictly increasing times)."""
    out: list[tuple[float, float]] = []
    for t_s, value in series:
        if out and out[-1][1] == value:
            continue
        if out and out[-1][0] == t_s:
            out[-1] = (t_s, value)
        else:
            out.append((t_s, value))
    return tuple(out)


def _json(raw: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    """A finite number, or None (a string, a bool, NaN, null: not a reading)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
