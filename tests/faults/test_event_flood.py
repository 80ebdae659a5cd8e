"""A flood of 10,000 distinct grid events against `mulletd run` (issue 17, findings 1 and 2).

Every event is answered on `grid/event/ack` (refusals included: `too_many_obligations` beyond
`control.max_obligations`, `queue_full` beyond the grid-event queue), counted under the ack's code, and
nothing grows faster than the events: journal bytes per event, the largest journal row and log line,
the status document. Sizes and the daemon's RSS before and after are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
from faultkit import faulty_site
from prometheus_client.parser import text_string_to_metric_families

from mullet.drivers.protocol import GridEvent, Topics, encode
from mullet.simulators.ports import free_port

FLOOD = 10_000
MAX_OBLIGATIONS = 100  # control.max_obligations, the default
# Bounds: what one event may add, whatever came before it (quadratic growth made one plan row 749 KB).
JOURNAL_BYTES_PER_EVENT = 1024
PLAN_ROW_BYTES = 8192
LOG_BYTES_PER_EVENT = 1024
LOG_LINE_BYTES = 8192
STATUS_BYTES = 64 * 1024


def _with_api(data: dict) -> None:
    data["http_api"] = {"enabled": True, "port": free_port()}
    data["control"]["max_obligations"] = MAX_OBLIGATIONS


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _metrics(port: int) -> dict[str, float]:
    samples = {}
    for family in text_string_to_metric_families(_get(f"http://127.0.0.1:{port}/metrics").decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _journal(path: str) -> dict[str, int]:
    """Rows and bytes of the journal's `data`, read beside the running daemon (WAL readers do not block)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows, total, largest = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0), coalesce(max(length(data)), 0) FROM journal"
        ).fetchone()
        plan_total, plan_largest = db.execute(
            "SELECT coalesce(sum(length(data)), 0), coalesce(max(length(data)), 0) FROM journal"
            " WHERE kind = 'plan'"
        ).fetchone()
    files = sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))
    return {
        "rows": rows,
        "data_bytes": total,
        "largest_row": largest,
        "plan_bytes": plan_total,
        "largest_plan_row": plan_largest,
        "file_bytes": files,
    }


