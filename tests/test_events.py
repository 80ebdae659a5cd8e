"""Grid event acceptance rules (pure): what is accepted, what is refused and why."""

from __future__ import annotations

from mullet.daemon.core.obligation_book import ObligationBook
from mullet.drivers.protocol import GridEvent

NOW_S = 1_800_000_000.0


def _book() -> ObligationBook:
    return ObligationBook(interconnect_kw=13_000, max_event_kw_factor=2.0)


def _accept(book: ObligationBook, event: GridEvent, site_kw: float | None = 11_000.0):  # type: ignore[no-untyped-def]
    decision = book.decide(event, now_s=NOW_S, site_power_kw=site_kw)
    book.apply(event, decision, NOW_S)
    return decision


def test_reduce_fixes_its_baseline_at_acceptance() -> None:
    book = _book()
    decision = _accept(book, GridEvent(id="r1", kind="reduce", kw=2000))
    assert decision.accepted and decision.obligation is not None
    assert decision.obligation.baseline_kw == 11_000.0
    assert decision.obligation.site_limit_kw() == 9_000.0
    assert decision.obligation.start_s == NOW_S  # start defaults to now


def test_reduce_without_a_live_meter_is_refused() -> None:
    decision = _accept(_book(), GridEvent(id="r2", kind="reduce", kw=2000), site_kw=None)
    assert not decision.accepted
    assert "baseline" in decision.reason


def test_windows_and_sizes() -> None:
    book = _book()
    assert _accept(
        book, GridEvent(id="w1", kind="limit", kw=9000, start=NOW_S + 60, end=NOW_S + 30)
    ).reason == ("end must be after start")
    assert not _accept(book, GridEvent(id="w2", kind="limit", kw=26_001)).accepted
    assert _accept(book, GridEvent(id="w3", kind="limit", kw=26_000, end=NOW_S + 1)).accepted
    later = GridEvent(id="w4", kind="limit", kw=9000, start=NOW_S + 600, end=NOW_S + 1200)
    assert _accept(book, later).accepted
    assert [o.event_id for o in book.active(NOW_S)] == ["w3"]
    assert [o.event_id for o in book.active(NOW_S + 700)] == ["w4"]
    assert book.expire(NOW_S + 5) == ["w3"]


def test_cancel_and_duplicates() -> None:
    book = _book()
    event = GridEvent(id="c1", kind="limit", kw=9000)
    assert _accept(book, event).reason == "accepted"
    assert _accept(book, event).duplicate
    assert not _accept(book, GridEvent(id="c1", kind="limit", kw=8000)).accepted
    cancel = GridEvent(id="c1", kind="cancel")
    assert _accept(book, cancel).cancels == "c1"
    assert book.obligations == {}
    assert _accept(book, cancel).duplicate
    assert not _accept(book, GridEvent(id="nope", kind="cancel")).accepted
