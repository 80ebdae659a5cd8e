"""The figures of one replay: energy, money, grid events as the program scores them, 4CP exposure, AI
SLA, wear. A plain JSON-ready dict with rounded numbers and no wall-clock figure in it, so the same
scenario and config give byte-identical output (the determinism test compares exactly this)."""

from __future__ import annotations

import bisect
import itertools
import json
import math
from typing import Any

from mullet.daemon.records.report import (
    HISTORY_METHODS,
    BaselineMethod,
    EventRecord,
    Sample,
    compute_report,
    rule_for,
)
from mullet.daemon.replay.engine import INTERVAL_S, EventLog, Replay
from mullet.daemon.replay.ledger import IntervalRow
from mullet.daemon.replay.scenario import step_at

# Scored events listed in full; a scenario with more lists the first ones and counts the rest.
MAX_EVENTS_LISTED = 500
MAX_REJECTIONS_LISTED = 50


def _r(value: float | None, digits: int = 3) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits) + 0.0  # + 0.0: no "-0.0" in the output


def samples_between(replay: Replay, from_s: float, until_s: float, spacing_s: float) -> list[Sample]:
    """Site power every `spacing_s` from `from_s` to `until_s`, holding each step's value until the next
    (the replay's steps are irregular: dense while anything moves, sparse while nothing does)."""
    times, values = replay.samples_t, replay.samples_kw
    out = []
    t = max(from_s, times[0]) if times else from_s
    while t <= until_s and times:
        index = bisect.bisect_right(times, t) - 1
        if index >= 0:
            out.append(Sample(t, values[index]))
        t += spacing_s
    return out


def score_event(replay: Replay, log: EventLog, spacing_s: float) -> dict[str, Any]:
    """The event as its program scores it (the same scoring `mulletd report` does on a journal)."""
    event = log.event
    rule = rule_for(event.program)
    end_s = log.end_s if log.end_s is not None else replay.scenario.end_s
    notice_interval_s = math.floor(log.notice_s / rule.interval_s) * rule.interval_s
    from_s = notice_interval_s - (rule.baseline_intervals + 1) * rule.interval_s
    samples = samples_between(replay, from_s, end_s, spacing_s)
    record = EventRecord(event.model_dump(), log.obligation, log.notice_s, log.end_s, log.ended_by)
    # A replay holds no preceding days to find like days in: a history baseline (ERS's default) is
    # replaced by the 4 intervals before the notice, the meter-based method the replay can give.
    method: BaselineMethod = "pre_notice_intervals" if rule.baseline in HISTORY_METHODS else rule.baseline
    report = compute_report(record, samples, [], rule, method, now_s=end_s)
    delivered_mwh = sum(
        max(0.0, i.delivered_kw) * (i.end_s - i.start_s) / 3.6e6 for i in report.intervals if i.delivered_kw
    )
    return {
        "event_id": report.event_id,
        "program": report.program,
        "kind": report.kind,
        "kw": _r(float(log.obligation["kw"])),
        "notice_s": _r(log.notice_s),
        "deploy_s": _r(report.deploy_s),
        "end_s": _r(report.end_s),
        "ended_by": report.ended_by,
        "baseline_kw": _r(report.baseline_kw),
        "target_kw": _r(report.target_kw),
        "deadline_s": _r(report.deadline_s),
        "time_to_target_s": _r(report.time_to_target_s),
        "met_deadline": report.met_deadline,
        "performance_factor": _r(report.performance_factor, 4),
        "shortfall_kwh": _r(report.shortfall_kwh),
        "max_shortfall_kw": _r(report.max_shortfall_kw),
        "delivered_mwh": _r(delivered_mwh, 4),
        "passed": report.passed,
        "verdict": report.verdict,
    }


def fourcp(replay: Replay) -> dict[str, Any] | None:
    """Site load in each of the year's 4CP intervals the scenario covers, and the transmission charge
    it implies: the average of the four intervals' kW, times the rate, for the year; each interval
    carries a quarter of it."""
    spec = replay.scenario.fourcp
    if spec is None:
        return None
    rows = {row.start_s: row for row in replay.ledger.rows}
    intervals, charge_usd = [], 0.0
    for start_s, month, peak_mw in spec.intervals:
        row = rows.get(start_s) if spec.interval_s == INTERVAL_S else None
        inside = replay.scenario.start_s <= start_s < replay.scenario.end_s
        site_kw = None if row is None or not inside else row.site_kwh * 3600.0 / spec.interval_s
        share_usd = None if site_kw is None else site_kw * spec.usd_per_kw_year / 4.0
        charge_usd += share_usd or 0.0
        intervals.append(
            {
                "interval_start_s": _r(start_s),
                "month": month,
                "ercot_peak_mw": peak_mw,
                "site_kw": _r(site_kw),
                "charge_usd": _r(share_usd, 2),
            }
        )
    covered = [i for i in intervals if i["site_kw"] is not None]
    return {
        "usd_per_kw_year": spec.usd_per_kw_year,
        "intervals": intervals,
        "covered": len(covered),
        "charge_usd": _r(charge_usd, 2),
        "note": "intervals outside the scenario are not counted"
        if len(covered) < len(intervals)
        else "all four intervals inside the scenario",
    }


