"""policies/obligations.py: the acceptance rules on their own, with events that are not the wire model,
and the rules the site's book and the fleet dispatcher share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mullet.daemon.fleet.config import parse_fleet_config
from mullet.daemon.fleet.dispatcher import FleetDispatcher
from mullet.drivers.protocol import GridEvent
from mullet.policies.obligations import (
    ObligationBook,
    cancel_decision,
    repeat_decision,
    reserved_id,
)
from mullet.policies.trigger import UFR_PREFIX, is_ufr_obligation, trip_hold, ufr_obligation_id

NOW_S = 1_800_000_000.0


@dataclass(frozen=True)
class Request:
    """A grid event that is not drivers/protocol.py's model: the rules read only its attributes."""

    id: str
    kind: Literal["limit", "reduce", "cancel"] = "limit"
    kw: float | None = 9000.0
    start: float | None = None
    end: float | None = None
    program: str = "generic"
    allow_ai_flex: bool = False
    trip_stage: int | None = None


def _book() -> ObligationBook[Request]:
    return ObligationBook(interconnect_kw=13_000, max_event_kw_factor=2.0, max_obligations=2)


def test_a_book_of_plain_requests_accepts_counts_cancels_and_remembers_their_events() -> None:
    book = _book()
    first = Request("a")
    decision = book.decide(first, now_s=NOW_S, site_power_kw=None)
    assert decision.accepted and decision.obligation is not None and decision.obligation.kw == 9000.0
    book.apply(first, decision, NOW_S)
    assert book.event("a") is first and book.event("b") is None
    assert book.decide(Request("a"), now_s=NOW_S, site_power_kw=None).code == "duplicate"
    assert book.decide(Request("a", kw=8000.0), now_s=NOW_S, site_power_kw=None).code == "id_conflict"
    # An under-frequency hold is held but neither counted against the bound nor an event of the book.
    hold = trip_hold(7, 1, 13_000, NOW_S)
    book.obligations[hold.event_id] = hold
    assert book.grid_obligations() == 1 and book.event(hold.event_id) is None
    book.apply(Request("b"), book.decide(Request("b"), now_s=NOW_S, site_power_kw=None), NOW_S)
    assert book.decide(Request("c"), now_s=NOW_S, site_power_kw=None).code == "too_many_obligations"
    cancel = Request("a", kind="cancel", kw=None)
    book.apply(cancel, book.decide(cancel, now_s=NOW_S, site_power_kw=None), NOW_S + 1)
    assert "a" not in book.obligations and book.event("a") is first  # remembered for duplicates
    assert book.decide(cancel, now_s=NOW_S, site_power_kw=None).code == "duplicate"
    book.expire(NOW_S + book.history_s + 2)
    assert book.event("a") is None and book.event("b") == Request("b")  # forgotten; b is still held


def test_the_under_frequency_names_are_one_definition() -> None:
    assert ufr_obligation_id(12) == f"{UFR_PREFIX}12" == trip_hold(12, 2, 100.0, 0.0).event_id
    assert is_ufr_obligation("ufr-12") and not is_ufr_obligation("grid-ufr-12")
    refused = reserved_id(ufr_obligation_id(3))
    assert refused is not None and not refused.accepted and refused.code == "reserved_id"
    assert reserved_id("ers-1") is None
    assert _book().decide(Request("ufr-1"), now_s=NOW_S, site_power_kw=None).code == "reserved_id"


def test_shared_rules_duplicate_conflict_and_cancel() -> None:
    assert repeat_decision(Request("x"), None) is None
    same = repeat_decision(Request("x"), Request("x"))
    assert same is not None and same.accepted and same.duplicate and same.code == "duplicate"
    other = repeat_decision(Request("x", kw=1.0), Request("x"))
    assert other is not None and not other.accepted and other.code == "id_conflict"
    ends = cancel_decision("x", held=True, cancelled=False)
    assert ends.accepted and ends.cancels == "x" and ends.code == "cancelled"
    again = cancel_decision("x", held=False, cancelled=True)
    assert again.accepted and again.duplicate and again.cancels is None
    unknown = cancel_decision("x", held=False, cancelled=False)
    assert not unknown.accepted and unknown.code == "unknown_event"


def test_the_fleet_dispatcher_answers_portfolio_events_by_the_same_rules() -> None:
    sites = [{"site_id": "s1"}]
    config = parse_fleet_config(
        {"fleet": {"fleet_id": "pf-rules"}, "mqtt": {"url": "mqtt://127.0.0.1:1"}, "sites": sites}
    )
    fleet = FleetDispatcher(config)
    view = fleet.sites["s1"]
    sheddable_kw = {"fast_path": 0.0, "graceful": 3000.0}
    flex = {"site_kw": 5000.0, "sheddable_kw": sheddable_kw, "firmware_sleep_s": 5.0}
    view.online, view.plan, view.plan_ts_s = True, {"v": 1, "flex": flex}, NOW_S

    def decide(event: GridEvent) -> tuple[bool, str, str]:
        return fleet._decide(event, NOW_S)

    portfolio = GridEvent(id="pf-1", kind="reduce", kw=1000.0)
    assert decide(portfolio)[:2] == (True, "accepted")
    assert decide(portfolio)[:2] == (True, "duplicate")
    assert decide(GridEvent(id="pf-1", kind="reduce", kw=900.0))[:2] == (False, "id_conflict")
    assert decide(GridEvent(id="pf-2", kind="reduce", kw=900.0))[:2] == (False, "busy")
    assert decide(GridEvent(id="pf-1", kind="cancel"))[:2] == (True, "cancelled")
    assert fleet.portfolio is None and fleet.pending_cancels["s1"]  # the site's share is to be cancelled
    assert decide(GridEvent(id="pf-1", kind="cancel"))[:2] == (False, "unknown_event")
    # Each site would refuse its share `ufr-9.r1` as a reserved id: the portfolio is refused up front.
    assert decide(GridEvent(id="ufr-9", kind="reduce", kw=1000.0))[:2] == (False, "reserved_id")
    assert fleet.portfolio is None
