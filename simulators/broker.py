"""MQTT brokers for the demo and the tests: a mosquitto process, or the embedded amqtt broker.

Tests prefer mosquitto (the broker sites run); amqtt is the fallback where mosquitto is absent and
the demo's zero-install default.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mullet.simulators.ports import free_port

MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    for candidate in MOSQUITTO_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


async def wait_listening(host: str, port: int, timeout_s: float) -> None:
    """Wait until a TCP connect succeeds (the broker is up), or raise TimeoutError."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline_s:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return


class MosquittoBroker:
    """A real mosquitto process on a loopback port, with its own config file."""

    name = "mosquitto"

    def __init__(
        self, executable: str, port: int | None = None, host: str = "127.0.0.1", extra_config: str = ""
    ) -> None:
        self.executable = executable
        # Appended to the generated mosquitto.conf, e.g. a bridge to a fleet broker (deploy/fleet/).
        self.extra_config = extra_config
        self.host = host
        self.port = port or free_port(host)
        self._dir = Path(tempfile.mkdtemp(prefix="mullet-mosquitto-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        self.spawn()
        await wait_listening(self.host, self.port, timeout_s=10)

    def start_blocking(self, timeout_s: float = 10.0) -> None:
        """For synchronous (session-scoped) test fixtures."""
        self.spawn()
        deadline_s = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline_s:
                    raise TimeoutError(f"mosquitto not listening on {self.port}") from None
                time.sleep(0.02)

    def spawn(self) -> None:
        conf = self._dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\nmax_inflight_messages 0\nmax_queued_messages 100000\n" + self.extra_config
        )
        self.process = subprocess.Popen(
            [self.executable, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self._dir / "mosquitto.log", "wb"),
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean disconnects, retained state lost (no persistence)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    async def stop(self) -> None:
        self.stop_blocking()
        self.close()

    def stop_blocking(self) -> None:
        """Stop the process; `start_blocking()` brings it back on the same port (reconnect tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def close(self) -> None:
        """Remove the config and log directory once the broker is stopped for good."""
        shutil.rmtree(self._dir, ignore_errors=True)


def _subscribed_only_broker_class() -> type:
    """amqtt's Broker, fixed to send retained messages only to sessions subscribed to them.

    amqtt 0.11-0.12 (broker.py `_handle_client_session`) hands every newly connected session the
    retained messages of every topic filter that any client subscribed to, which MQTT 3.1.1 section
    3.3.1.3 does not allow, and walks that dict across awaits, so concurrent subscribes crash the
    connection handler ("dictionary changed size during iteration"). Skipping filters the session is
    not subscribed to fixes both without suspending inside that loop.
    """
    from amqtt.broker import Broker

    class SubscribedOnlyBroker(Broker):  # type: ignore[misc]
        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            subscribers = self._subscriptions.get(subscription[0], ())
            if any(s.client_id == session.client_id for s, _qos in subscribers):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return SubscribedOnlyBroker


class EmbeddedBroker:
    """amqtt in this process's event loop: nothing to install, enough for a small simulated site."""

    name = "amqtt"

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: object | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        config = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}
            },
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = _subscribed_only_broker_class()(config)
        await broker.start()  # returns once the listener is bound
        self._broker = broker

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()  # type: ignore[attr-defined]
            self._broker = None


def make_broker(prefer: str | None = None) -> MosquittoBroker | EmbeddedBroker:
    """mosquitto when installed (or MULLET_TEST_BROKER=mosquitto), amqtt otherwise."""
    prefer = prefer or os.environ.get("MULLET_TEST_BROKER")
    executable = find_mosquitto()
    if prefer == "amqtt" or executable is None:
        if prefer == "mosquitto":
            raise RuntimeError("MULLET_TEST_BROKER=mosquitto but no mosquitto executable found")
        return EmbeddedBroker()
    return MosquittoBroker(executable)


class ThreadedEmbeddedBroker:
    """amqtt on its own event loop in a thread: lets synchronous, session-wide fixtures host it."""

    name = "amqtt"

    def __init__(self) -> None:
        self._inner = EmbeddedBroker()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self._inner.host

    @property
    def port(self) -> int:
        return self._inner.port

    @property
    def url(self) -> str:
        return self._inner.url

    def start_blocking(self, timeout_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._inner.start(), self._loop).result(timeout_s)

    def stop_blocking(self) -> None:
        asyncio.run_coroutine_threadsafe(self._inner.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
