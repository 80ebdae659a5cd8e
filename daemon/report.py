"""Compliance report for one grid obligation, computed from the journal alone.

Grid programs pay for proof: what the site drew before the notice (the baseline, by the program's
method), what it drew in each settlement interval of the deployment, how long it took to get under the
target, and whether the program's test passes. Everything here is read from the journal (accepted
event, site power samples, commands), so a report can be made after a crash or on another machine.

The scoring follows ERCOT ERS as we read it (docs/programs.md, docs/reports.md): 15-minute intervals
aligned to the clock, the ramp period (the program's deadline after deployment) left out, each
interval's performance factor = delivered reduction / obligated reduction capped to [0, 1], the event's
factor the duration-weighted mean, pass at >= 0.95. Check the current term's Technical Requirements
before filing a report with a market operator.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BaselineMethod = Literal["pre_notice_intervals", "meter_before_event"]
BASELINE_METHODS: tuple[BaselineMethod, ...] = ("pre_notice_intervals", "meter_before_event")
# Entry kinds that are commands to devices (or their outcome), listed in a report.
COMMAND_KINDS = ("setpoint", "tenant_setpoint", "trip", "trip_settled", "escalation", "outlets_restored")


@dataclass(frozen=True, slots=True)
class ReportRule:
    """How a program is scored: its baseline, its settlement interval and its pass mark."""

    baseline: BaselineMethod
    interval_s: float = 900.0
    baseline_intervals: int = 4  # pre_notice_intervals: how many whole intervals before the notice
    pass_factor: float = 0.95
    source: str = ""


# ERS is scored on 15-minute interval data against a baseline with performance factor >= 0.95
# (ERCOT ERS Technical Requirements; docs/programs.md). The other programs are judged against the
# meter just before deployment, which is what the daemon itself fixes as a `reduce` baseline.
_ERS = ReportRule(
    "pre_notice_intervals",
    source="ERCOT ERS: 15-min intervals, baseline from the intervals before the deployment notice, "
    "event performance factor >= 0.95",
)
_DEFAULT = ReportRule(
    "meter_before_event",
    source="meter before deployment; 15-min intervals; performance factor >= 0.95",
)
RULES: dict[str, ReportRule] = {"ers-10": _ERS, "ers-30": _ERS}


def rule_for(program: str) -> ReportRule:
    return RULES.get(program.casefold(), _DEFAULT)


class ReportError(Exception):
    """The journal cannot give a report for this id (not accepted, or not there); says why."""


@dataclass(frozen=True, slots=True)
class Sample:
    wall_s: float
    kw: float


@dataclass(frozen=True, slots=True)
class Command:
    wall_s: float
    kind: str
    subject: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What the journal holds about one accepted event."""

    event: dict[str, Any]
    obligation: dict[str, Any]
    notice_s: float  # when the daemon accepted (journaled) it
    end_s: float | None  # recall (cancel), expiry, or the scheduled end; None while in force
    ended_by: str | None


@dataclass(frozen=True, slots=True)
class Interval:
    start_s: float  # the part of the settlement interval inside the scored window
    end_s: float
    samples: int
    average_kw: float | None  # None: no sample in it (unknown, never zero)
    delivered_kw: float | None
    performance_factor: float  # 0 when unknown
    shortfall_kw: float | None
    shortfall_kwh: float | None


@dataclass
class Report:
    event_id: str
    program: str
    kind: str
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

    def summary(self) -> dict[str, Any]:
        """Everything but the raw samples, JSON-ready."""
        return {
            "event_id": self.event_id,
            "program": self.program,
            "kind": self.kind,
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
                }
                for i in self.intervals
            ],
            "commands": [
                {"wall_s": c.wall_s, "kind": c.kind, "subject": c.subject, **c.data} for c in self.commands
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
    for wall_s, raw in db.execute("SELECT wall_s, data FROM journal WHERE kind = 'grid_event' ORDER BY id"):
        data = json.loads(raw)
        if data.get("event", {}).get("id") == event_id and data.get("obligation") and accepted is None:
            accepted = (wall_s, data)
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
    )


