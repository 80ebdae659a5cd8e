"""Hostile payloads against `mulletd run` (issue 17, findings 5 and 6), and the bounds behind them.

- JSON nested 5,000 levels deep (10 KB) on every topic the daemon consumes and in every HTTP body:
  refused `too_deep` before parsing and counted, never a handler traceback or an HTTP 500;
- event ids with control, bidi-override or path characters: refused and counted over MQTT and HTTP,
  never an obligation;
- the obligation book: a cap on what it holds, and a history that forgets.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import pytest
from faultkit import faulty_site
from helpers import API_TOKEN, with_http_api

from mullet.daemon.core.obligation_book import ObligationBook
from mullet.drivers.protocol import MAX_JSON_DEPTH, GridEvent, WireError, decode, loads, too_deep

DEEP = b"[" * 5000 + b"]" * 5000  # 10 KB: Python's json recursed past its limit on this
HOSTILE_IDS = [
    "\u0000\n\u202e../../etc",  # the id: NUL, newline, right-to-left override, a path
    "ev\u202e1",
    "ev\u200b1",  # zero-width space
    "ev 1",
    "../../etc/passwd",
    "ev\t1",
    "évènement",
    "x" * 129,
]


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=10) as response:
        return json.loads(response.read())


def _deep_payloads(data: dict) -> dict[str, bytes]:
    """The deep array spliced into a payload the daemon would otherwise take, per consumed topic."""
    group, tenant = data["groups"][0]["group_id"], data["tenants"][0]["tenant_id"]
    valid = {
        f"mining/{group}/state": b'{"v":1,"mode":"run","power_kw":600.0,"ts":1.0,',
        f"ai/{tenant}/state": b'{"v":1,"power_kw":1500.0,"demand_kw":1600.0,"ts":1.0,',
        "grid/price": b'{"v":1,"usd_per_mwh":42.0,"ts":1.0,',
        "grid/event": b'{"v":1,"id":"deep-mqtt","kind":"limit","kw":9000.0,',
    }
    return {topic: head + b'"x":' + DEEP + b"}" for topic, head in valid.items()}


async def test_deeply_nested_json_is_refused_and_counted_on_every_input(mqtt_broker, tmp_path) -> None:
    seen: dict = {}
    async with faulty_site(mqtt_broker, tmp_path, lambda d: (with_http_api(d), seen.update(d))) as run:
        config, topics = run.config, run.observer.topics
        before = await run.metrics()
        payloads = _deep_payloads(seen)
        for topic, payload in payloads.items():
            await run.observer.publish(f"{topics.root}/{topic}", payload)
        key = 'mullet_rejected_messages_total{reason="too_deep"}'
        wanted = before.get(key, 0.0) + len(payloads)
        await run.until_metric(key, lambda value: value >= wanted, 30, default=0.0)
        # Its id is never read (nothing is parsed), so there is nobody to address an ack to.

        api = f"http://127.0.0.1:{config.http_api.port}"
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            body = b'{"v":1,"id":"deep-http","kind":"limit","kw":9000.0,"x":' + DEEP + b"}"
            for deep_body in (body, DEEP):
                async with http.post(f"{api}/v1/events", data=deep_body, headers=auth) as response:
                    assert response.status == 400, await response.text()
            override = b'{"v":1,"group_id":"c01","mode":"curtail","note":' + DEEP + b"}"
            async with http.post(f"{api}/v1/override", data=override, headers=auth) as response:
                assert response.status == 400, await response.text()
                assert (await response.json())["code"] == "too_deep"

        after = await run.metrics()
        grid_key = 'mullet_grid_events_rejected_total{reason="too_deep"}'
        assert after[grid_key] - before.get(grid_key, 0.0) == 3  # MQTT, and both HTTP bodies
        assert after[key] - before.get(key, 0.0) == len(payloads) + 2  # + the two HTTP event bodies
        assert after['mullet_http_api_refusals_total{reason="too_deep"}'] == 1
        assert run.daemon.returncode is None
        log = run.log_path.read_text()
        assert "Traceback" not in log and "handler failed" not in log
        status = await asyncio.to_thread(_status, config.http_api.port)
        assert not {"deep-mqtt", "deep-http"} & set(status["obligations"])


async def test_ids_with_control_or_bidi_characters_are_refused_and_counted(mqtt_broker, tmp_path) -> None:
    async with faulty_site(mqtt_broker, tmp_path, with_http_api) as run:
        config = run.config
        before = await run.metrics()
        key = 'mullet_rejected_messages_total{reason="invalid_field"}'
        for event_id in HOSTILE_IDS:
            payload = json.dumps({"v": 1, "id": event_id, "kind": "limit", "kw": 9000.0}).encode()
            await run.observer.send(payload)
        wanted = before.get(key, 0.0) + len(HOSTILE_IDS)
        await run.until_metric(key, lambda value: value >= wanted, 30, default=0.0)
        since = len(run.observer.received)
        bidi_source = {"v": 1, "id": "src-1", "kind": "limit", "kw": 9000.0, "source": "qse\u202eetc"}
        await run.observer.send(json.dumps(bidi_source).encode())
        ack = await run.observer.ack("src-1", 10, since)
        assert ack["code"] == "invalid_field" and "source" in ack["reason"], ack

        api = f"http://127.0.0.1:{config.http_api.port}/v1/events"
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession() as http:
            for event_id in HOSTILE_IDS:
                body = json.dumps({"v": 1, "id": event_id, "kind": "limit", "kw": 9000.0})
                async with http.post(api, data=body, headers=auth) as response:
                    assert response.status == 400, (event_id, await response.text())
            good = json.dumps({"v": 1, "id": "ok:1@a+b=c_d.e-f", "kind": "limit", "kw": 9000.0})
            async with http.post(api, data=good, headers=auth) as response:
                assert response.status == 200, await response.text()

        after = await run.metrics()
        # Every hostile id refused and counted, once per transport; no ack was addressed to one.
        assert after[key] - before.get(key, 0.0) == 2 * len(HOSTILE_IDS) + 1
        grid_key = 'mullet_grid_events_rejected_total{reason="invalid_field"}'
        assert after[grid_key] - before.get(grid_key, 0.0) == 2 * len(HOSTILE_IDS) + 1
        acked = {
            json.loads(m.payload)["id"] for m in run.observer.received if m.topic.endswith("/grid/event/ack")
        }
        assert not acked & set(HOSTILE_IDS)
        # The one valid id is in force once the plan has taken it; none of the others ever is.
        for _ in range(400):
            status = await asyncio.to_thread(_status, config.http_api.port)
            if status["obligations"]:
                break
            await asyncio.sleep(0.05)  # polling another process's endpoint
        assert status["obligations"] == ["ok:1@a+b=c_d.e-f"], status["obligations"]


# ---- in process: the wire's limits and the book's bounds --------------------------------------


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b'{"a":"' + b"[" * 5000 + b'"}', False),  # brackets inside a string are text
        (b'{"a":"\\"' + b"[" * 5000 + b'"}', False),  # ... after an escaped quote too
        (b"[{}]" * 4000, False),  # wide, not deep
        (b'{"a":' * 40 + b"1" + b"}" * 40, True),
        (b"[" * 5000, True),  # unbalanced: refused before the parser recurses
    ],
)
def test_the_depth_limit_reads_the_raw_bytes(raw: bytes, deep: bool) -> None:
    assert too_deep(raw) is deep
    if deep:
        with pytest.raises(WireError) as refused:
            loads(raw, max_bytes=1 << 20)
        assert refused.value.reason == "too_deep"


def test_ids_and_text_fields_hold_no_control_characters() -> None:
    for event_id in HOSTILE_IDS:
        raw = json.dumps({"v": 1, "id": event_id, "kind": "cancel"}).encode()
        with pytest.raises(WireError) as refused:
            decode(GridEvent, raw)
        assert refused.value.reason == "invalid_field" and "id" in refused.value.detail
    for field in ("program", "source"):
        raw = json.dumps({"v": 1, "id": "a", "kind": "cancel", field: "x\u202ey\u0000"}).encode()
        with pytest.raises(WireError):
            decode(GridEvent, raw)


def _book(**kwargs) -> ObligationBook:
    return ObligationBook(interconnect_kw=10_000.0, max_event_kw_factor=2.0, **kwargs)


def test_the_book_holds_at_most_max_obligations_and_a_duplicate_is_still_a_duplicate() -> None:
    book = _book(max_obligations=3)
    events = [GridEvent(id=f"e{n}", kind="limit", kw=5000.0) for n in range(4)]
    for event in events[:3]:
        book.apply(event, book.decide(event, now_s=100.0, site_power_kw=None), now_s=100.0)
    refused = book.decide(events[3], now_s=100.0, site_power_kw=None)
    assert not refused.accepted and refused.code == "too_many_obligations"
    assert book.decide(events[0], now_s=100.0, site_power_kw=None).duplicate
    cancel = GridEvent(id="e0", kind="cancel")
    book.apply(cancel, book.decide(cancel, now_s=100.0, site_power_kw=None), now_s=100.0)
    assert book.decide(events[3], now_s=100.0, site_power_kw=None).accepted


def test_the_book_forgets_ended_events_after_its_history() -> None:
    book = _book(max_obligations=10_000, history_s=60.0, history_max=5)
    for n in range(20):
        event = GridEvent(id=f"e{n}", kind="limit", kw=5000.0, end=200.0 + n)
        book.apply(event, book.decide(event, now_s=100.0, site_power_kw=None), now_s=100.0)
    book.expire(300.0)  # all twenty ended; the newest five are remembered
    assert book.history() == 5 and not book.obligations
    assert book.decide(
        GridEvent(id="e19", kind="limit", kw=5000.0, end=219.0), now_s=300.0, site_power_kw=None
    ).duplicate
    assert len(book._events) == 5
    book.expire(400.0)  # and after history_s, none
    assert book.history() == 0 and not book._events and not book.cancelled
