"""Wire protocol v1: every refusal has a bounded reason, nothing raises past `WireError`."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mullet.drivers.protocol import (
    GridEvent,
    GroupSetpoint,
    GroupState,
    TenantState,
    Topics,
    Trip,
    WireError,
    decode,
    decode_online,
    encode,
    encode_trip,
)

REASONS = {"too_large", "not_json", "not_object", "bad_version", "invalid_field", "unknown_topic"}


def test_round_trip_and_unknown_fields_are_ignored() -> None:
    setpoint = GroupSetpoint(seq=7, mode="curtail", power_kw=None, trip_stage=None, ts=1.5)
    assert decode(GroupSetpoint, encode(setpoint)) == setpoint
    raw = json.dumps({"v": 1, "power_kw": 3.0, "demand_kw": 4.0, "ts": 2.0, "future_field": [1]}).encode()
    assert decode(TenantState, raw).power_kw == 3.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"v": 2, "mode": "run", "power_kw": 1, "ts": 1}', "bad_version"),
        (b'{"v": 1, "mode": "run", "power_kw": NaN, "ts": 1}', "invalid_field"),
        (b'{"v": 1, "mode": "run", "power_kw": -1, "ts": 1}', "invalid_field"),
        (b'{"v": 1, "mode": "explode", "power_kw": 1, "ts": 1}', "invalid_field"),
        (b'{"v": 1, "mode": "run", "ts": 1}', "invalid_field"),
        (b"{" + b" " * 20_000 + b"}", "too_large"),
        (b'{"mode": "run", "power_kw": 1, "ts": 1}', "bad_version"),
        (b'{"v": 1, "mode": "run", "power_kw": true, "ts": 1}', "invalid_field"),
        (b'{"v": 1, "mode": "run", "power_kw": "3", "ts": 1}', "invalid_field"),
    ],
)
def test_bad_group_state_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode(GroupState, raw)
    assert info.value.reason == reason


def test_grid_event_kinds() -> None:
    ok = decode(GridEvent, b'{"v": 1, "id": "e1", "kind": "limit", "kw": 9000, "program": "ERS-10"}')
    assert ok.kind == "limit" and ok.start is None and ok.end is None
    with pytest.raises(WireError):
        decode(GridEvent, b'{"v": 1, "id": "", "kind": "limit", "kw": 1}')
    with pytest.raises(WireError):
        decode(GridEvent, b'{"v": 1, "id": "e2", "kind": "shed-everything", "kw": 1}')


def test_online_payloads() -> None:
    assert decode_online(b"1") is True
    assert decode_online(b"0") is False
    with pytest.raises(WireError):
        decode_online(b"yes")


def test_topics_parse_and_refuse() -> None:
    topics = Topics("mullet/site-1")
    assert topics.parse(topics.group_state("c01")).subject == "c01"
    assert topics.parse(topics.tenant_set("ai-a")).kind == "tenant_set"
    assert topics.parse(topics.grid_event_ack).kind == "grid_event_ack"
    for bad in (
        "mullet/site-2/grid/event",
        "mullet/site-1/mining//state",
        "mullet/site-1/x",
        "mullet/site-1",
    ):
        with pytest.raises(WireError) as info:
            topics.parse(bad)
        assert info.value.reason == "unknown_topic"


@settings(max_examples=500, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=6)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzzed_payloads_never_raise_anything_but_wire_error(raw: bytes) -> None:
    for model in (GroupState, TenantState, GridEvent, GroupSetpoint):
        try:
            decode(model, raw)
        except WireError as exc:
            assert exc.reason in REASONS


@given(
    seq=st.integers(min_value=0, max_value=2**53),
    stage=st.integers(min_value=0, max_value=9),
    ts=st.floats(min_value=0.0, max_value=4e9, allow_nan=False, allow_infinity=False),
    epoch=st.none() | st.integers(min_value=1, max_value=2**53),
)
def test_the_fast_paths_trip_encoding_is_the_models(
    seq: int, stage: int, ts: float, epoch: int | None
) -> None:
    """The fast path formats its trip without pydantic; receivers must not see a difference."""
    fast = encode_trip(seq, stage, ts, epoch)
    model = Trip(seq=seq, stage=stage, ts=ts, epoch=epoch)
    assert decode(Trip, fast) == model
    assert json.loads(fast) == json.loads(encode(model))


def test_the_fast_paths_trip_encoding_is_byte_for_byte_the_models_for_clock_times() -> None:
    for ts in (1764312345.123456, 1764312345.0, 0.0, 1800000000.5):
        for epoch in (None, 7):
            assert encode_trip(42, 1, ts, epoch) == encode(Trip(seq=42, stage=1, ts=ts, epoch=epoch))
