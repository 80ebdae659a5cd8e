"""The plan as `daemon/plan` carries it: what the site does, why, and what it could shed."""

from __future__ import annotations

import math
from typing import Any

from mullet.daemon.core.obligation_book import ObligationBook
from mullet.policies.fleet import site_flex
from mullet.policies.model import Plan, SiteSnapshot, SiteSpec


def plan_summary(
    plan: Plan,
    seq: int,
    book: ObligationBook,
    site: SiteSpec,
    snapshot: SiteSnapshot,
    firmware_sleep_s: float,
) -> dict[str, Any]:
    return {
        "v": 1,
        "seq": seq,
        "site_limit_kw": round(plan.site_limit_kw, 3),
        "binding_constraint": plan.binding_constraint,
        "ai_allowance_kw": round(plan.ai_allowance_kw, 3),
        "mining_budget_kw": round(plan.mining_budget_kw, 3),
        "mining_planned_kw": round(plan.mining_planned_kw, 3),
        # Mining's budget under the site's own limits, a base point aside.
        "mining_max_kw": None if plan.mining_max_kw is None else round(plan.mining_max_kw, 3),
        "feasible": plan.feasible,
        "active_obligations": list(plan.active_obligations),
        "obligations": _obligations(plan, book),
        "groups": {
            d.group_id: {
                "mode": d.mode,
                "power_kw": d.power_kw,
                "trip_stage": d.trip_stage,
                "reason": d.reason,
            }
            for d in plan.decisions
        },
        "tenants": {t.tenant_id: {"power_cap_kw": t.power_cap_kw, "reason": t.reason} for t in plan.tenants},
        "reasons": list(plan.reasons),
        "flex": _flex(plan, site, snapshot, firmware_sleep_s),
    }


def _obligations(plan: Plan, book: ObligationBook) -> dict[str, Any]:
    """Per active obligation: its program, deadline, how it is actuated and why, how it ends."""
    summary: dict[str, Any] = {}
    for event_id in plan.active_obligations:
        obligation = book.obligations.get(event_id)
        if obligation is None:
            continue
        limit_kw = obligation.site_limit_kw()
        summary[event_id] = {
            "program": obligation.program,
            "kind": obligation.kind,
            # A base point limits mining, not the import: no limit (JSON has no infinity).
            "limit_kw": round(limit_kw, 3) if math.isfinite(limit_kw) else None,
            "base_point_kw": obligation.kw if obligation.kind == "base_point" else None,
            "deadline_s": obligation.deadline_s,
            "actuation": obligation.actuation or None,
            "why": obligation.actuation_reason or None,
            "recall": "explicit" if obligation.explicit_recall else "timer",
            "end": obligation.end_s,
        }
    return summary


def _flex(plan: Plan, site: SiteSpec, snapshot: SiteSnapshot, firmware_sleep_s: float) -> dict[str, Any]:
    """What the site could shed now by deadline class, and its import: for a fleet dispatcher."""
    flex = site_flex(site, snapshot, plan.decisions, firmware_sleep_s)
    return {
        "site_kw": None if flex.site_kw is None else round(flex.site_kw),
        "firmware_sleep_s": flex.firmware_sleep_s,
        "sheddable_kw": {"fast_path": round(flex.fast_path_kw), "graceful": round(flex.graceful_kw)},
    }


def decision_key(summary: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a plan a new decision (journaled, logged): limits, obligations, commands."""
    modes = tuple(
        sorted((g, v["mode"], v["power_kw"], v["trip_stage"]) for g, v in summary["groups"].items())
    )
    caps = tuple(sorted((t, v["power_cap_kw"]) for t, v in summary["tenants"].items()))
    return (summary["site_limit_kw"], tuple(summary["active_obligations"]), modes, caps)
