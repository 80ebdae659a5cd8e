"""`mulletd drill`: ask the live daemon for a drill (POST /v1/drills), wait for it, print its scorecard.

The daemon runs the drill (daemon/site/drills.py); this command is its operator's handle: it sends
the request, and for a drill that runs now waits until the drill has ended and been journaled, then
scores it from the journal exactly as `mulletd report` would. `--dry-run` prints what would be shed.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mullet.daemon.config import Config

DRILLS_PATH = "/v1/drills"
EXIT_PASSED, EXIT_ERROR, EXIT_FAILED = 0, 1, 3
# After the drill's end: the journal's obligation_ended row and the last samples, then the scorecard.
SETTLE_S = 3.0
WAIT_AFTER_END_S = 120.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


class DrillCliError(Exception):
    pass


def parse_duration_s(text: str) -> float:
    """`90`, `90s`, `15m`, `1h` -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"duration {text!r}: a number with s, m or h (e.g. 30m)")
    return float(match[1]) * {"s": 1.0, "m": 60.0, "h": 3600.0}[match[2] or "s"]


def call(
    base_url: str,
    token: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout_s: float = 15.0,
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": f"HTTP {exc.code} {exc.reason}", "code": "http_error"}
    except (urllib.error.URLError, OSError) as exc:
        raise DrillCliError(f"cannot reach {base_url}: {getattr(exc, 'reason', exc)}") from None


def wait_for_end(
    journal_path: str | Path,
    drill_id: str,
    end_s: float,
    clock: Callable[[], float] = time.time,
    pause: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until the journal says the drill ended (obligation_ended or a cancel), at most
    WAIT_AFTER_END_S past its scheduled end; then SETTLE_S more for the last samples."""
    while clock() < end_s + WAIT_AFTER_END_S:
        if clock() >= end_s and _ended(journal_path, drill_id):
            pause(SETTLE_S)
            return True
        pause(min(1.0, max(0.2, end_s - clock())))
    return False


def _ended(journal_path: str | Path, drill_id: str) -> bool:
    db = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT 1 FROM journal WHERE (kind = 'obligation_ended' AND subject = ?)"
            " OR (kind = 'drill' AND json_extract(data, '$.cancels') = ?) LIMIT 1",
            (drill_id, drill_id),
        ).fetchone()
    finally:
        db.close()
    return row is not None


def format_dry_run(reply: dict[str, Any]) -> str:
    if not reply.get("accepted"):
        return f"dry run refused ({reply.get('code')}): {reply.get('reason')}\n"
    lines = [
        f"dry run {reply['id']}: {reply['program']} would shed {reply['would_shed_kw']:.0f} kW"
        f" ({reply['actuation']}: {reply['actuation_reason']})",
        f"  baseline {_kw(reply.get('baseline_kw'))}, target {_kw(reply.get('target_kw'))},"
        f" site limit {_kw(reply.get('site_limit_kw'))}, mining budget {_kw(reply.get('mining_budget_kw'))},"
        f" feasible {reply.get('feasible')}",
        "  planned against the telemetry of now; nothing was commanded",
    ]
    for change in reply.get("would_change", []):
        was = change["from"] or {}
        to = change["to"]
        lines.append(
            f"  {change['group_id']:<12} {was.get('mode', '?')}/{_kw(was.get('power_kw'))}"
            f" -> {to['mode']}/{_kw(to.get('power_kw'))}  {change['reason']}"
        )
    if not reply.get("would_change"):
        lines.append("  no group would change")
    return "\n".join(lines) + "\n"


def _kw(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} kW"


def run_drill(
    *,
    url: str,
    token: str | None,
    request: dict[str, Any],
    journal_path: str | None,
    config: Config | None,
    fmt: str,
    output: str | None,
    wait: bool,
    out: Any = sys.stdout,
) -> int:
    from mullet.daemon.records.report import ReportError, build_report
    from mullet.daemon.records.report_render import render
    from mullet.daemon.records.report_text import outcome

    status, reply = call(url, token, "POST", DRILLS_PATH, request)
    if request.get("dry_run"):
        if status != 200:
            print(f"mulletd drill: refused ({reply.get('code')}): {reply.get('error')}", file=sys.stderr)
            return EXIT_ERROR
        out.write(json.dumps(reply, indent=2) + "\n" if fmt == "json" else format_dry_run(reply))
        return EXIT_PASSED if reply.get("accepted") else EXIT_ERROR
    if status == 202:
        print(
            f"{reply['id']} scheduled at {reply['at_s']:.0f} (Unix s) for {reply['duration_s']:g} s;"
            f" its scorecard afterwards: mulletd report --event {reply['id']}",
            file=out,
        )
        return EXIT_PASSED
    if status != 200 or not reply.get("accepted"):
        print(
            f"mulletd drill: refused ({reply.get('code')}): {reply.get('reason') or reply.get('error')}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    drill_id, end_s = str(reply["id"]), float(reply["end_s"])
    print(f"{drill_id} deployed, ends at {end_s:.0f} (Unix s)", file=sys.stderr)
    if not wait or journal_path is None:
        hint = "" if journal_path else " (--url alone: no journal to score from here)"
        print(f"its scorecard afterwards: mulletd report --event {drill_id}{hint}", file=sys.stderr)
        return EXIT_PASSED
    if not wait_for_end(journal_path, drill_id, end_s):
        print(
            f"mulletd drill: {drill_id} not journaled as ended {WAIT_AFTER_END_S:g} s after its end",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        report = build_report(journal_path, drill_id, config=config)
    except ReportError as exc:
        print(f"mulletd drill: {exc}", file=sys.stderr)
        return EXIT_ERROR
    text = render(report, fmt, timezone=config.site.timezone if config is not None else "UTC")
    if output:
        Path(output).write_text(text)
        print(f"{output}: {outcome(report)}: {'; '.join(report.verdict)}", file=out)
    else:
        out.write(text)
    return EXIT_PASSED if report.passed else EXIT_FAILED


def cancel_drill(*, url: str, token: str | None, drill_id: str, out: Any = sys.stdout) -> int:
    status, reply = call(url, token, "DELETE", f"{DRILLS_PATH}/{urllib.parse.quote(drill_id, safe=':')}")
    if status != 200:
        print(
            f"mulletd drill: cancel refused ({reply.get('code')}):"
            f" {reply.get('error') or reply.get('reason')}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(f"{drill_id} cancelled ({reply.get('was')})", file=out)
    return EXIT_PASSED
