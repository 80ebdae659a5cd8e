"""The standby's warm copy (daemon/pair/warm_copy.py), the leader's handover document
(daemon/core/handover.py) and the epoch stamp on the fast path's trip: pure, no broker."""

from __future__ import annotations

import json

import pytest

from mullet.daemon.core.handover import Handover, handover_document
from mullet.daemon.pair.warm_copy import PENDING_EVENTS_MAX, WarmCopy
from mullet.drivers.protocol import GridEvent, GroupSetpoint, Trip, WireError, decode, encode
from mullet.policies.model import Obligation, Override


def _handover(epoch: int = 7) -> Handover:
    event = GridEvent(id="ev-1", kind="limit", kw=9000.0, program="ERS-10", source="test")
    obligation = Obligation("ev-1", "limit", 9000.0, 100.0, None, program="ERS-10", deadline_s=600.0)
    hold = Obligation("ufr-12", "limit", 13000.0, 100.0, None, program="under-frequency stage 1")
    return Handover(
        node_id="a",
        epoch=epoch,
        seq=4100,
        obligations=((event, obligation), (None, hold)),
        cancelled=frozenset({"ev-0"}),
        latched_stages=frozenset({1}),
        hard_cut=frozenset({"c01"}),
        restores=((1.0, 600.0),),
        overrides=(Override("c02", "curtail", 2e9, "maintenance"),),
    )


def test_the_handover_document_round_trips() -> None:
    handover = _handover()
    raw = json.dumps({**handover_document(handover), "ts": 1.0}).encode()
    assert Handover.parse(raw) == handover


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"v":2}', b'{"v":1,"node_id":"a"}', b'{"v":1,"obligations":[{"event":3}]}'],
)
def test_a_bad_handover_is_a_wire_error_not_a_crash(raw: bytes) -> None:
    with pytest.raises(WireError):
        Handover.parse(raw)


def test_the_warm_copy_ignores_a_deposed_leaders_setpoint_and_tracks_the_highest_seq() -> None:
    warm = WarmCopy()
    warm.on_setpoint("c01", GroupSetpoint(seq=10, mode="run", ts=1.0, epoch=5))
    warm.on_setpoint("c01", GroupSetpoint(seq=99, mode="curtail", ts=2.0, epoch=4))  # a zombie's
    assert warm.setpoints["c01"].seq == 10
    warm.on_handover(_handover(epoch=5))
    warm.on_handover(_handover(epoch=3))  # an older leader's, retained late: ignored
    assert warm.handover is not None and warm.handover.epoch == 5
    assert warm.max_seq == 4100


def test_unacked_grid_events_are_kept_bounded_and_dropped_once_acked() -> None:
    warm = WarmCopy()
    for i in range(PENDING_EVENTS_MAX + 5):
        warm.on_grid_event(GridEvent(id=f"ev-{i}", kind="cancel"), now_mono_s=100.0)
    assert len(warm.pending_events) == PENDING_EVENTS_MAX
    warm.on_ack("ev-6")
    ids = [e.id for e in warm.unacked_events(now_mono_s=101.0)]
    assert "ev-6" not in ids and "ev-0" not in ids and ids[0] == "ev-5"
    assert warm.unacked_events(now_mono_s=1000.0) == []  # too old: the sender has retried or given up


async def test_the_fast_path_trip_carries_the_epoch_and_nothing_without_one() -> None:
    from mullet.daemon.core.commands import TripOrder
    from mullet.daemon.site.fastpath import FastPath

    sent: list[bytes] = []
    fast = FastPath(
        publish_trip=lambda payload: sent.append(payload),  # type: ignore[func-returns-value]
        on_fired=lambda _record: None,
        on_settled=lambda _settled: None,
    )
    fast.fire(TripOrder(1, 4190, "test", 0.0, epoch=None))  # no lease: v1 bytes, no epoch field
    fast.fire(TripOrder(1, 4191, "test", 0.0, epoch=12))
    without, stamped = sent
    assert b"epoch" not in without and decode(Trip, without).epoch is None
    trip = decode(Trip, stamped)
    assert stamped == encode(Trip(seq=4191, stage=1, ts=trip.ts, epoch=12))
    assert trip.epoch == 12


def test_the_ha_section_is_optional_and_strict() -> None:
    import tomllib
    from pathlib import Path

    from mullet.daemon.config import ConfigError, parse_config

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "deploy" / "site.example.toml").read_text())
    assert parse_config(data).ha is None  # absent: a single daemon, as before
    data["ha"] = {"etcd_endpoints": ["127.0.0.1:2379"], "node_id": "a"}
    assert parse_config(data).ha is not None and parse_config(data).ha.lease_ttl_s == 2
    for bad in ({"etcd_endpoints": ["nohost"]}, {"lease_ttl_s": 0}, {"ttl": 2}, {"etcd_endpoints": []}):
        with pytest.raises(ConfigError):
            parse_config({**data, "ha": {**data["ha"], **bad}})


def test_an_ai_tenant_ignores_a_cap_from_a_deposed_leader_and_the_wire_omits_an_absent_epoch() -> None:
    from mullet.drivers.protocol import TenantSetpoint
    from mullet.simulators.ai import DemandTrace, TenantSim

    tenant = TenantSim("ai-a", DemandTrace([1000.0], 1.0), lambda: 0.0)
    tenant.apply(TenantSetpoint(seq=20, power_cap_kw=800.0, ts=1.0, epoch=9))  # the new leader
    tenant.apply(TenantSetpoint(seq=21, power_cap_kw=None, ts=2.0, epoch=4))  # the old one, late
    assert tenant.cap_kw == 800.0 and tenant.seq_applied == 20 and tenant.fence.fenced == 1
    tenant.apply(TenantSetpoint(seq=22, power_cap_kw=None, ts=3.0))  # no lease: never fenced
    assert tenant.cap_kw is None
    assert b"epoch" not in encode(TenantSetpoint(seq=1, power_cap_kw=None, ts=1.0))
    assert decode(TenantSetpoint, encode(TenantSetpoint(seq=1, ts=1.0, epoch=3))).epoch == 3
