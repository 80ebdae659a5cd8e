"""A trip's acknowledgements, once back: timed, journaled and logged (the trip itself went out first)."""

from __future__ import annotations

import structlog

from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.daemon.site.executor import pool_detail
from mullet.daemon.site.fastpath import TripSettled
from mullet.drivers.pdu import PoolResult

log = structlog.get_logger("mullet.daemon")


def record_settled(settled: TripSettled, metrics: Metrics, journal: Journal) -> None:
    trip = settled.trip
    metrics.trip_seconds.observe(settled.added_latency_s)
    metrics.trip_settled_seconds.observe(settled.settled_latency_s)
    detail = {
        "seq": trip.seq,
        "published": settled.published,
        "added_latency_s": settled.added_latency_s,
        "settled_latency_s": settled.settled_latency_s,
        "cut": _cut_detail(settled.cut_result),
    }
    journal.record("trip_settled", detail, subject=str(trip.stage))
    log_at = log.info if settled.published and _cut_ok(settled.cut_result) else log.error
    log_at("trip acknowledged", **{**detail, "added_latency_s": round(settled.added_latency_s, 6)})


def _cut_ok(result: PoolResult | BaseException | None) -> bool:
    return result is None or (isinstance(result, PoolResult) and result.ok)


def _cut_detail(result: PoolResult | BaseException | None) -> str | None:
    if isinstance(result, PoolResult):
        return pool_detail(result)
    return None if result is None else f"error: {result!r}"[:500]
