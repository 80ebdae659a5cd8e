"""Active/standby wiring for one site daemon (`[ha]`; docs/fleet.md section 6, docs/protocol.md 3.8).

Two daemons run for one site; the etcd lease (daemon/pair/lease.py) says which one commands. The standby
reads the meter and MQTT like the leader but plans, publishes, fires and acks nothing; it keeps a warm
copy of the leader's commands (daemon/pair/warm_copy.py). On election it takes over: obligations from the
leader's handover, `seq` above everything seen + SEQ_RESTART_GAP, every setpoint re-issued under its
epoch (so every controller's highest epoch moves past the old leader's: fenced), then `daemon/online`
= 1. A leader that loses its lease stops commanding at once and the daemon exits (crash-only:
systemd's Restart=on-failure brings it back as a standby).

Presence: each daemon's MQTT will is its own `daemon/node/<node_id>/online`; `daemon/online` belongs
to whoever leads. When the leader's node will fires and no daemon is elected within two lease TTLs
(etcd away, or the standby cannot lead), the standby publishes `daemon/online` = 0 for the site.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Coroutine
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from mullet.daemon.config import HaSection
from mullet.daemon.core.commands import Command
from mullet.daemon.core.controller import SEQ_RESTART_GAP, SiteController
from mullet.daemon.core.handover import Handover, handover_document
from mullet.daemon.notify import Notifier
from mullet.daemon.pair.lease import LeaderLease, LeadershipLost
from mullet.daemon.pair.warm_copy import WarmCopy
from mullet.daemon.records.journal import Journal
from mullet.drivers.mqtt import MqttLink
from mullet.drivers.protocol import (
    GridEvent,
    GridEventAck,
    GroupSetpoint,
    TenantSetpoint,
    Topics,
    WireError,
    decode,
    decode_online,
    encode,
)
from mullet.drivers.protocol import loads as wire_loads


class Runner(Protocol):
    """The shell's command runner (daemon/site/executor.py), as the pair uses it."""

    async def run(self, commands: list[Command]) -> list[GridEventAck]: ...

    def background(self, work: Coroutine[Any, Any, None], what: str) -> None: ...

    def poke(self) -> None: ...


class Inbox(Protocol):
    """The shell's intake (daemon/site/intake.py), as the pair uses it."""

    def reject(self, reason: str, topic: str, detail: str) -> None: ...

    def submit_grid_event(self, event: GridEvent) -> asyncio.Future[GridEventAck]: ...


class Daemon(Protocol):
    """What the pair needs of the site daemon it runs in (daemon/site/app.py): the controller core it
    drives, and the shell's link, journal, command runner, intake and notifier."""

    @property
    def core(self) -> SiteController: ...
    @property
    def link(self) -> MqttLink: ...
    @property
    def journal(self) -> Journal: ...
    @property
    def runner(self) -> Runner: ...
    @property
    def intake(self) -> Inbox: ...
    @property
    def notifier(self) -> Notifier: ...


log = structlog.get_logger("mullet.ha")


