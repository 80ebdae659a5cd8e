"""The PDU driver against simulated PDUs of both switching styles over real Modbus TCP.

The PDUs come from a `SimulatedSite` (only its Modbus PDU servers are started: no MQTT), so a cut is
checked on the ground truth: the outlet states in the simulator and the mining group they feed.
Every wait is a bounded poll of the driver or the simulator, never a fixed sleep for synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import until
from pymodbus.client import AsyncModbusTcpClient

from mullet.daemon.config import Config, parse_config
from mullet.daemon.site.simulated import simulated_site
from mullet.drivers import device_profiles
from mullet.drivers.device_profiles import PduLogin, PduProfile, ProfileError, load_pdu_profile
from mullet.drivers.pdu.client import PduClient
from mullet.drivers.pdu.pool import PduPool
from mullet.simulators.pdu import CoilPduSim, HoldingPduSim, PduSimBase, make_pdu_sim
from mullet.simulators.site import SimulatedSite

NETIO = load_pdu_profile("netio-coils")
MICROBT = load_pdu_profile("microbt-holding")
# A session the tests can watch lapse: 0.3 s instead of the shipped profile's 30 s.
MICROBT_SHORT_LOGIN = dataclasses.replace(MICROBT, login=PduLogin(register=0x0010, value=0x4D42, idle_s=0.3))
G1_KW, G2_KW, G3_KW = 100.0, 200.0, 40.0
# A healthy simulated PDU answers at once, but on a loaded machine "at once" can take a while: the
# tests' requests get a timeout no healthy answer misses. A test whose point is that something does
# not wait makes the slow thing SLOW_S slow and bounds at a fraction of it.
TIMEOUT_S = 2.0
SLOW_S = 10.0
# A dead PDU's request timeout where a test waits it out: two of them (a retry) are over 1.5 x, and
# half of it is still more than TIMEOUT_S for the healthy PDU beside it.
DEAD_S = 5.0
WAIT_S = 30.0  # the bound of every wait on a predicate
FAST = {
    "timeout_s": TIMEOUT_S,
    "keepalive_s": 0.05,
    "stale_after_s": 0.3,
    "reconnect_min_s": 0.02,
    "reconnect_max_s": 0.2,
}


# --- fixtures and helpers ------------------------------------------------------------------------


def _config() -> Config:
    """pdu-n (NETIO coils) feeds g1 on outlets 1+2; pdu-m (MicroBT codes) feeds g2 on 1+2, g3 on 3."""
    return parse_config(
        {
            "site": {"site_id": f"pdu-{secrets.token_hex(4)}", "interconnect_kw": 1000},
            "mqtt": {"url": "mqtt://127.0.0.1:1"},  # never connected: only the PDU servers run
            "meter": {"port": 0},
            "pdus": [
                {"pdu_id": "pdu-n", "port": 0, "outlets": 4, "profile": "netio-coils"},
                {"pdu_id": "pdu-m", "port": 0, "outlets": 4, "profile": "microbt-holding"},
            ],
            "groups": [
                {
                    "group_id": "g1",
                    "rated_kw": G1_KW,
                    "efficiency_j_per_th": 20.0,
                    "outlets": [{"pdu": "pdu-n", "outlet": 1}, {"pdu": "pdu-n", "outlet": 2}],
                },
                {
                    "group_id": "g2",
                    "rated_kw": G2_KW,
                    "efficiency_j_per_th": 20.0,
                    "outlets": [{"pdu": "pdu-m", "outlet": 1}, {"pdu": "pdu-m", "outlet": 2}],
                },
                {
                    "group_id": "g3",
                    "rated_kw": G3_KW,
                    "efficiency_j_per_th": 20.0,
                    "outlets": [{"pdu": "pdu-m", "outlet": 3}],
                },
            ],
        }
    )


def _site() -> SimulatedSite:
    return simulated_site(_config())


@pytest.fixture
async def site() -> AsyncIterator[SimulatedSite]:
    sim = _site()
    for pdu in sim.pdus.values():
        await pdu.start()
    try:
        yield sim
    finally:
        for pdu in sim.pdus.values():
            await pdu.stop()


def _client(sim: PduSimBase, **options: Any) -> PduClient:
    kwargs = {**FAST, **options}
    return PduClient(sim.pdu_id, "127.0.0.1", sim.port, outlets=sim.outlets, profile=sim.profile, **kwargs)


def _pool(site: SimulatedSite, **options: Any) -> PduPool:
    return PduPool(_client(pdu, **options) for pdu in site.pdus.values())


def _standalone(profile: PduProfile, outlets: int = 4) -> PduSimBase:
    return make_pdu_sim("pdu-x", outlets, outlet_power_w=lambda outlet: 1000.0 * outlet, profile=profile)


# --- profiles ------------------------------------------------------------------------------------


def test_profiles_express_both_switching_styles() -> None:
    assert (NETIO.switch, NETIO.switch_base, NETIO.coil_base, NETIO.multi_write, NETIO.login) == (
        "coil",
        100,
        100,
        True,
        None,
    )
    assert (NETIO.power_table, NETIO.power_address(3), NETIO.power_type, NETIO.power_stride) == (
        "input",
        106,
        "uint32",
        2,
    )
    assert (MICROBT.switch, MICROBT.switch_address(1), MICROBT.code(True), MICROBT.code(False)) == (
        "holding",
        0x0101,
        1,
        2,
    )
    assert MICROBT.multi_write is False
    assert MICROBT.login == PduLogin(register=0x0010, value=0x4D42, idle_s=30.0)
    assert (MICROBT.power_table, MICROBT.power_address(2), MICROBT.power_type, MICROBT.power_scale_w) == (
        "holding",
        0x0202,
        "uint16",
        100.0,
    )
    # Reads cover every outlet in <= 125-register requests.
    assert NETIO.power_reads(4) == [(1, 102, 8)]
    assert [count for _, _, count in NETIO.power_reads(100)] == [124, 76]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"switch": "relay"}, "switch must be"),
        ({"on_code": 1, "off_code": 1}, "must differ"),
        ({"on_code": 70000}, "on_code must be 0..65535"),
        ({"power_type": "float64"}, "power_type must be"),
        ({"power_table": "coils"}, "power_table must be"),
        ({"power_scale_w": 0.0}, "power_scale_w must be > 0"),
        ({"power_stride": 1, "power_type": "uint32"}, "power_stride must be 2..125"),
        ({"switch_base": -1}, "switch_base must be"),
        ({"power_word_order": "middle"}, "power_word_order"),
    ],
)
def test_invalid_profiles_are_profile_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        dataclasses.replace(MICROBT, **change)


def test_profile_loader_reports_missing_and_wrong_keys_as_profile_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = {
        "name": "p",
        "kind": "pdu",
        "switch": "holding",
        "switch_base": 256,
        "on_code": 1,
        "off_code": 2,
        "power_table": "input",
        "power_base": 0,
        "power_type": "uint16",
        "power_scale_w": 1,
        "login": {"register": 1, "value": 7, "idle_s": 5},
    }

    def load(data: dict[str, Any]) -> PduProfile:
        monkeypatch.setattr(device_profiles, "_read", lambda _name: data)
        return load_pdu_profile("p")

    profile = load(good)
    assert profile.login == PduLogin(1, 7, 5.0) and profile.power_scale_w == 1.0
    assert profile.power_word_order == "big" and profile.power_stride == 1 and not profile.multi_write
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "switch_base"}, "missing key 'switch_base'"),
        ({k: v for k, v in good.items() if k != "on_code"}, "missing key 'on_code'"),
        ({**good, "switch_base": "256"}, "switch_base must be an integer"),
        ({**good, "multi_write": 1}, "multi_write must be true/false"),
        ({**good, "on_code": True}, "on_code must be an integer"),
        ({**good, "coil_base": 100}, "unknown keys"),
        ({**good, "login": {"register": 1, "value": 7}}, "missing key 'idle_s'"),
        ({**good, "login": {"register": 1, "value": 7, "idle_s": 0}}, "idle_s must be > 0"),
        ({**good, "login": {"register": 1, "value": 7, "idle_s": 5, "pin": 1}}, "unknown keys"),
        ({**good, "switch": "coil"}, "on_code applies to switch = 'holding' only"),
    ]
    for data, message in cases:
        with pytest.raises(ProfileError, match=message):
            load(data)


def test_register_ranges_are_checked_against_the_outlet_count() -> None:
    MICROBT.check_outlets(256)
    overlapping = dataclasses.replace(MICROBT, login=PduLogin(register=0x0103, value=1, idle_s=5.0))
    with pytest.raises(ProfileError, match="login register"):
        overlapping.check_outlets(4)
    with pytest.raises(ProfileError, match="switch registers overlap power registers"):
        dataclasses.replace(MICROBT, power_base=0x0102).check_outlets(4)
    with pytest.raises(ProfileError, match="login register"):
        _standalone(overlapping)
    with pytest.raises(ProfileError, match="outlets must be"):
        PduClient("p", "127.0.0.1", 1, outlets=0, profile=NETIO)
    with pytest.raises(ValueError, match="coil"):
        CoilPduSim("p", 4, outlet_power_w=lambda _: 0.0, profile=MICROBT)
    assert isinstance(_standalone(MICROBT), HoldingPduSim) and isinstance(_standalone(NETIO), CoilPduSim)


# --- switching -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pdu_id", "group_id", "off_writes"),
    [
        ("pdu-n", "g1", 1),  # one FC 15 for outlets 1-2
        ("pdu-m", "g2", 2),  # one FC 06 each; the keep-alive already logged in
    ],
)
async def test_switch_off_cuts_the_group_and_on_restores_it(
    site: SimulatedSite, pdu_id: str, group_id: str, off_writes: int
) -> None:
    sim, group = site.pdus[pdu_id], site.groups[group_id]
    client = _client(sim)
    await client.start()
    try:
        assert client.state == "up" and client.connected
        off = await client.switch([2, 1], on=False)
        assert off.ok and off.reason is None and off.outlets == (1, 2) and off.failed == ()
        assert off.writes == off_writes and not off.logged_in
        assert off.issued_s is not None and off.started_s <= off.issued_s <= off.done_s
        assert not sim.is_on(1) and not sim.is_on(2) and sim.is_on(3)
        assert sim.switches == [(1, False), (2, False)]
        assert not group.powered and group.power_kw == 0.0
        assert sim.refused == 0

        on = await client.switch([1, 2], on=True)
        assert on.ok and sim.is_on(1) and sim.is_on(2)
        assert group.powered  # a cold start from here on: the site's ramp, not the PDU's business
    finally:
        await client.close()
    assert client.state == "closed"


async def test_holding_writes_use_fc16_when_the_profile_allows() -> None:
    multi = dataclasses.replace(MICROBT, multi_write=True)
    sim = _standalone(multi, outlets=6)
    await sim.start()
    client = _client(sim)
    await client.start()
    try:
        result = await client.switch([1, 2, 3, 5], on=False)
        assert result.ok and result.writes == 2  # FC 16 for 1-3, FC 06 for 5
        assert [sim.is_on(o) for o in range(1, 7)] == [False, False, False, True, False, True]
    finally:
        await client.close()
        await sim.stop()


async def test_the_pdu_refuses_switch_writes_without_a_login_and_the_driver_logs_in(
    site: SimulatedSite,
) -> None:
    sim = site.pdus["pdu-m"]
    raw = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=TIMEOUT_S, retries=0)
    assert await raw.connect()
    try:
        refused = await raw.write_register(MICROBT.switch_address(3), MICROBT.off_code, device_id=1)
        assert refused.isError() and sim.refused == 1 and sim.is_on(3)
        assert MICROBT.login is not None
        bad_key = await raw.write_register(MICROBT.login.register, 1234, device_id=1)
        assert bad_key.isError() and sim.bad_logins == 1 and not sim.logged_in
        bad_code = await raw.write_register(MICROBT.switch_address(3), 7, device_id=1)
        assert bad_code.isError() and sim.is_on(3)
    finally:
        raw.close()

    client = _client(sim, keep_login=False)  # no login from the keep-alive: the switch must do it
    await client.start()
    try:
        assert sim.logins == 0
        result = await client.switch([3], on=False)
        assert result.ok and result.logged_in and result.writes == 2
        assert sim.logins == 1 and sim.refused == 1  # logged in first: no further refusal
        assert not sim.is_on(3) and not site.groups["g3"].powered
        again = await client.switch([4], on=False)
        assert again.ok and not again.logged_in and again.writes == 1  # session still open
    finally:
        await client.close()


async def test_an_expired_login_is_renewed_before_the_switch() -> None:
    sim = _standalone(MICROBT_SHORT_LOGIN)
    await sim.start()
    client = _client(sim, keep_login=False, keepalive_s=10.0)
    await client.start()
    try:
        first = await client.switch([1], on=False)
        assert first.ok and first.logged_in and sim.logged_in
        await until(lambda: not sim.logged_in, WAIT_S, "the PDU's session to expire")
        second = await client.switch([2], on=False)
        assert second.ok and second.logged_in and second.writes == 2
        assert sim.refused == 0 and sim.logins == 2 and not sim.is_on(2)
    finally:
        await client.close()
        await sim.stop()


async def test_an_armed_cut_left_for_later_goes_on_the_other_connection_if_its_own_closes() -> None:
    """With the login session lapsed, write_armed sends nothing and the cut is left to the switch
    coroutine on the cut connection; if that connection closes first, the cut takes the other."""
    sim = _standalone(MICROBT_SHORT_LOGIN)
    await sim.start()
    client = _client(sim, keep_login=False, keepalive_s=10.0)
    await client.start()
    try:
        await until(lambda: not sim.logged_in, WAIT_S, "the PDU's session to expire")
        prepared = client.prepare_switch([1], on=False)
        armed = client.write_armed(prepared)
        assert armed is None  # a login first
        switching = client.follow_armed(prepared, armed, time.monotonic())
        cut = client._cut.connection
        assert cut is not None
        cut.close()
        result = await switching
        assert result.ok and result.logged_in and not sim.is_on(1)
    finally:
        await client.close()
        await sim.stop()


async def test_a_session_lost_behind_the_drivers_back_is_recovered_in_the_same_switch(
    site: SimulatedSite,
) -> None:
    sim = site.pdus["pdu-m"]
    client = _client(sim)
    await client.start()
    try:
        assert sim.logins == 1  # the keep-alive logged in at start
        sim.expire_login()  # e.g. a PDU reboot: the driver still believes the session is open
        result = await client.switch([1, 2], on=False)
        assert result.ok and result.logged_in and result.writes == 4  # refused, login, 2 writes
        assert sim.refused == 1 and sim.logins == 2
        assert client.failures["refused"] == 1
        assert not site.groups["g2"].powered
    finally:
        await client.close()


async def test_the_keepalive_renews_the_login_so_a_cut_is_one_request_per_outlet() -> None:
    sim = _standalone(MICROBT_SHORT_LOGIN)
    await sim.start()
    client = _client(sim)
    await client.start()
    try:
        await until(lambda: sim.logins >= 3, WAIT_S, "keep-alive logins")  # > one idle period
        result = await client.switch([4], on=False)
        assert result.ok and not result.logged_in and result.writes == 1 and sim.refused == 0
    finally:
        await client.close()
        await sim.stop()


async def test_bad_outlets_are_reported_not_raised(site: SimulatedSite) -> None:
    client = _client(site.pdus["pdu-n"])
    await client.start()
    try:
        result = await client.switch([9, 1, 0], on=False)
        assert not result.ok and result.failed == (0, 9) and result.reason == "bad_outlet"
        assert not site.pdus["pdu-n"].is_on(1)  # the valid outlet was still cut
        assert client.failures["bad_outlet"] == 1
    finally:
        await client.close()


# --- power readback ------------------------------------------------------------------------------


@pytest.mark.parametrize("pdu_id", ["pdu-n", "pdu-m"])
async def test_power_readback_and_staleness(site: SimulatedSite, pdu_id: str) -> None:
    sim = site.pdus[pdu_id]
    client = _client(sim)
    assert client.outlet_power_w(1) is None and client.stale  # never read: unknown, not 0
    await client.start()
    try:
        per_outlet_w = (G1_KW if pdu_id == "pdu-n" else G2_KW) * 1000 / 2
        assert client.outlet_power_w(1) == per_outlet_w and client.outlet_power_w(2) == per_outlet_w
        assert client.outlet_power_w(4) == 0.0  # feeds nothing: a real 0
        assert client.outlet_power_w(5) is None and not client.stale
        assert client.outlets_power_w([1, 2]) == 2 * per_outlet_w

        await client.switch([1], on=False)
        assert await client.read_power()  # readback on demand, e.g. to confirm a cut
        assert client.outlet_power_w(1) == 0.0 and client.outlet_power_w(2) == 0.0  # whole group down

        reads = client.power_reads
        await until(lambda: client.power_reads >= reads + 2, WAIT_S, "keep-alive reads")
        sim.responding = False
        silent_s = time.monotonic()
        # Each poll: (age of outlet 2's last answered read before and after asking, was its power known).
        seen: list[tuple[float, float, bool]] = []

        def stale_now() -> bool:
            read_s = client.outlet_read_s(2)
            assert read_s is not None
            before_s = time.monotonic()
            known = client.outlet_power_w(2) is not None
            seen.append((before_s - read_s, time.monotonic() - read_s, known))
            return not known

        await until(stale_now, WAIT_S, "the cached power to go stale", poll_s=0.005)
        # Stale once the last answered read is older than stale_after_s, not before, not after: the ages
        # are the driver's own read times, so a loaded machine moves when, not whether, this holds.
        stale_after_s = FAST["stale_after_s"]
        assert all(before_s <= stale_after_s for before_s, _, known in seen if known), seen
        assert seen[-1][1] > stale_after_s, seen
        assert client.outlet_read_s(2) <= silent_s  # the last answer came before the silence
        assert client.stale and client.outlets_power_w([1, 2]) is None
        await until(
            lambda: client.state in ("unresponsive", "down") and client.failures["timeout"] >= 1,
            WAIT_S,
            "the unanswered read to time out",
        )

        sim.responding = True
        await until(lambda: client.outlet_power_w(2) == 0.0, WAIT_S, "readback after recovery")
        assert client.state == "up"
    finally:
        await client.close()


async def test_power_word_order_and_float_types_follow_the_profile() -> None:
    profile = dataclasses.replace(
        NETIO, power_table="holding", power_type="float32", power_word_order="little", power_scale_w=1000.0
    )
    sim = _standalone(profile)  # outlet n draws n kW
    await sim.start()
    client = _client(sim)
    await client.start()
    try:
        assert [client.outlet_power_w(o) for o in range(1, 5)] == pytest.approx(
            [1000.0, 2000.0, 3000.0, 4000.0]
        )
    finally:
        await client.close()
        await sim.stop()


async def test_reconnects_after_the_pdu_restarts_and_logs_in_again(site: SimulatedSite) -> None:
    sim = site.pdus["pdu-m"]
    client = _client(sim, timeout_s=SLOW_S)  # were a switch to wait for a timeout, it would show
    await client.start()
    try:
        await sim.stop()
        await until(lambda: client.state == "down", WAIT_S, "the driver to see the PDU gone")
        down = await client.switch([1], on=False)
        assert down.failed == (1,) and down.reason == "unreachable" and down.elapsed_s < SLOW_S / 2
        assert sim.is_on(1)
        await sim.start()
        await until(lambda: client.state == "up" and not client.stale, WAIT_S, "reconnect")
        result = await client.switch([1], on=False)
        assert result.ok and not sim.is_on(1)
        assert sim.refused == 0  # the new connection logged in before writing
    finally:
        await client.close()


# --- pool ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["silent", "stopped"])
async def test_a_dead_pdu_never_blocks_another_pdus_cut(site: SimulatedSite, fault: str) -> None:
    pool = _pool(site, timeout_s=DEAD_S)  # the dead PDU's request waits DEAD_S: the others must not
    await pool.start()
    try:
        dead = site.pdus["pdu-m"]
        if fault == "silent":
            dead.responding = False  # connection open, no answers
        else:
            await dead.stop()  # connection refused from now on
            # (a request already in flight when a connection drops waits out its timeout: pymodbus
            # does not fail it on the disconnect; the bound below still holds for it)
            await until(lambda: not pool.clients["pdu-m"].connected, WAIT_S, "the disconnect to arrive")
        result = await pool.cut(
            [("pdu-n", 1), ("pdu-n", 2), ("pdu-m", 1), ("pdu-m", 2)],
        )
        # At most one timeout for the dead PDU (it gives up after the first unanswered request), and
        # none for the healthy one.
        assert result.elapsed_s < 1.5 * DEAD_S
        healthy = result.results["pdu-n"]
        assert healthy.ok and healthy.elapsed_s < DEAD_S / 2
        assert not site.pdus["pdu-n"].is_on(1) and not site.groups["g1"].powered
        failed = result.results["pdu-m"]
        assert failed.failed == (1, 2) and failed.reason == (
            "timeout" if fault == "silent" else "unreachable"
        )
        assert failed.writes <= 2  # gave up after the first unanswered request
        assert not result.ok and result.failed == [("pdu-m", 1), ("pdu-m", 2)]
        assert site.groups["g2"].powered and dead.is_on(1)
        assert pool.clients["pdu-m"].failures[failed.reason or ""] >= 1
    finally:
        await pool.close()


async def test_pool_start_returns_when_a_pdu_is_down(site: SimulatedSite) -> None:
    await site.pdus["pdu-m"].stop()
    pool = _pool(site, timeout_s=SLOW_S)
    started_s = time.monotonic()
    await pool.start()
    try:
        assert time.monotonic() - started_s < SLOW_S / 2  # no waiting for the down PDU, nor a timeout
        assert pool.clients["pdu-n"].state == "up" and pool.clients["pdu-m"].state == "down"
        await site.pdus["pdu-m"].start()
        await until(lambda: pool.clients["pdu-m"].state == "up", WAIT_S, "late PDU connected")
    finally:
        await pool.close()


class _SlowCoilPdu(CoilPduSim):
    """Answers outlet writes after `delay_s`, like a PDU on a slow link (a device property, not a wait)."""

    delay_s = 0.05

    async def _action(self, function_code: int, *args: Any) -> Any:
        if function_code in (5, 15):
            await asyncio.sleep(self.delay_s)
        return await super()._action(function_code, *args)


async def test_pool_switches_all_pdus_concurrently() -> None:
    sims = [_SlowCoilPdu(f"pdu-{i}", 4, outlet_power_w=lambda _: 1000.0) for i in range(8)]
    for sim in sims:
        await sim.start()
    for sim in sims:
        sim.delay_s = 0.5
    pool = PduPool(_client(sim, timeout_s=SLOW_S) for sim in sims)
    await pool.start()
    try:
        armed = PduPool.group([(sim.pdu_id, outlet) for sim in sims for outlet in (1, 3)])
        assert armed == {sim.pdu_id: (1, 3) for sim in sims}
        result = await pool.switch_grouped({**armed, "pdu-nope": (1,)}, on=False)
        per_pdu = [result.results[sim.pdu_id] for sim in sims]
        assert all(r.ok and r.writes == 2 for r in per_pdu)  # 1 and 3 are not contiguous: FC 05 each
        # Every PDU's first write went out before any PDU had finished: they ran side by side.
        assert max(r.issued_s or 0.0 for r in per_pdu) < min(r.done_s for r in per_pdu)
        # 2 x 0.5 s per PDU side by side; one PDU after another: 8 s.
        assert result.elapsed_s < 4.0, f"{result.elapsed_s:.2f} s: not side by side"
        assert result.results["pdu-nope"].reason == "unknown_pdu" and result.failed == [("pdu-nope", 1)]
        assert all(not sim.is_on(1) and sim.is_on(2) and not sim.is_on(3) for sim in sims)

        assert await pool.read_power() == {sim.pdu_id: True for sim in sims}
        assert pool.power_w([(sims[0].pdu_id, 1), (sims[1].pdu_id, 3)]) == 0.0
        assert pool.power_w([(sims[0].pdu_id, 2)]) == 1000.0
        assert pool.power_w([("pdu-nope", 1)]) is None
        assert pool.outlet_power_w(sims[0].pdu_id, 4) == 1000.0

        restored = await pool.switch([(sim.pdu_id, 1) for sim in sims], on=True)
        assert restored.ok and all(sim.is_on(1) for sim in sims)
    finally:
        await pool.close()
        for sim in sims:
            await sim.stop()


async def test_an_armed_cut_is_on_every_pdus_socket_when_switch_now_returns() -> None:
    sims = [CoilPduSim(f"pdu-{i}", 4, outlet_power_w=lambda _: 1000.0) for i in range(6)]
    for sim in sims:
        await sim.start()
    pool = PduPool(_client(sim) for sim in sims)
    await pool.start()
    try:
        armed = pool.prepare({sim.pdu_id: (2, 3) for sim in sims}, on=False)
        task = pool.switch_now(armed)
        returned_s = time.monotonic()  # no loop turn yet: nothing could have been written since
        result = await task
        assert result.ok and all(not sim.is_on(2) and not sim.is_on(3) and sim.is_on(1) for sim in sims)
        issued = [r.issued_s for r in result.results.values()]
        assert all(s is not None and s <= returned_s for s in issued)
    finally:
        await pool.close()
        for sim in sims:
            await sim.stop()


class _SlowReadPdu(CoilPduSim):
    """Answers power reads after `delay_s`, or at once when the test has seen what it waited for
    (`release`); a second request meanwhile would lose this answer in pymodbus' server (it serves one
    transaction at a time), as in many devices."""

    delay_s = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._released = asyncio.Event()

    def release(self) -> None:
        """Answer the reads held now, and every later one, without the delay."""
        self._released.set()

    async def _action(self, function_code: int, *args: Any) -> Any:
        if function_code == 4:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.delay_s)
        return await super()._action(function_code, *args)


async def test_a_cut_during_a_keepalive_read_goes_out_at_once_on_its_own_connection() -> None:
    """One connection serves one request at a time: on the keep-alive's, a cut would wait out a slow
    read (up to timeout_s). The cut has a connection of its own and is answered first."""
    sim = _SlowReadPdu("pdu-slow", 4, outlet_power_w=lambda _: 1000.0)
    await sim.start()
    client = _client(sim, timeout_s=SLOW_S, keepalive_s=60.0)
    await client.start()
    sim.delay_s = SLOW_S / 2  # from now on: the cut must be done before the read is answered
    try:
        reading = asyncio.create_task(client.read_power())
        await asyncio.sleep(0)  # the read's request is on the socket, unanswered for SLOW_S / 2
        result = await client.switch_now(client.prepare_switch([1], on=False))
        assert not reading.done(), "the cut waited for the keep-alive read"
        assert result.ok and not sim.is_on(1)
        sim.release()  # the read, answered now rather than SLOW_S / 2 after it was sent
        assert await reading is True
    finally:
        await client.close()
        await sim.stop()


async def test_write_armed_never_waits_for_a_keepalive_read_and_queues_only_behind_another_cut() -> None:
    """The fast path's split: every PDU's write goes out at once, one busy with a keep-alive read
    included; a second cut right behind it takes the other connection where that one is idle, and
    queues on the cut connection (follow_armed) where both are busy."""
    sims = [CoilPduSim(f"pdu-{i}", 4, outlet_power_w=lambda _: 1000.0) for i in range(3)]
    slow = _SlowReadPdu("pdu-busy", 4, outlet_power_w=lambda _: 1000.0)
    for sim in (*sims, slow):
        await sim.start()
    pool = PduPool(_client(sim, timeout_s=SLOW_S, keepalive_s=60.0) for sim in (*sims, slow))
    await pool.start()
    slow.delay_s = SLOW_S / 2  # from now on: both cuts must be done before its read is answered
    try:
        reading = asyncio.create_task(pool.clients["pdu-busy"].read_power())
        await asyncio.sleep(0)  # its read is on the socket, unanswered for SLOW_S / 2
        prepared = pool.prepare({sim.pdu_id: (1,) for sim in (*sims, slow)}, on=False)
        first = pool.write_armed(prepared)
        assert all(armed is not None for armed in first.written)
        second = pool.write_armed(prepared)
        pdu_ids = [client.pdu_id for client, _ in prepared.armed]
        queued = [pdu_id for pdu_id, armed in zip(pdu_ids, second.written, strict=True) if armed is None]
        assert queued == ["pdu-busy"]
        results = await asyncio.gather(pool.follow_armed(first), pool.follow_armed(second))
        assert not reading.done(), "a cut waited for the keep-alive read"
        assert all(result.ok for result in results) and not any(sim.is_on(1) for sim in (*sims, slow))
        busy_issued_s = results[1].results["pdu-busy"].issued_s
        assert busy_issued_s is not None and busy_issued_s > second.written_s  # after the first's answer
        slow.release()  # its read, answered now rather than SLOW_S / 2 after it was sent
        assert await reading is True
    finally:
        await pool.close()
        for sim in (*sims, slow):
            await sim.stop()


async def test_the_cut_connection_is_probed_stood_in_for_and_reopened() -> None:
    """Between trips the cut connection carries no requests: TCP keep-alive probes watch it. Lost,
    cuts use the keep-alive's connection until the next keep-alive tick has reopened it."""
    sim = CoilPduSim("pdu-cut", 4, outlet_power_w=lambda _: 1000.0)
    await sim.start()
    client = _client(sim, keepalive_s=1.5)
    await client.start()
    try:
        cut = client._cut.connection
        assert cut is not None and cut._transport is not None
        sock = cut._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 2  # whole seconds, rounded up
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        cut.close()
        await until(lambda: not client._cut.connected, WAIT_S, "cut connection closed")
        armed = client.write_armed(client.prepare_switch([2], on=False))
        assert armed is not None and armed[0] is client._client
        result = await client.follow_armed(client.prepare_switch([2], on=False), armed, time.monotonic())
        assert result.ok and not sim.is_on(2)
        await until(lambda: client._cut.connected, WAIT_S, "cut connection reopened by the keep-alive")
        armed = client.write_armed(client.prepare_switch([3], on=False))
        assert armed is not None and armed[0] is client._cut
        assert not client.single_connection
    finally:
        await client.close()
        await sim.stop()


