"""The daemon's MQTT session: reconnects with backoff, re-subscribes, announces itself, never raises."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from helpers import Observer, retained

from mullet.drivers.mqtt import BrokerAddress, MqttLink, backoff_delays


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self.changed.set()
        if payload == b"boom":
            raise RuntimeError("handler bug")

    async def until(self, predicate, timeout_s: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_reconnects_resubscribes_and_reannounces(restartable_broker) -> None:
    inbox = Inbox()
    connects = asyncio.Event()

    async def on_connect() -> None:
        connects.set()

    link = MqttLink(
        restartable_broker.url,
        client_id="link-under-test",
        subscriptions=["site/in/#"],
        on_message=inbox,
        on_connect=on_connect,
        will_topic="site/daemon/online",
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(connects.wait(), 30)
        assert (await retained(restartable_broker, "site"))["site/daemon/online"] == b"1"
        async with aiomqtt.Client(restartable_broker.host, restartable_broker.port) as peer:
            await peer.publish("site/in/a", b"boom", qos=1)  # a handler bug is counted, not fatal
            await peer.publish("site/in/b", b"one", qos=1)
        await inbox.until(lambda: ("site/in/b", b"one") in inbox.messages)
        assert link.handler_errors == 1

        connects.clear()
        restartable_broker.stop_blocking()
        await asyncio.wait_for(link.disconnected.wait(), 30)
        assert await link.publish("site/out", b"x") is False  # not sent, and says so
        restartable_broker.start_blocking()  # no persistence: retained state and sessions are gone
        await asyncio.wait_for(connects.wait(), 30)
        assert link.connections == 2
        assert (await retained(restartable_broker, "site"))["site/daemon/online"] == b"1"
        async with aiomqtt.Client(restartable_broker.host, restartable_broker.port) as peer:
            await peer.publish("site/in/c", b"two", qos=1)
        await inbox.until(lambda: ("site/in/c", b"two") in inbox.messages)
        assert await link.publish("site/out", b"x") is True

        await link.close()  # an explicit goodbye: a clean disconnect fires no will
        assert (await retained(restartable_broker, "site"))["site/daemon/online"] == b"0"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    delay = backoff_delays(0.2, 10.0, random.Random(7))
    for attempt in range(40):
        ceiling = min(10.0, 0.2 * 2**attempt)
        samples = [delay(attempt) for _ in range(50)]
        assert all(0.2 <= s <= ceiling for s in samples)
    assert len({round(delay(6), 6) for _ in range(20)}) > 10  # jitter spreads a reconnect storm


def test_broker_urls() -> None:
    assert BrokerAddress.parse("mqtt://10.0.0.5") == BrokerAddress("10.0.0.5", 1883, False)
    secure = BrokerAddress.parse("mqtts://daemon:s3cret@broker.site:8884")
    assert (secure.port, secure.tls, secure.username, secure.password) == (8884, True, "daemon", "s3cret")
    assert "s3cret" not in repr(secure)
    with pytest.raises(ValueError):
        BrokerAddress.parse("http://broker")


@contextlib.asynccontextmanager
async def _watched_link(broker: Any, client_id: str) -> AsyncIterator[tuple[MqttLink, Any, Observer]]:
    """A connected MqttLink, its paho client, and an Observer (its own thread: it sees what the broker
    delivers while the test's loop is blocked) on the trip topic; torn down after."""
    watcher = Observer(broker.host, broker.port, ["site/mining/trip"])
    await watcher.start()
    link = MqttLink(broker.url, client_id=client_id, subscriptions=[], on_message=Inbox())
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 30)
        assert link._client is not None
        yield link, link._client._client, watcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(watcher.close)


async def test_publish_now_puts_the_publish_on_the_socket_before_returning(mqtt_broker) -> None:
    """The fast path's broadcast must not wait for a loop turn: a subscriber on its own thread gets
    it while this loop is still blocked right after the call, then the PUBACK resolves the future."""
    async with _watched_link(mqtt_broker, "publish-now") as (link, _, watcher):
        ack = link.publish_now("site/mining/trip", b'{"v":1}', qos=1)
        assert ack is not None
        # Blocks this loop: only a PUBLISH already written can reach the watcher meanwhile.
        assert watcher.payloads_blocking(1) == [b'{"v":1}']
        assert await asyncio.wait_for(ack, 30) is True


