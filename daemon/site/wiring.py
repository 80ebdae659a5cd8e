"""The site daemon's connections, built from its config: the journal, the MQTT session and the meter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mullet.daemon.config import Config
from mullet.daemon.metrics import Metrics
from mullet.daemon.pair.role import HaRole
from mullet.daemon.records.journal import Journal
from mullet.drivers import sunspec
from mullet.drivers.device_profiles import load_meter_profile
from mullet.drivers.meter import MeterSample, ModbusMeter
from mullet.drivers.mqtt import MqttLink, tls_context
from mullet.drivers.protocol import Topics


def site_journal(config: Config, metrics: Metrics) -> Journal:
    retention_days = config.journal.retention_days

    def committed(entries: int, elapsed_s: float) -> None:
        metrics.journal_written.inc(entries)
        metrics.journal_commit_seconds.observe(elapsed_s)

    journal = Journal(
        config.journal.path,
        queue_size=config.journal.queue_size,
        retention_s=None if retention_days is None else retention_days * 86_400.0,
        on_drop=lambda kind: metrics.journal_dropped.labels(kind=kind).inc(),
        on_commit=committed,
    )
    metrics.journal_queue.set_function(lambda: journal.queue_depth)
    return journal


def site_link(
    config: Config,
    topics: Topics,
    ha: HaRole | None,
    password: str | None,
    on_message: Callable[[str, bytes], None],
    on_connect: Callable[[], Awaitable[None]],
) -> MqttLink:
    mqtt = config.mqtt
    return MqttLink(
        mqtt.url,
        client_id=mqtt.client_id or (ha.client_id if ha else f"mulletd-{config.site.site_id}"),
        subscriptions=topics.daemon_subscriptions() + (ha.subscriptions if ha else []),
        on_message=on_message,
        on_connect=on_connect,
        # A pair cannot share one will: each node has its own, the leader owns daemon/online.
        will_topic=ha.node_online_topic if ha else topics.daemon_online,
        keepalive_s=mqtt.keepalive_s,
        reconnect_min_s=mqtt.reconnect_min_s,
        reconnect_max_s=mqtt.reconnect_max_s,
        username=mqtt.username,
        password=password,
        tls=tls_context(mqtt.ca_file, mqtt.cert_file, mqtt.key_file) if "mqtts:" in mqtt.url else None,
    )


def site_meter(config: Config, metrics: Metrics, on_sample: Callable[[MeterSample], None]) -> ModbusMeter:
    meter = config.meter
    return ModbusMeter(
        meter.host,
        meter.port,
        device_id=meter.device_id,
        profile=load_meter_profile(meter.profile),
        poll_hz=meter.poll_hz,
        timeout_s=meter.timeout_s,
        on_sample=on_sample,
        on_reject=lambda reason: metrics.meter_rejected.labels(reason=reason).inc(),
        on_round_trip=metrics.modbus_seconds.labels(device=f"meter:{meter.host}:{meter.port}").observe,
        sunspec_bases=sunspec.DEFAULT_BASES if meter.sunspec_base is None else (meter.sunspec_base,),
        sunspec_model=meter.sunspec_model,
    )
