"""A device controller's own MQTT connection: the simulated controllers' and the edge agents'.

Each controller connects with a last will (`online` = `0`, retained), announces `online` = `1`
(retained), subscribes, publishes its state on connect, on a period and whenever a subclass asks, and
reconnects with exponential backoff and jitter when the broker goes away (re-subscribing, so retained
setpoints are delivered again). A handler error is logged and counted, never fatal.
"""

from __future__ import annotations

import abc
import asyncio
import secrets
import socket
import ssl
from contextlib import suppress
from dataclasses import dataclass

import aiomqtt
import structlog

from mullet.drivers.mqtt import NO_DELAY, BrokerAddress, backoff_delays
from mullet.drivers.wait_for_guard import reraise_swallowed_cancel

_log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Broker:
    """Where and how controllers connect (the daemon builds one from an `[mqtt]` section, its
    passwords already read: `daemon/agents/link.py`'s `broker_of`)."""

    address: BrokerAddress
    keepalive_s: int = 10
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    tls: ssl.SSLContext | None = None
    # Set: each controller logs in as its own ACL identity (`mining/<group>`, `ai/<tenant>`) with it.
    device_password: str | None = None

    def __repr__(self) -> str:  # never print a password
        return f"Broker({self.address!r}, tls={self.tls is not None})"

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    def credentials(self, identity: str) -> tuple[str | None, str | None]:
        """(username, password) for the controller whose topics are under `identity`."""
        if self.device_password is not None:
            return identity, self.device_password
        return self.address.username, self.address.password


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b"" if payload is None else str(payload).encode()


class DeviceLink(abc.ABC):
    """Base of the simulated controllers and the edge agents: connection, LWT, subscriptions,
    telemetry loop.

    `ready` is set while connected and subscribed. `go_offline()` drops the TCP connection without
    an MQTT DISCONNECT (so the broker publishes the last will, as for a crashed controller) and stays
    offline until `go_online()`.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        name: str,
        online_topic: str,
        subscriptions: list[str],
        telemetry_period_s: float,
    ) -> None:
        self.broker = broker
        self.name = name
        self.online_topic = online_topic
        self.subscriptions = subscriptions
        self.telemetry_period_s = telemetry_period_s
        self.ready = asyncio.Event()
        self.connects = 0
        self.handler_errors = 0
        self._enabled = asyncio.Event()
        self._enabled.set()
        self._client: aiomqtt.Client | None = None
        self._log = _log.bind(device=name)
        # `<root>/mining/c01/online` -> `mining/c01`: the identity the shipped broker ACL knows it by.
        self.identity = "/".join(online_topic.split("/")[-3:-1])

    @abc.abstractmethod
    async def _handle(self, topic: str, payload: bytes) -> None:
        """Act on one received message (a subscription of this link)."""

    @abc.abstractmethod
    def _state(self) -> tuple[str, bytes]:
        """The state message to publish now: (topic, payload)."""

    async def run(self) -> None:
        """Stay connected until cancelled."""
        delay = backoff_delays(self.broker.reconnect_min_s, self.broker.reconnect_max_s)
        attempt = 0
        while True:
            await self._enabled.wait()
            connects_before = self.connects
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self._log.debug("mqtt link down", error=str(exc))
            except Exception:
                self._log.exception("mqtt link failed; reconnecting")  # a simulator must not die
            finally:
                self.ready.clear()
                self._client = None
            if not self._enabled.is_set():
                continue  # taken offline on purpose: wait for go_online(), no backoff
            # It was up: start the backoff afresh.
            attempt = 0 if self.connects > connects_before else attempt + 1
            await asyncio.sleep(delay(attempt))

    async def publish_state(self) -> None:
        """Publish the current state (retained) if connected; a lost connection is noticed by the
        message loop, so a failed publish here is dropped."""
        client = self._client
        if client is None:
            return
        topic, payload = self._state()
        with suppress(aiomqtt.MqttError):
            await client.publish(topic, payload, qos=0, retain=True)
        reraise_swallowed_cancel()

    async def say_offline(self) -> None:
        """Publish `online` = `0` before a clean stop: a clean disconnect does not fire the will."""
        client = self._client
        if client is None:
            return
        with suppress(aiomqtt.MqttError):
            await client.publish(self.online_topic, b"0", qos=1, retain=True, timeout=2.0)
        reraise_swallowed_cancel()

    def go_offline(self) -> None:
        """Crash the connection (the broker publishes the last will) and stay offline."""
        self._enabled.clear()
        client = self._client
        if client is None:
            return
        # aiomqtt has no public "drop without DISCONNECT"; shutting the socket down is what a crash
        # looks like to the broker, and paho then reports the connection lost as usual.
        sock = client._client.socket()
        if isinstance(sock, socket.socket):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def go_online(self) -> None:
        """Reconnect after `go_offline()`."""
        self._enabled.set()

    async def _session(self) -> None:
        username, password = self.broker.credentials(self.identity)
        tls = self.broker.tls or (ssl.create_default_context() if self.broker.address.tls else None)
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=username,
            password=password,
            identifier=f"mullet-sim-{self.name}-{secrets.token_hex(3)}",
            will=aiomqtt.Will(self.online_topic, b"0", qos=1, retain=True),
            keepalive=self.broker.keepalive_s,
            tls_context=tls,
            socket_options=NO_DELAY,
        )
        async with client:
            reraise_swallowed_cancel()
            self._client = client
            self.connects += 1
            if not self._enabled.is_set():
                return  # go_offline() arrived while connecting
            await client.publish(self.online_topic, b"1", qos=1, retain=True)
            reraise_swallowed_cancel()
            await client.subscribe([(topic, 1) for topic in self.subscriptions])
            reraise_swallowed_cancel()
            await self.publish_state()
            self.ready.set()
            self._log.debug("mqtt link up", connects=self.connects)
            telemetry = asyncio.create_task(self._telemetry(), name=f"{self.name}-telemetry")
            try:
                async for message in client.messages:
                    await self._dispatch(message.topic.value, _payload_bytes(message.payload))
            finally:
                telemetry.cancel()
                await asyncio.wait({telemetry})  # unlike `await telemetry`, keeps our own cancel

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            await self._handle(topic, payload)
        except aiomqtt.MqttError:
            raise
        except Exception:
            self.handler_errors += 1
            self._log.exception("handler failed", topic=topic)

    async def _telemetry(self) -> None:
        while True:
            await asyncio.sleep(self.telemetry_period_s)
            await self.publish_state()
