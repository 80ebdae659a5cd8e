"""Shared fixtures: a real MQTT broker process for the whole session, and tests/helpers.py's observer,
site config and running site bound to it.

mosquitto on an ephemeral loopback port when it is installed (as CI installs it); the embedded
amqtt broker only where it is absent. The report header says which one ran.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import helpers
import pytest

from mullet.daemon.config import Config
from mullet.drivers.protocol import Topics
from mullet.simulators.broker import (
    MosquittoBroker,
    ThreadedEmbeddedBroker,
    find_mosquitto,
)


def _mosquitto() -> str | None:
    """mosquitto's path, or None to fall back to amqtt (also forced by MULLET_TEST_BROKER=amqtt)."""
    if os.environ.get("MULLET_TEST_BROKER") == "amqtt":
        return None
    return find_mosquitto()


def _broker_choice() -> str:
    executable = _mosquitto()
    if executable:
        return f"mosquitto ({executable})"
    if os.environ.get("MULLET_TEST_BROKER") == "amqtt":
        return "amqtt (embedded; forced by MULLET_TEST_BROKER)"
    return "amqtt (embedded; mosquitto not found)"


def pytest_report_header(config: pytest.Config) -> str:
    return f"mqtt broker: {_broker_choice()}"


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[MosquittoBroker | ThreadedEmbeddedBroker]:
    executable = _mosquitto()
    broker: MosquittoBroker | ThreadedEmbeddedBroker = (
        MosquittoBroker(executable) if executable else ThreadedEmbeddedBroker()
    )
    broker.start_blocking()
    yield broker
    broker.stop_blocking()
    if isinstance(broker, MosquittoBroker):
        broker.close()


@pytest.fixture
def restartable_broker() -> Iterator[MosquittoBroker]:
    """A broker of the test's own, to stop and start on the same port (reconnect tests)."""
    executable = _mosquitto()
    if executable is None:
        pytest.skip("broker restart tests need a mosquitto process (CI installs it)")
    broker = MosquittoBroker(executable)
    broker.start_blocking()
    yield broker
    broker.stop_blocking()
    broker.close()


@pytest.fixture
def site_config(mqtt_broker, tmp_path: Path) -> Callable[..., tuple[Config, Path]]:
    """`site_config(mutate=None)`: the example site on the session broker (helpers.site_config)."""

    def build(mutate: Callable[[dict], None] | None = None) -> tuple[Config, Path]:
        return helpers.site_config(mqtt_broker.url, tmp_path, mutate)

    return build


@pytest.fixture
async def observe(mqtt_broker) -> AsyncIterator[Callable[..., object]]:
    """`await observe(subscriptions, topics=None)`: a started helpers.Observer on the session broker,
    closed after the test."""
    observers: list[helpers.Observer] = []

    async def start(subscriptions: list[str], topics: Topics | None = None) -> helpers.Observer:
        observer = helpers.Observer(mqtt_broker.host, mqtt_broker.port, subscriptions, topics)
        observers.append(observer)
        await observer.start()
        return observer

    yield start
    for observer in observers:
        observer.close()


@pytest.fixture
async def running(
    mqtt_broker, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[helpers.Running]:
    """The daemon and the simulated site (helpers.running_site); `indirect` parametrisation passes a
    config mutator."""
    async with helpers.running_site(mqtt_broker, tmp_path, getattr(request, "param", None)) as started:
        yield started