async def test_publish_now_leaves_no_writer_spinning_the_loop(mqtt_broker) -> None:
    """aiomqtt adds the socket's writer through a queued callback but removed it at once: after
    publish_now's own write the removal came first, the writer stayed registered with nothing to
    write, and the loop called paho's loop_write on every turn (100 % CPU) until some other publish."""
    link = MqttLink(mqtt_broker.url, client_id="publish-now-idle", subscriptions=[], on_message=Inbox())
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 30)
        assert link._client is not None
        paho = link._client._client
        writes = 0
        loop_write = paho.loop_write

        def counting_loop_write() -> object:
            nonlocal writes
            writes += 1
            return loop_write()

        paho.loop_write = counting_loop_write
        for _ in range(3):
            ack = link.publish_now("site/mining/trip", b'{"v":1}', qos=1)
            assert ack is not None
            assert await asyncio.wait_for(ack, 30) is True
        writes_before = writes
        for _ in range(200):  # 200 loop turns with nothing to send
            await asyncio.sleep(0)
        assert writes - writes_before <= 2, f"loop_write ran {writes - writes_before} times while idle"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_publish_now_frames_what_paho_would_and_leaves_its_state_as_publish_does(mqtt_broker) -> None:
    """The trip PUBLISH is framed by paho_direct, not paho.publish: the broker must decode it (one-,
    two- and three-byte remaining lengths), its PUBACK must resolve the future through paho's own
    handling, and paho's own publishes on the same session must keep working around it."""
    async with _watched_link(mqtt_broker, "publish-now-frames") as (link, paho, watcher):
        sizes = [0, 1, 100, 200, 20_000, 3_000_000]  # remaining length: 1, 1, 1, 2, 3, 4 bytes
        expected: list[bytes] = []
        for size in sizes:
            payload = bytes(random.randrange(256) for _ in range(min(size, 1000))) * max(1, size // 1000)
            payload = payload[:size]
            ack = link.publish_now("site/mining/trip", payload, qos=1)
            assert ack is not None
            assert await asyncio.wait_for(ack, 10) is True
            expected.append(payload)
            assert await link.publish("site/mining/trip", b"via-aiomqtt", qos=1)  # paho's own path
            expected.append(b"via-aiomqtt")
        assert await asyncio.to_thread(watcher.payloads_blocking, len(expected)) == expected
        assert paho._inflight_messages == 0
        assert not paho._out_messages
        assert not link._acks


async def test_publish_now_queues_behind_a_partly_written_publish(restartable_broker) -> None:
    """With the broker stopped the socket fills and the first PUBLISH goes out in part; paho keeps
    the rest. Once the socket has room again, before paho's writer has had a loop turn, a second
    PUBLISH must queue behind that rest, never be written into the middle of it."""
    import os
    import select
    import signal

    assert restartable_broker.process is not None
    pid = restartable_broker.process.pid
    async with _watched_link(restartable_broker, "publish-now-full") as (link, paho, watcher):
        big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than both loopback socket buffers hold
        os.kill(pid, signal.SIGSTOP)
        try:
            first = link.publish_now("site/mining/trip", big, qos=1)
            assert paho._out_packet, "the socket took 16 MiB at once: this test no longer fills it"
        finally:
            os.kill(pid, signal.SIGCONT)
        # Blocks this loop until the broker has drained some: paho's writer gets no turn meanwhile.
        _, writable, _ = select.select([], [paho._sock], [], 10)
        assert writable
        second = link.publish_now("site/mining/trip", b"after", qos=1)
        assert first is not None and second is not None
        assert await asyncio.wait_for(first, 30) is True
        assert await asyncio.wait_for(second, 30) is True
        assert await asyncio.to_thread(watcher.payloads_blocking, 2) == [big, b"after"]


async def test_publish_now_past_the_in_flight_window_queues_in_paho(restartable_broker) -> None:
    """With 1000 publishes unacknowledged (the link's in-flight window) the next one must not be
    written past paho's limit: it queues in paho and goes out, in order, as PUBACKs come back."""
    import os
    import signal

    assert restartable_broker.process is not None
    pid = restartable_broker.process.pid
    async with _watched_link(restartable_broker, "publish-now-window") as (link, paho, watcher):
        window = paho._max_inflight_messages
        os.kill(pid, signal.SIGSTOP)
        try:
            acks = [link.publish_now("site/mining/trip", b"%d" % i, qos=1) for i in range(window + 5)]
            assert paho._inflight_messages == window
            assert len(paho._out_messages) == window + 5  # the last five wait in paho's queue
        finally:
            os.kill(pid, signal.SIGCONT)
        assert all(ack is not None for ack in acks)
        assert await asyncio.wait_for(asyncio.gather(*acks), 30) == [True] * (window + 5)
        got = await asyncio.to_thread(watcher.payloads_blocking, window + 5)
        assert got == [b"%d" % i for i in range(window + 5)]


async def test_publish_now_without_a_session_sends_nothing() -> None:
    link = MqttLink("mqtt://127.0.0.1:1", client_id="never-connected", subscriptions=[], on_message=Inbox())
    assert link.publish_now("site/mining/trip", b"{}") is None


async def test_a_publish_waiting_for_its_puback_returns_false_when_the_broker_dies(
    restartable_broker,
) -> None:
    """aiomqtt 2.5 leaves such a publish waiting out its whole timeout (5 s): the control loop would
    stall that long on a broker crash (faults suite). The link ends it with the session."""
    import os
    import signal

    link = MqttLink(
        restartable_broker.url,
        client_id="puback-waiter",
        subscriptions=[],
        on_message=Inbox(),
        reconnect_min_s=5.0,  # stay disconnected for the assertion
        reconnect_max_s=5.0,
    )
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 30)
        assert restartable_broker.process is not None
        pid = restartable_broker.process.pid
        os.kill(pid, signal.SIGSTOP)  # the broker stops answering: no PUBACK
        publishing = asyncio.create_task(link.publish("site/x", b"1", qos=1))
        await asyncio.wait_for(link.connected.wait(), 30)  # still connected as far as we know
        assert not publishing.done()
        os.kill(pid, signal.SIGKILL)  # the connection is reset; the session ends
        os.kill(pid, signal.SIGCONT)
        assert await asyncio.wait_for(publishing, 2.0) is False
        assert link.disconnected.is_set()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        restartable_broker.process = None
