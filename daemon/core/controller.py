"""The site controller: site state, obligations and commands, moved only by timestamped inputs.

Each input method updates the controller and appends what must happen to an outbox; the shell takes
it (`take`) and carries it out in order, reporting outcomes back. The one exception is the fast path:
`frequency` returns a `TripOrder` directly, so the armed trip leaves from the meter sample's handler
without a loop turn (docs/architecture.md, "two paths").
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict
from typing import Any

import structlog

from mullet.daemon.config import Config
from mullet.daemon.core.commands import (
    Acknowledge,
    Command,
    Outlet,
    Record,
    RecordDurably,
    RecordInBackground,
    Republish,
    SendPlan,
    SendSetpoints,
    SendTenantCaps,
    SwitchOutlets,
    TripOrder,
)
from mullet.daemon.core.drills import is_drill
from mullet.daemon.core.handover import Handover
from mullet.daemon.core.import_ramp import ImportRamp
from mullet.daemon.core.obligation_book import Decision, ObligationBook, rejected
from mullet.daemon.core.plan_change import plan_change
from mullet.daemon.core.plan_document import decision_key, plan_summary
from mullet.daemon.core.shed_verifier import OutletsKw, PendingShed, ShedVerifier
from mullet.daemon.core.site_state import SiteState
from mullet.daemon.core.trip_curve import TripCurves
from mullet.daemon.core.trips import ArmedStage, TripRecord, arm_stages
from mullet.daemon.metrics import Metrics
from mullet.drivers.meter import MeterSample, RefreshWatch
from mullet.drivers.protocol import (
    GridEvent,
    GridEventAck,
    GroupSetpoint,
    GroupState,
    TenantSetpoint,
    TenantState,
)
from mullet.policies.model import (
    GroupDecision,
    GroupMemory,
    GroupMode,
    Obligation,
    Override,
    Plan,
    PolicyMemory,
)
from mullet.policies.plan import compute_plan
from mullet.policies.plan_cache import PlanCache
from mullet.policies.trigger import FrequencyTrigger, is_ufr_obligation, trip_hold

log = structlog.get_logger("mullet.daemon")

# The plan is republished at least this often, unchanged or not: a fleet dispatcher reads a plan older
# than its stale limit as a site gone (docs/fleet.md).
PLAN_HEARTBEAT_S = 5.0
# Trips and tenant caps are journaled after they go out, so the newest seqs may be missing after a crash:
# a restart (or a takeover) jumps this far ahead so a controller never sees a seq go back or change meaning.
SEQ_RESTART_GAP = 1000


class SiteController:
    def __init__(self, config: Config, metrics: Metrics, *, seq: int, has_pdus: bool) -> None:
        """`seq`: the last sequence number this site may have used (journal + restart gap)."""
        self.config = config
        self.metrics = metrics
        self.site = config.site_spec()
        self.group_ids = [g.group_id for g in self.site.groups]
        self.tenant_ids = [t.tenant_id for t in self.site.tenants]
        self.outlets_by_group: dict[str, list[Outlet]] = {
            g.group_id: [(o.pdu, o.outlet) for o in g.outlets] for g in config.groups
        }
        self.has_pdus = has_pdus
        self.stages = config.trip_stages()
        self.trigger = FrequencyTrigger(self.stages, config.trigger_settings())
        self.state = SiteState(
            meter_stale_after_s=config.meter.stale_after_s,
            telemetry_stale_after_s=config.control.telemetry_stale_after_s,
            price_stale_after_s=config.economics.price_stale_after_s,
        )
        self.book = ObligationBook.from_config(config)
        self.verifier = ShedVerifier(deadline_s=config.control.shed_deadline_s, threshold_kw={})
        self.set_shed_thresholds(config)
        self.meter_refresh = RefreshWatch()
        self.import_ramp = ImportRamp()  # the meter's import over the last minute, for its ramp gauges
        self.seq = seq
        # Set by the active/standby pair: whether this controller may plan, publish, fire and ack, and
        # the leader epoch every command carries (None without [ha]: nothing added to the wire).
        self.commanding = True
        self.epoch: int | None = None
        self.connected = False  # the MQTT session is up (setpoints wait for it)
        self.plan: Plan | None = None
        self.memory = PolicyMemory()
        self.plan_cache = PlanCache()  # what planning the same site again can reuse
        # The exact setpoints last delivered, so a republish is byte-identical (a controller ignores a
        # seq it has applied). The plan's memory is what the policy intends; this is what devices were told.
        self.commanded: dict[str, GroupSetpoint] = {}
        self.tenant_setpoints: dict[str, TenantSetpoint] = {}
        # Operator holds (POST /v1/override): journaled, so a restart keeps them until they expire.
        self.overrides: dict[str, Override] = {}
        # Groups whose outlets are cut: they get power back before their next run setpoint.
        self.hard_cut: set[str] = set()
        # Groups whose shed escalation failed (firmware did not shed, no cut acknowledged): unknown while
        # an obligation is active, so the plan counts them at rated kW and sheds others.
        self.unshed: set[str] = set()
        # Per group, the last setpoint the broker took and when: its ack is the state reporting its seq.
        self.awaiting_ack: dict[str, tuple[int, float]] = {}
        self.published_plan: dict[str, Any] | None = None
        self.armed: dict[int, ArmedStage] = {}  # per stage, what a trip touches (from the last plan)
        # Per stage, the groups its last frequency trip shed: while held (tripped), then once released,
        # until the restore brings them back (the QSE link's relay state, daemon/core/qse_telemetry.py).
        self.tripped_groups: dict[int, tuple[str, ...]] = {}
        self.released_groups: dict[int, tuple[str, ...]] = {}
        self.sleep_kw = {g.group_id: g.sleep_kw for g in self.site.groups}
        journal = config.journal
        self.trip_curves = TripCurves(journal.trip_curve_before_s, journal.trip_curve_after_s)
        self.cycles = 0  # control cycles that planned: the QSE link's heartbeat counter
        self.wake = False  # an input changed something the next cycle should see at once
        self._outbox: list[Command] = []
        self._plan_published_mono_s = -math.inf
        self._site_power_journaled_mono_s = -math.inf
        self._connected_mono_s: float | None = None  # first broker session: when telemetry began
        self._planning = False  # the start-up picture settled once; from then on every cycle plans
        self._meter_refresh_slow = False

    # ---- the outbox ------------------------------------------------------------------------

    def take(self) -> list[Command]:
        """What to carry out, in order; empties the outbox."""
        out, self._outbox = self._outbox, []
        return out

    def _emit(self, command: Command) -> None:
        self._outbox.append(command)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ---- configuration ---------------------------------------------------------------------

    def set_shed_thresholds(self, config: Config) -> None:
        control = config.control
        self.verifier.threshold_kw = {
            g.group_id: g.sleep_kw + control.shed_confirm_fraction * (g.rated_kw - g.sleep_kw)
            for g in config.site_spec().groups
        }

    def reconfigure(self, config: Config) -> None:
        """Take on what a SIGHUP may change (daemon/site/reload.py decided it is only that)."""
        self.config = config
        self.site = config.site_spec()
        self.sleep_kw = {g.group_id: g.sleep_kw for g in self.site.groups}
        self.book.max_kw = config.site.interconnect_kw * config.control.max_event_kw_factor
        self.book.programs = config.program_catalogue()
        self.book.firmware_sleep_s = config.control.firmware_sleep_s
        self.book.max_obligations = config.control.max_obligations
        self.set_shed_thresholds(config)
        self.wake = True

    # ---- telemetry -------------------------------------------------------------------------

    def frequency(self, sample: MeterSample) -> TripOrder | None:
        """The hot path: the trigger's verdict on one measurement, and the order to fire if it trips.
        A standby reads the meter for its warm state; only the leader trips."""
        if not self.commanding:
            return None
        verdict = self.trigger.observe(sample.frequency_hz, sample.monotonic_s, sample.requested_s)
        order = None
        if verdict.rejected is not None:
            self.metrics.frequency_rejected.labels(reason=verdict.rejected).inc()
        elif verdict.fire is not None:
            order = TripOrder(
                verdict.fire,
                self.next_seq(),
                "frequency",
                sample.monotonic_s,
                self.epoch,
                sample.frequency_hz,
            )
        if verdict.released:
            self._trip_released()
        return order

    def meter_sample(self, sample: MeterSample) -> None:
        """Everything a sample means besides the trigger (after the trip, if any, is out)."""
        self.meter_refresh.observe(sample.frequency_hz, sample.monotonic_s)
        self.import_ramp.add(sample.monotonic_s, sample.power_kw)
        for curve in self.trip_curves.sample(sample.monotonic_s, sample.power_kw, sample.frequency_hz):
            self._emit(Record("trip_curve", curve, str(curve["stage"])))
        was_stale = self.state.site_power_kw(sample.monotonic_s) is None
        self.state.meter = sample
        if was_stale:
            self.wake = True
        if sample.monotonic_s - self._site_power_journaled_mono_s >= self.config.journal.site_power_every_s:
            # Bounded rate, for compliance reports (baselines, delivered reduction per interval).
            self._site_power_journaled_mono_s = sample.monotonic_s
            # The AI tenants' share too, so `mulletd replay --journal` can re-run their demand; None
            # while any tenant's reading is unknown (unknown is not zero).
            ai_kw = self.total_kw("tenants", sample.monotonic_s)
            # Mining's too, for interval data (`mulletd export`); None likewise while a group is unknown.
            mining_kw = self.total_kw("groups", sample.monotonic_s)
            entry = {
                "kw": round(sample.power_kw, 3),
                "hz": sample.frequency_hz,
                "ai_kw": round(ai_kw, 3) if math.isfinite(ai_kw) else None,
                "mining_kw": round(mining_kw, 3) if math.isfinite(mining_kw) else None,
            }
            self._emit(Record("site_power", entry))

    def group_state(self, group_id: str, state: GroupState, now_mono_s: float) -> None:
        first = group_id not in self.state.groups
        self.state.groups[group_id] = (state, now_mono_s)
        awaited = self.awaiting_ack.get(group_id)
        if awaited is not None and state.seq_applied is not None and state.seq_applied >= awaited[0]:
            del self.awaiting_ack[group_id]
            self.metrics.command_ack_seconds.labels("mining").observe(now_mono_s - awaited[1])
        if first:
            self.wake = True  # may complete the start-up picture

    def group_online(self, group_id: str, online: bool) -> None:
        self.state.groups_online[group_id] = online
        self.wake = True

    def tenant_state(self, tenant_id: str, state: TenantState, now_mono_s: float) -> None:
        self.state.tenants[tenant_id] = (state, now_mono_s)
        self.wake = True

    def tenant_online(self, tenant_id: str, online: bool) -> None:
        self.state.tenants_online[tenant_id] = online
        self.wake = True

    def price(self, usd_per_mwh: float, now_mono_s: float) -> None:
        # Journaled when it changes, not on every repeat of the feed (bounded), for `mulletd replay`.
        if self.state.price is None or self.state.price[0] != usd_per_mwh:
            self._emit(Record("price", {"usd_per_mwh": usd_per_mwh}))
        self.state.price = (usd_per_mwh, now_mono_s)
        self.wake = True

    def session_up(self, now_mono_s: float) -> None:
        """The MQTT session (re)connected: the broker may have lost retained state, so say it all again."""
        self.connected = True
        if self._connected_mono_s is None:
            self._connected_mono_s = now_mono_s
        if self.commanding:
            self._emit(
                Republish(
                    tuple(self.commanded.items()),
                    tuple(self.tenant_setpoints.items()),
                )
            )
            if self.plan is not None:
                self._plan_document(self.plan, now_mono_s, force=True)
        self.wake = True

    # ---- grid events -----------------------------------------------------------------------

    def decide(self, event: GridEvent, now_s: float, now_mono_s: float) -> tuple[Decision, TripOrder | None]:
        """Whether to accept `event`, and for an immediate deployment the trip to fire before the journal
        write; an accepted new event must then be journaled durably (`grid_event_entry`) and `commit`ed."""
        decision = self.book.decide(event, now_s=now_s, site_power_kw=self.state.site_power_kw(now_mono_s))
        if is_drill(event.id) and decision.obligation is not None and decision.obligation.explicit_recall:
            # The site recalls its own test at the drill's end, whatever the program's real recall.
            obligation = dataclasses.replace(decision.obligation, explicit_recall=False)
            decision = dataclasses.replace(decision, obligation=obligation)
        order = None
        if decision.accepted and not decision.duplicate and decision.fire_stage is not None:
            # Immediate deployment (an explicit trip_stage, or a program whose deadline is shorter than
            # firmware sleep): the armed trip goes out first; journal and ack follow.
            order = TripOrder(decision.fire_stage, self.next_seq(), event.id, now_mono_s, self.epoch)
        return decision, order

    @staticmethod
    def grid_event_entry(event: GridEvent, decision: Decision) -> dict[str, Any]:
        return {
            "event": event.model_dump(),
            "obligation": asdict(decision.obligation) if decision.obligation else None,
            "cancels": decision.cancels,
        }

    def commit(
        self, event: GridEvent, decision: Decision, journal_error: str | None, now_s: float
    ) -> Decision:
        """After the journal write of an accepted new event (or its failure: never acknowledge what is
        not on disk): apply it, count and log it, and queue its ack. Returns the final decision."""
        if decision.accepted and not decision.duplicate:
            if journal_error is not None:
                decision = rejected("journal_unavailable", f"journal unavailable: {journal_error}")
            else:
                for old in self.book.apply(event, decision, now_s):
                    self._emit(Record("obligation_ended", {"id": old, "superseded_by": event.id}, old))
                    log.info("obligation ended", event_id=old, superseded_by=event.id)
                self.wake = True
        drill = is_drill(event.id)
        if not decision.accepted:
            self._emit(
                Record(
                    "drill_rejected" if drill else "grid_event_rejected",
                    {"event": event.model_dump(), "reason": decision.reason},
                )
            )
        outcome = "duplicate" if decision.duplicate else ("accepted" if decision.accepted else "rejected")
        if drill:  # a test the site runs on itself: never counted as a grid event
            self.metrics.drills.labels(outcome=outcome).inc()
        else:
            self.metrics.grid_events.labels(outcome=outcome).inc()
            if not decision.accepted:
                self.metrics.grid_event_rejections.labels(reason=decision.code).inc()
        log.info(
            "drill" if drill else "grid event",
            event_id=event.id,
            kind=event.kind,
            kw=event.kw,
            program=event.program,
            source=event.source,
            outcome=outcome,
            code=decision.code,
            reason=decision.reason,
            actuation=decision.obligation.actuation if decision.obligation else None,
        )
        self._emit(
            Acknowledge(
                GridEventAck(
                    id=event.id, accepted=decision.accepted, reason=decision.reason, code=decision.code
                ),
                publish=not drill,
            )
        )
        return decision

    def preview(self, event: GridEvent, now_s: float, now_mono_s: float) -> dict[str, Any]:
        """What `event` would shed if it were deployed now: decided and planned on copies, against the
        current telemetry; nothing is commanded, remembered or journaled here (a drill's dry run)."""
        decision = self.book.decide(event, now_s=now_s, site_power_kw=self.state.site_power_kw(now_mono_s))
        if not decision.accepted or decision.obligation is None:
            return {"accepted": False, "code": decision.code, "reason": decision.reason}
        if self.plan is None:
            return {"accepted": False, "code": "no_plan", "reason": "no plan yet: waiting for telemetry"}
        snapshot = self.state.snapshot(self.tenant_ids, self.group_ids, now_mono_s)
        obligation = dataclasses.replace(decision.obligation, start_s=now_s)
        obligations = [*self.book.obligations.values(), obligation]
        plan = compute_plan(self.site, snapshot, obligations, now_s, self.memory, self.overrides)
        before = {d.group_id: d for d in self.plan.decisions}
        rated = {g.group_id: g.rated_kw for g in self.config.groups}
        changes = []
        shed_kw = 0.0
        for after in plan.decisions:
            was = before.get(after.group_id)
            was_kw = _planned_kw(was, rated[after.group_id]) if was is not None else None
            now_kw = _planned_kw(after, rated[after.group_id])
            if was is None or (was.mode, was.power_kw) != (after.mode, after.power_kw):
                changes.append(
                    {
                        "group_id": after.group_id,
                        "from": None if was is None else {"mode": was.mode, "power_kw": was.power_kw},
                        "to": {"mode": after.mode, "power_kw": after.power_kw},
                        "reason": after.reason,
                    }
                )
                if was_kw is not None:
                    shed_kw += max(0.0, was_kw - now_kw)
        return {
            "accepted": True,
            "program": obligation.program,
            "actuation": obligation.actuation,
            "actuation_reason": obligation.actuation_reason,
            "deadline_s": obligation.deadline_s,
            "baseline_kw": obligation.baseline_kw,
            "target_kw": None if obligation.baseline_kw is None else obligation.baseline_kw - obligation.kw,
            "site_limit_kw": plan.site_limit_kw,
            "mining_budget_kw": plan.mining_budget_kw,
            "feasible": plan.feasible,
            "would_change": changes,
            "would_shed_kw": round(shed_kw, 3),
            "reasons": list(plan.reasons[:20]),
        }

    def refuse_unreadable(self, event_id: str, reason: str, code: str) -> None:
        """An event that failed validation but whose id could be read: recorded and answered."""
        self._emit(Record("grid_event_rejected", {"id": event_id, "reason": reason}))
        self.acknowledge(event_id, False, reason, code)

    def acknowledge(self, event_id: str, accepted: bool, reason: str, code: str) -> None:
        self._emit(Acknowledge(GridEventAck(id=event_id, accepted=accepted, reason=reason, code=code)))

    # ---- operator overrides ----------------------------------------------------------------

    def override_entry(
        self, group_id: str, mode: str, until_s: float | None, note: str, by: str
    ) -> dict[str, Any]:
        """The journal row for an override request; raises ValueError for an unknown group, KeyError for
        "auto" on a group that has none. Journal it durably, then `apply_override`."""
        if group_id not in self.group_ids:
            raise ValueError(f"unknown group {group_id!r}")
        if mode == "auto" and group_id not in self.overrides:
            raise KeyError(group_id)
        return {"group_id": group_id, "mode": mode, "until": until_s, "note": note, "by": by}

    def apply_override(self, entry: dict[str, Any]) -> None:
        group_id, mode = entry["group_id"], entry["mode"]
        if mode == "auto":
            del self.overrides[group_id]
        else:
            assert entry["until"] is not None and mode in ("run", "curtail")
            mode_held: GroupMode = "run" if mode == "run" else "curtail"
            self.overrides[group_id] = Override(group_id, mode_held, entry["until"], entry["note"])
        log.warning("override", **entry)
        self.wake = True

    # ---- the supervisory cycle -------------------------------------------------------------

    def cycle(self, now_s: float, now_mono_s: float, outlets_kw: OutletsKw | None = None) -> Plan | None:
        """One control cycle: end what expired, plan, arm, and queue what changed. `outlets_kw(group_id,
        read_since_mono_s)`: the PDU power readback of a group's outlets in kW, None if not all read
        since then. Returns the plan (None: still waiting for the start-up picture)."""
        self.wake = False
        for curve in self.trip_curves.due(now_mono_s):  # a window the meter's silence left open
            self._emit(Record("trip_curve", curve, str(curve["stage"])))
        for event_id in self.book.expire(now_s):
            self._emit(Record("obligation_ended", {"id": event_id}, event_id))
            log.info("obligation ended", event_id=event_id)
        for group_id in [g for g, o in self.overrides.items() if not o.active(now_s)]:
            del self.overrides[group_id]
            log.info("override expired", group_id=group_id)
        if not self._settled(now_mono_s):
            return None
        snapshot = self.state.snapshot(self.tenant_ids, self.group_ids, now_mono_s)
        if self.unshed and any(o.active(now_s) for o in self.book.obligations.values()):
            # Not where its command says: unknown, so counted at rated and no load is added for it.
            unknown = dict.fromkeys(self.unshed)
            snapshot = dataclasses.replace(snapshot, group_power_kw={**snapshot.group_power_kw, **unknown})
        obligations = list(self.book.obligations.values())
        plan = compute_plan(
            self.site, snapshot, obligations, now_s, self.memory, self.overrides, cache=self.plan_cache
        )
        self.plan = plan
        self.cycles += 1
        for restore in set(plan.memory.restores) - set(self.memory.restores):
            # The ramp ledger must survive a restart, or a restarted daemon could restore a second
            # minute's worth of load inside the same minute.
            self._emit(Record("restore", {"t": restore[0], "kw": restore[1]}))
        self.memory = plan.memory
        self.armed = arm_stages(plan, self.stages, self.outlets_by_group)
        self._restore_outlets(plan)
        self._setpoints(plan, now_s)
        self._tenant_caps(plan, now_s)
        self._plan_document(plan, now_mono_s)
        self._verify(now_mono_s, outlets_kw)
        return plan

    def _settled(self, now_mono_s: float) -> bool:
        """Whether to plan yet. Controllers' retained state arrives just after (re)subscribing; planning
        before it would count every group as unknown, at rated kW during an obligation, and shed them
        all. Wait for every group's telemetry, or for the stale limit, whichever comes first."""
        if self._planning:
            return True  # once per process: a group lost later must not stop control
        if self._connected_mono_s is None:
            return False
        if now_mono_s - self._connected_mono_s >= self.config.control.telemetry_stale_after_s:
            self._planning = True
        else:
            self._planning = all(self.state.group_power_kw(g, now_mono_s) is not None for g in self.group_ids)
        return self._planning

    def _restore_outlets(self, plan: Plan) -> None:
        """A hard-cut group the plan restores gets its outlets back first; its run setpoint waits for that."""
        if not self.hard_cut or not self.has_pdus:
            return
        for decision in plan.decisions:
            if decision.mode == "run" and decision.group_id in self.hard_cut:
                outlets = tuple(self.outlets_by_group[decision.group_id])
                self._emit(SwitchOutlets(decision.group_id, outlets, on=True))

    def _setpoints(self, plan: Plan, now_s: float) -> None:
        changed = []
        for decision in plan.decisions:
            if decision.mode == "run" and decision.group_id in self.hard_cut:
                continue  # its outlets are still off: the run setpoint waits for them
            previous = self.commanded.get(decision.group_id)
            wanted = (decision.mode, decision.power_kw, decision.trip_stage)
            if previous is None or (previous.mode, previous.power_kw, previous.trip_stage) != wanted:
                changed.append(decision)
        if not changed or not self.connected:
            return
        setpoints = []
        for decision in changed:
            setpoint = GroupSetpoint(
                seq=self.next_seq(),
                mode=decision.mode,
                power_kw=decision.power_kw,
                trip_stage=decision.trip_stage,
                ts=now_s,
                epoch=self.epoch,
            )
            setpoints.append((decision.group_id, setpoint, decision.reason))
        # Journaled before they go out: after a crash, the newest command per group is on disk, so a
        # restarted daemon never re-sends an older one over it (one commit per cycle, not per group).
        self._emit(SendSetpoints(tuple(setpoints)))

    def setpoints_sent(
        self, outcomes: list[tuple[str, GroupSetpoint, str, bool]], now_mono_s: float, *, watch: bool = True
    ) -> None:
        """What the broker took of a `SendSetpoints`: only those are commanded and watched."""
        for group_id, setpoint, reason, sent in outcomes:
            if not sent:
                previous = self.commanded.get(group_id)
                if previous is not None and _same_command(previous, setpoint):
                    del self.commanded[group_id]  # a re-issue: the next cycle sends it again
                continue
            if not watch:
                self.commanded[group_id] = setpoint
                continue
            self.commanded[group_id] = setpoint
            self.awaiting_ack[group_id] = (setpoint.seq, now_mono_s)
            self.metrics.setpoints.inc()
            if setpoint.mode == "curtail":
                self.verifier.expect(group_id, now_mono_s, "setpoint")
            else:
                self.verifier.forget(group_id)
                self.unshed.discard(group_id)
            log.info("setpoint", group_id=group_id, **setpoint.model_dump(exclude={"v", "ts"}), reason=reason)

    def _tenant_caps(self, plan: Plan, now_s: float) -> None:
        """Tell each tenant its cap when it changes; uncapped (null) unless the plan caps a flexible
        share. The plan never caps below firm kW."""
        if not self.connected:
            return
        caps = []
        for decision in plan.tenants:
            previous = self.tenant_setpoints.get(decision.tenant_id)
            if previous is not None and previous.power_cap_kw == decision.power_cap_kw:
                continue
            setpoint = TenantSetpoint(
                seq=self.next_seq(), power_cap_kw=decision.power_cap_kw, ts=now_s, epoch=self.epoch
            )
            caps.append((decision.tenant_id, setpoint, decision.reason))
        if caps:
            self._emit(SendTenantCaps(tuple(caps)))

    def tenant_cap_sent(self, tenant_id: str, setpoint: TenantSetpoint, reason: str) -> None:
        self.tenant_setpoints[tenant_id] = setpoint
        fields = setpoint.model_dump(exclude={"v"})
        self._emit(Record("tenant_setpoint", {**fields, "reason": reason}, tenant_id))
        log.info(
            "tenant setpoint",
            tenant_id=tenant_id,
            seq=setpoint.seq,
            power_cap_kw=setpoint.power_cap_kw,
            reason=reason,
        )

    def _plan_document(self, plan: Plan, now_mono_s: float, *, force: bool = False) -> None:
        summary = self.plan_summary(plan, now_mono_s)
        heartbeat_due = now_mono_s - self._plan_published_mono_s >= PLAN_HEARTBEAT_S
        if summary == self.published_plan and not force and not heartbeat_due:
            return
        self._emit(SendPlan(summary, json.dumps({**summary, "ts": plan.computed_at_s}).encode()))

    def plan_summary(self, plan: Plan, now_mono_s: float) -> dict[str, Any]:
        snapshot = self.state.snapshot(self.tenant_ids, self.group_ids, now_mono_s)
        return plan_summary(
            plan, self.seq, self.book, self.site, snapshot, self.config.control.firmware_sleep_s
        )

    def plan_published(self, summary: dict[str, Any], now_mono_s: float) -> None:
        """The plan document is on the broker: journal and log decisions, not every budget wobble from
        AI telemetry; and only what changed, so a row and a log line stay bounded."""
        plan = self.plan
        if plan is not None and (
            self.published_plan is None or decision_key(summary) != decision_key(self.published_plan)
        ):
            change = plan_change(self.published_plan, summary)
            self._emit(Record("plan", change))
            log.info(
                "plan",
                binding=plan.binding_constraint,
                mining_budget_kw=round(plan.mining_budget_kw),
                curtailed=len(plan.curtailed()),
                feasible=plan.feasible,
                obligations=change["obligations_active"],
                changed_groups=len(change["groups"]),
                reasons=change["reasons"],
            )
        self.published_plan = summary
        self._plan_published_mono_s = now_mono_s

    # ---- verification and escalation -------------------------------------------------------

    def _verify(self, now_mono_s: float, outlets_kw: OutletsKw | None) -> None:
        def pdu_kw(group_id: str, read_since_s: float) -> float | None:
            if not self.outlets_by_group.get(group_id) or outlets_kw is None:
                return None
            result: float | None = outlets_kw(group_id, read_since_s)
            return result

        confirmed, overdue = self.verifier.check(
            now_mono_s, lambda g: self.state.group_power_kw(g, now_mono_s), pdu_kw
        )
        for item in confirmed:
            self.unshed.discard(item.group_id)
            self.metrics.shed_confirm_seconds.labels(via=item.via, source=item.source).observe(item.after_s)
        for pending in overdue:
            if pending.group_id in self.hard_cut:
                continue  # already cut at its PDU: silence from a dark controller is expected
            outlets = tuple(self.outlets_by_group.get(pending.group_id, []))
            if not outlets:
                self.escalated(pending, now_mono_s, "no_outlets", "group has no PDU outlets configured", 0.0)
            elif not self.has_pdus:
                self.escalated(pending, now_mono_s, "no_pdu_driver", "no PDU driver running", 0.0)
            else:
                # Firmware did not shed in time: cut the group's outlets (firmware sleep -> PDU cut).
                self._emit(SwitchOutlets(pending.group_id, outlets, on=False, pending=pending))

    def outlets_switched(
        self, command: SwitchOutlets, ok: bool, detail: str, now_mono_s: float, took_s: float
    ) -> None:
        """The outcome of a `SwitchOutlets`."""
        if command.on:
            if ok:
                self.hard_cut.discard(command.group_id)
                self._emit(Record("outlets_restored", {"group_id": command.group_id}))
                self.wake = True  # its run setpoint can go out now
            return
        if ok:
            self.hard_cut.add(command.group_id)
        if command.pending is not None:
            self.escalated(command.pending, now_mono_s, "ok" if ok else "failed", detail, took_s)

    def escalated(
        self, pending: PendingShed, now_mono_s: float, result: str, detail: str, took_s: float
    ) -> None:
        if result == "ok":
            self.unshed.discard(pending.group_id)
        else:
            # Another path: count it at rated (others shed in its place) and re-send firmware sleep
            # under a new seq next cycle, which restarts verification; its deadline retries the cut.
            self.unshed.add(pending.group_id)
            self.commanded.pop(pending.group_id, None)
        self.metrics.escalations.labels(result=result).inc()
        entry = {
            "group_id": pending.group_id,
            "via": pending.via,
            "waited_s": round(now_mono_s - pending.since_mono_s, 3),
            "outlets": [list(o) for o in self.outlets_by_group.get(pending.group_id, [])],
            "result": result,
            "detail": detail,
            "cut_s": round(took_s, 4),
        }
        self._emit(Record("escalation", entry, pending.group_id))
        log.error("shed not confirmed in time, escalated", **entry)

    # ---- trips -----------------------------------------------------------------------------

    def trip_fired(self, record: TripRecord, now_s: float) -> None:
        """After a trip's commands are out: remember the shed groups, hold
        restores, record it all."""
        groups = dict(self.memory.groups)
        for group_id in record.groups:
            groups[group_id] = GroupMemory("curtail", None, now_s)
        self.memory = dataclasses.replace(self.memory, groups=groups)
        cut = set(record.outlets)
        for group_id in record.groups:
            outlets = self.outlets_by_group.get(group_id, [])
            if outlets and all(o in cut for o in outlets):
                self.hard_cut.add(group_id)
            else:
                self.verifier.expect(group_id, record.sample_mono_s, "trip")
        self.trip_curves.trip(record.seq, record.stage, record.cause, record.sample_mono_s)
        if record.cause == "frequency":
            self.tripped_groups[record.stage] = record.groups
            # Restores wait for the frequency to recover (the trigger's release), like an obligation.
            hold = trip_hold(record.seq, record.stage, self.site.interconnect_kw, now_s)
            self.book.obligations[hold.event_id] = hold
        cause = "frequency" if record.cause == "frequency" else "grid_event"
        self.metrics.trips.labels(stage=str(record.stage), cause=cause).inc()
        entry = {
            "seq": record.seq,
            "stage": record.stage,
            "cause": record.cause,
            "hz": record.hz,
            "groups": list(record.groups),
            "outlets": [list(o) for o in record.outlets],
        }
        # Durable in the background: a restart during the event must find it (recovery.fast_path_holds).
        self._emit(RecordInBackground("trip", entry, str(record.stage), "journal trip"))
        log.warning(
            "trip fired",
            stage=record.stage,
            seq=record.seq,
            cause=record.cause,
            hz=record.hz,
            groups=len(record.groups),
            outlets=len(record.outlets),
            added_latency_ms=round(record.added_latency_s * 1000, 3),
        )
        self.wake = True

    def _trip_released(self) -> None:
        self.released_groups.update(self.tripped_groups)
        self.tripped_groups.clear()
        released = [event_id for event_id in self.book.obligations if is_ufr_obligation(event_id)]
        for event_id in released:
            del self.book.obligations[event_id]
        self._emit(Record("trip_released", {"obligations": released}))
        log.info("under-frequency trip released", obligations=released)
        self.wake = True

    # ---- what an operator and Prometheus see -----------------------------------------------

    def meter_refresh_verdict(self) -> float | None:
        """How often the meter's frequency register really changes; says once (per change of verdict)
        when that is slower than the pickup: one bad measurement could then outlast the pickup and
        confirm itself (docs/programs.md, "the detection budget")."""
        refresh_s = self.meter_refresh.interval_s
        if refresh_s is None:
            return None
        pickup_s = self.trigger.settings.pickup_s
        slow = refresh_s > 1.5 * pickup_s
        if slow != self._meter_refresh_slow:
            self._meter_refresh_slow = slow
            observed_s = round(refresh_s, 3)
            if slow:
                log.warning(
                    "meter frequency refreshes slower than the trip pickup",
                    observed_s=observed_s,
                    pickup_s=pickup_s,
                )
            else:
                log.info(
                    "meter frequency refresh within the trip pickup", observed_s=observed_s, pickup_s=pickup_s
                )
        return refresh_s

    def total_kw(self, kind: str, now_mono_s: float) -> float:
        """Sum of known readings of "groups" or "tenants"; NaN as soon as one is unknown."""
        groups = kind == "groups"
        total = 0.0
        for subject in self.group_ids if groups else self.tenant_ids:
            if groups:
                value = self.state.group_power_kw(subject, now_mono_s)
            else:
                value = self.state.tenant_power_kw(subject, now_mono_s)
            if value is None:
                return math.nan
            total += value
        return total

    def obligation_limits_kw(self, now_s: float) -> list[float]:
        """The site import limits of the active obligations; base points (no import limit) left out."""
        limits = (o.site_limit_kw() for o in self.book.active(now_s))
        return [kw for kw in limits if math.isfinite(kw)]

    # ---- recovery and the active/standby pair ----------------------------------------------

    def add_hold(self, obligation: Obligation) -> None:
        """An under-frequency hold (recovered, or from a leader's handover)."""
        self.book.obligations[obligation.event_id] = obligation

    def adopt_setpoints(
        self, group_setpoints: dict[str, GroupSetpoint], tenant_setpoints: dict[str, TenantSetpoint]
    ) -> None:
        """What the controllers were told last (the broker's retained setpoints win over our journal's):
        the policy's memory, so min on/off times run on from each setpoint's `ts`."""
        groups = dict(self.memory.groups)
        for group_id, setpoint in group_setpoints.items():
            self.commanded[group_id] = setpoint
            groups[group_id] = GroupMemory(setpoint.mode, setpoint.power_kw, setpoint.ts)
        self.memory = dataclasses.replace(self.memory, groups=groups)
        self.tenant_setpoints.update(tenant_setpoints)

    def reissue(self, reason: str, now_s: float) -> None:
        """Every setpoint again under a new seq and the current epoch: each controller's highest epoch
        moves to ours (a takeover fences the old leader)."""
        setpoints = []
        for group_id, old in sorted(self.commanded.items()):
            setpoint = GroupSetpoint(
                seq=self.next_seq(),
                mode=old.mode,
                power_kw=old.power_kw,
                trip_stage=old.trip_stage,
                ts=now_s,
                epoch=self.epoch,
            )
            setpoints.append((group_id, setpoint, reason))
        caps = []  # (no shed watch: a re-issue repeats what was commanded, it commands nothing new)
        for tenant_id, old_cap in sorted(self.tenant_setpoints.items()):
            cap = TenantSetpoint(
                seq=self.next_seq(), power_cap_kw=old_cap.power_cap_kw, ts=now_s, epoch=self.epoch
            )
            caps.append((tenant_id, cap, reason))
        self._emit(SendSetpoints(tuple(setpoints), watch=False))
        if caps:
            self._emit(SendTenantCaps(tuple(caps)))

    def handover(self, node_id: str, epoch: int) -> Handover:
        """What a standby needs beyond the retained setpoints to take over from here."""
        book = self.book
        return Handover(
            node_id=node_id,
            epoch=epoch,
            seq=self.seq,
            obligations=tuple((book.event(i), o) for i, o in sorted(book.obligations.items())),
            cancelled=frozenset(book.cancelled),
            latched_stages=self.trigger.latched,
            hard_cut=frozenset(self.hard_cut),
            restores=self.memory.restores,
            overrides=tuple(self.overrides[g] for g in sorted(self.overrides)),
        )

    def adopt(self, handover: Handover, source: str, now_s: float) -> None:
        """The leader's book replaces ours (ours is from whenever we last led); journaled durably first,
        so a restart recovers it as if this daemon had accepted the events itself."""
        book = self.book
        entries: list[tuple[str, dict[str, Any], str | None]] = []
        theirs = {o.event_id for _e, o in handover.obligations}
        for event_id in [i for i in book.obligations if i not in theirs]:
            book.obligations.pop(event_id)
            if not is_ufr_obligation(event_id):
                cancel = GridEvent(id=event_id, kind="cancel", source=source)
                entries.append(
                    (
                        "grid_event",
                        {"event": cancel.model_dump(), "obligation": None, "cancels": event_id},
                        event_id,
                    )
                )
        for event, obligation in handover.obligations:
            if event is None:
                self.add_hold(obligation)  # an under-frequency hold
                continue
            book.apply(event, Decision(True, "takeover", obligation=obligation), now_s)
            entries.append(
                (
                    "grid_event",
                    {"event": event.model_dump(), "obligation": asdict(obligation), "cancels": None},
                    event.id,
                )
            )
        book.cancelled |= handover.cancelled
        self.trigger.latch(handover.latched_stages)
        self.hard_cut |= handover.hard_cut & set(self.group_ids)
        for override in handover.overrides:
            if override.group_id in self.group_ids and override.active(now_s):
                self.overrides[override.group_id] = override
                entry = {"group_id": override.group_id, "mode": override.mode, "until": override.until_s}
                entries.append(
                    ("override", {**entry, "note": override.note, "by": "takeover"}, override.group_id)
                )
        restores = tuple(sorted(set(self.memory.restores) | set(handover.restores)))
        self.memory = dataclasses.replace(self.memory, restores=restores)
        if entries:
            self._emit(RecordDurably(tuple(entries)))


def _same_command(a: GroupSetpoint, b: GroupSetpoint) -> bool:
    return (a.mode, a.power_kw, a.trip_stage) == (b.mode, b.power_kw, b.trip_stage)


def _planned_kw(decision: GroupDecision, rated_kw: float) -> float:
    """What a plan's decision lets a group draw: its power target, rated when running without one,
    0 when curtailed (its sleep draw is the firmware's, not the plan's)."""
    if decision.mode == "curtail":
        return 0.0
    return rated_kw if decision.power_kw is None else min(rated_kw, decision.power_kw)
