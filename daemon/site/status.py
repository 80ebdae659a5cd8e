"""What a running site daemon shows: its Prometheus gauges after each cycle and `GET /v1/status`."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from mullet.daemon.core.controller import SiteController
from mullet.daemon.http_guard import beyond_loopback
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.policies.model import Override, Plan


class Cycling(Protocol):
    """The supervisory loop's progress (daemon/loop.py)."""

    ready: asyncio.Event
    cycles: int
    last_cycle_mono_s: float | None
    started_mono_s: float


def update_metrics(
    m: Metrics, core: SiteController, plan: Plan, now_s: float, now_mono_s: float, connected: bool
) -> None:
    site_kw = core.state.site_power_kw(now_mono_s)
    m.site_power.set(math.nan if site_kw is None else site_kw * 1000.0)
    m.meter_stale.set(1.0 if site_kw is None else 0.0)
    refresh_s = core.meter_refresh_verdict()
    if refresh_s is not None:
        m.meter_frequency_refresh.set(refresh_s)
    m.ai_power.set(core.total_kw("tenants", now_mono_s) * 1000.0)
    m.mining_power.set(core.total_kw("groups", now_mono_s) * 1000.0)
    m.site_limit.set(plan.site_limit_kw * 1000.0)
    m.mining_budget.set(plan.mining_budget_kw * 1000.0)
    m.obligations_active.set(len(plan.active_obligations))
    m.groups_curtailed.set(len(plan.curtailed()))
    m.mqtt_connected.set(1.0 if connected else 0.0)
    for group_id, setpoint in core.commanded.items():
        m.set_group_mode(group_id, setpoint.mode)
    m.plan_feasible.set(1.0 if plan.feasible else 0.0)
    for gauge, span_s in ((m.import_ramp_10s, 10.0), (m.import_ramp_60s, 60.0)):
        ramp_kw = core.import_ramp.largest_kw(span_s, now_mono_s)
        gauge.set(math.nan if ramp_kw is None else ramp_kw * 1000.0)
    m.swing_reserve.set(plan.swing_reserve_kw * 1000.0)
    m.swing_reserve_hashrate.set(plan.swing_reserve_th_s)
    limits = core.obligation_limits_kw(now_s)
    if not limits:
        m.obligation_excess.set(0.0)
    elif site_kw is None:
        m.obligation_excess.set(math.nan)  # unknown is not zero
    else:
        m.obligation_excess.set(max(0.0, site_kw - min(limits)) * 1000.0)
    for group_id in core.group_ids:
        known = core.state.group_power_kw(group_id, now_mono_s) is not None
        m.group_telemetry_known.labels(group_id=group_id).set(1.0 if known else 0.0)
        awaited = core.awaiting_ack.get(group_id)
        pending_s = 0.0 if awaited is None else now_mono_s - awaited[1]
        m.group_ack_pending.labels(group_id=group_id).set(pending_s)


def site_status(core: SiteController, journal: Journal, connected: bool, now_mono_s: float) -> dict[str, Any]:
    plan = core.plan
    state = core.state
    return {
        "site_kw": state.site_power_kw(now_mono_s),
        "ai_kw": core.total_kw("tenants", now_mono_s),
        "mining_kw": core.total_kw("groups", now_mono_s),
        "site_limit_kw": plan.site_limit_kw if plan else None,
        "mining_budget_kw": plan.mining_budget_kw if plan else None,
        "curtailed": len(plan.curtailed()) if plan else 0,
        "groups": len(core.group_ids),
        "obligations": list(plan.active_obligations) if plan else [],
        # For `mulletd status`: the plan summary as last published, and what each group reports.
        "meter_stale": state.site_power_kw(now_mono_s) is None,
        "mqtt_connected": connected,
        "plan": core.published_plan,
        "group_power_kw": {g: state.group_power_kw(g, now_mono_s) for g in core.group_ids},
        "awaiting_ack_s": {g: round(now_mono_s - t, 3) for g, (_seq, t) in core.awaiting_ack.items()},
        "journal": {
            "written": journal.written,
            "dropped": journal.dropped,
            "queued": journal.queue_depth,
        },
    }


def lifecycle_status(site_id: str, core: SiteController, loop: Cycling, now_mono_s: float) -> dict[str, Any]:
    """Service health for GET /v1/status: started, ready, cycling, what operators hold."""
    last_s = loop.last_cycle_mono_s
    return {
        "site_id": site_id,
        "ready": loop.ready.is_set(),
        "seq": core.seq,
        "cycles": loop.cycles,
        "last_cycle_age_s": None if last_s is None else round(now_mono_s - last_s, 3),
        "uptime_s": round(now_mono_s - loop.started_mono_s, 3),
        "overrides": {g: override_document(o) for g, o in sorted(core.overrides.items())},
    }


def listener_status(listeners: dict[str, tuple[str, int | None]]) -> dict[str, Any]:
    """Where the API and metrics listen, and whether beyond loopback (`mulletd status` says so)."""
    return {
        name: {"address": f"{host}:{port}", "beyond_loopback": beyond_loopback(host)}
        for name, (host, port) in listeners.items()
    }


def override_document(override: Override) -> dict[str, Any]:
    return {"mode": override.mode, "until": override.until_s, "note": override.note}
