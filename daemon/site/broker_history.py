"""What the broker still holds of a site whose journal is empty: a lost journal must not restore load.

A journal with no row (new, 0 bytes, deleted) at a site that ran before would restart `seq` at 1000 and
forget every obligation, so the first plan could restore groups shed for an event still in force. The
broker's retained commands (`mining/<g>/set`, `ai/<t>/set`), states (`seq_applied`) and plan show that
history: read once at start-up, before anything is published (docs/operations.md section 5).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiomqtt
import structlog

from mullet.daemon.config import Config
from mullet.daemon.core.controller import SEQ_RESTART_GAP, SiteController
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.drivers.mqtt import BrokerAddress, tls_context
from mullet.drivers.protocol import Topics
from mullet.policies.model import Override


class Daemon(Protocol):
    """What recovery from broker history needs of the site daemon (daemon/site/app.py)."""

    config: Config
    topics: Topics
    mqtt_password: str | None
    core: SiteController
    journal: Journal
    journal_lost: dict[str, Any] | None
    metrics: Metrics


log = structlog.get_logger("mullet.daemon")
# As a restart: setpoints in flight at the loss may not be retained yet.
SEQ_GAP = SEQ_RESTART_GAP


@dataclass
class BrokerHistory:
    max_seq: int = 0  # the highest seq any retained command, state or plan carries
    curtailed: dict[str, int] = field(default_factory=dict)  # group -> seq of its retained curtail
    messages: int = 0

    @property
    def found(self) -> bool:
        return self.max_seq > 0  # a daemon commanded this site (controllers' own states carry none)


def _seq(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def collect(
    history: BrokerHistory, topics: Topics, group_ids: Collection[str], topic: str, raw: bytes
) -> None:
    """Fold one retained message in; anything malformed is ignored (it is history, not a command)."""
    try:
        data = json.loads(raw)
        parsed = topics.parse(topic)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    history.messages += 1
    seq = _seq(data.get("seq_applied") if parsed.kind == "group_state" else data.get("seq"))
    history.max_seq = max(history.max_seq, seq)
    if parsed.kind == "group_set" and parsed.subject in group_ids and data.get("mode") == "curtail":
        history.curtailed[str(parsed.subject)] = seq


async def read_broker_history(
    url: str,
    topics: Topics,
    group_ids: Collection[str],
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> BrokerHistory:
    """The retained messages under the site root, read in one short session of its own.

    Retained messages come right after a SUBSCRIBE; a second SUBSCRIBE's SUBACK follows them on the
    same connection (QoS 0: no in-flight window holds them back), so it marks the end."""
    address = BrokerAddress.parse(url)
    history = BrokerHistory()
    async with aiomqtt.Client(
        address.host,
        address.port,
        identifier=f"mulletd-history-{secrets.token_hex(3)}",
        username=username or address.username,
        password=password or address.password,
        tls_context=tls_context(ca_file, cert_file, key_file) if address.tls else None,
        timeout=10,
    ) as client:
        await client.subscribe(
            [
                (f"{topics.root}/mining/+/set", 0),
                (f"{topics.root}/mining/+/state", 0),
                (f"{topics.root}/ai/+/set", 0),
                (topics.daemon_plan, 0),
            ]
        )
        await client.subscribe(topics.daemon_online, 0)  # the end marker
        for _ in range(len(client.messages)):
            message = await anext(client.messages)
            if isinstance(message.payload, bytes) and message.retain:
                collect(history, topics, group_ids, message.topic.value, message.payload)
    return history


HOLD_S = 86_400.0  # as long as the API's longest override: an operator releases earlier with "auto"


async def recover_lost_journal(daemon: Daemon, *, timeout_s: float = 15.0) -> BrokerHistory | None:
    """At start-up with an empty journal: resume `seq` above the broker's, hold every group the broker
    shows curtailed in curtail (operator overrides, journaled, released by an operator or by expiry),
    and say so once, loudly: an error line, `mullet_journal_history_lost`, /v1/status, the journal."""
    config = daemon.config
    mqtt = config.mqtt
    try:
        async with asyncio.timeout(timeout_s):
            history = await read_broker_history(
                mqtt.url,
                daemon.topics,
                daemon.core.group_ids,
                username=mqtt.username,
                password=daemon.mqtt_password,
                ca_file=mqtt.ca_file,
                cert_file=mqtt.cert_file,
                key_file=mqtt.key_file,
            )
    except (TimeoutError, aiomqtt.MqttError, OSError) as exc:
        log.error("journal is empty and the broker could not be asked what the site holds", error=repr(exc))
        return None
    if not history.found:
        return history  # a new site: nothing retained under its root
    now_s = time.time()
    seq_before = daemon.core.seq
    daemon.core.seq = max(daemon.core.seq, history.max_seq + SEQ_GAP)
    note = "journal lost: broker shows curtailed"
    for group_id, seq in sorted(history.curtailed.items()):
        if group_id in daemon.core.overrides:
            continue
        until_s = now_s + HOLD_S
        why = f"{note} (seq {seq})"
        entry = {"group_id": group_id, "mode": "curtail", "until": until_s, "note": why}
        # Queued: the writer starts with the TaskGroup, right after this.
        daemon.journal.record("override", {**entry, "by": "journal-loss"}, subject=group_id)
        daemon.core.overrides[group_id] = Override(group_id, "curtail", until_s, why)
    detail = {
        "broker_max_seq": history.max_seq,
        "seq_before": seq_before,
        "seq_after": daemon.core.seq,
        "held_curtailed": sorted(history.curtailed),
        "retained_messages": history.messages,
    }
    daemon.journal.record("journal_lost", detail)
    daemon.journal_lost = detail
    daemon.metrics.journal_history_lost.set(1.0)
    log.error(
        "journal is empty but the broker holds this site's history: seq resumed above the broker's, "
        "groups the broker shows curtailed held curtailed until an operator releases them",
        **detail,
    )
    return history