class HaMetrics:
    """The pair's metrics (registered only with [ha]; docs/metrics.md)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.leader = Gauge("mullet_ha_leader", "1 while this daemon commands the site.", registry=r)
        self.epoch = Gauge("mullet_ha_epoch", "This daemon's leader epoch; 0 as standby.", registry=r)
        self.takeovers = Counter("mullet_ha_takeovers_total", "Times this daemon took over.", registry=r)
        self.foreign = Counter(
            "mullet_ha_foreign_commands_total",
            "Setpoints from a lower epoch seen while leading (a deposed leader); ours republished.",
            registry=r,
        )
        self.standby_refused = Counter(
            "mullet_ha_standby_grid_events_total",
            "Grid events a standby left to the leader (MQTT: no ack; HTTP/OpenADR: refused).",
            registry=r,
        )


class HaRole:
    def __init__(self, config: HaSection, *, site_id: str, topics: Topics, metrics: Any) -> None:
        self.config = config
        self.node_id = config.node_id
        self.topics = topics
        host, port = _endpoint(config.etcd_endpoints[0])
        self.lease = LeaderLease(
            host,
            port,
            key=config.election_key or f"/mullet/{site_id}/leader",
            node_id=config.node_id,
            ttl_s=config.lease_ttl_s,
            fallbacks=[_endpoint(e) for e in config.etcd_endpoints[1:]],
        )
        self.client_id = f"mulletd-{site_id}-{config.node_id}"
        root = topics.root
        self.node_online_topic = f"{root}/daemon/node/{config.node_id}/online"
        self.handover_topic = f"{root}/daemon/handover"
        self._node_online_prefix = f"{root}/daemon/node/"
        self.subscriptions = [
            f"{root}/mining/+/set",
            f"{root}/ai/+/set",
            self.handover_topic,
            f"{root}/daemon/node/+/online",
            topics.grid_event_ack,
        ]
        self.warm = WarmCopy()
        self.synced = asyncio.Event()  # our own node-online echo came back: retained messages are in
        self._taken_over = False
        self._published_handover: dict[str, Any] | None = None
        self._ready_sent = False
        self._orphan_watch: asyncio.Task[None] | None = None
        self._link: Any = None  # the daemon's MqttLink, once running
        m = HaMetrics(metrics.registry)
        self.leader_gauge, self.epoch_gauge, self.takeovers = m.leader, m.epoch, m.takeovers
        self.foreign, self.standby_refused = m.foreign, m.standby_refused

    # ---- state -----------------------------------------------------------------------------

    @property
    def commanding(self) -> bool:
        """Leader and taken over: only then may the daemon plan, publish, fire and ack."""
        return self._taken_over and self.lease.leading

    @property
    def epoch(self) -> int | None:
        return self.lease.epoch if self.commanding else None

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": "leader" if self.commanding else "standby",
            "epoch": self.epoch,
        }

    # ---- inbound (from the daemon's MQTT handler; must not block) --------------------------

    def on_message(self, daemon: Daemon, topic: str, raw: bytes) -> bool:
        """Take the HA topics; False for everything else (the daemon's own handling)."""
        try:
            if topic.startswith(self._node_online_prefix):
                self._on_node_online(topic[len(self._node_online_prefix) :].removesuffix("/online"), raw)
                return True
            if topic == self.handover_topic:
                if raw:
                    self.warm.on_handover(Handover.parse(raw))
                return True
            if topic == self.topics.grid_event_ack:
                data = wire_loads(raw)
                if isinstance(data, dict) and isinstance(data.get("id"), str):
                    self.warm.on_ack(data["id"])
                return True
            parsed = self.topics.parse(topic)
            if parsed.kind == "group_set" and parsed.subject in daemon.core.group_ids and raw:
                setpoint = decode(GroupSetpoint, raw)
                self._on_group_set(daemon, parsed.subject, setpoint)
                return True
            if parsed.kind == "tenant_set" and parsed.subject in daemon.core.tenant_ids and raw:
                self.warm.on_tenant_setpoint(parsed.subject, decode(TenantSetpoint, raw))
                return True
            if parsed.kind in ("group_set", "tenant_set"):
                return True  # an unconfigured subject's or a cleared retained command: not ours to read
        except WireError as exc:
            daemon.intake.reject(exc.reason, topic, exc.detail)
            return True
        except ValueError as exc:  # an ack that is not JSON: the aggregator's problem, not a command
            daemon.intake.reject("not_json", topic, str(exc))
            return True
        return False

    def on_grid_event(self, event: GridEvent) -> None:
        """A standby keeps an MQTT event the leader has not acked yet, for a takeover."""
        self.warm.on_grid_event(event, time.monotonic())

    def _on_group_set(self, daemon: Daemon, group_id: str, setpoint: GroupSetpoint) -> None:
        if not self.commanding:
            self.warm.on_setpoint(group_id, setpoint)
            return
        ours = daemon.core.commanded.get(group_id)
        if ours is None or setpoint.seq == ours.seq or (setpoint.epoch or 0) >= (self.lease.epoch or 0):
            return  # our own, echoed (ours always carry our epoch)
        # A command that is not ours while we lead: a deposed leader's (lower epoch). Controllers ignore
        # it, but it replaced our retained setpoint, which a controller restarting later would take
        # first: put ours back (same bytes, same seq: a controller that applied it ignores it).
        self.foreign.inc()
        log.warning(
            "foreign setpoint while leading", group_id=group_id, seq=setpoint.seq, epoch=setpoint.epoch
        )
        payload = encode(ours)
        daemon.runner.background(
            _publish(daemon, self.topics.group_set(group_id), payload), "republish over foreign setpoint"
        )

    def _on_node_online(self, node_id: str, raw: bytes) -> None:
        online = decode_online(raw) if raw else False
        if node_id == self.node_id:
            if online:
                self.synced.set()
            return
        leader = self.warm.handover.node_id if self.warm.handover is not None else None
        if not online and node_id == leader and not self.commanding:
            if self._orphan_watch is None or self._orphan_watch.done():
                self._orphan_watch = asyncio.get_running_loop().create_task(self._watch_orphan(node_id))

    async def _watch_orphan(self, node_id: str) -> None:
        """The leader's node will fired: if nobody leads within two TTLs, say the site is offline."""
        epoch_before = self.warm.handover.epoch if self.warm.handover is not None else 0
        await asyncio.sleep(2.0 * self.config.lease_ttl_s + 1.0)  # a grace period, not synchronisation
        handover = self.warm.handover
        if self.commanding or (handover is not None and handover.epoch > epoch_before):
            return
        log.error("leader gone and nobody took over: daemon/online = 0", leader=node_id)
        if self._link is not None:
            await self._link.publish(self.topics.daemon_online, b"0", qos=1, retain=True)

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self, daemon: Daemon) -> None:
        """Campaign; on election take over; on a lost lease stop commanding and end the daemon."""
        self._link = daemon.link
        self.lease.on_lost = lambda: self._stand_down(daemon)  # at once, not a loop turn later
        campaign = asyncio.get_running_loop().create_task(self.lease.run(), name="ha-lease")
        try:
            elected = asyncio.get_running_loop().create_task(self.lease.elected.wait())
            await asyncio.wait({campaign, elected}, return_when=asyncio.FIRST_COMPLETED)
            elected.cancel()
            if campaign.done():
                await campaign  # raised before election: let it end the daemon
            await self._take_over(daemon)
            await campaign
        except LeadershipLost:
            self._stand_down(daemon)
            self.leader_gauge.set(0)
            log.critical("leadership lost: commanding stopped, exiting", node_id=self.node_id)
            # Our node is gone for the pair; the next leader announces itself on daemon/online.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    daemon.link.publish(self.node_online_topic, b"0", qos=1, retain=True), 1.0
                )
            raise
        finally:
            campaign.cancel()

    async def _take_over(self, daemon: Daemon) -> None:
        elected_mono_s = time.monotonic()
        await self.synced.wait()  # connected, and the broker's retained commands have arrived
        epoch = self.lease.epoch
        assert epoch is not None
        core = daemon.core
        if self.warm.handover is not None:
            core.adopt(self.warm.handover, f"takeover:{self.node_id}", time.time())
        await daemon.runner.run(core.take())  # the leader's book, durable before anything is sent
        core.adopt_setpoints(self.warm.setpoints, self.warm.tenant_setpoints)
        core.seq = max(core.seq, self.warm.max_seq + SEQ_RESTART_GAP)
        core.epoch = epoch
        reissued = len(core.commanded)
        # Every setpoint again, new seq, our epoch: each controller's highest epoch moves to ours.
        core.reissue(f"takeover by {self.node_id}, epoch {epoch}", time.time())
        await daemon.runner.run(core.take())
        self._taken_over = True
        core.commanding = True
        self.leader_gauge.set(1)
        self.epoch_gauge.set(epoch)
        self.takeovers.inc()
        await self.publish_handover(daemon, force=True)
        await daemon.link.publish(self.topics.daemon_online, b"1", qos=1, retain=True)
        # MQTT events in flight that the old leader never acked: decide them now.
        unacked = self.warm.unacked_events()
        for event in unacked:
            daemon.intake.submit_grid_event(event)
        daemon.journal.record("takeover", {"node_id": self.node_id, "epoch": epoch, "seq": core.seq})
        log.warning(
            "took over",
            node_id=self.node_id,
            epoch=epoch,
            seq=core.seq,
            reissued=reissued,
            obligations=sorted(core.book.obligations),
            unacked_events=[e.id for e in unacked],
            after_election_s=round(time.monotonic() - elected_mono_s, 3),
        )
        core.wake = True
        daemon.runner.poke()

    def _stand_down(self, daemon: Daemon) -> None:
        self._taken_over = False
        daemon.core.commanding = False
        daemon.core.epoch = None

    # ---- outbound (leader) -----------------------------------------------------------------

    async def publish_handover(self, daemon: Daemon, *, force: bool = False) -> None:
        """Publish the handover when it changed (before every grid-event ack, after every cycle)."""
        if not self.commanding:
            return
        epoch = self.lease.epoch
        assert epoch is not None
        handover = daemon.core.handover(self.node_id, epoch)
        document = handover_document(handover)
        # seq moves every cycle with a change; only a changed book, hold or ledger is news.
        compare = {k: v for k, v in document.items() if k != "seq"}
        if not force and compare == self._published_handover:
            return
        payload = json.dumps({**document, "ts": time.time()}).encode()
        if await daemon.link.publish(self.handover_topic, payload, qos=1, retain=True):
            self._published_handover = compare

    async def on_connect(self, daemon: Daemon) -> None:
        """After a (re)connect while leading: the broker may have lost retained state."""
        if self.commanding:
            await self.publish_handover(daemon, force=True)
            await daemon.link.publish(self.topics.daemon_online, b"1", qos=1, retain=True)

    def refuse(self, item: object, reply: asyncio.Future[GridEventAck] | None) -> None:
        """A grid event reached the standby: MQTT ones are kept (the leader acks them, or we decide
        them at takeover); HTTP and OpenADR callers hear `not_leader`."""
        self.standby_refused.inc()
        if reply is None:
            if isinstance(item, GridEvent):
                self.on_grid_event(item)
            return
        if not reply.done():
            event_id = str(getattr(item, "event_id", None) or getattr(item, "id", ""))
            reason = f"standby {self.node_id}: send it to the leader"
            reply.set_result(GridEventAck(id=event_id, accepted=False, reason=reason, code="not_leader"))

    def standing_by(self, daemon: Daemon) -> bool:
        """A standby's cycle: nothing to plan, but systemd hears it is up and alive. False: we lead."""
        if self.commanding:
            return False
        if not self._ready_sent:
            self._ready_sent = True
            daemon.notifier.ready(f"standby {self.node_id}")
            log.info("standby", node_id=self.node_id)
        daemon.notifier.watchdog(time.monotonic())
        return True

    async def stop(self, daemon: Daemon) -> None:
        """Clean stop while leading: say the site is offline, then hand the lease over at once (the
        standby announces itself next)."""
        if not self.commanding:
            return
        self._stand_down(daemon)
        await daemon.link.publish(self.topics.daemon_online, b"0", qos=1, retain=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.lease.resign(), 2.0)


async def _publish(daemon: Daemon, topic: str, payload: bytes) -> None:
    await daemon.link.publish(topic, payload, qos=1, retain=True)


def _endpoint(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)
