"""What the controller core journals for `mulletd replay --journal`: a `price` row when the price changes
(not on every repeat of the feed) and the AI tenants' total in each `site_power` row (None while any
tenant is unknown). On the deterministic `Shell` of tests/test_controller.py: no broker, a fake clock."""

from __future__ import annotations

from pathlib import Path

from test_controller import AI_KW, Shell


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
