"""What both edge agents add to the controllers' MQTT link (`simulators/mqtt_link.py`'s
`DeviceLink`, which the simulated controllers use too): the broker from an agent's `[mqtt]`, and a
goodbye (`online` = `0`) before a clean stop, since a clean disconnect does not fire the will."""

from __future__ import annotations

from contextlib import suppress

import aiomqtt

from mullet.daemon.config import MqttSection
from mullet.drivers.cancel import reraise_swallowed_cancel
from mullet.simulators.mqtt_link import Broker, DeviceLink


def broker_of(mqtt: MqttSection) -> Broker:
    """The agent's broker, with its TLS settings and credentials (the ACL identity is the username)."""
    return Broker.from_config(mqtt)


async def say_offline(link: DeviceLink) -> None:
    client = link._client  # the link keeps its live client private; None while disconnected
    if client is None:
        return
    with suppress(aiomqtt.MqttError):
        await client.publish(link.online_topic, b"0", qos=1, retain=True, timeout=2.0)
    reraise_swallowed_cancel()
