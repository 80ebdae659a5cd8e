"""4CP in the replay: the rule's windows as the live daemon would have called them, the two yardsticks
("never curtail", the hindsight "oracle"), and the summer score that compares them (docs/replay.md,
"4CP: scoring a summer").

The rule reads only ERCOT's system load, the prices and the site's config, never the site's state, so
its windows are computed before the engine runs and delivered as grid events at their decide times:
the engine accepts and holds them as it would any `limit` under program 4CP.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from mullet.daemon.config import Config
from mullet.daemon.core.fourcp import FourCpScheduler, day_span_s, to_event
from mullet.daemon.replay.scenario import Scenario, step_at
from mullet.drivers.ercot_load import SystemLoadPoint
from mullet.drivers.protocol import GridEvent
from mullet.policies.economics import mining_margin_usd_per_kwh
from mullet.policies.fourcp import PROGRAM, FourCpDecision

Strategy = Literal["rule", "never", "oracle"]
STRATEGIES: tuple[Strategy, ...] = ("rule", "never", "oracle")
# Decisions listed in the JSON; a summer at two decide times a day is ~250.
MAX_DECISIONS_LISTED = 400
# An oracle window is called this long before the interval, and starts ORACLE_LEAD_S before it so
# mining is down when the interval starts (a shed takes seconds, a cycle at step_s up to a minute).
ORACLE_NOTICE_S = 900.0
ORACLE_LEAD_S = 300.0
# A 4CP interval counts as avoided when mining averaged at most the room the hold leaves beside the AI
# load, plus this share of the mining rating (sleep draw, the seconds a shed takes).
AVOIDED_TOLERANCE_FRACTION = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class RuleRun:
    """What the rule did over the period: its events (delivered at, event) and every decision."""

    events: tuple[tuple[float, GridEvent], ...]
    decisions: tuple[tuple[float, FourCpDecision], ...]
    notes: tuple[str, ...]


def mining_rating_kw(config: Config) -> float:
    return sum(g.rated_kw for g in config.groups)


def rule_runs(config: Config, scenario: Scenario) -> bool:
    return config.fourcp.enabled and scenario.fourcp is not None and bool(scenario.fourcp.system_load)


def run_rule(config: Config, scenario: Scenario) -> RuleRun:
    """The scheduler fed the system load as it arrived (a day's forecast from `forecast_known_h`
    after its midnight; each actual once its interval ended), called at every decide time of the
    period."""
    spec = scenario.fourcp
    section = config.fourcp
    if spec is None or not spec.system_load:
        return RuleRun((), (), ())
    scheduler = FourCpScheduler(section.rule(), section.timezone, section.decide_at)
    zone = ZoneInfo(section.timezone)
    arrivals = _arrivals(
        spec.system_load,
        zone,
        known_h=spec.forecast_known_h,
        persistence=spec.missing_forecast == "persistence",
    )
    groups = config.site_spec().groups
    curtail_kw = mining_rating_kw(config)
    forecast_by_start: dict[float, float] = {}
    events: list[tuple[float, GridEvent]] = []
    decisions: list[tuple[float, FourCpDecision]] = []
    unpriced = 0
    times = [scenario.start_s, *scheduler.decide_times(scenario.start_s, scenario.end_s)]
    for t in times:
        if t >= scenario.end_s:
            break
        fresh = []
        while arrivals and arrivals[0][0] <= t:
            fresh.append(heapq.heappop(arrivals)[2])
        scheduler.observe(fresh)
        for point in fresh:
            if point.forecast_mw is not None:
                forecast_by_start[point.start_s] = point.forecast_mw
        price = _price_at_peak(scenario, forecast_by_start, t, zone)
        hashprice = step_at(scenario.hashprice, t) or config.economics.hashprice_usd_per_th_day
        margin = None if price is None else mining_margin_usd_per_kwh(groups, hashprice, price)
        if margin is None:
            unpriced += 1
        for decision in scheduler.due(t, curtail_kw=curtail_kw, margin_usd_per_kwh=margin or 0.0):
            decisions.append((t, decision))
            if decision.curtail:
                events.append((t, to_event(decision, t)))
    notes = []
    if unpriced:
        notes.append(
            f"4CP: {unpriced} decide time(s) without a price or break-even: the window's margin taken as 0"
        )
    if scheduler.rejected:
        notes.append(f"4CP: {scheduler.rejected} system-load point(s) rejected by the scheduler")
    return RuleRun(tuple(events), tuple(decisions), tuple(notes))


def _arrivals(
    points: tuple[SystemLoadPoint, ...], zone: ZoneInfo, *, known_h: float, persistence: bool
) -> list[tuple[float, int, SystemLoadPoint]]:
    """(known from, order, point) as a heap: each actual when its interval ends, each forecast from
    `known_h` hours after its day's local midnight; with `persistence`, a day the file forecasts
    nothing for gets the day before's actuals at the same local hour, known at its midnight."""
    out: list[tuple[float, int, SystemLoadPoint]] = []
    forecast_days = set()
    for n, p in enumerate(points):
        day = datetime.fromtimestamp(p.start_s, zone).date()
        if p.actual_mw is not None:
            out.append((p.start_s + p.interval_s, 2 * n, dataclasses.replace(p, forecast_mw=None)))
        if p.forecast_mw is not None:
            forecast_days.add(day)
            known_s = datetime.combine(day, time(0), zone).timestamp() + known_h * 3600.0
            out.append((known_s, 2 * n + 1, dataclasses.replace(p, actual_mw=None)))
    if persistence:
        base = 2 * len(points)
        for n, p in enumerate(points):
            if p.actual_mw is None:
                continue
            local = datetime.fromtimestamp(p.start_s, zone)
            next_day = local.date() + timedelta(days=1)
            if next_day in forecast_days:
                continue
            start_s = datetime.combine(next_day, local.time().replace(tzinfo=None), zone).timestamp()
            known_s = datetime.combine(next_day, time(0), zone).timestamp()
            out.append((known_s, base + n, SystemLoadPoint(start_s, p.interval_s, None, p.actual_mw)))
    heapq.heapify(out)
    return out


