"""`mulletd fleet`: one portfolio obligation split across site daemons over the fleet broker.

Each site keeps its own control loop; this process only reads what the sites publish (bridged up from
their brokers: `daemon/online`, `daemon/plan` with its `flex`, `grid/event/ack`) and sends each site
its share as an ordinary `grid/event` (bridged down). The split is `policies/fleet.py`; here are the
wiring, the bookkeeping of what each site was told, and the re-split when a site goes away, refuses,
or falls short (docs/fleet.md).

A share is sent as a `limit` at the site's import when the portfolio was accepted (its baseline) minus
the share, so a re-split never counts a site's earlier shedding twice (a `reduce` would take a new
baseline from an already reduced import).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from mullet.daemon.fleet.config import FleetConfig
from mullet.daemon.http_guard import Limits
from mullet.daemon.metrics import ListenerSeries
from mullet.daemon.metrics_http import MetricsListener
from mullet.daemon.process_metrics import register_process_metrics
from mullet.drivers.mqtt import MqttLink
from mullet.drivers.protocol import (
    GridEvent,
    GridEventAck,
    Topics,
    WireError,
    decode,
    decode_online,
    encode,
    loads,
)
from mullet.policies.fleet import SiteOffer, Split, split_obligation
from mullet.policies.obligations import cancel_decision, repeat_decision, reserved_id
from mullet.policies.programs import CATALOGUE, resolve

# A site's daemon/plan: its groups and obligations (control.max_obligations) make it tens of KB.
PLAN_MAX_BYTES = 1 << 20

log = structlog.get_logger("mullet.fleet")

STATUS_HEARTBEAT_S = 5.0
CANCEL_RETRY_S = 5.0
RESPLIT_CAUSES = ("offline", "refused", "no_ack", "short")


@dataclass
class SiteView:
    """What the fleet broker says about one site."""

    site_id: str
    topics: Topics
    online: bool | None = None  # daemon/online; None: never seen
    plan: dict[str, Any] | None = None
    plan_ts_s: float | None = None

    def alive(self, now_s: float, stale_after_s: float) -> bool:
        return self.online is True and self.plan_ts_s is not None and now_s - self.plan_ts_s <= stale_after_s

    def flex(self) -> dict[str, Any] | None:
        flex = self.plan.get("flex") if self.plan else None
        return flex if isinstance(flex, dict) else None

    def site_kw(self) -> float | None:
        flex = self.flex()
        return _number(flex.get("site_kw")) if flex else None


@dataclass
class Assignment:
    """One site's share: the `limit` event it was sent."""

    event_id: str
    share_kw: float
    baseline_kw: float
    limit_kw: float
    sent_s: float
    acked: bool | None = None  # None: no ack yet
    reason: str = ""


@dataclass
class Portfolio:
    event: GridEvent
    reduce_kw: float
    deadline_s: float
    accepted_s: float
    baselines_kw: dict[str, float] = field(default_factory=dict)
    # (fast path, graceful) kW the site offered when its baseline was taken: what it can shed from there.
    # Later offers are capped by it: telemetry lags the meter, so mid-ramp flex + delivery overcounts.
    baseline_flex_kw: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    assignments: dict[str, Assignment] = field(default_factory=dict)
    ceilings_kw: dict[str, float] = field(default_factory=dict)  # what a failed site is held to
    revision: int = 0
    split: Split | None = None
    resplits: list[dict[str, Any]] = field(default_factory=list)


