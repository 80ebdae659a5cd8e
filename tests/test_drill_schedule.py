"""The drill schedule and request rules, without a daemon: ids, the bound, what a restart takes back and
what it journals as missed (daemon/core/drills.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mullet.daemon.core.drills import (
    MAX_SCHEDULED,
    MISSED_AFTER_S,
    DrillRequest,
    DrillSchedule,
    ScheduledDrill,
    drill_event,
    drill_id,
    recover_schedule,
)

T0 = 1_796_000_000.0  # 2026-11-30T00:53:20Z


def _scheduled(n: int, at_s: float) -> ScheduledDrill:
    return ScheduledDrill(f"drill:{n}", DrillRequest(program="ERS-10", kw=2000, at_s=at_s), "http:127.0.0.1")


def test_ids_name_the_utc_start_and_never_repeat() -> None:
    first = drill_id(T0, set())
    assert first == "drill:20261130T005320Z"
    assert drill_id(T0 + 0.9, {first}) == first + "-2"
    assert drill_id(T0, {first, first + "-2"}) == first + "-3"


def test_a_drill_is_a_reduce_ending_at_its_own_end() -> None:
    event = drill_event("drill:x", DrillRequest(program="ERS-10", kw=2000, duration_s=900), T0)
    assert (event.kind, event.kw, event.end, event.program, event.source) == (
        "reduce",
        2000,
        T0 + 900,
        "ERS-10",
        "drill",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"program": "ERS-10", "kw": 0},
        {"program": "ERS-10", "kw": float("nan")},
        {"program": "ERS-10", "kw": 100, "duration_s": 5},
        {"program": "ERS-10", "kw": 100, "duration_s": 9 * 3600},
        {"program": "", "kw": 100},
        {"program": "ERS-10", "kw": 100, "surprise": 1},
    ],
)
def test_bad_requests_are_refused(body: dict) -> None:
    with pytest.raises(ValidationError):
        DrillRequest.model_validate(body)


def test_the_schedule_is_bounded_and_gives_due_drills_in_time_order() -> None:
    schedule = DrillSchedule()
    for n in range(MAX_SCHEDULED):
        schedule.add(_scheduled(n, T0 + 100 - n))
    assert schedule.full()
    with pytest.raises(OverflowError):
        schedule.add(_scheduled(99, T0))
    assert schedule.next_due_s() == T0 + 100 - (MAX_SCHEDULED - 1)
    due = schedule.take_due(T0 + 100 - (MAX_SCHEDULED - 3))
    assert [d.drill_id for d in due] == [
        f"drill:{MAX_SCHEDULED - 1}",
        f"drill:{MAX_SCHEDULED - 2}",
        f"drill:{MAX_SCHEDULED - 3}",
    ]
    assert not schedule.full() and len(schedule.pending) == MAX_SCHEDULED - 3
    assert schedule.cancel("drill:0") is not None and schedule.cancel("drill:0") is None


def test_a_restart_takes_back_what_is_still_to_run_and_misses_what_passed_while_down() -> None:
    rows = [
        (T0, "drill_scheduled", _scheduled(1, T0 + 3600).entry()),  # still to come
        (T0, "drill_scheduled", _scheduled(2, T0 + 60).entry()),  # ran
        (T0, "drill_scheduled", _scheduled(3, T0 + 120).entry()),  # cancelled
        (T0, "drill_scheduled", _scheduled(4, T0 + 200).entry()),  # passed while down
        (T0 + 60, "drill", {"event": {"id": "drill:2"}, "obligation": {}}),
        (T0 + 70, "drill_cancelled", {"id": "drill:3"}),
    ]
    now_s = T0 + 200 + MISSED_AFTER_S + 1
    schedule, missed = recover_schedule(rows, now_s)
    assert list(schedule.pending) == ["drill:1"]
    assert [d.drill_id for d in missed] == ["drill:4"]
    # Just inside the grace: run now, not missed.
    schedule, missed = recover_schedule(rows, T0 + 200 + MISSED_AFTER_S - 1)
    assert sorted(schedule.pending) == ["drill:1", "drill:4"] and missed == []
    # A missed drill journaled as such is not missed twice.
    schedule, missed = recover_schedule([*rows, (now_s, "drill_missed", {"id": "drill:4"})], now_s)
    assert missed == [] and list(schedule.pending) == ["drill:1"]
