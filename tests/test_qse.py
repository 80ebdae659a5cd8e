"""The QSE link end to end: `mulletd run` with `[qse]` against the simulated site, driven by pymodbus'
client (and by libmodbus' `mbpoll`, an independent implementation, in test_qse_mbpoll.py).

What it must show (issue 20): deployments held by their level and released when cleared; a heartbeat
lost mid-deployment triggers the fail-safe and the alarm and restores nothing; refusals are Modbus
exceptions, counted; accepted writes are journaled with the peer's address before they take effect.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import Running, running_site, with_http_api
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ExceptionResponse

from mullet.drivers.qse_points import INPUT_POINTS, INPUT_SIZE, POINTS, decode, encode
from mullet.simulators.ports import free_port

pytestmark = pytest.mark.asyncio(loop_scope="function")

DEVICE_ID = 1


def with_qse(**overrides: object):
    def mutate(data: dict) -> None:
        data["qse"] = {
            "enabled": True,
            "port": free_port(),
            "allow_writes": True,
            "heartbeat_timeout_s": 3.0,
            "fail_safe": "limit",
            "fail_safe_limit_kw": 9000.0,
            **overrides,
        }

    return mutate


class Qse:
    """A QSE gateway's view of the link: whole blocks read, points written by name."""

    def __init__(self, port: int) -> None:
        self.client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        self.beat = 0

    async def __aenter__(self) -> Qse:
        assert await self.client.connect(), "QSE link not accepting connections"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.client.close()

    async def telemetry(self) -> dict[str, float]:
        words: list[int] = []
        for start in range(0, INPUT_SIZE, 64):  # a request reads at most 125 registers
            response = await self.client.read_input_registers(start, count=64, device_id=DEVICE_ID)
            assert not response.isError(), response
            words += response.registers
        return {p.name: decode(p, words[p.address : p.address + p.words]) for p in INPUT_POINTS}

    async def write(self, **values: float) -> ExceptionResponse | None:
        """Write contiguous points in one FC 16 request; the exception response if refused."""
        points = sorted((POINTS[name] for name in values), key=lambda p: p.address)
        words: list[int] = []
        for point in points:
            assert point.table == "holding"
            assert not words or point.address == points[0].address + len(words), "points must be contiguous"
            words += encode(point, values[point.name])
        response = await self.client.write_registers(points[0].address, words, device_id=DEVICE_ID)
        return response if response.isError() else None

    async def heartbeat(self) -> None:
        self.beat = (self.beat + 1) % 65536
        assert await self.write(qse_heartbeat=self.beat) is None


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def journal_rows(running: Running, kind: str) -> list[dict]:
    with sqlite3.connect(running.config.journal.path) as db:
        rows = db.execute("SELECT data FROM journal WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    return [json.loads(data) for (data,) in rows]


async def until_telemetry(qse: Qse, ok, timeout_s: float, what: str, beat: bool = True) -> dict[str, float]:
    seen: dict[str, float] = {}

    async def check() -> bool:
        nonlocal seen
        if beat:
            await qse.heartbeat()
        seen = await qse.telemetry()
        return bool(ok(seen))

    await until_async(check, timeout_s, what)
    return seen


async def until_async(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_level_held_deployment_and_heartbeat_fail_safe(mqtt_broker, tmp_path: Path) -> None:
    site = running_site(mqtt_broker, tmp_path, with_qse())
    async with site as running, Qse(running.config.qse.port) as qse:
        first = await until_telemetry(
            qse, lambda t: t["qse_link"] == 1 and not math.isnan(t["mining_mw"]), 30, "link up"
        )
        assert first["site_mw"] > 5.0 and first["mining_mw"] > 5.0 and first["ai_mw"] > 0.0
        assert int(first["health"]) & 0b1011111 == 0b0011111  # controlling, readings known, link up
        assert first["lpc_10min_mw"] < first["mining_mw"] <= first["mpc_mw"] + 1e-6
        # Deploy ERS-10, 2 MW, amount and level in one write.
        assert await qse.write(ers10_deploy_mw=2.0, ers10_deploy=1) is None
        deployed = await until_telemetry(qse, lambda t: t["ers10_state"] == 2, 30, "ERS-10 deployed")
        assert deployed["ers10_mw"] == pytest.approx(2.0)
        assert deployed["command_result"] in (1, 2)
        assert deployed["command_address"] == POINTS["ers10_deploy_mw"].address
        writes = journal_rows(running, "qse_write")
        assert writes[-1]["peer"].startswith("127.0.0.1:") and writes[-1]["points"]["ers10_deploy"] == 1
        events = journal_rows(running, "grid_event")
        ers = [e for e in events if e["event"]["id"].startswith("qse:ers10:")]
        assert ers and (ers[0]["obligation"]["program"], ers[0]["obligation"]["kind"]) == ("ERS-10", "reduce")
        # The level holds: the same write again changes nothing, and nothing ends it but a clear.
        assert await qse.write(ers10_deploy_mw=2.0, ers10_deploy=1) is None
        await until_telemetry(qse, lambda t: t["binding"] == 3, 30, "the deployment binding the site")

        # The heartbeat stops mid-deployment: fail-safe and alarm, and a clear written now restores nothing.
        await until_metric_async(running, "mullet_qse_link_up", 1.0)
        lost = await until_telemetry(qse, lambda t: t["qse_link"] == 2, 30, "link lost", beat=False)
        assert lost["ers10_state"] == 2
        # A clear from a gateway whose heartbeat stands still: journaled, but it restores nothing.
        assert await qse.write(ers10_deploy=0) is None
        held = await until_telemetry(qse, lambda t: t["site_limit_mw"] <= 9.0, 30, "fail-safe", beat=False)
        assert held["ers10_state"] == 5 and held["ers10_mw"] == pytest.approx(2.0)
        assert int(held["health"]) & (1 << 6) and not int(held["health"]) & (1 << 4)
        assert running.metric("mullet_qse_link_up") == 0 and running.metric("mullet_qse_fail_safe") == 1
        assert [r["state"] for r in journal_rows(running, "qse_link")][-1] == "lost"
        assert running.metric("mullet_qse_link_lost_total") >= 1

        # The heartbeat is back: the clear applies, the fail-safe ends.
        back = await until_telemetry(qse, lambda t: (t["qse_link"], t["ers10_state"]) == (1, 0), 30, "recall")
        assert back["ers10_mw"] == 0.0
        ended = {r["id"] for r in journal_rows(running, "obligation_ended")} | {
            e["cancels"] for e in journal_rows(running, "grid_event") if e["cancels"]
        }
        assert ers[0]["event"]["id"] in ended


async def test_refusals_are_modbus_exceptions_and_counted(mqtt_broker, tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        with_qse()(data)
        with_http_api(data)

    site = running_site(mqtt_broker, tmp_path, mutate)
    async with site as running, Qse(running.config.qse.port) as qse:
        nan_words = encode(POINTS["base_point_set_mw"], math.nan)
        refused = await qse.client.write_registers(2, nan_words, device_id=DEVICE_ID)
        assert refused.isError() and refused.exception_code == 3  # ILLEGAL DATA VALUE
        refused = await qse.client.write_register(2, 0x4100, device_id=DEVICE_ID)  # half a float32
        assert refused.isError() and refused.exception_code == 2  # ILLEGAL DATA ADDRESS
        assert (await qse.write(test_mode=2)).exception_code == 3
        refused = await qse.client.write_register(5, 1, device_id=DEVICE_ID)  # a reserved register
        assert refused.isError() and refused.exception_code == 2
        # A deployment with no amount and none configured: refused, nothing journaled.
        assert (await qse.write(ecrs_deploy=1)).exception_code == 3
        refused = await qse.client.read_coils(0, count=1, device_id=DEVICE_ID)
        assert refused.isError() and refused.exception_code == 1
        metrics = running.metrics()
        for reason, count in (
            ("out_of_range", 2),
            ("partial_float", 1),
            ("reserved_address", 1),
            ("not_applicable", 1),
            ("unsupported_function", 1),
        ):
            assert metrics.value(f'mullet_qse_refusals_total{{reason="{reason}"}}', 0) == count, reason
        assert journal_rows(running, "qse_write") == []
        assert running.metric('mullet_grid_events_total{outcome="accepted"}', 0) == 0
        # A flood of valid writes: every change journaled, the book following the last level only.
        assert await qse.write(qse_heartbeat=1) is None
        values = [4.0 + (i % 7) * 0.25 for i in range(200)] + [5.5]
        for value in values:
            assert await qse.write(base_point_set_mw=value, base_point_on=1) is None
        final = await until_telemetry(qse, lambda t: t["base_point_mw"] == 5.5, 30, "the last base point")
        assert final["base_point_state"] == 2
        held = [
            e for e in journal_rows(running, "grid_event") if e["event"]["id"].startswith("qse:basepoint:")
        ]
        in_force = (
            {e["event"]["id"] for e in held}
            - {r["id"] for r in journal_rows(running, "obligation_ended")}
            - {e["cancels"] for e in journal_rows(running, "grid_event") if e["cancels"]}
        )
        assert len(in_force) == 1 and len(held) <= len(values)
        assert len(journal_rows(running, "qse_write")) == len(
            values
        )  # each changed a level; the heartbeat not
        # GET /v1/status carries the link, bounded: one entry per slot.
        url = f"http://127.0.0.1:{running.config.http_api.port}/v1/status"
        status = json.loads(await asyncio.to_thread(_get, url))["qse"]
        assert status["writes"] is True and status["connections"] == 1
        assert len(status["slots"]) == 7 and status["slots"]["ECRS"] == {
            "state": "clear",
            "kw": None,
            "refusal": None,
        }


async def until_metric_async(running: Running, key: str, value: float) -> None:
    await running.until_metric(key, lambda v: v == value, 30, default=math.nan)


@pytest.mark.parametrize("section", [{"allow": ["192.0.2.1"]}, {"allow_writes": False}])
async def test_allowlist_and_read_only(mqtt_broker, tmp_path: Path, section: dict) -> None:
    async with running_site(mqtt_broker, tmp_path, with_qse(**section)) as running:
        client = AsyncModbusTcpClient("127.0.0.1", port=running.config.qse.port, timeout=2, retries=0)
        try:
            await client.connect()
            if "allow" in section:
                with pytest.raises(ModbusException):  # closed at accept: no answer ever comes
                    await client.read_input_registers(0, count=2, device_id=DEVICE_ID)
                key = 'mullet_qse_refusals_total{reason="not_allowed"}'
                await running.until_metric(key, lambda v: v >= 1, 30, 0)
            else:
                read = await client.read_input_registers(0, count=2, device_id=DEVICE_ID)
                assert not read.isError()
                refused = await client.write_register(0, 1, device_id=DEVICE_ID)
                assert refused.isError() and refused.exception_code == 1  # ILLEGAL FUNCTION
                assert running.metric('mullet_qse_refusals_total{reason="writes_disabled"}') == 1
        finally:
            client.close()