class FleetMetrics(ListenerSeries):
    def __init__(self, sites: list[str]) -> None:
        self.registry = r = CollectorRegistry()
        register_process_metrics(r)
        self.sites_alive = Gauge("mullet_fleet_sites_alive", "Sites online with a fresh plan.", registry=r)
        self.site_alive = Gauge(
            "mullet_fleet_site_alive", "1 while a site is online with a fresh plan.", ["site_id"], registry=r
        )
        self.obligation = Gauge(
            "mullet_fleet_obligation_watts", "Portfolio reduction in force (0 when none).", registry=r
        )
        self.delivered = Gauge(
            "mullet_fleet_delivered_watts",
            "Reduction below baseline of the live sites holding a share; NaN when one is unknown.",
            registry=r,
        )
        self.shortfall = Gauge(
            "mullet_fleet_shortfall_watts",
            "Part of the obligation the last split could not place.",
            registry=r,
        )
        self.resplits = Counter(
            "mullet_fleet_resplits_total", "Re-splits of the portfolio, by cause.", ["cause"], registry=r
        )
        self.events = Counter(
            "mullet_fleet_portfolio_events_total", "Portfolio events by outcome.", ["outcome"], registry=r
        )
        self._add_listener_series(r)  # its /metrics listener's, as in the site daemon's registry
        for site_id in sites:
            self.site_alive.labels(site_id=site_id)
        for cause in RESPLIT_CAUSES:
            self.resplits.labels(cause=cause)


