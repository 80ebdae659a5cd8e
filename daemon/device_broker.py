"""The broker a device link connects to, from an `[mqtt]` section with its secrets read: for the edge
agents (daemon/agents/) and the simulated site's controllers (daemon/site/simulated.py) alike."""

from __future__ import annotations

import dataclasses

from mullet.daemon.config import MqttSection
from mullet.daemon.secrets import read_secret
from mullet.drivers.device_link import Broker
from mullet.drivers.mqtt import BrokerAddress, tls_context


def broker_of(mqtt: MqttSection, *, device_password_file: str | None = None) -> Broker:
    """The broker with its TLS settings and credentials (an agent's ACL identity is its username);
    `device_password_file`: every simulated controller logs in as its own identity with it.
    Raises SecretError when a configured password cannot be read."""
    address = BrokerAddress.parse(mqtt.url)
    password = read_secret(file=mqtt.password_file, credential=mqtt.password_credential)
    if mqtt.username is not None or password is not None:
        address = dataclasses.replace(
            address,
            username=mqtt.username or address.username,
            password=password if password is not None else address.password,
        )
    tls = tls_context(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if address.tls else None
    return Broker(
        address=address,
        keepalive_s=mqtt.keepalive_s,
        reconnect_min_s=mqtt.reconnect_min_s,
        reconnect_max_s=mqtt.reconnect_max_s,
        tls=tls,
        device_password=read_secret(file=device_password_file),
    )
