"""The `plan` journal entry: what a new plan changed, bounded whatever the number of obligations.

The daemon journals and logs a plan whose decisions changed. Writing the whole summary each time made
both grow with the product of events and obligations (10,000 distinct events: a 749 KB row per event,
522 MB of journal). The entry keeps the plan's scalars, the groups and tenants whose command changed,
the obligations that began or ended (ids, at most `MAX_LISTED` of each, with the count of the rest) and
the first `MAX_LISTED` reasons, each cut to `MAX_TEXT` characters. Nothing reads it back at start-up
(daemon/site/recovery.py rebuilds from `grid_event` and `setpoint` rows); it is for people and reports.
"""

from __future__ import annotations

from typing import Any

MAX_LISTED = 20
MAX_TEXT = 300
_SCALARS = (
    "v",
    "seq",
    "site_limit_kw",
    "binding_constraint",
    "ai_allowance_kw",
    "mining_budget_kw",
    "mining_planned_kw",
    "feasible",
    "flex",
)


def plan_change(previous: dict[str, Any] | None, summary: dict[str, Any]) -> dict[str, Any]:
    """The journal entry for `summary` (a `daemon/plan` document) after `previous` (None: the first)."""
    before = previous or {}
    old_ids = set(before.get("active_obligations", ()))
    ids = list(summary["active_obligations"])
    began = [i for i in ids if i not in old_ids]
    new_ids = set(ids)
    ended = sorted(i for i in old_ids if i not in new_ids)
    entry: dict[str, Any] = {key: summary.get(key) for key in _SCALARS}
    entry["obligations_active"] = len(ids)
    entry.update(_listed("obligations_began", began))
    entry.update(_listed("obligations_ended", ended))
    entry["groups"] = _changed(before.get("groups", {}), summary["groups"])
    entry["tenants"] = _changed(before.get("tenants", {}), summary["tenants"])
    entry.update(
        _listed("reasons", [_cut(r) for r in summary["reasons"][:MAX_LISTED]], len(summary["reasons"]))
    )
    return entry


def _listed(key: str, items: list[str], total: int | None = None) -> dict[str, Any]:
    shown = [_cut(i) for i in items[:MAX_LISTED]]
    more = (len(items) if total is None else total) - len(shown)
    return {key: shown, f"{key}_more": more} if more else {key: shown}


def _changed(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Subjects whose command (everything but the reason) changed, with their reason cut short."""
    changed = {}
    for subject, now in after.items():
        was = before.get(subject)
        if was is None or {k: v for k, v in was.items() if k != "reason"} != {
            k: v for k, v in now.items() if k != "reason"
        }:
            changed[subject] = {**now, "reason": _cut(str(now.get("reason", "")))}
    return changed


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."