def load_samples(db: sqlite3.Connection, from_s: float, until_s: float) -> list[Sample]:
    rows = db.execute(
        "SELECT wall_s, json_extract(data, '$.kw') FROM journal"
        " WHERE wall_s >= ? AND wall_s <= ? AND kind = 'site_power' ORDER BY wall_s",
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


def last_wall_s(db: sqlite3.Connection) -> float | None:
    row = db.execute("SELECT MAX(wall_s) FROM journal").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def build_report(path: str | Path, event_id: str, *, baseline: BaselineMethod | None = None) -> Report:
    """Read the journal at `path` and compute the report for `event_id`."""
    db = open_journal(path)
    try:
        record = load_event(db, event_id)
        rule = rule_for(str(record.event.get("program", "generic")))
        method = baseline or rule.baseline
        lookback_s = rule.interval_s * (rule.baseline_intervals + 1)
        horizon_s = record.end_s if record.end_s is not None else (last_wall_s(db) or record.notice_s)
        samples = load_samples(db, record.notice_s - lookback_s, horizon_s + rule.interval_s)
        # Commands from the notice until an interval after the end, so the restore shows.
        commands = load_commands(db, event_id, record.notice_s - 1.0, horizon_s + rule.interval_s)
    finally:
        db.close()
    return compute_report(record, samples, commands, rule, method, now_s=horizon_s)


# ---- the computation (pure) -------------------------------------------------------------------


def compute_report(
    record: EventRecord,
    samples: list[Sample],
    commands: list[Command],
    rule: ReportRule,
    method: BaselineMethod,
    *,
    now_s: float,
) -> Report:
    """The report from the journal's facts. `now_s` ends the scored window of an event still in force
    (the journal's newest entry)."""
    obligation = record.obligation
    deploy_s = max(record.notice_s, float(obligation.get("start_s") or record.notice_s))
    deadline_s = obligation.get("deadline_s")
    in_progress = record.end_s is None
    end_s = record.end_s if record.end_s is not None else now_s
    verdict: list[str] = []

    baseline_kw, baseline_detail = _baseline(method, record, samples, rule, deploy_s)
    kind = str(obligation.get("kind", record.event.get("kind")))
    kw = float(obligation["kw"])
    if kind == "limit":
        target_kw: float | None = kw
        obligated_kw = None if baseline_kw is None else baseline_kw - kw
    else:  # reduce: kw below the baseline
        target_kw = None if baseline_kw is None else baseline_kw - kw
        obligated_kw = kw

    time_to_target_s = None
    if target_kw is not None:
        for sample in samples:
            if sample.wall_s >= deploy_s and sample.wall_s <= end_s and sample.kw <= target_kw:
                time_to_target_s = sample.wall_s - deploy_s
                break
    spacing_s = _median_spacing(samples)
    met_deadline: bool | None = None
    if deadline_s is not None and spacing_s is not None and deadline_s < spacing_s:
        verdict.append(
            f"deadline {deadline_s:g} s is finer than the journal's site power samples "
            f"({spacing_s:g} s apart): time to target cannot be judged from them"
        )
    elif deadline_s is not None:
        met_deadline = time_to_target_s is not None and time_to_target_s <= deadline_s
        if not met_deadline:
            reached = "never" if time_to_target_s is None else f"after {time_to_target_s:.1f} s"
            verdict.append(f"target reached {reached}, deadline {deadline_s:g} s")

    # The ramp (the program's deadline) is not scored; the intervals after it are.
    scored_from_s = deploy_s + (deadline_s or 0.0)
    scored_until_s = end_s
    intervals = _intervals(samples, scored_from_s, scored_until_s, rule.interval_s, target_kw, baseline_kw)
    performance_factor = shortfall_kwh = max_shortfall_kw = None
    if baseline_kw is None:
        verdict.append(f"no baseline: {baseline_detail}")
    elif not intervals:
        verdict.append("no interval to score: the event ended within its ramp period")
    else:
        total_s = sum(i.end_s - i.start_s for i in intervals)
        performance_factor = sum(i.performance_factor * (i.end_s - i.start_s) for i in intervals) / total_s
        gaps = [i for i in intervals if i.average_kw is None]
        if gaps:
            verdict.append(f"{len(gaps)} interval(s) without site power samples count as not delivered")
        else:
            shortfall_kwh = sum(i.shortfall_kwh or 0.0 for i in intervals)
            max_shortfall_kw = max(i.shortfall_kw or 0.0 for i in intervals)
        if performance_factor < rule.pass_factor:
            verdict.append(f"performance factor {performance_factor:.3f} < {rule.pass_factor}")
    passed = not verdict and performance_factor is not None
    if in_progress:
        verdict.append("event still in force: scored up to the journal's newest entry")
    return Report(
        event_id=str(record.event["id"]),
        program=str(record.event.get("program", "generic")),
        kind=kind,
        rule=rule,
        baseline_method=method,
        baseline_kw=baseline_kw,
        baseline_detail=baseline_detail,
        target_kw=target_kw,
        obligated_kw=obligated_kw,
        notice_s=record.notice_s,
        deploy_s=deploy_s,
        deadline_s=deadline_s,
        end_s=record.end_s,
        ended_by=record.ended_by,
        in_progress=in_progress,
        scored_from_s=scored_from_s,
        scored_until_s=scored_until_s,
        time_to_target_s=time_to_target_s,
        met_deadline=met_deadline,
        intervals=intervals,
        performance_factor=performance_factor,
        shortfall_kwh=shortfall_kwh,
        max_shortfall_kw=max_shortfall_kw,
        passed=passed,
        verdict=verdict or [f"passed: performance factor >= {rule.pass_factor}, target within deadline"],
        sample_spacing_s=spacing_s,
        samples=samples,
        commands=commands,
        event=record.event,
    )


def _baseline(
    method: BaselineMethod, record: EventRecord, samples: list[Sample], rule: ReportRule, deploy_s: float
) -> tuple[float | None, str]:
    if method == "meter_before_event":
        fixed = record.obligation.get("baseline_kw")
        if fixed is not None:  # a `reduce` event: the daemon fixed it from the meter at acceptance
            return float(fixed), "meter reading fixed at acceptance"
        before = [s for s in samples if s.wall_s <= deploy_s]
        if not before:
            return None, "no site power sample before deployment"
        last = before[-1]
        return last.kw, f"meter {deploy_s - last.wall_s:.1f} s before deployment"
    # The whole intervals before the one the notice falls in.
    notice_interval_s = math.floor(record.notice_s / rule.interval_s) * rule.interval_s
    averages = []
    for n in range(rule.baseline_intervals, 0, -1):
        start_s = notice_interval_s - n * rule.interval_s
        inside = _between(samples, start_s, start_s + rule.interval_s)
        if inside:
            averages.append(sum(inside) / len(inside))
    if not averages:
        return None, f"no site power samples in the {rule.baseline_intervals} intervals before the notice"
    detail = f"average of {len(averages)} of {rule.baseline_intervals} {rule.interval_s / 60:g}-min intervals"
    return sum(averages) / len(averages), detail + " before the notice"


def _intervals(
    samples: list[Sample],
    from_s: float,
    until_s: float,
    interval_s: float,
    target_kw: float | None,
    baseline_kw: float | None,
) -> list[Interval]:
    if target_kw is None or baseline_kw is None or until_s <= from_s:
        return []
    obligated_kw = baseline_kw - target_kw
    out = []
    start_s = math.floor(from_s / interval_s) * interval_s
    while start_s < until_s:
        part_from, part_until = max(start_s, from_s), min(start_s + interval_s, until_s)
        inside = _between(samples, part_from, part_until)
        if inside:
            average_kw = sum(inside) / len(inside)
            delivered_kw = baseline_kw - average_kw
            if obligated_kw > 0:
                factor = min(1.0, max(0.0, delivered_kw / obligated_kw))
            else:  # already under the target at baseline: the test is staying under it
                factor = 1.0 if average_kw <= target_kw else 0.0
            shortfall_kw = max(0.0, average_kw - target_kw)
            out.append(
                Interval(
                    part_from,
                    part_until,
                    len(inside),
                    average_kw,
                    delivered_kw,
                    factor,
                    shortfall_kw,
                    shortfall_kw * (part_until - part_from) / 3600.0,
                )
            )
        else:
            out.append(Interval(part_from, part_until, 0, None, None, 0.0, None, None))
        start_s += interval_s
    return out


def _between(samples: list[Sample], from_s: float, until_s: float) -> list[float]:
    """kW of the samples with from_s <= wall_s < until_s (samples are in time order)."""
    lo = bisect.bisect_left(samples, from_s, key=lambda s: s.wall_s)
    hi = bisect.bisect_left(samples, until_s, key=lambda s: s.wall_s)
    return [s.kw for s in samples[lo:hi]]


def _median_spacing(samples: list[Sample]) -> float | None:
    gaps = sorted(b.wall_s - a.wall_s for a, b in itertools.pairwise(samples))
    return gaps[len(gaps) // 2] if gaps else None
