"""The QSE link's telemetry: every input point's value, computed from the controller at read time.

A point is as fresh as the reading behind it (its age is a point too), and unknown is NaN, never 0 MW:
a stale meter, a group or tenant whose telemetry is stale, or no plan yet. The load resource is the
mining: its MW, and its low and maximum power consumption (LPC/MPC) by deadline class, are what a QSE
telemeters for a load resource (docs/qse.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.qse import SLOTS, STATE_CODES, QseLink
from mullet.drivers.qse_points import PRODUCTS, STAGE_SLOTS, slug
from mullet.policies.fleet import site_flex
from mullet.policies.model import Plan
from mullet.policies.obligations import REJECTION_CODES
from mullet.policies.trigger import is_ufr_obligation

NAN = math.nan
LINK_CODES: Mapping[str, int] = {"waiting": 0, "up": 1, "lost": 2}
# Refusal registers: 1 + the code's index in REJECTION_CODES (append-only there); OTHER_REFUSAL for a
# code outside it (e.g. a wire reason), which the journal names.
OTHER_REFUSAL = 255


def refusal_number(code: str | None) -> int:
    if code is None:
        return 0
    return REJECTION_CODES.index(code) + 1 if code in REJECTION_CODES else OTHER_REFUSAL


def input_values(core: SiteController, link: QseLink, now_mono_s: float) -> dict[str, float]:
    """Every input point's value now, by name (drivers/qse_points.py)."""
    state = core.state
    values: dict[str, float] = {"heartbeat": float(core.cycles % 65536)}
    site_kw = state.site_power_kw(now_mono_s)
    mining_kw = core.total_kw("groups", now_mono_s)
    ai_kw = core.total_kw("tenants", now_mono_s)
    values["site_mw"] = NAN if site_kw is None else site_kw / 1000.0
    values["mining_mw"] = mining_kw / 1000.0
    values["ai_mw"] = ai_kw / 1000.0
    values["site_mw_age_ms"] = NAN if state.meter is None else (now_mono_s - state.meter.monotonic_s) * 1000.0
    arrivals = [state.groups[g][1] for g in core.group_ids if g in state.groups]
    values["mining_mw_age_ms"] = (
        (now_mono_s - min(arrivals)) * 1000.0 if len(arrivals) == len(core.group_ids) else NAN
    )
    plan = core.plan
    values.update(_resource(core, plan, mining_kw, now_mono_s))
    values["binding"] = _binding(plan.binding_constraint) if plan is not None else 0.0
    values["qse_link"] = float(LINK_CODES[link.state])
    age_s = link.heartbeat_age_s(now_mono_s)
    values["qse_heartbeat_age_s"] = NAN if age_s is None else age_s
    command = link.command
    values["command_count"] = float(command.count)
    values["command_address"] = float(command.address)
    values["command_result"] = float(command.result)
    values["command_value"] = command.value
    for slot in SLOTS[:-1]:  # the fail-safe is health bit 6, not a slot of its own
        name = slug(slot) if slot in PRODUCTS else slot
        held = link.held.get(slot)
        values[f"{name}_state"] = float(STATE_CODES[link.slot_state(slot)])
        values[f"{name}_refusal"] = float(refusal_number(link.refusal(slot)))
        if slot in PRODUCTS:
            values[f"{name}_mw"] = 0.0 if held is None else held.want.kw / 1000.0
        else:
            values[f"{name}_mw"] = NAN if held is None else held.want.kw / 1000.0
    values.update(_stages(core, now_mono_s))
    values["health"] = float(_health(core, link, site_kw, mining_kw, ai_kw))
    return values


def _resource(
    core: SiteController, plan: Plan | None, mining_kw: float, now_mono_s: float
) -> dict[str, float]:
    """MPC and LPC by deadline class, site limit and mining budget (NaN without a plan or a reading)."""
    out = dict.fromkeys(
        ("mpc_mw", "lpc_fast_mw", "lpc_10min_mw", "lpc_30min_mw", "site_limit_mw", "mining_budget_mw"), NAN
    )
    if plan is None:
        return out
    out["site_limit_mw"] = plan.site_limit_kw / 1000.0
    out["mining_budget_mw"] = plan.mining_budget_kw / 1000.0
    if math.isnan(mining_kw):
        return out
    snapshot = core.state.snapshot(core.tenant_ids, core.group_ids, now_mono_s)
    flex = site_flex(core.site, snapshot, plan.decisions, core.config.control.firmware_sleep_s)
    out["lpc_fast_mw"] = (mining_kw - flex.fast_path_kw) / 1000.0
    # Firmware sleep takes seconds (config bounds it to 10 min): both graceful classes reach it.
    out["lpc_10min_mw"] = out["lpc_30min_mw"] = (mining_kw - flex.graceful_kw) / 1000.0
    rated_kw = sum(g.rated_kw for g in core.site.groups)
    max_kw = plan.mining_max_kw if plan.mining_max_kw is not None else plan.mining_budget_kw
    out["mpc_mw"] = max(mining_kw - flex.graceful_kw, min(rated_kw, max_kw)) / 1000.0
    return out


def _binding(constraint: str) -> float:
    if constraint.startswith("interconnect"):
        return 1.0
    kind, _, rest = constraint.partition(" ")
    event_id = rest.split("'")[1] if rest.count("'") >= 2 else ""
    if is_ufr_obligation(event_id):
        return 5.0
    return {"limit": 2.0, "reduce": 3.0, "base_point": 4.0}.get(kind, 0.0)


def _stages(core: SiteController, now_mono_s: float) -> dict[str, float]:
    out: dict[str, float] = {}
    stages = sorted(core.stages, key=lambda s: s.stage)[:STAGE_SLOTS]
    decisions = core.plan.decisions if core.plan is not None else ()
    latched = core.trigger.latched
    for slot in range(1, STAGE_SLOTS + 1):
        number = relay = armed_kw = 0.0
        if slot <= len(stages):
            stage = stages[slot - 1].stage
            number = float(stage)
            for decision in decisions:
                if decision.trip_stage == stage:
                    power_kw = core.state.group_power_kw(decision.group_id, now_mono_s)
                    armed_kw += (
                        0.0 if power_kw is None else max(0.0, power_kw - core.sleep_kw[decision.group_id])
                    )
            if stage in latched:
                relay = 2.0
            elif any(
                (sent := core.commanded.get(g)) is not None and sent.mode == "curtail"
                for g in core.released_groups.get(stage, ())
            ):
                relay = 3.0
            else:
                relay = 1.0
        out[f"stage{slot}_number"] = number
        out[f"stage{slot}_relay"] = relay
        out[f"stage{slot}_armed_mw"] = armed_kw / 1000.0
    return out


def _health(
    core: SiteController, link: QseLink, site_kw: float | None, mining_kw: float, ai_kw: float
) -> int:
    plan = core.plan
    bits = (
        core.commanding and plan is not None,
        site_kw is not None,
        not math.isnan(mining_kw),
        not math.isnan(ai_kw),
        link.state == "up",
        link.levels["test_mode"] == 1.0,
        link.state == "lost",
        plan is not None and plan.feasible,
    )
    return sum(1 << bit for bit, on in enumerate(bits) if on)