def _log(path: Path) -> dict[str, int]:
    lines = path.read_bytes().splitlines()
    return {
        "bytes": path.stat().st_size,
        "lines": len(lines),
        "longest_line": max(map(len, lines), default=0),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _publish_all(host: str, port: int, topic: str, payloads: list[bytes]) -> None:
    """QoS 1, as fast as the broker takes them (paho's own thread, no in-flight window)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"flood-{time.monotonic_ns()}")
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect(host, port)
    client.loop_start()
    try:
        assert connected.wait(10), "flood publisher did not connect"
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()


class _Acks:
    """The acks seen so far, by id, read incrementally from the observer's list."""

    def __init__(self, received: list, topics: Topics, since: int) -> None:
        self.received, self.topic, self.cursor = received, topics.grid_event_ack, since
        self.by_id: dict[str, list[dict]] = {}

    def count(self) -> int:
        # The observer's thread appends while this reads: advance by what was read, not to the list's
        # length now (that skipped acks that arrived in between, and the wait never ended).
        new = self.received[self.cursor :]
        self.cursor += len(new)
        for item in new:
            if item.topic == self.topic:
                ack = json.loads(item.payload)
                self.by_id.setdefault(ack["id"], []).append(ack)
        return len(self.by_id)


def _sizes(run, status_url: str, journal_path: str) -> dict[str, object]:
    status = _get(status_url)
    return {
        "journal": _journal(journal_path),
        "log": _log(run.log_path),
        "status_bytes": len(status),
        "status_obligations": len(json.loads(status)["obligations"]),
        "rss_kib": _rss_kib(run.daemon.pid),
    }


async def test_a_flood_of_distinct_events_is_answered_and_grows_nothing_faster_than_the_events(
    mqtt_broker, tmp_path
) -> None:
    async with faulty_site(mqtt_broker, tmp_path, _with_api) as run:
        config, topics = run.config, run.observer.topics
        status_url = f"http://127.0.0.1:{config.http_api.port}/v1/status"
        journal_path = config.journal.path
        before = await asyncio.to_thread(_sizes, run, status_url, journal_path)
        metrics_before = await asyncio.to_thread(_metrics, config.metrics.port)

        end_s = time.time() + 3600
        ids = [f"flood-{n:05d}" for n in range(FLOOD)]
        payloads = [
            encode(GridEvent(id=i, kind="limit", kw=config.site.interconnect_kw, end=end_s)) for i in ids
        ]
        acks = _Acks(run.observer.received, topics, len(run.observer.received))
        started_s = time.monotonic()
        await asyncio.to_thread(_publish_all, mqtt_broker.host, mqtt_broker.port, topics.grid_event, payloads)
        await run.observer.wait_state(lambda: acks.count() >= FLOOD, 180, "an ack for every event")
        answered_s = time.monotonic() - started_s

        after = await asyncio.to_thread(_sizes, run, status_url, journal_path)
        metrics = await asyncio.to_thread(_metrics, config.metrics.port)
        print(f"\nflood of {FLOOD} events answered in {answered_s:.1f} s")
        print("before:", json.dumps(before))
        print("after: ", json.dumps(after))

        # Every event answered once, with a code from the protocol; the counters say the same.
        assert set(acks.by_id) == set(ids)
        codes = Counter(a[0]["code"] for a in acks.by_id.values())
        print("acks by code:", dict(codes))
        assert all(len(a) == 1 for a in acks.by_id.values())
        assert codes["accepted"] == MAX_OBLIGATIONS
        assert set(codes) <= {"accepted", "too_many_obligations", "queue_full"}, codes
        assert codes["queue_full"] > 0 and codes["too_many_obligations"] > 0, codes
        for code in ("too_many_obligations", "queue_full"):
            key = f"mullet_grid_events_rejected_total{{reason={code}}}"
            assert metrics[key] - metrics_before.get(key, 0.0) == codes[code], code
        for _ in range(400):  # the gauge follows the next control cycle
            if metrics["mullet_grid_obligations_active"] == MAX_OBLIGATIONS:
                break
            await asyncio.sleep(0.05)  # polling another process's endpoint
            metrics = await asyncio.to_thread(_metrics, config.metrics.port)
        assert metrics["mullet_grid_obligations_active"] == MAX_OBLIGATIONS

        # Linear in the events: bytes per event, the largest rows and lines, the status document.
        journal_growth = after["journal"]["data_bytes"] - before["journal"]["data_bytes"]
        plan_growth = after["journal"]["plan_bytes"] - before["journal"]["plan_bytes"]
        print(
            f"journal: {journal_growth / FLOOD:.0f} B per event,"
            f" plan rows {plan_growth / MAX_OBLIGATIONS:.0f} B per accepted event"
        )
        assert journal_growth <= JOURNAL_BYTES_PER_EVENT * FLOOD, journal_growth
        assert plan_growth <= PLAN_ROW_BYTES * MAX_OBLIGATIONS, plan_growth
        assert after["journal"]["largest_plan_row"] <= PLAN_ROW_BYTES, after["journal"]
        assert after["journal"]["largest_row"] <= PLAN_ROW_BYTES, after["journal"]
        log_growth = after["log"]["bytes"] - before["log"]["bytes"]
        assert log_growth <= LOG_BYTES_PER_EVENT * FLOOD, log_growth
        assert after["log"]["longest_line"] <= LOG_LINE_BYTES, after["log"]
        assert after["status_bytes"] <= STATUS_BYTES, after["status_bytes"]
        # Memory: what 100 obligations and 10,000 answers cost, not a copy per event of everything.
        assert after["rss_kib"] - before["rss_kib"] <= 200 * 1024, (before["rss_kib"], after["rss_kib"])

        # The cap is a count, not a latch: a cancel makes room for a new event.
        since = len(run.observer.received)
        await run.observer.send(GridEvent(id=ids[0], kind="cancel"))
        assert (await run.observer.ack(ids[0], 20, since))["code"] == "cancelled"
        await run.observer.send(GridEvent(id="after-flood", kind="limit", kw=config.site.interconnect_kw))
        assert (await run.observer.ack("after-flood", 20, since))["code"] == "accepted"
