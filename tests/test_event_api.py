"""The event API over HTTP (and its MQTT twin): acks, rejection codes in the ack and the metric, restarts,
and the explicit-recall rule, against `mulletd run` and the simulated site."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from helpers import API_TOKEN, Running, running_site, start_daemon, until, with_http_api

from mullet.drivers.protocol import GridEvent, encode


def _rejections(running: Running) -> dict[str, float]:
    prefix = 'mullet_grid_events_rejected_total{reason="'
    return {k[len(prefix) : -2]: v for k, v in running.metrics().items() if k.startswith(prefix)}


async def _post(
    session: aiohttp.ClientSession, running: Running, body: GridEvent | bytes, token: str = API_TOKEN
) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{running.config.http_api.port}/v1/grid/event"
    raw = body if isinstance(body, bytes) else encode(body)
    async with session.post(url, data=raw, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


async def test_http_events_are_acked_like_mqtt_and_every_refusal_has_a_code_in_ack_and_metric(
    mqtt_broker, tmp_path: Path
) -> None:
    async with running_site(mqtt_broker, tmp_path, with_http_api) as running, aiohttp.ClientSession() as http:
        observer = running.observer
        now_s = time.time()
        event = GridEvent(id="http-1", kind="limit", kw=12_000, program="ECRS", source="test")
        status, ack = await _post(http, running, event)
        assert (status, ack) == (
            200,
            {"v": 1, "id": "http-1", "accepted": True, "reason": "accepted", "code": "accepted"},
        )
        assert await observer.ack("http-1") == ack  # the MQTT ack says the same
        plan = await observer.wait_for(
            lambda m: m.topic == observer.topics.daemon_plan and "http-1" in m.json()["obligations"], 10
        )
        summary = plan.json()["obligations"]["http-1"]
        assert summary["actuation"] == "graceful" and summary["deadline_s"] == 600
        assert "firmware sleep 5 s" in summary["why"] and summary["recall"] == "timer"
        assert await _post(http, running, event) == (
            200,
            {**ack, "reason": "duplicate: already accepted", "code": "duplicate"},
        )

        cases: list[tuple[GridEvent | bytes, int, str]] = [
            (b'{"v": 1, "id": "bad-wire", "kind": "limit", "kw": "lots"}', 400, "invalid_field"),
            (GridEvent(id="bad-neg", kind="limit", kw=-5), 422, "kw_negative"),
            (GridEvent(id="bad-big", kind="limit", kw=1e9), 422, "kw_absurd"),
            (GridEvent(id="bad-kw", kind="reduce"), 422, "kw_missing"),
            (
                GridEvent(id="bad-end", kind="limit", kw=9000, start=now_s - 100, end=now_s - 10),
                422,
                "end_in_past",
            ),
            (
                GridEvent(id="bad-order", kind="limit", kw=9000, start=now_s + 600, end=now_s + 300),
                422,
                "end_before_start",
            ),
            (GridEvent(id="bad-cancel", kind="cancel"), 422, "unknown_event"),
            (GridEvent(id="http-1", kind="limit", kw=11_000), 422, "id_conflict"),
            (GridEvent(id="ufr-7", kind="limit", kw=9000), 422, "reserved_id"),
            (GridEvent(id="bad-stage", kind="limit", kw=9000, trip_stage=9), 422, "unknown_stage"),
            (
                GridEvent(id="bad-long", kind="limit", kw=9000, end=now_s + 9 * 3600, program="ERS-30"),
                422,
                "duration_exceeds_program",
            ),
        ]
        for body, want_status, code in cases:
            status, ack = await _post(http, running, body)
            assert (status, ack["accepted"], ack["code"]) == (want_status, False, code), ack
            assert ack["reason"]
        # The same refusal over MQTT carries the same code.
        await observer.send(GridEvent(id="mqtt-neg", kind="limit", kw=-1))
        assert (await observer.ack("mqtt-neg"))["code"] == "kw_negative"
        # No token, no event; a body with no id cannot be acked.
        status, body = await _post(
            http, running, GridEvent(id="sneaky", kind="limit", kw=1000), token="wrong"
        )
        assert (status, body["code"]) == (401, "unauthorized")
        assert (await _post(http, running, b"\x00 not json"))[0] == 400

        counts = _rejections(running)
        for code in {c for _, _, c in cases} | {"unauthorized", "not_json"}:
            assert counts.get(code, 0) >= 1, code
        assert counts["kw_negative"] == 2
        assert running.metric("mullet_grid_obligations_active") == 1.0  # only http-1


async def test_an_ers_obligation_survives_a_restart_and_its_end_and_is_restored_only_on_recall(
    mqtt_broker, tmp_path: Path
) -> None:
    async with running_site(mqtt_broker, tmp_path, with_http_api) as running, aiohttp.ClientSession() as http:
        site, observer, config = running.site, running.observer, running.config
        rated_kw = sum(g.rated_kw for g in config.groups)
        await until(lambda: site.mining_power_kw() >= 0.99 * rated_kw, 30, "full mining load")
        end_s = time.time() + 3.0
        status, ack = await _post(
            http, running, GridEvent(id="ers-1", kind="limit", kw=9500, end=end_s, program="ERS-10")
        )
        assert (status, ack["accepted"]) == (200, True)
        await until(lambda: site.site_power_kw() <= 9500, 30, "site at the limit")
        curtailed = {g.group_id for g in site.groups.values() if g.commanded == "curtail"}

        running.daemon.kill()  # the ack meant it was on disk
        await asyncio.wait_for(running.daemon.wait(), 30)
        seen = len(observer.received)
        running.daemon = await start_daemon(running.config_path, running.log_path)
        # Past its scheduled end: still in force, waiting for the recall.
        raw = await observer.wait_for(
            lambda m: (
                m.topic == observer.topics.daemon_plan
                and any("past its scheduled end, held until recalled" in r for r in m.json()["reasons"])
            ),
            30,
            since=seen,
        )
        plan = raw.json()
        assert raw.json()["ts"] >= end_s  # planned after the scheduled end
        assert (
            plan["active_obligations"] == ["ers-1"] and plan["obligations"]["ers-1"]["recall"] == "explicit"
        )
        assert {g for g, d in plan["groups"].items() if d["mode"] == "curtail"} == curtailed
        assert site.site_power_kw() <= 9500

        status, ack = await _post(http, running, GridEvent(id="ers-1", kind="cancel"))
        assert (status, ack["code"]) == (200, "cancelled")
        await until(lambda: all(g.commanded == "run" for g in site.groups.values()), 30, "restored on recall")