def recorded(replay: Replay) -> dict[str, Any] | None:
    """What the site drew in the recorded period (a journal's `site_power`) and its energy cost at the
    scenario's prices, beside the replayed figures; hours without a record or a price are counted, not
    taken as zero."""
    sc = replay.scenario
    if not sc.recorded_kw:
        return None
    moments = sorted({sc.start_s, sc.end_s, *(t for t, _ in sc.recorded_kw), *(t for t, _ in sc.prices)})
    kwh = cost_usd = unrecorded_s = unpriced_s = 0.0
    for t0, t1 in itertools.pairwise(moments):
        if t0 < sc.start_s or t1 > sc.end_s:
            continue
        kw, price = step_at(sc.recorded_kw, t0), step_at(sc.prices, t0)
        if kw is None or math.isnan(kw):
            unrecorded_s += t1 - t0
            continue
        kwh += kw * (t1 - t0) / 3600.0
        if price is None:
            unpriced_s += t1 - t0
        else:
            cost_usd += kw * (t1 - t0) / 3600.0 / 1000.0 * price
    return {
        "site_mwh": _r(kwh / 1000.0),
        "site_energy_cost_usd": _r(cost_usd, 2),
        "unrecorded_hours": _r(unrecorded_s / 3600.0),
        "unpriced_hours": _r(unpriced_s / 3600.0),
    }


def summarize(replay: Replay, label: str) -> dict[str, Any]:
    """Everything `mulletd replay` prints and renders for one configuration."""
    sc, totals, config = replay.scenario, replay.ledger.totals, replay.config
    hours = sc.duration_s / 3600.0
    spacing_s = replay.step_s
    # Base points are not scored as events: their tracking is in `base_point_tracking`.
    logs = sorted(
        (log for log in replay.events.values() if log.event.kind != "base_point"),
        key=lambda log: (log.notice_s, log.event.id),
    )
    events = [score_event(replay, log, spacing_s) for log in logs[:MAX_EVENTS_LISTED]]
    rates = {p.name.casefold(): p for p in sc.programs}
    capacity_usd = sum(p.committed_kw / 1000.0 * p.capacity_usd_per_mw_h * hours for p in sc.programs)
    energy_usd = 0.0
    for event in events:
        rate = rates.get(str(event["program"]).casefold())
        if rate is not None and event["delivered_mwh"]:
            energy_usd += event["delivered_mwh"] * rate.energy_usd_per_mwh
    # A program with a failed event may claw back or withhold its capacity payment (ERS reduces it for
    # events under the 0.95 factor); the figure shows how much of the income that puts at risk.
    failed = {str(e["program"]).casefold() for e in events if not e["passed"]}
    at_risk_usd = sum(
        p.committed_kw / 1000.0 * p.capacity_usd_per_mw_h * hours
        for p in sc.programs
        if p.name.casefold() in failed
    )
    margin_usd = totals.mining_revenue_usd - totals.mining_cost_usd
    sla = {
        t.tenant_id: {"violations": t.violations, "violation_s": _r(t.violation_s)}
        for t in replay.tenants.values()
    }
    summary: dict[str, Any] = {
        "label": label,
        "site_id": config.site.site_id,
        "economics": config.economics.enabled,
        "scenario": {
            "name": sc.name,
            "start_s": sc.start_s,
            "end_s": sc.end_s,
            "hours": _r(hours),
            "control_step_s": replay.step_s,
            "meter_poll_s": replay.meter_poll_s,
            "steps": replay.steps,
        },
        "energy_mwh": {
            "ai": _r(totals.ai_mwh),
            "mining": _r(totals.mining_mwh),
            "site": _r(totals.site_mwh),
            "curtailed": _r(totals.curtailed_mwh),
        },
        "usd": {
            "mining_revenue": _r(totals.mining_revenue_usd, 2),
            "mining_energy_cost": _r(totals.mining_cost_usd, 2),
            "net_mining_margin": _r(margin_usd, 2),
            "site_energy_cost": _r(totals.energy_cost_usd, 2),
            "curtailment_cost_avoided": _r(totals.avoided_cost_usd, 2),
            "dr_capacity": _r(capacity_usd, 2),
            "dr_energy": _r(energy_usd, 2),
            "dr_income": _r(capacity_usd + energy_usd, 2),
            "dr_capacity_at_risk": _r(at_risk_usd, 2),
            "net_mining_margin_with_dr": _r(margin_usd + capacity_usd + energy_usd, 2),
        },
        "unpriced_hours": _r(totals.unpriced_s / 3600.0),
        "events": events,
        "events_not_listed": max(0, len(logs) - MAX_EVENTS_LISTED),
        "grid_acks": dict(replay.acks),
        "rejections": [
            {"t_s": _r(t), "event_id": i, "code": code}
            for t, i, code in replay.rejections[:MAX_REJECTIONS_LISTED]
        ],
        "trips": [
            {"t_s": _r(t), "stage": stage, "cause": cause, "groups": n} for t, stage, cause, n in replay.trips
        ],
        "fourcp": fourcp(replay),
        "recorded": recorded(replay),
        "sources": dict(sorted(sc.sources.items())),
        "notes": list(replay.notes),
        "ai_sla": {"violations": sum(t.violations for t in replay.tenants.values()), "tenants": sla},
        "wear": {
            "switches": dict(sorted(replay.switches.items())),
            "pdu_cuts": dict(sorted(replay.cuts.items())),
            "total_switches": sum(replay.switches.values()),
            "largest_site_ramp_kw_per_min": _r(replay.ramps.sixty.largest_kw),
            "largest_site_ramp_at_s": _r(replay.ramps.sixty.at_s),
        },
        "import_ramp": import_ramp(replay),
        "groups": groups(replay),
    }
    if replay.tracking.rows:  # only with base points: other replays' output stays as it was
        summary["base_point_tracking"] = replay.tracking.summary()
    return summary


