"""What the controller core journals for `mulletd replay --journal`, `mulletd export` and reports: a
`price` row when the price changes (not on every repeat of the feed), the AI and mining totals in each
`site_power` row (None while one is unknown), and the meter's samples around a trip (`trip_curve`). On
the deterministic `Shell` of tests/test_controller.py: no broker, a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_controller import AI_KW, POLL, Shell


def test_a_repeated_price_is_journaled_once_and_a_new_value_again(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    shell.price_usd_per_mwh = 42.5
    shell.start()
    shell.run_for(30)  # the feed repeats 42.5 every step
    assert [c.data for _t, c in shell.records("price")] == [{"usd_per_mwh": 42.5}]
    shell.price_usd_per_mwh = 180.0
    shell.run_for(10)
    shell.price_usd_per_mwh = 42.5
    shell.run_for(10)
    rows = shell.records("price")
    assert [c.data["usd_per_mwh"] for _t, c in rows] == [42.5, 180.0, 42.5]
    assert rows[1][0] == rows[0][0] + 31.0  # written at the step the new value arrived


def test_site_power_carries_the_ai_and_mining_totals_and_none_while_one_is_unknown(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    shell.start()
    shell.run_for(5)
    _t, row = shell.records("site_power")[-1]
    assert row.data["ai_kw"] == round(sum(AI_KW.values()), 3)
    assert row.data["mining_kw"] == round(sum(shell.power_kw.values()), 3)
    assert set(row.data) == {"kw", "hz", "ai_kw", "mining_kw"}

    shell.core.tenant_online("ai-b", False)  # its reading no longer counts: unknown, not zero
    shell.run_for(5)
    _t, row = shell.records("site_power")[-1]
    assert row.data["ai_kw"] is None
    assert row.data["mining_kw"] is not None
    assert row.data["kw"] > 0  # the meter itself is still known
    shell.core.group_online("c01", False)
    shell.run_for(5)
    _t, row = shell.records("site_power")[-1]
    assert row.data["mining_kw"] is None


def test_a_trip_keeps_the_meter_samples_around_it_at_the_poll_rate(tmp_path: Path) -> None:
    """`trip_curve`: every meter sample from 2 s before a frequency trip to 5 s after, in one entry
    (the sub-second response a 1 s `site_power` cannot show); none without a trip."""
    shell = Shell(tmp_path)
    shell.start()
    shell.run_for(10, meter_reads=POLL)
    assert shell.records("trip_curve") == []
    shell.hz = 59.80  # below stage 1, above stage 2
    shell.run_for(2, meter_reads=POLL)
    (order,) = shell.trips
    assert shell.records("trip_curve") == []  # the window after it is still open
    shell.run_for(6, meter_reads=POLL)
    ((_t, curve),) = shell.records("trip_curve")
    assert (curve.data["seq"], curve.data["stage"], curve.data["cause"]) == (order.seq, 1, "frequency")
    samples = curve.data["samples"]
    offsets = [dt for dt, _kw, _hz in samples]
    assert (
        offsets == sorted(offsets)
        and -2.0 <= offsets[0] <= -2.0 + 2 / POLL
        and 5.0 - 2 / POLL <= offsets[-1] <= 5.0
    )
    assert len(samples) == pytest.approx(7 * POLL, abs=2)  # the poll rate, nothing thinned
    at_trip = next(s for s in samples if s[0] == 0.0)
    assert at_trip[2] == 59.8 and samples[0][2] == 60.0  # the dip's own sample, and the calm before it
    assert samples[-1][1] < samples[0][1]  # the shed shows in the power after it
    shell.run_for(10, meter_reads=POLL)
    assert len(shell.records("trip_curve")) == 1  # one curve a trip
