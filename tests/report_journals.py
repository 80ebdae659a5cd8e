"""Small journals for the report tests: the recorded ERS-10 event (tests/data/report_ers10.jsonl) and
synthesized events and drills with a trip and its trip_curve, written in the daemon's schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mullet.daemon.records.journal import write_rows

RECORDED = Path(__file__).parent / "data" / "report_ers10.jsonl"
Row = tuple[float, str, str | None, dict[str, Any]]


def recorded_rows() -> list[Row]:
    rows = [json.loads(line) for line in RECORDED.read_text().splitlines()]
    return [(r["wall_s"], r["kind"], r["subject"], r["data"]) for r in rows]


def write_journal(path: Path, rows: list[Row]) -> Path:
    return write_rows(path, rows)


def event_rows(
    event_id: str,
    notice_s: float,
    *,
    program: str = "FFR",
    deadline_s: float = 0.25,
    limit_kw: float = 6000.0,
    before_kw: float = 10000.0,
    during_kw: float = 5900.0,
    duration_s: float = 1800.0,
    drill: bool = False,
    trip_seq: int | None = None,
    curve_hz: float = 10.0,
) -> list[Row]:
    """A `limit` event (or drill) accepted at `notice_s`: site power every 10 s at `before_kw` for 10
    minutes before, `during_kw` from 1 s after the notice, recalled after `duration_s`; with
    `trip_seq`, a trip 0.05 s after the notice and its curve at `curve_hz` (2 s before, 5 s after,
    power falling to `during_kw` at 0.2 s)."""
    kind = "drill" if drill else "grid_event"
    rows: list[Row] = [(notice_s - 600 + 10 * k, "site_power", None, {"kw": before_kw}) for k in range(60)]
    rows += [
        (notice_s + 1 + 10 * k, "site_power", None, {"kw": during_kw}) for k in range(int(duration_s // 10))
    ]
    rows += [(notice_s + duration_s + 10 * k, "site_power", None, {"kw": before_kw}) for k in range(1, 30)]
    event = {"id": event_id, "kind": "limit", "kw": limit_kw, "program": program}
    obligation = {
        "event_id": event_id,
        "kind": "limit",
        "kw": limit_kw,
        "start_s": notice_s,
        "end_s": None,
        "baseline_kw": None,
        "program": program,
        "deadline_s": deadline_s,
        "explicit_recall": True,
    }
    rows.append((notice_s, kind, event_id, {"event": event, "obligation": obligation, "cancels": None}))
    recall = {"id": f"{event_id}-recall", "kind": "cancel", "program": program}
    rows.append(
        (
            notice_s + duration_s,
            kind,
            f"{event_id}-recall",
            {"event": recall, "obligation": None, "cancels": event_id},
        )
    )
    if trip_seq is not None:
        trip = {"seq": trip_seq, "stage": 1, "cause": event_id, "hz": 59.84, "groups": ["c01"], "outlets": []}
        rows.append((notice_s + 0.05, "trip", "1", trip))
        steps = range(round(-2 * curve_hz), round(5 * curve_hz) + 1)
        samples = [
            [round(k / curve_hz, 4), before_kw if k / curve_hz < 0.2 else during_kw, 59.84] for k in steps
        ]
        curve = {
            "seq": trip_seq,
            "stage": 1,
            "cause": event_id,
            "before_s": 2.0,
            "after_s": 5.0,
            "samples": samples,
        }
        rows.append((notice_s + 5.2, "trip_curve", "1", curve))
    return rows
