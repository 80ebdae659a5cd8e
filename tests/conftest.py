"""Shared fixtures: a real MQTT broker process for the whole session.

mosquitto on an ephemeral loopback port when it is installed (as CI installs it); the embedded
amqtt broker only where it is absent. The report header says which one ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

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