def import_ramp(replay: Replay) -> dict[str, Any]:
    """The largest change of site import within any 10 s and 60 s, and the episodes above the limits
    it was judged against (None: no limit given, not counted); beside them the AI load's own largest
    changes, what mining works against."""
    ten, sixty = replay.ramps.ten, replay.ramps.sixty
    return {
        "largest_10s_kw": _r(ten.largest_kw),
        "largest_10s_at_s": _r(ten.at_s),
        "largest_60s_kw": _r(sixty.largest_kw),
        "largest_60s_at_s": _r(sixty.at_s),
        "limit_kw_per_10s": ten.limit_kw,
        "limit_kw_per_min": sixty.limit_kw,
        "violations_10s": ten.violations,
        "violations_60s": sixty.violations,
        "ai_largest_10s_kw": _r(replay.ai_ramps.ten.largest_kw),
        "ai_largest_60s_kw": _r(replay.ai_ramps.sixty.largest_kw),
    }


def groups(replay: Replay) -> dict[str, Any]:
    """Per group: efficiency, hashrate given up, wakes, sleeps, target changes, min on/off broken; and
    the totals."""
    efficiency = {g.group_id: g.efficiency_j_per_th for g in replay.config.groups}
    given_up = replay.physics.given_up_thh
    per_group = {
        group_id: {
            "efficiency_j_per_th": efficiency[group_id],
            "hashrate_given_up_thh": _r(given_up[group_id], 1),
            "wakes": watch.wakes,
            "sleeps": watch.sleeps,
            "target_changes": watch.target_changes,
            "min_on_violations": watch.min_on_violations,
            "min_off_violations": watch.min_off_violations,
        }
        for group_id, watch in sorted(replay.switching.items())
    }
    watches = replay.switching.values()
    total = {
        "wakes": sum(w.wakes for w in watches),
        "sleeps": sum(w.sleeps for w in watches),
        "target_changes": sum(w.target_changes for w in watches),
        "min_on_violations": sum(w.min_on_violations for w in watches),
        "min_off_violations": sum(w.min_off_violations for w in watches),
    }
    return {
        "per_group": per_group,
        **total,
        "hashrate_given_up_thh": _r(sum(given_up.values()), 1),
    }


def interval_table(replay: Replay) -> list[dict[str, Any]]:
    """The 15-minute rows (average kW, price): what the report plots."""
    return [_row(row, replay.ledger.interval_s) for row in replay.ledger.rows]


def _row(row: IntervalRow, interval_s: float) -> dict[str, Any]:
    to_kw = 3600.0 / interval_s
    return {
        "start_s": row.start_s,
        "price_usd_per_mwh": row.price_usd_per_mwh,
        "site_kw": _r(row.site_kwh * to_kw),
        "ai_kw": _r(row.ai_kwh * to_kw),
        "mining_kw": _r(row.mining_kwh * to_kw),
        "curtailed_kw": _r(row.curtailed_kwh * to_kw),
    }


def to_json(results: list[dict[str, Any]]) -> str:
    return json.dumps(results, indent=1, sort_keys=True, allow_nan=False)
