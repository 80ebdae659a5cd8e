"""Compliance report for one grid obligation, computed from the journal alone.

Grid programs pay for proof: what the site drew before the notice (the baseline, by the program's
method), what it drew in each settlement interval of the deployment, how long it took to get under the
target, and whether the program's test passes. Everything here is read from the journal (accepted
event, site power samples, commands), so a report can be made after a crash or on another machine.
The scoring itself (ERCOT ERS and the other programs' rules) is policies/scoring.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mullet.policies import baselines
from mullet.policies.baselines import Baseline, IntervalMean
from mullet.policies.scoring import (
    BASELINE_METHODS,
    HISTORY_METHODS,
    RULES,
    BaselineMethod,
    Interval,
    ReportRule,
    Sample,
    Score,
    median_spacing,
    rule_for,
    score,
)

if TYPE_CHECKING:
    from mullet.daemon.config import Config

__all__ = [
    "BASELINE_METHODS",
    "HISTORY_METHODS",
    "RULES",
    "BaselineMethod",
    "Command",
    "EventRecord",
    "Interval",
    "Report",
    "ReportError",
    "ReportRule",
    "Sample",
    "TripCurve",
    "build_report",
    "compute_report",
    "rule_for",
]

# Entry kinds that are commands to devices (or their outcome), listed in a report.
COMMAND_KINDS = ("setpoint", "tenant_setpoint", "trip", "trip_settled", "escalation", "outlets_restored")


class ReportError(Exception):
    """The journal cannot give a report for this id (not accepted, or not there); says why."""


@dataclass(frozen=True, slots=True)
class Command:
    wall_s: float
    kind: str
    subject: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TripCurve:
    """A trip's meter samples at the poll rate (a `trip_curve` entry joined to its `trip` by seq)."""

    seq: int
    stage: int
    cause: str
    trip_wall_s: float  # when the trip was journaled: the curve's 0 is its triggering sample
    samples: list[tuple[float, float, float]]  # (seconds from the trip, kW, Hz)

    @property
    def spacing_s(self) -> float | None:
        """The median gap between samples: the finest time the curve can prove."""
        gaps = sorted(round(b[0] - a[0], 4) for a, b in zip(self.samples, self.samples[1:], strict=False))
        return gaps[len(gaps) // 2] if gaps else None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What the journal holds about one accepted event."""

    event: dict[str, Any]
    obligation: dict[str, Any]
    notice_s: float  # when the daemon accepted (journaled) it
    end_s: float | None  # recall (cancel), expiry, or the scheduled end; None while in force
    ended_by: str | None
    drill: bool = False  # journaled as a `drill` (mulletd drill), never a grid event


@dataclass
class Report:
    event_id: str
    program: str
    kind: str
    drill: bool
    rule: ReportRule
    baseline_method: BaselineMethod
    baseline_kw: float | None
    baseline_detail: str
    target_kw: float | None
    obligated_kw: float | None
    notice_s: float
    deploy_s: float
    deadline_s: float | None
    end_s: float | None
    ended_by: str | None
    in_progress: bool
    scored_from_s: float
    scored_until_s: float
    time_to_target_s: float | None
    met_deadline: bool | None
    intervals: list[Interval]
    performance_factor: float | None
    shortfall_kwh: float | None
    max_shortfall_kw: float | None
    passed: bool
    verdict: list[str]
    sample_spacing_s: float | None
    samples: list[Sample] = field(repr=False)
    commands: list[Command] = field(repr=False)
    event: dict[str, Any] = field(repr=False)
    scored: bool = True  # False: nothing to score (ended inside its ramp, or a base point)
    trip_curves: list[TripCurve] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """Everything but the raw samples, JSON-ready."""
        return {
            "event_id": self.event_id,
            "program": self.program,
            "kind": self.kind,
            "drill": self.drill,
            "event": self.event,
            "rule": {
                "baseline": self.rule.baseline,
                "interval_s": self.rule.interval_s,
                "baseline_intervals": self.rule.baseline_intervals,
                "pass_factor": self.rule.pass_factor,
                "source": self.rule.source,
            },
            "baseline_method": self.baseline_method,
            "baseline_kw": _r(self.baseline_kw),
            "baseline_detail": self.baseline_detail,
            "target_kw": _r(self.target_kw),
            "obligated_reduction_kw": _r(self.obligated_kw),
            "notice_s": self.notice_s,
            "deploy_s": self.deploy_s,
            "deadline_s": self.deadline_s,
            "end_s": self.end_s,
            "ended_by": self.ended_by,
            "in_progress": self.in_progress,
            "scored_from_s": self.scored_from_s,
            "scored_until_s": self.scored_until_s,
            "time_to_target_s": _r(self.time_to_target_s),
            "met_deadline": self.met_deadline,
            "performance_factor": _r(self.performance_factor, 4),
            "shortfall_kwh": _r(self.shortfall_kwh),
            "max_shortfall_kw": _r(self.max_shortfall_kw),
            "passed": self.passed,
            "scored": self.scored,
            "verdict": self.verdict,
            "sample_spacing_s": _r(self.sample_spacing_s),
            "samples": len(self.samples),
            "intervals": [
                {
                    "start_s": i.start_s,
                    "end_s": i.end_s,
                    "samples": i.samples,
                    "average_kw": _r(i.average_kw),
                    "delivered_kw": _r(i.delivered_kw),
                    "performance_factor": _r(i.performance_factor, 4),
                    "shortfall_kw": _r(i.shortfall_kw),
                    "shortfall_kwh": _r(i.shortfall_kwh),
                    "baseline_kw": _r(i.baseline_kw),
                    "target_kw": _r(i.target_kw),
                }
                for i in self.intervals
            ],
            "commands": [
                {"wall_s": c.wall_s, "kind": c.kind, "subject": c.subject, **c.data} for c in self.commands
            ],
            "trip_curves": [
                {"seq": c.seq, "stage": c.stage, "samples": len(c.samples), "spacing_s": c.spacing_s}
                for c in self.trip_curves
            ],
        }


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ---- reading the journal ----------------------------------------------------------------------


def open_journal(path: str | Path) -> sqlite3.Connection:
    """Open for reading only; works beside a running daemon (WAL) and after a crash (the WAL is
    replayed on open)."""
    if not Path(path).exists():
        raise ReportError(f"{path}: no journal there")
    db = sqlite3.connect(path)
    db.execute("PRAGMA query_only=1")
    return db


def load_event(db: sqlite3.Connection, event_id: str) -> EventRecord:
    accepted: tuple[float, dict[str, Any]] | None = None
    end: tuple[float, str] | None = None
    drill = False
    for wall_s, kind, raw in db.execute(
        "SELECT wall_s, kind, data FROM journal WHERE kind IN ('grid_event', 'drill') ORDER BY id"
    ):
        data = json.loads(raw)
        if data.get("event", {}).get("id") == event_id and data.get("obligation") and accepted is None:
            accepted = (wall_s, data)
            drill = kind == "drill"
        elif data.get("cancels") == event_id and accepted is not None and end is None:
            end = (wall_s, f"cancel {data['event']['id']!r}")
    if accepted is None:
        rejected = db.execute(
            "SELECT data FROM journal WHERE kind = 'grid_event_rejected'"
            " AND (json_extract(data, '$.event.id') = ? OR json_extract(data, '$.id') = ?) ORDER BY id",
            (event_id, event_id),
        ).fetchone()
        if rejected is not None:
            raise ReportError(f"event {event_id!r} was refused: {json.loads(rejected[0]).get('reason')}")
        raise ReportError(f"no accepted event {event_id!r} in the journal")
    notice_s, data = accepted
    obligation = data["obligation"]
    if end is None:
        ended = db.execute(
            "SELECT wall_s FROM journal WHERE kind = 'obligation_ended' AND subject = ? ORDER BY id",
            (event_id,),
        ).fetchone()
        if ended is not None:
            end = (float(ended[0]), "obligation_ended")
        elif obligation.get("end_s") is not None and not obligation.get("explicit_recall"):
            end = (float(obligation["end_s"]), "scheduled end")
    return EventRecord(
        event=data["event"],
        obligation=obligation,
        notice_s=float(notice_s),
        end_s=None if end is None else end[0],
        ended_by=None if end is None else end[1],
        drill=drill,
    )


def load_samples(db: sqlite3.Connection, from_s: float, until_s: float) -> list[Sample]:
    rows = db.execute(
        "SELECT wall_s, json_extract(data, '$.kw') FROM journal"
        " WHERE wall_s >= ? AND wall_s <= ? AND +kind = 'site_power' ORDER BY wall_s",
        (from_s, until_s),
    )
    return [Sample(float(w), float(kw)) for w, kw in rows if kw is not None and math.isfinite(kw)]


def load_commands(db: sqlite3.Connection, event_id: str, from_s: float, until_s: float) -> list[Command]:
    kinds = ", ".join("?" * len(COMMAND_KINDS))
    rows = db.execute(
        f"SELECT wall_s, kind, subject, data FROM journal WHERE kind IN ({kinds})"
        " AND wall_s >= ? AND wall_s <= ? ORDER BY id",
        (*COMMAND_KINDS, from_s, until_s),
    )
    commands = [Command(float(w), k, s, json.loads(d)) for w, k, s, d in rows]
    # A trip fired by this event is its command even if it was journaled just before the event.
    trips = db.execute(
        "SELECT wall_s, kind, subject, data FROM journal WHERE kind = 'trip'"
        " AND json_extract(data, '$.cause') = ? AND wall_s < ? ORDER BY id",
        (event_id, from_s),
    )
    return [Command(float(w), k, s, json.loads(d)) for w, k, s, d in trips] + commands


MAX_TRIP_CURVES = 64  # per report: an event trips each stage once or a few times


def load_trip_curves(db: sqlite3.Connection, commands: list[Command]) -> list[TripCurve]:
    """The `trip_curve` entry of each `trip` command, joined by seq: the first journaled at or after
    the trip (it is written once its window closes, seconds later) within 10 minutes."""
    curves = []
    for trip in [c for c in commands if c.kind == "trip" and "seq" in c.data][:MAX_TRIP_CURVES]:
        row = db.execute(
            "SELECT data FROM journal WHERE kind = 'trip_curve' AND json_extract(data, '$.seq') = ?"
            " AND wall_s >= ? AND wall_s <= ? ORDER BY id LIMIT 1",
            (trip.data["seq"], trip.wall_s - 1.0, trip.wall_s + 600.0),
        ).fetchone()
        if row is None:
            continue
        data = json.loads(row[0])
        samples = [s for s in map(_curve_sample, data.get("samples") or []) if s is not None]
        curves.append(
            TripCurve(
                int(data["seq"]), int(data.get("stage", 0)), str(data.get("cause", "")), trip.wall_s, samples
            )
        )
    return curves


def _curve_sample(raw: Any) -> tuple[float, float, float] | None:
    """[s from the trip, kW, Hz]; a sample with an unknown or malformed kW is left out (never 0)."""
    try:
        t, kw, hz = raw
        sample = (float(t), float(kw), math.nan if hz is None else float(hz))
    except (TypeError, ValueError):
        return None
    return sample if math.isfinite(sample[0]) and math.isfinite(sample[1]) else None


def last_wall_s(db: sqlite3.Connection) -> float | None:
    row = db.execute("SELECT MAX(wall_s) FROM journal").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def program_baseline(program: str, config: Config | None) -> BaselineMethod:
    """The program's baseline method: the config's `[[programs]] baseline` for it, else the rule's."""
    if config is not None:
        for section in config.programs:
            if section.name.casefold() == program.casefold() and section.baseline is not None:
                return section.baseline
    return rule_for(program).baseline


def build_report(
    path: str | Path,
    event_id: str,
    *,
    baseline: BaselineMethod | None = None,
    config: Config | None = None,
) -> Report:
    """Read the journal at `path` and compute the report for `event_id`. The baseline method:
    `baseline`, else the config's choice for the program, else the program's rule; days are the
    config's `site.timezone` (UTC without a config)."""
    try:
        return _build_report(path, event_id, baseline, config)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A hand-edited or foreign journal: a clear refusal, never a traceback.
        raise ReportError(
            f"event {event_id!r}: its journal entries are malformed ({type(exc).__name__}: {exc})"
        ) from exc


def _build_report(
    path: str | Path, event_id: str, baseline: BaselineMethod | None, config: Config | None
) -> Report:
    db = open_journal(path)
    try:
        record = load_event(db, event_id)
        program = str(record.event.get("program", "generic"))
        rule = rule_for(program)
        method = baseline or program_baseline(program, config)
        lookback_s = rule.interval_s * (rule.baseline_intervals + 1)
        horizon_s = record.end_s if record.end_s is not None else (last_wall_s(db) or record.notice_s)
        samples = load_samples(db, record.notice_s - lookback_s, horizon_s + rule.interval_s)
        # Commands from the notice until an interval after the end, so the restore shows.
        commands = load_commands(db, event_id, record.notice_s - 1.0, horizon_s + rule.interval_s)
        history = None
        if method in HISTORY_METHODS:
            tz = config.site.timezone if config is not None else "UTC"
            history = history_baseline(
                db, record, method, rule, horizon_s, tz, median_spacing(samples) or 1.0
            )
        trip_curves = load_trip_curves(db, commands)
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: the journal cannot be read: {exc}") from exc
    finally:
        db.close()
    report = compute_report(
        record, samples, commands, rule, method, now_s=horizon_s, history_baseline=history
    )
    report.trip_curves = trip_curves
    return report


# ---- the history baselines (preceding days) -----------------------------------------------------


def deploy_s(record: EventRecord) -> float:
    return max(record.notice_s, float(record.obligation.get("start_s") or record.notice_s))


def history_baseline(
    db: sqlite3.Connection,
    record: EventRecord,
    method: BaselineMethod,
    rule: ReportRule,
    horizon_s: float,
    tz: dt.tzinfo | str,
    spacing_s: float,
) -> Baseline:
    """`middle_8_of_10` or `regression` for the event's scored intervals, with the event-day
    adjustment, from the preceding days' interval means (GROUP BY in SQLite, never the samples)."""
    scored_from_s = deploy_s(record) + float(record.obligation.get("deadline_s") or 0.0)
    window = baselines.window_slots(scored_from_s, horizon_s, rule.interval_s)
    if not window:
        return Baseline(None, "no interval in the event window")
    adjustment = baselines.adjustment_slots(record.notice_s, rule.interval_s)
    event_day = baselines.local_day(record.notice_s, tz)
    like = method == "middle_8_of_10"
    lookback_days = baselines.LIKE_DAY_LOOKBACK_DAYS if like else baselines.REGRESSION_LOOKBACK_DAYS
    want = baselines.LIKE_DAYS if like else baselines.REGRESSION_DAYS
    first_s = baselines.on_day(adjustment[0], event_day, event_day - dt.timedelta(days=lookback_days), tz)
    excluded = event_days(db, first_s - 86_400.0, record.notice_s, tz)
    candidates = baselines.candidate_days(event_day, excluded, like=like, lookback_days=lookback_days)
    slots = sorted({*adjustment, *window})
    # The event day's actual load before the notice, then the most recent candidate days, as many as
    # are still wanted at a time: one GROUP BY when they are all covered, never the whole lookback.
    event_day_range = [(adjustment[0], adjustment[-1] + rule.interval_s)]
    history: dict[float, IntervalMean] = {}
    found = read = 0
    while found < want and read < len(candidates):
        batch = candidates[read : read + want - found]
        ranges = baselines.history_ranges(event_day, slots, tz, batch, rule.interval_s)
        history.update(
            interval_means(db, ranges + (event_day_range if read == 0 else []), rule.interval_s, spacing_s)
        )
        read += len(batch)
        found += sum(baselines.covered(history, event_day, day, window, tz) for day in batch)
    find = baselines.middle_8_of_10 if method == "middle_8_of_10" else baselines.regression
    unadjusted = find(
        history, event_day=event_day, window=window, excluded_days=excluded, tz=tz, extra=adjustment
    )
    return baselines.adjusted(unadjusted, history, adjustment)


def interval_means(
    db: sqlite3.Connection, ranges: list[tuple[float, float]], interval_s: float, spacing_s: float
) -> dict[float, IntervalMean]:
    """Mean kW and coverage (samples x `spacing_s` / interval) of each interval touched by `ranges`,
    grouped in SQLite over the `site_power` rows (the journal_wall index finds each range)."""
    out: dict[float, IntervalMean] = {}
    # SQLite's limit on host parameters is 32766 (3.32+); a chunk of ranges per query stays far below.
    for k in range(0, len(ranges), 400):
        chunk = ranges[k : k + 400]
        where = " OR ".join("(wall_s >= ? AND wall_s < ?)" for _ in chunk)
        rows = db.execute(
            f"SELECT CAST(wall_s / ? AS INTEGER) AS slot, AVG(kw), COUNT(kw) FROM ("
            f"SELECT wall_s, json_extract(data, '$.kw') AS kw FROM journal"
            f" WHERE +kind = 'site_power' AND ({where})) GROUP BY slot",
            (interval_s, *(bound for r in chunk for bound in r)),
        )
        for slot, mean_kw, count in rows:
            if count and mean_kw is not None and math.isfinite(mean_kw):
                out[slot * interval_s] = IntervalMean(
                    float(mean_kw), min(1.0, count * spacing_s / interval_s)
                )
    return out


def event_days(db: sqlite3.Connection, from_s: float, until_s: float, tz: dt.tzinfo | str) -> set[dt.date]:
    """Local days with an accepted grid event or drill in force (its notice to its end or recall),
    in [from_s, until_s): like days and regression days leave them out."""
    days: set[dt.date] = set()
    for wall_s, raw in db.execute(
        "SELECT wall_s, data FROM journal"
        " WHERE kind IN ('grid_event', 'drill') AND wall_s >= ? AND wall_s < ?",
        (from_s, until_s),
    ):
        data = json.loads(raw)
        obligation = data.get("obligation")
        if data.get("cancels") is not None:
            days.add(baselines.local_day(wall_s, tz))
        elif obligation:
            first = baselines.local_day(wall_s, tz)
            end_s = obligation.get("end_s")
            last = baselines.local_day(float(end_s), tz) if isinstance(end_s, int | float) else first
            span = min(max(0, (last - first).days), 7)  # bounded: a week at most
            days.update(first + dt.timedelta(days=n) for n in range(span + 1))
    return days


# ---- the report ------------------------------------------------------------------------------


def _not_scored(deploy_s: float, end_s: float) -> Score:
    """A base point: its deviation is settled on SCED intervals, not by the ERS baseline method; no
    performance factor is given (`mulletd replay` reports its tracking per 5-minute interval)."""
    return Score(
        baseline_kw=None,
        baseline_detail="none: a base point has no baseline",
        target_kw=None,
        obligated_kw=None,
        scored_from_s=deploy_s,
        scored_until_s=end_s,
        time_to_target_s=None,
        met_deadline=None,
        intervals=[],
        performance_factor=None,
        shortfall_kwh=None,
        max_shortfall_kw=None,
        passed=False,
        verdict=[
            "not scored: base-point deviation is not scored by the ERS baseline method;"
            " no performance factor is given"
        ],
        sample_spacing_s=None,
        scored=False,
    )


def compute_report(
    record: EventRecord,
    samples: list[Sample],
    commands: list[Command],
    rule: ReportRule,
    method: BaselineMethod,
    *,
    now_s: float,
    history_baseline: Baseline | None = None,
) -> Report:
    """The report from the journal's facts. `now_s` ends the scored window of an event still in force
    (the journal's newest entry); `history_baseline`: a HISTORY_METHODS method's per-interval baseline."""
    obligation = record.obligation
    deployed_s = deploy_s(record)
    deadline_s = obligation.get("deadline_s")
    in_progress = record.end_s is None
    kind = str(obligation.get("kind", record.event.get("kind")))
    fixed = obligation.get("baseline_kw")
    end_s = record.end_s if record.end_s is not None else now_s
    if kind == "base_point":
        result = _not_scored(deployed_s, end_s)
    else:
        result = score(
            kind=kind,
            kw=float(obligation["kw"]),
            fixed_baseline_kw=None if fixed is None else float(fixed),
            notice_s=record.notice_s,
            deploy_s=deployed_s,
            deadline_s=deadline_s,
            end_s=end_s,
            in_progress=in_progress,
            samples=samples,
            rule=rule,
            method=method,
            history_baseline=history_baseline,
        )
    return Report(
        event_id=str(record.event["id"]),
        program=str(record.event.get("program", "generic")),
        kind=kind,
        drill=record.drill,
        rule=rule,
        baseline_method=method,
        baseline_kw=result.baseline_kw,
        baseline_detail=result.baseline_detail,
        target_kw=result.target_kw,
        obligated_kw=result.obligated_kw,
        notice_s=record.notice_s,
        deploy_s=deployed_s,
        deadline_s=deadline_s,
        end_s=record.end_s,
        ended_by=record.ended_by,
        in_progress=in_progress,
        scored_from_s=result.scored_from_s,
        scored_until_s=result.scored_until_s,
        time_to_target_s=result.time_to_target_s,
        met_deadline=result.met_deadline,
        intervals=result.intervals,
        performance_factor=result.performance_factor,
        shortfall_kwh=result.shortfall_kwh,
        max_shortfall_kw=result.max_shortfall_kw,
        passed=result.passed,
        verdict=result.verdict + ([] if result.passed else unshed_groups(commands)),
        sample_spacing_s=result.sample_spacing_s,
        samples=samples,
        commands=commands,
        event=record.event,
        scored=result.scored,
    )


def unshed_groups(commands: list[Command]) -> list[str]:
    """Where a shortfall came from: each group whose shed was not confirmed and whose escalation
    failed during the event, once, with the last reason (the journal's `escalation` rows)."""
    failed: dict[str, str] = {}
    for command in commands:
        if command.kind == "escalation" and command.data.get("result") != "ok":
            failed[str(command.subject)] = str(command.data.get("detail") or command.data.get("result"))
    return [
        f"group {group_id} did not shed: its escalation failed ({why})" for group_id, why in failed.items()
    ]
