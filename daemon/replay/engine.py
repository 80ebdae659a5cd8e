"""Replay: the site's own controller core and simulated site physics, in simulated time.

The shell here does what daemon/site does around the same `SiteController` (intake, executor, fast
path), with the devices replaced by the simulators' physics (`MiningGroup` ramps, sleep draw, PDU cuts;
AI tenants drawing min(demand, cap)) and the clock replaced by the scenario's. Nothing reads the wall
clock, so the same scenario and config give the same result, byte for byte.

Time advances in steps of the control period (`step_s`) while anything moves, and otherwise jumps to
the next instant anything can change: the next scenario input, or the next time rule of the policy
ending (policies/plan_timers.py: a min on/off time, the restore stagger or ramp window, an obligation's
start or end, an override's expiry), rounded up to the step grid as the daemon's next cycle would be.
Moving means: a group ramping, a shed awaiting confirmation, an acknowledgement outstanding, an
under-frequency hold (released by the frequency, read every step), or the core asking to plan again.
Between two such instants a plan would only repeat the last one, so skipping the cycles changes no
decision (tests/test_replay.py compares against a cycle every step). The engine also stops at every
settlement-interval boundary.
During a frequency excursion the meter is read every `meter_poll_s`, as the daemon polls it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Any

from mullet.daemon.config import Config
from mullet.daemon.core.commands import (
    Acknowledge,
    Command,
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
from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.trips import TripRecord
from mullet.daemon.metrics import Metrics
from mullet.daemon.replay.ledger import Ledger
from mullet.daemon.replay.physics import FrequencyScript, SitePhysics
from mullet.daemon.replay.ramps import ImportRamps, RampLimits
from mullet.daemon.replay.scenario import NOMINAL_HZ, Scenario
from mullet.daemon.replay.switching import GroupSwitching
from mullet.daemon.replay.tracking import SCED_INTERVAL_S, Tracker
from mullet.drivers.meter import MeterSample
from mullet.drivers.protocol import GridEvent, GroupState, TenantState
from mullet.policies.plan_budget import base_point_in_force
from mullet.policies.plan_timers import next_change_s
from mullet.policies.trigger import is_ufr_obligation

MONO0_S = 1_000.0  # the replay's monotonic clock at the scenario's start
INTERVAL_S = 900.0  # settlement interval (ERCOT: 15 minutes)


@dataclass
class EventLog:
    """What the replay needs of one accepted event to score it afterwards."""

    event: GridEvent
    obligation: dict[str, Any]
    notice_s: float
    end_s: float | None = None
    ended_by: str | None = None


def config_ramp_limits(config: Config) -> RampLimits:
    """The configuration's own `[control] import_ramp_kw_per_10s / _per_min` (None where unset, or in
    a build whose config has no such keys)."""
    control = config.control
    return RampLimits(
        getattr(control, "import_ramp_kw_per_10s", None), getattr(control, "import_ramp_kw_per_min", None)
    )


class Replay:
    def __init__(
        self,
        config: Config,
        scenario: Scenario,
        *,
        always_step: bool = False,
        ramp_limits: RampLimits | None = None,
    ) -> None:
        """`always_step`: run a control cycle every `step_s` even when quiet (what the quiet skip must
        not change: tests/test_replay.py compares the two). `ramp_limits`: what the import's ramp is
        judged against (default: the configuration's own keys)."""
        self.config = config
        self.always_step = always_step
        self.scenario = scenario
        self.step_s = scenario.step_s or config.control.period_s
        self.meter_poll_s = scenario.meter_poll_s or 1.0 / config.meter.poll_hz
        self.core = SiteController(config, Metrics(), seq=0, has_pdus=bool(config.pdus))
        self.physics = SitePhysics(config, scenario.physics)
        self.groups, self.tenants = self.physics.groups, self.physics.tenants
        self.frequency = FrequencyScript(scenario.frequency)
        self.ledger = Ledger(INTERVAL_S)
        self.tracking = Tracker(self.core.site.settings.deadband_kw)
        self.ramps = ImportRamps(ramp_limits if ramp_limits is not None else config_ramp_limits(config))
        self.ai_ramps = ImportRamps(RampLimits())  # the AI load's own: what mining works against
        self.switching = {
            g.group_id: GroupSwitching(
                g.min_on_s if g.min_on_s is not None else config.control.min_on_s,
                g.min_off_s if g.min_off_s is not None else config.control.min_off_s,
            )
            for g in config.groups
        }
        self.samples_t: list[float] = []  # site power after each step (zero-order hold in between)
        self.samples_kw: list[float] = []
        self.events: dict[str, EventLog] = {}
        self.acks = {"accepted": 0, "duplicate": 0, "rejected": 0}
        self.rejections: list[tuple[float, str, str]] = []
        self.records: dict[str, int] = {}
        self.switches: dict[str, int] = dict.fromkeys(self.groups, 0)
        self.cuts: dict[str, int] = dict.fromkeys(self.groups, 0)
        self.trips: list[tuple[float, int, str, int]] = []  # (t, stage, cause, groups)
        self.steps = 0
        self.notes: list[str] = []  # inputs this configuration could not use, said once each
        self.price: float | None = None
        self.hashprice: float | None = config.economics.hashprice_usd_per_th_day
        self.hz = NOMINAL_HZ
        self.now_s = scenario.start_s
        self._armed: dict[int, Any] = {}
        self._mode: dict[str, str] = {g: grp.commanded for g, grp in self.groups.items()}
        self._states: dict[str, tuple[tuple[Any, ...], GroupState]] = {}
        self._queue: list[tuple[float, int, str, Any]] = []
        self._order = itertools.count()

    # ---- the clock ---------------------------------------------------------------------------

    def mono(self, t_s: float) -> float:
        return t_s - self.scenario.start_s + MONO0_S

    def _push(self, t_s: float, kind: str, payload: Any = None) -> None:
        heapq.heappush(self._queue, (t_s, next(self._order), kind, payload))

    def _schedule(self) -> None:
        sc = self.scenario
        for series, kind in ((sc.prices, "price"), (sc.hashprice, "hashprice")):
            before = [v for t, v in series if t <= sc.start_s]
            if before:
                self._push(sc.start_s, kind, before[-1])
            for t, v in series:
                if sc.start_s < t < sc.end_s:
                    self._push(t, kind, v)
        demand = dict(sc.demand_kw)
        total = demand.pop("*", ())
        reserved_kw = sum(tenant.reserved_kw for tenant in self.config.tenants)
        if total and reserved_kw > 0:
            # "*": all AI tenants together (a journal's record): split by reserved kW, as the journal
            # has no config; a tenant's own trace, if any, wins.
            for tenant in self.config.tenants:
                share = tenant.reserved_kw / reserved_kw
                demand.setdefault(tenant.tenant_id, tuple((at, kw * share) for at, kw in total))
        for tenant_id, series in sorted(demand.items()):
            if tenant_id not in self.tenants:
                self.notes.append(
                    f"demand trace of tenant {tenant_id!r}: no such tenant in this config, ignored"
                )
                continue
            before = [v for t, v in series if t <= sc.start_s]
            if before:
                self.tenants[tenant_id].demand_kw = before[-1]
            for t, v in series:
                if sc.start_s < t < sc.end_s:
                    self._push(t, "demand", (tenant_id, v))
        outside = 0
        for t, event in sc.events:
            if sc.start_s <= t < sc.end_s:
                self._push(t, "event", event)
            else:
                outside += 1
        if outside:
            self.notes.append(f"{outside} grid event(s) delivered outside the period, not replayed")
        for t, _hz in sc.frequency:
            if sc.start_s <= t < sc.end_s:
                self._push(t, "frequency", None)
        # Base points are tracked per SCED interval (5 min): stop at those boundaries too.
        base_points = any(event.kind == "base_point" for _t, event in sc.events)
        interval_s = SCED_INTERVAL_S if base_points else INTERVAL_S
        boundary = (sc.start_s // interval_s + 1) * interval_s
        while boundary < sc.end_s:
            self._push(boundary, "interval", None)
            boundary += interval_s

    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> Replay:
        sc = self.scenario
        self._schedule()
        t_prev = sc.start_s
        self.core.session_up(self.mono(t_prev))
        self._carry_out(self.core.take())
        t = sc.start_s
        while True:
            self._advance(t_prev, t)
            self.now_s = t
            self.ramps.observe(t, self.physics.site_kw())  # as held until now, before anything acts
            self.ai_ramps.observe(t, self.physics.ai_kw())
            self._observe(t)  # an event is decided on what the site draws now, as the daemon's would be
            if self._queue and self._queue[0][0] <= t:
                while self._queue and self._queue[0][0] <= t:
                    _t, _n, kind, payload = heapq.heappop(self._queue)
                    self._input(kind, payload)
                self._observe(t)
            self._cycle(t)
            if t >= sc.end_s:
                break
            t_prev, t = t, self._next(t)
        self._close()
        return self

    def _next(self, t_s: float) -> float:
        end_s = self.scenario.end_s
        next_input_s = self._queue[0][0] if self._queue else end_s
        if self.frequency.excursion(t_s, self.meter_poll_s):
            candidate = t_s + self.meter_poll_s
        elif self._busy():
            candidate = t_s + self.step_s
        else:
            core = self.core
            timer_s = next_change_s(
                core.site, core.memory, core.book.obligations.values(), core.overrides, t_s
            )
            # The daemon would act on it at its first cycle at or after it: the step grid from here.
            candidate = (
                end_s if timer_s is None else t_s + math.ceil((timer_s - t_s) / self.step_s) * self.step_s
            )
        return min(candidate, next_input_s, end_s)

    def _busy(self) -> bool:
        """Whether the next step could differ from this one with no input and no time rule ending."""
        core = self.core
        if self.always_step or core.wake or core.verifier.pending or core.awaiting_ack:
            return True
        if any(is_ufr_obligation(i) for i in core.book.obligations):
            return True  # the trip hold is released by the frequency, read every step
        return not self.physics.settled()

    def _advance(self, t0_s: float, t1_s: float) -> None:
        """Physics from t0 to t1, and the ledger's trapezoid over it."""
        dt_s = t1_s - t0_s
        if dt_s <= 0:
            return
        point = base_point_in_force(self.core.book.active(t0_s)) if self.core.book.obligations else None
        m0_kw = self.physics.mining()[0] if point is not None else 0.0
        step = self.physics.advance(dt_s)
        self.ledger.add(t0_s, dt_s, self.price, self.hashprice, step)
        if point is not None:  # the step's mean is the trapezoid of its ends: the end is 2 x mean - start
            self.tracking.add(t0_s, dt_s, point.event_id, point.kw, m0_kw, 2.0 * step.mining_kw - m0_kw)

    # ---- inputs ------------------------------------------------------------------------------

    def _input(self, kind: str, payload: Any) -> None:
        if kind == "price":
            self.price = payload
        elif kind == "hashprice":
            self.hashprice = payload
            economics = self.config.economics.model_copy(update={"hashprice_usd_per_th_day": payload})
            self.config = self.config.model_copy(update={"economics": economics})
            self.core.reconfigure(self.config)
        elif kind == "demand":
            tenant_id, kw = payload
            self.tenants[tenant_id].demand_kw = kw
        elif kind == "event":
            self._grid_event(payload)
        elif kind == "wake":
            self.core.wake = True
        # "frequency" and "interval": a stop, nothing else (the meter reads hz_at every tick)

    def _grid_event(self, event: GridEvent) -> None:
        """Intake._decide and run_grid_events: decide, fire first, journal, commit, ack."""
        core, now_s = self.core, self.now_s
        decision, order = core.decide(event, now_s, self.mono(now_s))
        if order is not None:
            self._fire(order)
        if decision.accepted and not decision.duplicate:
            if event.kind == "cancel":
                self._ended(decision.cancels or "", "recall")
            elif decision.obligation is not None:
                obligation = decision.obligation
                self.events[event.id] = EventLog(event, dataclasses.asdict(obligation), now_s)
                for moment in (obligation.start_s, event.end):
                    if moment is not None and moment > now_s:
                        self._push(moment, "wake")
        final = core.commit(event, decision, None, now_s)
        if not final.accepted:
            self.rejections.append((now_s, event.id, final.code))
        self._carry_out(core.take())

    # ---- one tick: telemetry, the meter, a control cycle ----------------------------------------

    def _observe(self, t_s: float) -> None:
        """Every controller reports, the price feed repeats, the meter is read (and may trip)."""
        core, mono_s = self.core, self.mono(t_s)
        for group_id, group in self.groups.items():
            key = (group.seq_applied, group.mode, group.power_kw, group.powered)
            cached = self._states.get(group_id)
            if cached is None or cached[0] != key:
                # Built only when it changed: a month at 600 groups reuses most reports.
                self._states[group_id] = cached = (key, group.state(t_s))
            core.group_state(group_id, cached[1], mono_s)
        for tenant_id, tenant in self.tenants.items():
            power_kw = tenant.power_kw
            reading = TenantState.model_construct(power_kw=power_kw, demand_kw=tenant.demand_kw, ts=t_s)
            core.tenant_state(tenant_id, reading, mono_s)
        if self.price is not None:
            core.price(self.price, mono_s)
        self.hz = self.frequency.hz_at(t_s)
        sample = MeterSample(self.physics.site_kw(), self.hz, mono_s, requested_s=mono_s)
        order = core.frequency(sample)
        if order is not None:
            self._fire(order)
        core.meter_sample(sample)
        self._carry_out(core.take())

    def _cycle(self, t_s: float) -> None:
        """One supervisory cycle (Daemon._cycle): plan, arm the fast path, carry out."""
        core, mono_s = self.core, self.mono(t_s)
        self.steps += 1
        plan = core.cycle(t_s, mono_s, self._outlets_kw)
        if plan is not None:
            self._armed = dict(core.armed)
        self._carry_out(core.take())
        self._count_switches()
        site_kw = self.physics.site_kw()
        self.samples_t.append(t_s)
        self.samples_kw.append(site_kw)
        self.ramps.observe(t_s, site_kw)
        self.ai_ramps.observe(t_s, self.physics.ai_kw())

    def _outlets_kw(self, group_id: str, _since_mono_s: float) -> float | None:
        """The PDU readback of a group's outlets (the simulated PDU meters what the group draws)."""
        return self.groups[group_id].power_kw

    def _count_switches(self) -> None:
        t_s, switching = self.now_s, self.switching
        for group_id, group in self.groups.items():
            mode = group.commanded if group.powered else "cut"
            if mode != self._mode[group_id]:
                self.switches[group_id] += 1
                self._mode[group_id] = mode
            watch, on = switching[group_id], "run" if mode == "run" else "off"
            if watch.mode != on or watch.target_kw != group.target_kw:
                watch.observe(t_s, on, group.target_kw)

    def _fire(self, order: TripOrder) -> None:
        """FastPath.fire: the trip broadcast and the armed cuts at once, then the core is told."""
        groups, outlets = self._armed.get(order.stage, ((), ()))
        for group in self.groups.values():
            group.trip(order.stage, order.epoch)
        cut = set(outlets)
        for group_id, group in self.groups.items():
            if any(o in cut for o in self.core.outlets_by_group.get(group_id, ())):
                group.set_powered(False)
                self.cuts[group_id] += 1
        mono_s = self.mono(self.now_s)
        record = TripRecord(
            order.stage,
            order.seq,
            order.cause,
            order.sample_mono_s,
            mono_s,
            mono_s if outlets else None,
            tuple(groups),
            tuple(outlets),
            order.hz,
        )
        self.trips.append((self.now_s, order.stage, order.cause, len(groups)))
        self.core.trip_fired(record, self.now_s)
        self._carry_out(self.core.take())

    def _carry_out(self, commands: list[Command]) -> None:
        """CommandRunner.run: in order, each outcome back to the core, what it queues in answer next."""
        core, mono_s = self.core, self.mono(self.now_s)
        queue = list(reversed(commands))
        while queue:
            command = queue.pop()
            match command:
                case Record(kind, data) | RecordInBackground(kind, data):
                    self.records[kind] = self.records.get(kind, 0) + 1
                    if kind == "obligation_ended":
                        self._ended(str(data["id"]), "superseded" if "superseded_by" in data else "expiry")
                case RecordDurably(items):
                    for kind, _data, _subject in items:
                        self.records[kind] = self.records.get(kind, 0) + 1
                case SendSetpoints(items, watch):
                    for group_id, setpoint, _reason in items:
                        self.groups[group_id].apply(setpoint)
                    core.setpoints_sent([(g, sp, r, True) for g, sp, r in items], mono_s, watch=watch)
                case SendTenantCaps(caps):
                    for tenant_id, cap, reason in caps:
                        self.tenants[tenant_id].cap_kw = cap.power_cap_kw
                        core.tenant_cap_sent(tenant_id, cap, reason)
                case SendPlan(summary, _payload):
                    core.plan_published(summary, mono_s)
                case SwitchOutlets(group_id, _outlets, on, _pending):
                    self.groups[group_id].set_powered(on)
                    if not on:
                        self.cuts[group_id] += 1
                    core.outlets_switched(command, True, "ok", mono_s, 0.0)
                case Acknowledge(ack):
                    outcome = (
                        "duplicate"
                        if ack.code == "duplicate"
                        else ("accepted" if ack.accepted else "rejected")
                    )
                    self.acks[outcome] += 1
                case Republish():
                    pass
            queue.extend(reversed(core.take()))

    def _ended(self, event_id: str, how: str) -> None:
        log = self.events.get(event_id)
        if log is not None and log.end_s is None:
            log.end_s, log.ended_by = self.now_s, how

    def _close(self) -> None:
        self.ledger.close()
