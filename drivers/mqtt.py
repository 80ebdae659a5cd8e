"""One long-lived MQTT session over aiomqtt that survives broker restarts.

aiomqtt has no automatic reconnect: re-enter `async with Client` with our own exponential backoff and
full jitter, and re-subscribe every time (a clean session forgets subscriptions).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import structlog

from mullet.drivers import paho_direct
from mullet.drivers.wait_for_guard import reraise_swallowed_cancel

log = structlog.get_logger("mullet.mqtt")

# Nagle's algorithm plus Linux's 40 ms delayed ACK held a small ack or setpoint back ~40 ms per hop
# (bench/event_latency.py: 45 ms -> 4 ms from grid event to first setpoint); paho leaves it on.
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

MessageHandler = Callable[[str, bytes], None]
ConnectHandler = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker url must be mqtt://host[:port] or mqtts://host[:port], got {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            parts.hostname,
            parts.port or (8883 if tls else 1883),
            tls,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    def __repr__(self) -> str:  # never print the password
        return f"BrokerAddress({self.host}:{self.port}, tls={self.tls}, user={self.username!r})"


def tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """Verify the broker against `ca_file` (the system store if None), hostname included; present a
    client certificate when one is given."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def backoff_delays(min_s: float, max_s: float, rng: random.Random | None = None) -> Callable[[int], float]:
    """Full-jitter exponential backoff (AWS architecture blog): spreads reconnect storms of many clients."""
    chooser = rng or random.Random()

    def delay(attempt: int) -> float:
        ceiling = min(max_s, min_s * (2 ** min(attempt, 30)))
        return chooser.uniform(min_s, max(min_s, ceiling))

    return delay