class FleetDispatcher:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.settings = config.fleet
        self.root = config.topic_root
        self.sites = {s.site_id: SiteView(s.site_id, Topics(s.root)) for s in config.sites}
        self._by_root = {view.topics.root: view for view in self.sites.values()}
        self.metrics = FleetMetrics(list(self.sites))
        subscriptions = [f"{self.root}/grid/event"]
        for view in self.sites.values():
            t = view.topics
            subscriptions += [t.daemon_online, t.daemon_plan, t.grid_event_ack]
        self.link = MqttLink(
            config.mqtt.url,
            client_id=config.mqtt.client_id or f"mulletd-fleet-{self.settings.fleet_id}",
            subscriptions=subscriptions,
            on_message=self._on_message,
            on_connect=self._on_connect,
            will_topic=f"{self.root}/online",
            keepalive_s=config.mqtt.keepalive_s,
            reconnect_min_s=config.mqtt.reconnect_min_s,
            reconnect_max_s=config.mqtt.reconnect_max_s,
        )
        self.portfolio: Portfolio | None = None
        # Site event ids to cancel once the site is back (a cancel sent to a dead daemon is lost).
        self.pending_cancels: dict[str, dict[str, float]] = {s: {} for s in self.sites}
        self._events: asyncio.Queue[GridEvent] = asyncio.Queue(maxsize=100)
        self.wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._status: dict[str, Any] | None = None
        self._status_mono_s = -math.inf
        self.rejected = 0

    # ---- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        # The site daemon's guarded listener: a connection cap and deadlines (daemon/metrics_http.py).
        section = self.config.metrics
        limits = Limits(
            section.max_connections, section.header_timeout_s, section.body_timeout_s, section.idle_timeout_s
        )
        listener = MetricsListener(self.metrics, limits)
        port = await listener.start(section.host, section.port)
        log.info(
            "fleet dispatcher starting",
            fleet_id=self.settings.fleet_id,
            sites=sorted(self.sites),
            metrics=f"http://{section.host}:{port}/metrics",
            metrics_max_connections=section.max_connections,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                link = tg.create_task(self.link.run(), name="mqtt")
                loop = tg.create_task(self._loop(), name="dispatch")
                await self._stop.wait()
                await self.link.close()
                link.cancel()
                loop.cancel()
        finally:
            await listener.close()

    def stop(self) -> None:
        self._stop.set()

    async def _on_connect(self) -> None:
        self._status = None  # republish the retained status
        self.wake.set()

    # ---- inbound -------------------------------------------------------------------------------

    def _on_message(self, topic: str, raw: bytes) -> None:
        try:
            if topic == f"{self.root}/grid/event":
                try:
                    self._events.put_nowait(decode(GridEvent, raw))
                except asyncio.QueueFull:
                    raise WireError("queue_full", "portfolio event queue full") from None
                self.wake.set()
                return
            root, _, leaf = topic.rpartition("/daemon/")
            view = self._by_root.get(root) if leaf else None
            if view is not None and leaf == "online":
                view.online = decode_online(raw)
            elif view is not None and leaf == "plan":
                view.plan, view.plan_ts_s = _plan(raw)
            else:
                self._on_ack(topic, raw)
            self.wake.set()
        except WireError as exc:
            self.rejected += 1
            log.warning("message rejected", topic=topic[:200], reason=exc.reason, detail=exc.detail[:300])

    def _on_ack(self, topic: str, raw: bytes) -> None:
        root = topic.removesuffix("/grid/event/ack")
        view = self._by_root.get(root) if root != topic else None
        if view is None:
            raise WireError("unknown_topic", topic[:200])
        ack = decode(GridEventAck, raw)
        if ack.code in ("cancelled", "unknown_event"):
            self.pending_cancels[view.site_id].pop(ack.id, None)
            return
        assignment = self.portfolio.assignments.get(view.site_id) if self.portfolio else None
        if assignment is not None and assignment.event_id == ack.id and assignment.acked is None:
            assignment.acked = ack.accepted
            assignment.reason = ack.reason
            log.info("site ack", site_id=view.site_id, event_id=ack.id, accepted=ack.accepted, code=ack.code)

    # ---- the loop ------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.settings.period_s)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self._cycle()
            except Exception:  # one bad cycle must not end dispatch
                log.exception("fleet cycle failed")

    async def _cycle(self) -> None:
        now_s = time.time()
        while not self._events.empty():
            await self._handle_event(self._events.get_nowait(), now_s)
        if self.portfolio is not None:
            await self._watch(self.portfolio, now_s)
        await self._send_cancels(now_s)
        await self._publish_status(now_s)

    def _alive(self, site_id: str, now_s: float) -> bool:
        return self.sites[site_id].alive(now_s, self.settings.stale_after_s)

    # ---- portfolio events ----------------------------------------------------------------------

    async def _handle_event(self, event: GridEvent, now_s: float) -> None:
        accepted, code, reason = self._decide(event, now_s)
        if self.portfolio is not None and code == "accepted":
            await self._send_shares(self.portfolio, list(self.portfolio.assignments))
        await self._send_cancels(now_s)
        outcome = "accepted" if accepted else "rejected"
        self.metrics.events.labels(outcome=outcome if code != "duplicate" else "duplicate").inc()
        log.info("portfolio event", event_id=event.id, kind=event.kind, kw=event.kw, code=code, reason=reason)
        ack = GridEventAck(id=event.id, accepted=accepted, reason=reason, code=code)
        await self.link.publish(f"{self.root}/grid/event/ack", encode(ack), qos=1)

    def _decide(self, event: GridEvent, now_s: float) -> tuple[bool, str, str]:
        """Duplicates, id conflicts and cancels by the site's rules (policies/obligations.py); one
        portfolio at a time, and no memory of cancelled ones (a repeated cancel is unknown)."""
        current = self.portfolio
        same_id = current.event if current is not None and current.event.id == event.id else None
        if event.kind == "cancel":
            decision = cancel_decision(event.id, held=same_id is not None, cancelled=False)
            if current is not None and decision.cancels is not None:
                for site_id, assignment in current.assignments.items():
                    self.pending_cancels[site_id][assignment.event_id] = -math.inf
                self.portfolio = None
            return decision.accepted, decision.code, decision.reason
        repeat = repeat_decision(event, same_id)
        if repeat is not None:
            return repeat.accepted, repeat.code, repeat.reason
        if current is not None:
            return False, "busy", f"portfolio obligation {current.event.id!r} is in force; cancel it first"
        # The sites refuse share ids under the holds' prefix (`<id>.r<n>`): refuse the portfolio instead.
        reserved = reserved_id(event.id)
        if reserved is not None:
            return reserved.accepted, reserved.code, reserved.reason
        if event.kind == "base_point":
            return (
                False,
                "not_splittable",
                "a base point is one resource's SCED dispatch and cannot be split across sites:"
                " send it to the site it dispatches",
            )
        if event.kind != "reduce":
            return False, "unsupported_kind", "a portfolio obligation is a reduction: send kind reduce"
        if event.kw is None or not event.kw > 0:
            return False, "kw_missing", f"kw must be > 0 for reduce, got {event.kw!r}"
        if len(event.id) > 100:
            return False, "id_too_long", "portfolio event ids are at most 100 characters"
        program, note = resolve(event.program, CATALOGUE)
        portfolio = Portfolio(event, event.kw, program.deadline_s, now_s)
        for site_id, view in self.sites.items():
            site_kw = view.site_kw()
            if self._alive(site_id, now_s) and site_kw is not None:
                self._take_baseline(portfolio, site_id, site_kw)
        split = split_obligation(event.kw, program.deadline_s, self._offers(portfolio, now_s))
        if not split.feasible:
            return False, "cannot_deliver", "; ".join(split.reasons)
        self.portfolio = portfolio
        self._assign(portfolio, split, now_s, cause=None)
        return True, "accepted", "accepted" + (f"; {note}" if note else "")

    # ---- splitting -----------------------------------------------------------------------------

    def _delivered_kw(self, portfolio: Portfolio, site_id: str) -> float | None:
        """Reduction below the site's baseline now; None when unknown (offline, or no meter)."""
        baseline_kw = portfolio.baselines_kw.get(site_id)
        site_kw = self.sites[site_id].site_kw()
        if baseline_kw is None or site_kw is None:
            return None
        return baseline_kw - site_kw

    def _take_baseline(self, portfolio: Portfolio, site_id: str, site_kw: float) -> None:
        portfolio.baselines_kw[site_id] = site_kw
        portfolio.baseline_flex_kw[site_id] = _sheddable(self.sites[site_id].flex() or {})

    def _offers(self, portfolio: Portfolio, now_s: float) -> list[SiteOffer]:
        offers = []
        for site_id, view in self.sites.items():
            flex = view.flex() or {}
            alive = self._alive(site_id, now_s) and site_id in portfolio.baselines_kw
            # What a site already sheds for this portfolio is capacity too: its flex counts only the rest.
            held_kw = 0.0
            if site_id in portfolio.assignments:
                held_kw = max(0.0, self._delivered_kw(portfolio, site_id) or 0.0)
            fast_kw, graceful_kw = _sheddable(flex)
            base_fast_kw, base_graceful_kw = portfolio.baseline_flex_kw.get(site_id, (None, None))
            offers.append(
                SiteOffer(
                    site_id=site_id,
                    online=alive,
                    fast_path_kw=_held(fast_kw, held_kw, base_fast_kw),
                    graceful_kw=_held(graceful_kw, held_kw, base_graceful_kw),
                    firmware_sleep_s=_number(flex.get("firmware_sleep_s")) or 5.0,
                    ceiling_kw=portfolio.ceilings_kw.get(site_id),
                )
            )
        return offers

    def _assign(self, portfolio: Portfolio, split: Split, now_s: float, cause: str | None) -> list[str]:
        """Send every site whose share changed its new `limit` event (new first, then cancel the old:
        the site handles its events in order, so it is never without a limit in between)."""
        portfolio.revision += 1
        portfolio.split = split
        changed = []
        for site_id, share_kw in split.shares_kw.items():
            old = portfolio.assignments.get(site_id)
            if share_kw <= 0.0:
                if old is not None:
                    self.pending_cancels[site_id][old.event_id] = -math.inf
                    del portfolio.assignments[site_id]
                    changed.append(site_id)
                continue
            if old is not None and old.acked is not False and abs(old.share_kw - share_kw) < 1.0:
                continue
            baseline_kw = portfolio.baselines_kw[site_id]
            event = portfolio.event
            assignment = Assignment(
                event_id=f"{event.id}.r{portfolio.revision}",
                share_kw=round(share_kw, 3),
                baseline_kw=baseline_kw,
                limit_kw=round(baseline_kw - share_kw, 3),
                sent_s=now_s,
            )
            portfolio.assignments[site_id] = assignment
            if old is not None:
                self.pending_cancels[site_id][old.event_id] = -math.inf
            changed.append(site_id)
        log.info(
            "portfolio split",
            event_id=portfolio.event.id,
            revision=portfolio.revision,
            cause=cause,
            shares={s: round(kw, 1) for s, kw in split.shares_kw.items()},
            feasible=split.feasible,
            reasons=list(split.reasons),
        )
        self.metrics.shortfall.set(split.shortfall_kw * 1000.0)
        return changed

    async def _send_shares(self, portfolio: Portfolio, sites: list[str]) -> None:
        for site_id in sites:
            assignment = portfolio.assignments.get(site_id)
            if assignment is None:
                continue
            event = portfolio.event
            share = GridEvent(
                id=assignment.event_id,
                kind="limit",
                kw=assignment.limit_kw,
                start=event.start,
                end=event.end,
                program=event.program,
                source=f"fleet:{self.settings.fleet_id}:{event.id}"[:128],
                allow_ai_flex=event.allow_ai_flex,
            )
            await self.link.publish(self.sites[site_id].topics.grid_event, encode(share), qos=1)

    async def _watch(self, portfolio: Portfolio, now_s: float) -> None:
        """Send new shares, then re-split when a site holding one is gone, refused, silent or short."""
        failed: dict[str, str] = {}
        settings = self.settings
        for site_id, assignment in portfolio.assignments.items():
            if not self._alive(site_id, now_s):
                failed[site_id] = "offline"
                portfolio.baselines_kw.pop(site_id, None)  # a returning site gets a fresh baseline
            elif assignment.acked is False:
                failed[site_id] = "refused"
                portfolio.ceilings_kw[site_id] = 0.0
            elif assignment.acked is None and now_s - assignment.sent_s > settings.ack_timeout_s:
                failed[site_id] = "no_ack"
                portfolio.ceilings_kw[site_id] = 0.0
            elif now_s - assignment.sent_s > portfolio.deadline_s + settings.short_grace_s:
                delivered_kw = self._delivered_kw(portfolio, site_id)
                tolerance_kw = assignment.share_kw * settings.short_tolerance_fraction
                if delivered_kw is not None and delivered_kw < assignment.share_kw - tolerance_kw:
                    failed[site_id] = "short"
                    portfolio.ceilings_kw[site_id] = max(0.0, delivered_kw)
        if not failed:
            return
        for site_id, cause in failed.items():
            self.metrics.resplits.labels(cause=cause).inc()
            if cause == "offline":  # its event is cancelled when it is back; it holds no share now
                self.pending_cancels[site_id][portfolio.assignments.pop(site_id).event_id] = -math.inf
        for site_id, view in self.sites.items():  # a site back since acceptance joins from its import now
            site_kw = view.site_kw()
            if site_id not in portfolio.baselines_kw and self._alive(site_id, now_s) and site_kw is not None:
                self._take_baseline(portfolio, site_id, site_kw)
        split = split_obligation(portfolio.reduce_kw, portfolio.deadline_s, self._offers(portfolio, now_s))
        changed = self._assign(portfolio, split, now_s, cause=",".join(f"{s}:{c}" for s, c in failed.items()))
        portfolio.resplits.append({"ts": now_s, "revision": portfolio.revision, "failed": failed})
        level = log.warning if split.feasible else log.error
        level("portfolio re-split", event_id=portfolio.event.id, failed=failed, feasible=split.feasible)
        await self._send_shares(portfolio, changed)
        await self._send_cancels(now_s)

    async def _send_cancels(self, now_s: float) -> None:
        for site_id, pending in self.pending_cancels.items():
            if not pending or not self._alive(site_id, now_s):
                continue
            topic = self.sites[site_id].topics.grid_event
            for event_id, last_s in list(pending.items()):
                if now_s - last_s < CANCEL_RETRY_S:
                    continue
                pending[event_id] = now_s
                cancel = GridEvent(id=event_id, kind="cancel", source=f"fleet:{self.settings.fleet_id}")
                await self.link.publish(topic, encode(cancel), qos=1)

    # ---- status --------------------------------------------------------------------------------

    def status(self, now_s: float) -> dict[str, Any]:
        sites = {}
        alive = 0
        for site_id, view in self.sites.items():
            is_alive = self._alive(site_id, now_s)
            alive += is_alive
            self.metrics.site_alive.labels(site_id=site_id).set(1.0 if is_alive else 0.0)
            flex = view.flex() or {}
            sites[site_id] = {
                "alive": is_alive,
                "online": view.online,
                "site_kw": view.site_kw(),
                "sheddable_kw": flex.get("sheddable_kw"),
            }
        self.metrics.sites_alive.set(alive)
        status: dict[str, Any] = {
            "v": 1,
            "fleet_id": self.settings.fleet_id,
            "sites": sites,
            "portfolio": None,
        }
        portfolio = self.portfolio
        self.metrics.obligation.set(0.0 if portfolio is None else portfolio.reduce_kw * 1000.0)
        if portfolio is None:
            self.metrics.delivered.set(0.0)
            return status
        shares = {}
        total_kw: float | None = 0.0
        for site_id, a in portfolio.assignments.items():
            delivered_kw = self._delivered_kw(portfolio, site_id) if self._alive(site_id, now_s) else None
            shares[site_id] = {
                "event_id": a.event_id,
                "share_kw": a.share_kw,
                "baseline_kw": a.baseline_kw,
                "limit_kw": a.limit_kw,
                "acked": a.acked,
                "delivered_kw": None if delivered_kw is None else round(delivered_kw),
            }
            total_kw = None if total_kw is None or delivered_kw is None else total_kw + delivered_kw
        self.metrics.delivered.set(math.nan if total_kw is None else total_kw * 1000.0)
        split = portfolio.split
        status["portfolio"] = {
            "id": portfolio.event.id,
            "program": portfolio.event.program,
            "reduce_kw": portfolio.reduce_kw,
            "deadline_s": portfolio.deadline_s,
            "revision": portfolio.revision,
            "feasible": split.feasible if split else None,
            "shortfall_kw": round(split.shortfall_kw) if split else None,
            "shares": shares,
            "delivered_kw": None if total_kw is None else round(total_kw),
            "met": total_kw is not None and total_kw >= portfolio.reduce_kw,
            "resplits": portfolio.resplits[-10:],
            "reasons": list(split.reasons) if split else [],
        }
        return status

    async def _publish_status(self, now_s: float) -> None:
        status = self.status(now_s)
        due = time.monotonic() - self._status_mono_s >= STATUS_HEARTBEAT_S
        if status == self._status and not due:
            return
        payload = json.dumps({**status, "ts": now_s}).encode()
        if await self.link.publish(f"{self.root}/status", payload, qos=1, retain=True):
            self._status = status
            self._status_mono_s = time.monotonic()


def _sheddable(flex: dict[str, Any]) -> tuple[float | None, float | None]:
    raw = flex.get("sheddable_kw")
    sheddable: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return _number(sheddable.get("fast_path")), _number(sheddable.get("graceful"))


def _held(now_kw: float | None, held_kw: float, baseline_kw: float | None) -> float | None:
    """What a site can shed from its baseline: what it could still shed plus what it sheds for us,
    no more than it offered at the baseline. None (unknown) stays unknown."""
    if now_kw is None or baseline_kw is None:
        return None
    return min(now_kw + held_kw, baseline_kw)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _plan(raw: bytes) -> tuple[dict[str, Any], float]:
    """A site's plan summary: a JSON object with `v` 1 and a finite `ts` (more is read as needed)."""
    data = loads(raw, max_bytes=PLAN_MAX_BYTES)  # too_large, too_deep, not_json
    if not isinstance(data, dict) or data.get("v") != 1:
        raise WireError("bad_version", "plan must be a JSON object with v=1")
    ts_s = _number(data.get("ts"))
    if ts_s is None:
        raise WireError("invalid_field", "plan ts must be a number")
    return data, ts_s
