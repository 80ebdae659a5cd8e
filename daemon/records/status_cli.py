"""`mulletd status`: the live daemon's site, obligations and groups as a table, from its HTTP API.

Reads `GET /v1/status` (docs/protocol.md, HTTP API); `--watch` redraws every few seconds. Nothing here
changes the daemon.
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

STATUS_PATH = "/v1/status"


class StatusError(Exception):
    pass


def fetch_status(base_url: str, token: str | None, timeout_s: float = 3.0) -> dict[str, Any]:
    request = urllib.request.Request(base_url.rstrip("/") + STATUS_PATH)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{base_url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"cannot reach {base_url}: {reason}") from None
    try:
        data = json.loads(body)  # the daemon sends NaN for an unknown sum; json reads it
    except ValueError as exc:
        raise StatusError(f"{base_url}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StatusError(f"{base_url}: unexpected answer")
    return data


def _kw(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return f"{float(value):,.1f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def format_status(status: dict[str, Any]) -> str:
    plan = status.get("plan") or {}
    journal = status.get("journal") or {}
    lines = [
        f"site       {_kw(status.get('site_kw'))} kW   limit {_kw(status.get('site_limit_kw'))} kW   "
        f"binding: {plan.get('binding_constraint', 'no plan yet')}",
        f"load       ai {_kw(status.get('ai_kw'))} kW   mining {_kw(status.get('mining_kw'))} kW   "
        f"mining budget {_kw(status.get('mining_budget_kw'))} kW   feasible: {plan.get('feasible', '-')}",
        f"links      mqtt {'up' if status.get('mqtt_connected') else 'DOWN'}   "
        f"meter {'STALE' if status.get('meter_stale') else 'ok'}   "
        f"journal {journal.get('written', '-')} written, {journal.get('dropped', '-')} dropped, "
        f"{journal.get('queued', '-')} queued",
    ]
    lost = status.get("journal_lost")
    if lost:
        lines.append(
            f"JOURNAL LOST  started with an empty journal; broker seq {lost.get('broker_max_seq')}, "
            f"held curtailed: {', '.join(lost.get('held_curtailed') or []) or 'none'}"
            " (release: override auto)"
        )
    listeners = status.get("listeners") or {}
    if listeners:
        # Reachable from other machines is worth a second look: reads need no token.
        lines.append(
            "listen     "
            + "   ".join(
                f"{name} {where.get('address')}"
                + (" (BEYOND LOOPBACK)" if where.get("beyond_loopback") else "")
                for name, where in sorted(listeners.items())
            )
        )
    lines.append("")
    obligations = plan.get("obligations") or {}
    rows = [
        [
            event_id,
            str(o.get("program")),
            _kw(o.get("limit_kw")),
            "-" if o.get("deadline_s") is None else f"{o['deadline_s']:g} s",
            str(o.get("actuation") or "-"),
            str(o.get("recall")),
        ]
        for event_id, o in obligations.items()
    ]
    for event_id in status.get("obligations") or []:
        if event_id not in obligations:
            rows.append([event_id, "-", "-", "-", "-", "-"])
    lines.append(f"obligations ({len(rows)})")
    lines += _table(["id", "program", "limit kW", "deadline", "actuation", "recall"], rows) if rows else []
    lines.append("")
    power = status.get("group_power_kw") or {}
    awaiting = status.get("awaiting_ack_s") or {}
    groups = plan.get("groups") or {}
    rows = []
    for group_id in sorted(set(groups) | set(power)):
        decision = groups.get(group_id, {})
        rows.append(
            [
                group_id,
                str(decision.get("mode", "-")),
                "-" if decision.get("power_kw") is None else _kw(decision["power_kw"]),
                "-" if decision.get("trip_stage") is None else str(decision["trip_stage"]),
                _kw(power.get(group_id)),
                "ok" if group_id not in awaiting else f"waiting {awaiting[group_id]:.1f} s",
                str(decision.get("reason", ""))[:70],
            ]
        )
    lines.append(f"groups ({len(rows)}, {status.get('curtailed', 0)} curtailed)")
    lines += _table(["group", "mode", "target kW", "stage", "power kW", "ack", "reason"], rows)
    return "\n".join(lines) + "\n"


def run_status(
    base_url: str,
    token: str | None,
    *,
    watch_s: float | None = None,
    out: TextIO = sys.stdout,
    iterations: int | None = None,
) -> int:
    """Print once (exit 1 if the daemon cannot be read), or redraw every `watch_s` until interrupted."""
    if watch_s is None:
        try:
            out.write(format_status(fetch_status(base_url, token)))
        except StatusError as exc:
            print(f"mulletd status: {exc}", file=sys.stderr)
            return 1
        return 0
    clear = "\x1b[H\x1b[2J" if out.isatty() else ""
    done = 0
    try:
        while iterations is None or done < iterations:
            try:
                body = format_status(fetch_status(base_url, token))
            except StatusError as exc:
                body = f"mulletd status: {exc} (retrying)\n"
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"{clear}{base_url}   {stamp}   every {watch_s:g} s, Ctrl-C to stop\n\n{body}\n")
            out.flush()
            done += 1
            if iterations is None or done < iterations:
                time.sleep(watch_s)
    except KeyboardInterrupt:
        pass
    return 0