class MqttLink:
    """Keeps one session up; hands every inbound message to `on_message` (which must not block)."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        subscriptions: list[str],
        on_message: MessageHandler,
        on_connect: ConnectHandler | None = None,
        will_topic: str | None = None,
        keepalive_s: int = 10,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        if username is not None or password is not None:
            self.address = dataclasses.replace(
                self.address,
                username=username or self.address.username,
                password=password if password is not None else self.address.password,
            )
        self._tls = tls if tls is not None or not self.address.tls else ssl.create_default_context()
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.on_connect = on_connect
        self.will_topic = will_topic
        self.keepalive_s = keepalive_s
        self._delay = backoff_delays(reconnect_min_s, reconnect_max_s)
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.disconnected.set()
        self.connections = 0
        self.handler_errors = 0
        self._acks: dict[int, asyncio.Future[bool]] = {}  # mid -> PUBACK of a publish_now
        self._topic_fields: dict[str, bytes] = {}  # topic -> its encoded PUBLISH field (publish_now)
        # Resolved when the current session ends: aiomqtt 2.5 does not wake a publish waiting for its
        # PUBACK when the broker dies, so publish() also waits on this (else 5 s per publish).
        self._session_over: asyncio.Future[None] | None = None

    async def run(self) -> None:
        attempt = 0
        while True:
            connections_before = self.connections
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "mqtt disconnected", error=str(exc), broker=f"{self.address.host}:{self.address.port}"
                )
            finally:
                self._client = None
                self.connected.clear()
                self.disconnected.set()
                self._fail_acks()
                if self._session_over is not None and not self._session_over.done():
                    self._session_over.set_result(None)
            # A session that got as far as connecting starts the backoff over.
            attempt = 0 if self.connections > connections_before else attempt + 1
            await asyncio.sleep(self._delay(attempt))

    async def _session(self) -> None:
        will = (
            aiomqtt.Will(self.will_topic, b"0", qos=1, retain=True) if self.will_topic is not None else None
        )
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=self.client_id,
            will=will,
            keepalive=self.keepalive_s,
            # Connect and subscribe: the site broker is on the LAN; a just-restarted mosquitto that
            # does not answer in 2 s is retried with backoff rather than waited on (faults suite).
            timeout=2.0,
            max_inflight_messages=1000,
            max_queued_outgoing_messages=10_000,
            tls_context=self._tls,
            socket_options=NO_DELAY,
        )
        # Setpoints to hundreds of groups go out concurrently by design; aiomqtt warns above 10.
        client.pending_calls_threshold = 10_000
        self._track_acks(client)
        self._queue_writer_removal(client)
        self._session_over = asyncio.get_running_loop().create_future()
        async with client:
            reraise_swallowed_cancel()
            for topic in self.subscriptions:
                await client.subscribe(topic, qos=1)
                reraise_swallowed_cancel()
            if self.will_topic is not None:
                await client.publish(self.will_topic, b"1", qos=1, retain=True)
                reraise_swallowed_cancel()
            self._client = client
            self.connections += 1
            self.disconnected.clear()
            self.connected.set()
            log.info("mqtt connected", broker=f"{self.address.host}:{self.address.port}", n=self.connections)
            if self.on_connect is not None:
                await self.on_connect()
            async for message in client.messages:
                payload = message.payload
                raw = payload if isinstance(payload, bytes) else str(payload or "").encode()
                try:
                    self.on_message(message.topic.value, raw)
                except Exception:  # a handler bug must not take the session down
                    self.handler_errors += 1
                    log.exception("mqtt handler failed", topic=message.topic.value)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Publish if connected. False means not sent: the caller keeps its state and resends on connect."""
        client, session_over = self._client, self._session_over
        if client is None or session_over is None:
            return False
        publishing = asyncio.ensure_future(
            client.publish(topic, payload, qos=qos, retain=retain, timeout=5.0)
        )
        try:
            await asyncio.wait((publishing, session_over), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            publishing.cancel()
            raise
        if not publishing.done():
            publishing.cancel()
            log.warning("mqtt publish abandoned: the session ended before its PUBACK", topic=topic)
            return False
        try:
            publishing.result()
        except aiomqtt.MqttError as exc:
            log.warning("mqtt publish failed", topic=topic, error=str(exc))
            return False
        except asyncio.CancelledError:  # cancelled inside aiomqtt, not by our caller
            return False
        return True

    def publish_now(self, topic: str, payload: bytes, *, qos: int = 1) -> asyncio.Future[bool] | None:
        """Write the PUBLISH to the broker's socket before returning (the fast path's broadcast).

        aiomqtt hands writes to a loop writer callback registered through call_soon_threadsafe, so a
        plain publish reaches the socket two loop turns later, behind whatever else is ready then (50
        PDU writes, in a trip). A QoS 1 publish goes out framed by paho_direct; otherwise, or when
        paho has something queued ahead of it, through paho's publish and loop_write. Returns a
        future of the PUBACK (False if the session ends first), or None when not connected (nothing
        was sent).
        """
        client = self._client
        if client is None:
            return None
        paho = client._client  # aiomqtt keeps the paho client private; pinned aiomqtt <3
        ack: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        mid = paho_direct.publish_qos1(paho, self._topic_field(topic), payload) if qos == 1 else None
        if mid is None:
            info = paho.publish(topic, payload, qos=qos)
            if info.rc != 0:
                log.warning("mqtt publish failed", topic=topic, rc=int(info.rc))
                return None
            try:
                paho.loop_write()
            except OSError as exc:  # the read side sees the broken connection and reconnects
                log.warning("mqtt write failed", topic=topic, error=str(exc))
            if qos == 0 or info.is_published():
                ack.set_result(True)
                return ack
            mid = info.mid
        self._acks[mid] = ack
        return ack

    def _topic_field(self, topic: str) -> bytes:
        field = self._topic_fields.get(topic)
        if field is None:
            field = self._topic_fields[topic] = paho_direct.topic_field(topic)
        return field

    def _track_acks(self, client: aiomqtt.Client) -> None:
        """Chain paho's on_publish (aiomqtt's own handler) to resolve publish_now's PUBACK futures."""
        paho = client._client
        aiomqtt_on_publish = paho.on_publish

        def on_publish(*args: Any) -> None:
            ack = self._acks.pop(args[2], None)  # (client, userdata, mid, reason_code, properties)
            if ack is not None and not ack.done():
                ack.set_result(True)
            if aiomqtt_on_publish is not None:
                aiomqtt_on_publish(*args)

        paho.on_publish = on_publish

    @staticmethod
    def _queue_writer_removal(client: aiomqtt.Client) -> None:
        """aiomqtt adds the socket's writer through call_soon_threadsafe but removes it at once. After
        publish_now's own loop_write the removal then comes first and the queued add after it: the
        writer stays registered with nothing to write and the loop calls loop_write on every turn
        (100 % of a core until some other publish; bench/trip_latency.py measured 369,000 calls in 30
        trips). Queue the removal too, so the two happen in the order paho asked for them."""
        loop = asyncio.get_running_loop()

        def unregister_write(_paho: object, _userdata: object, sock: Any) -> None:
            loop.call_soon_threadsafe(loop.remove_writer, sock.fileno())

        client._client.on_socket_unregister_write = unregister_write

    def _fail_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for ack in acks.values():
            if not ack.done():
                ack.set_result(False)

    async def close(self, *, offline_payload: bool = True) -> None:
        """Say goodbye explicitly: a clean disconnect does not fire the broker's LWT."""
        client = self._client
        if client is not None and offline_payload and self.will_topic is not None:
            try:
                await client.publish(self.will_topic, b"0", qos=1, retain=True, timeout=2.0)
            except aiomqtt.MqttError:
                pass