def _price_at_peak(
    scenario: Scenario, forecast: dict[float, float], t: float, zone: ZoneInfo
) -> float | None:
    """The scenario's price at today's forecast peak: the window's price, as far as it is known."""
    day = datetime.fromtimestamp(t, zone).date()
    start_s, end_s = day_span_s(day, zone)
    today = [(mw, s) for s, mw in forecast.items() if start_s <= s < end_s]
    at_s = max(today)[1] if today else t
    return step_at(scenario.prices, at_s)


def strategy_scenario(config: Config, scenario: Scenario, strategy: Strategy, rule: RuleRun) -> Scenario:
    """The scenario one column runs: the rule's windows added; or none of any 4CP window (never); or
    the year's four intervals (from ORACLE_LEAD_S before each), held to the config's hold_kw (oracle)."""
    others = [(t, e) for t, e in scenario.events if e.program.casefold() != PROGRAM.casefold()]
    if strategy == "rule":
        return dataclasses.replace(scenario, events=tuple(sorted([*scenario.events, *rule.events], key=_at)))
    if strategy == "never":
        return dataclasses.replace(scenario, events=tuple(others))
    spec = scenario.fourcp
    oracle: list[tuple[float, GridEvent]] = []
    for n, (start_s, _month, _peak) in enumerate(spec.intervals if spec else ()):
        event = GridEvent(
            id=f"4cp-oracle-{n + 1}",
            kind="limit",
            kw=config.fourcp.hold_kw,
            start=start_s - ORACLE_LEAD_S,
            end=start_s + (spec.interval_s if spec else 900.0),
            program=PROGRAM,
            source="oracle",
        )
        oracle.append((max(scenario.start_s, start_s - ORACLE_NOTICE_S), event))
    return dataclasses.replace(scenario, events=tuple(sorted([*others, *oracle], key=_at)))


def _at(item: tuple[float, GridEvent]) -> float:
    return item[0]


# ---- the score ---------------------------------------------------------------------------------


def window_hours(scenario: Scenario) -> float:
    """Hours under at least one 4CP window the column was given, within the period (overlaps counted
    once)."""
    start_s, end_s = scenario.start_s, scenario.end_s
    spans = sorted(
        (
            max(start_s, e.start if e.start is not None else t),
            min(end_s, e.end if e.end is not None else end_s),
        )
        for t, e in scenario.events
        if e.program.casefold() == PROGRAM.casefold() and e.kind == "limit"
    )
    total = 0.0
    reach = -math.inf
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            total += b - a
        reach = max(reach, b)
    return total / 3600.0


