"""Shared fixtures: a real MQTT broker process for the whole session.

mosquitto on an ephemeral loopback port when it is installed (as CI installs it); the embedded
amqtt broker only where it is absent. The report header says which one ran.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mullet.simulators.broker import (
    MosquittoBroker,
    ThreadedEmbeddedBroker,
    find_mosquitto,
)


def _broker_choice() -> str:
    executable = find_mosquitto()
    return f"mosquitto ({executable})" if executable else "amqtt (embedded; mosquitto not found)"


def pytest_report_header(config: pytest.Config) -> str:
    return f"mqtt broker: {_broker_choice()}"


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[MosquittoBroker | ThreadedEmbeddedBroker]:
    executable = find_mosquitto()
    broker: MosquittoBroker | ThreadedEmbeddedBroker = (
        MosquittoBroker(executable) if executable else ThreadedEmbeddedBroker()
    )
    broker.start_blocking()
    yield broker
    broker.stop_blocking()