async def test_an_armed_cut_is_reused_trip_after_trip_each_write_with_its_own_transaction_id() -> None:
    """The prepared frame is shared by every trip that fires it: two back to back (the second queued
    behind the first) must both be answered, matched by the id stamped into each frame."""
    sim = CoilPduSim("pdu-armed", 4, outlet_power_w=lambda _: 1000.0)
    await sim.start()
    client = _client(sim, timeout_s=TIMEOUT_S, keepalive_s=60.0)
    await client.start()
    try:
        armed = client.prepare_switch([2], on=False)
        first = client.switch_now(armed)
        second = client.switch_now(armed)
        results = await asyncio.gather(first, second)
        assert all(r.ok for r in results) and not sim.is_on(2)
        assert sim.switches[-2:] == [(2, False), (2, False)]
    finally:
        await client.close()
        await sim.stop()


async def test_an_outage_that_takes_both_connections_is_one_strike_against_the_cut_connection() -> None:
    """The keep-alive's connection lost while the cut one is young may be a PDU dropping it for the
    cut's; the cut one lost young may be a PDU closing it. One outage doing both counts once."""
    sim = CoilPduSim("pdu-outage", 4, outlet_power_w=lambda _: 1000.0)
    await sim.start()
    client = _client(sim, keepalive_s=60.0)  # the cut connection stays young; no tick meanwhile
    await client.start()
    try:
        main, cut = client._client.connection, client._cut.connection
        assert main is not None and cut is not None
        main.close()  # noticed first, the cut one still open
        await until(lambda: main._transport is None, WAIT_S, "the keep-alive's connection lost")
        cut.close()
        await until(lambda: cut._transport is None, WAIT_S, "the cut connection lost")
        assert client._cut_failures == 1 and not client.single_connection
    finally:
        await client.close()
        await sim.stop()