def interval_score(
    config: Config, result: dict[str, Any], table: list[dict[str, Any]], scenario: Scenario
) -> list[dict[str, Any]]:
    """Each 4CP interval: the site's, mining's and AI's kW in it and whether it was avoided."""
    spec = scenario.fourcp
    rows = {row["start_s"]: row for row in table}
    rating_kw = mining_rating_kw(config)
    hold_kw = config.fourcp.hold_kw
    out = []
    for start_s, month, _peak in spec.intervals if spec else ():
        row = rows.get(start_s)
        if row is None or row["mining_kw"] is None:
            out.append({"month": month, "interval_start_s": start_s, "site_kw": None, "avoided": None})
            continue
        room_kw = max(0.0, hold_kw - (row["ai_kw"] or 0.0))
        avoided = row["mining_kw"] <= room_kw + AVOIDED_TOLERANCE_FRACTION * rating_kw
        out.append(
            {
                "month": month,
                "interval_start_s": start_s,
                "site_kw": row["site_kw"],
                "mining_kw": row["mining_kw"],
                "ai_kw": row["ai_kw"],
                "avoided": avoided,
            }
        )
    return out


def summer_score(
    columns: dict[Strategy, tuple[dict[str, Any], list[dict[str, Any]], Scenario]],
    config: Config,
    scenario: Scenario,
    rule: RuleRun,
) -> dict[str, Any]:
    """The three strategies of one configuration side by side; each column's value is its net
    (mining margin less transmission charge) against never-curtail's and the oracle's."""
    per: dict[str, dict[str, Any]] = {}
    for strategy, (result, table, ran) in columns.items():
        intervals = interval_score(config, result, table, scenario)
        charge = (result["fourcp"] or {}).get("charge_usd")
        per[strategy] = {
            "label": result["label"],
            "intervals": intervals,
            "avoided": sum(1 for i in intervals if i["avoided"]),
            "scored": sum(1 for i in intervals if i["avoided"] is not None),
            "charge_usd": charge,
            "window_hours": round(window_hours(ran), 3),
            "net_mining_margin_usd": result["usd"]["net_mining_margin"],
        }
    for row in per.values():
        row["margin_given_up_usd"] = _diff(
            per.get("never", {}).get("net_mining_margin_usd"), row["net_mining_margin_usd"]
        )
        row["net_vs_never_usd"] = _net_against(row, per.get("never"))
        row["net_vs_oracle_usd"] = _net_against(row, per.get("oracle"))
    decisions = [
        {
            "decided_at_s": t,
            "day": d.label,
            "curtail": d.curtail,
            "start_s": d.start_s,
            "end_s": d.end_s,
            "p": None if d.p_peak is None else round(d.p_peak, 4),
            "p_star": None if d.p_threshold is None else round(d.p_threshold, 4),
            "forecast_peak_mw": None if d.forecast_peak_mw is None else round(d.forecast_peak_mw),
            "reference_mw": None if d.reference_mw is None else round(d.reference_mw),
            "reason": d.reason,
        }
        for t, d in rule.decisions
    ]
    return {
        "strategies": per,
        "hold_kw": config.fourcp.hold_kw,
        "mining_rating_kw": mining_rating_kw(config),
        "days_held": len({d.label for _t, d in rule.decisions if d.curtail}),
        "decisions": decisions[:MAX_DECISIONS_LISTED],
        "decisions_not_listed": max(0, len(decisions) - MAX_DECISIONS_LISTED),
        "notes": list(rule.notes),
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(float(a) - float(b), 2)


def _net_against(row: dict[str, Any], other: dict[str, Any] | None) -> float | None:
    """(this column's margin - charge) - (the other's): charge saved less margin given up."""
    if other is None or None in (row["charge_usd"], other["charge_usd"]):
        return None
    mine = float(row["net_mining_margin_usd"]) - float(row["charge_usd"])
    theirs = float(other["net_mining_margin_usd"]) - float(other["charge_usd"])
    return round(mine - theirs, 2)


def iter_columns(with_baselines: bool) -> Iterator[Strategy]:
    yield "rule"
    if with_baselines:
        yield "never"
        yield "oracle"