class _OneConnectionPdu:
    """A TCP front for a simulated PDU that keeps one connection, as some devices do: a new one
    either replaces the open one (`newest_wins`) or is closed at once (`refuse_second`)."""

    def __init__(self, upstream_port: int, policy: str) -> None:
        self.upstream_port = upstream_port
        self.policy = policy
        self.accepted = 0
        self._open: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        if self._open is not None:
            self._open.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._open is not None and not self._open.is_closing():
            if self.policy == "refuse_second":
                writer.close()
                return
            self._open.close()
        self._open = writer
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(4096):
                    sink.write(data)
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.mark.parametrize("policy", ["newest_wins", "refuse_second"])
async def test_a_pdu_that_keeps_one_connection_gets_its_cuts_on_it_without_flapping(policy: str) -> None:
    sim = CoilPduSim("pdu-one", 4, outlet_power_w=lambda _: 1000.0)
    await sim.start()
    front = _OneConnectionPdu(sim.port, policy)
    await front.start()
    client = PduClient("pdu-one", "127.0.0.1", front.port, outlets=4, **FAST)
    await client.start()
    try:
        await until(lambda: client.single_connection, WAIT_S, "one connection detected")
        await until(
            lambda: client.connected and client.state == "up", WAIT_S, "the keep-alive's connection up"
        )
        reads, accepted = client.power_reads, front.accepted
        await until(lambda: client.power_reads >= reads + 10, WAIT_S, "ten more keep-alive reads")
        assert front.accepted == accepted, "connections still flapping"
        armed = client.write_armed(client.prepare_switch([1], on=False))
        assert armed is not None and armed[0] is client._client
        result = await client.follow_armed(client.prepare_switch([1], on=False), armed, time.monotonic())
        assert result.ok and not sim.is_on(1)
    finally:
        await client.close()
        await front.stop()
        await sim.stop()


async def test_pool_from_config_accepts_config_outlet_refs(site: SimulatedSite) -> None:
    config = _config()  # the one `site` was built from, but for its random site_id
    specs = [p.model_copy(update={"port": site.pdus[p.pdu_id].port}) for p in config.pdus]
    configured = PduPool.from_config([specs[0].model_copy(update={"timeout_s": 0.5, "keepalive_s": 2.0})])
    client = configured.clients[specs[0].pdu_id]
    assert (client.timeout_s, client.keepalive_s, client.stale_after_s) == (0.5, 2.0, 3.0)
    pool = PduPool.from_config(specs, **FAST)
    await pool.start()
    try:
        g3 = next(g for g in config.groups if g.group_id == "g3")
        result = await pool.cut(g3.outlets)
        assert result.ok and set(result.results) == {"pdu-m"}
        assert not site.groups["g3"].powered and site.groups["g2"].powered
    finally:
        await pool.close()
