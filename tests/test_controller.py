"""The controller core alone, on a fake clock: whole site stories as plain call sequences.

`Shell` stands in for the daemon's I/O shell (daemon/site/app.py, intake.py, executor.py, fastpath.py): it
feeds the `SiteController` timestamped telemetry, carries out the commands it emits in order and
reports each outcome back as the executor does, and simulates the groups' physics just enough (a group
reports what it was last told at its next telemetry tick). Time is two floats the test advances: no
broker, no sockets, no asyncio, no sleeps, so an hour of site time costs milliseconds. Assertions are on
the commands the core emitted and their timestamps.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import site_config

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
from mullet.drivers.meter import MeterSample
from mullet.drivers.protocol import GridEvent, GridEventAck, GroupSetpoint, GroupState, TenantState
from mullet.policies.economics import break_even_usd_per_mwh
from mullet.policies.plan import merit_order
from mullet.policies.trigger import ufr_obligation_id

T0_S = 1_900_000_000.0  # fake Unix time of the story's start (2030), far from the real clock
MONO0_S = 50_000.0  # fake monotonic time at the same instant
ROUND_TRIP_S = 1 / 64  # a meter read's request to its answer
POLL = 8  # meter reads per second; with these powers of two every fake time is exact in binary
AI_KW = {"ai-a": 1800.0, "ai-b": 1000.0}


@dataclass(frozen=True, slots=True)
class Sent:
    """A group setpoint the broker took, as the test saw it go out."""

    group_id: str
    setpoint: GroupSetpoint
    reason: str


class Shell:
    """The daemon's I/O shell in miniature, on a fake clock."""

    def __init__(self, tmp_path: Path, mutate: Callable[[dict], None] | None = None) -> None:
        def real_timescale(data: dict) -> None:
            # helpers.site_config compresses time for the wall-clock tests; a fake clock needs no
            # compression, so the example site's own figures apply.
            data["control"].update(min_on_s=60, min_off_s=60, restore_stagger_s=10)
            if mutate is not None:
                mutate(data)

        config, _ = site_config("mqtt://127.0.0.1:1", tmp_path, real_timescale)
        self.config = config
        self.core = SiteController(config, Metrics(), seq=1000, has_pdus=True)
        self.now_s = T0_S
        self.now_mono_s = MONO0_S
        self.commands: list[tuple[float, Command]] = []  # everything carried out, at its fake Unix time
        self.journal: list[tuple[str, dict[str, Any], str | None]] = []
        self.setpoints: list[Sent] = []
        self.acks: list[GridEventAck] = []
        self.trips: list[TripOrder] = []
        self.plans: list[dict[str, Any]] = []
        self.armed: dict[int, tuple[tuple[str, ...], tuple[tuple[str, int], ...]]] = {}
        # The physics: what each group was last told, and what it reports at its next tick.
        self.specs = {g.group_id: g for g in self.core.site.groups}
        self.told: dict[str, tuple[int | None, str, float | None]] = {
            g: (None, "run", None) for g in self.specs
        }
        self.dark: set[str] = set()  # outlets cut
        self.power_kw = {g: spec.rated_kw for g, spec in self.specs.items()}
        self.hz = 60.0
        self.meter_live = True
        self.samples: list[tuple[float, float]] = []  # (Unix s, site kW) of every meter read
        self.price_usd_per_mwh: float | None = None
        self.core.session_up(self.now_mono_s)
        self.carry_out(self.core.take())

    # ---- the clock and the inputs ------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now_s += seconds
        self.now_mono_s += seconds

    def telemetry(self) -> None:
        """Every group and tenant reports (groups what they were last told), then the meter."""
        for group_id, (seq, mode, power_kw) in self.told.items():
            spec = self.specs[group_id]
            if group_id in self.dark:
                kw = 0.0
            elif mode == "curtail":
                kw = spec.sleep_kw
            else:
                kw = spec.rated_kw if power_kw is None else power_kw
            self.power_kw[group_id] = kw
            state = GroupState(seq_applied=seq, mode=mode, power_kw=kw, ts=self.now_s)
            self.core.group_state(group_id, state, self.now_mono_s)
        for tenant_id, kw in AI_KW.items():
            state = TenantState(power_kw=kw, demand_kw=kw, ts=self.now_s)
            self.core.tenant_state(tenant_id, state, self.now_mono_s)
        if self.price_usd_per_mwh is not None:
            self.core.price(self.price_usd_per_mwh, self.now_mono_s)
        self.meter()

    def site_kw(self) -> float:
        return self.core.site.base_load_kw + sum(AI_KW.values()) + sum(self.power_kw.values())

    def meter(self) -> None:
        """One meter read coming back now (intake.on_meter_sample): the trip first, then the rest."""
        if not self.meter_live:
            return
        sample = MeterSample(
            self.site_kw(), self.hz, self.now_mono_s, requested_s=self.now_mono_s - ROUND_TRIP_S
        )
        self.samples.append((self.now_s, sample.power_kw))
        order = self.core.frequency(sample)
        if order is not None:
            self.fire(order)
        self.core.meter_sample(sample)
        self.carry_out(self.core.take())

    def cycle(self) -> None:
        """One supervisory cycle (Daemon._cycle): plan, arm the fast path, carry out."""
        self.core.connected = True
        plan = self.core.cycle(self.now_s, self.now_mono_s)
        if plan is not None:
            self.armed = dict(self.core.armed)
        self.carry_out(self.core.take())

    def step(self, seconds: float = 1.0, meter_reads: int = 1) -> None:
        """`seconds` later: telemetry, then a cycle; with `meter_reads` > 1, the meter read that many
        times evenly over the step (the last with the telemetry), as at its poll rate."""
        for _ in range(meter_reads - 1):
            self.advance(seconds / meter_reads)
            self.meter()
        self.advance(seconds / meter_reads)
        self.telemetry()
        self.cycle()

    def run_for(self, seconds: float, period_s: float = 1.0, meter_reads: int = 1) -> None:
        for _ in range(round(seconds / period_s)):
            self.step(period_s, meter_reads)

    def grid_event(self, event: GridEvent) -> GridEventAck:
        """Intake._decide and run_grid_events: decide, fire first, journal, commit, ack."""
        decision, order = self.core.decide(event, self.now_s, self.now_mono_s)
        if order is not None:
            self.fire(order)
        if decision.accepted and not decision.duplicate:
            self.journal.append(("grid_event", self.core.grid_event_entry(event, decision), event.id))
        self.core.commit(event, decision, None, self.now_s)
        acks = self.carry_out(self.core.take())
        assert len(acks) == 1
        return acks[0]

    # ---- the fast path and the executor -------------------------------------------------------

    def fire(self, order: TripOrder) -> None:
        """FastPath.fire: the broadcast and the armed cuts, then `on_fired` (Daemon._on_trip)."""
        self.trips.append(order)
        groups, outlets = self.armed.get(order.stage, ((), ()))
        for group_id in groups:  # every controller armed at or below the stage sleeps
            self.told[group_id] = (self.told[group_id][0], "curtail", None)
        cut = set(outlets)
        self.dark |= {g for g in groups if any(o in cut for o in self.core.outlets_by_group[g])}
        record = TripRecord(
            order.stage,
            order.seq,
            order.cause,
            order.sample_mono_s,
            self.now_mono_s,
            self.now_mono_s if outlets else None,
            groups,
            outlets,
            order.hz,
        )
        self.core.trip_fired(record, self.now_s)
        self.carry_out(self.core.take())

    def carry_out(self, commands: list[Command]) -> list[GridEventAck]:
        """CommandRunner.run: in order, each outcome reported back, what the core queues in answer next."""
        acks: list[GridEventAck] = []
        queue = deque(commands)
        while queue:
            command = queue.popleft()
            self.commands.append((self.now_s, command))
            match command:
                case Record(kind, data, subject):
                    self.journal.append((kind, data, subject))
                case RecordDurably(items):
                    self.journal.extend(items)
                case RecordInBackground(kind, data, subject, _what):
                    self.journal.append((kind, data, subject))
                case SendSetpoints(items, watch):
                    for group_id, setpoint, reason in items:
                        data = {**setpoint.model_dump(exclude={"v"}), "reason": reason}
                        self.journal.append(("setpoint", data, group_id))
                    for group_id, setpoint, reason in items:
                        self.setpoints.append(Sent(group_id, setpoint, reason))
                        self.told[group_id] = (setpoint.seq, setpoint.mode, setpoint.power_kw)
                    outcomes = [(g, sp, reason, True) for g, sp, reason in items]
                    self.core.setpoints_sent(outcomes, self.now_mono_s, watch=watch)
                case SendTenantCaps(caps):
                    for tenant_id, setpoint, reason in caps:
                        self.core.tenant_cap_sent(tenant_id, setpoint, reason)
                case SendPlan(summary, _payload):
                    self.plans.append(summary)
                    self.core.plan_published(summary, self.now_mono_s)
                case SwitchOutlets(group_id, _outlets, on, _pending):
                    (self.dark.discard if on else self.dark.add)(group_id)
                    self.core.outlets_switched(command, True, "ok", self.now_mono_s, 0.0)
                case Acknowledge(ack):
                    self.acks.append(ack)
                    acks.append(ack)
                case Republish():
                    pass
            queue.extend(self.core.take())
        return acks

    # ---- what the test reads ------------------------------------------------------------------

    def records(self, kind: str) -> list[tuple[float, Record]]:
        return [(t, c) for t, c in self.commands if isinstance(c, Record) and c.kind == kind]

    def tenant_caps(self) -> list[tuple[str, float | None, str]]:
        return [
            (tenant_id, sp.power_cap_kw, reason)
            for _t, c in self.commands
            if isinstance(c, SendTenantCaps)
            for tenant_id, sp, reason in c.caps
        ]

    def modes(self) -> dict[str, str]:
        """What each group was last commanded (run before any command)."""
        return {g: told[1] for g, told in self.told.items()}

    def start(self) -> None:
        """Telemetry until the start-up picture settles and the first plan is out."""
        self.step(0.0)
        assert self.core.plan is not None


def restores(sent: list[Sent], before: dict[str, str]) -> list[Sent]:
    """Run setpoints to groups that were commanded to curtail: each one adds load."""
    modes = dict(before)
    out = []
    for item in sent:
        if item.setpoint.mode == "run" and modes.get(item.group_id) == "curtail":
            out.append(item)
        modes[item.group_id] = item.setpoint.mode
    return out


def batches(sent: list[Sent]) -> dict[float, list[Sent]]:
    """Setpoints by the time they went out."""
    out: dict[float, list[Sent]] = {}
    for item in sent:
        out.setdefault(item.setpoint.ts, []).append(item)
    return out


def site_kw_added(shell: Shell, sent: Sent) -> float:
    """What a restore's run setpoint adds: the group from asleep to rated."""
    spec = shell.specs[sent.group_id]
    return spec.rated_kw - spec.sleep_kw


def check_staggered(shell: Shell, restored: list[Sent]) -> None:
    """Restores spaced by the stagger, each slice within its share of the ramp (or one group alone),
    every minute within the ramp."""
    control = shell.config.control
    slice_kw = control.restore_ramp_kw_per_min * control.restore_stagger_s / 60.0
    by_ts = batches(restored)
    times = sorted(by_ts)
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= control.restore_stagger_s
    added = {ts: sum(site_kw_added(shell, s) for s in by_ts[ts]) for ts in times}
    for ts in times:
        assert added[ts] <= slice_kw + 1e-6 or len(by_ts[ts]) == 1
        minute_kw = sum(kw for t, kw in added.items() if ts - 60.0 < t <= ts)
        assert minute_kw <= control.restore_ramp_kw_per_min + 1e-6


def test_ers10_from_notice_to_recall_and_staggered_restore(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    shell.start()
    shell.run_for(10)
    assert shell.site_kw() > 9000.0  # the limit below binds
    site = shell.core.site
    merit = [g.group_id for g in merit_order(site.groups)]

    # Notice: an ERS-10 deployment two minutes ahead, scheduled for an hour; ERS holds until recalled.
    notice_s = shell.now_s
    start_s = notice_s + 120.0
    event = GridEvent(
        id="ers-1", kind="limit", kw=9000.0, start=start_s, end=start_s + 3600.0, program="ERS-10"
    )
    ack = shell.grid_event(event)
    assert (ack.id, ack.accepted, ack.code) == ("ers-1", True, "accepted")
    kind, entry, subject = shell.journal[-1]
    assert (kind, subject, entry["event"]["id"]) == ("grid_event", "ers-1", "ers-1")
    assert entry["obligation"]["deadline_s"] == 600.0  # docs/programs.md: ERS-10 deploys within 10 min
    assert entry["obligation"]["explicit_recall"] is True
    assert entry["obligation"]["actuation"] == "graceful"

    # Nothing is shed before the start.
    before = len(shell.setpoints)
    shell.run_for(start_s - shell.now_s - 1.0)
    assert all(s.setpoint.mode == "run" for s in shell.setpoints[before:])
    assert shell.plans[-1]["active_obligations"] == []

    # At the start: the five least efficient groups sleep, in merit order, in one batch, on the first
    # cycle at or after the start: well inside the program's 10-minute deadline.
    shell.run_for(30)
    shell.run_for(600, period_s=30.0)  # a quiet hold: a cycle every 30 s is enough to watch it
    curtailed = [s for s in shell.setpoints[before:] if s.setpoint.mode == "curtail"]
    assert [s.group_id for s in curtailed] == merit[:5]
    (ts,) = {s.setpoint.ts for s in curtailed}
    assert start_s <= ts <= start_s + shell.config.control.period_s
    assert ts - start_s <= shell.plans[-1]["obligations"]["ers-1"]["deadline_s"]
    assert all("under limit 'ers-1' (ERS-10)" in s.reason for s in curtailed)
    seqs = [s.setpoint.seq for s in shell.setpoints]
    assert seqs == sorted(set(seqs))  # every command a new, higher seq
    # The site is under the limit from the first telemetry after the sleep commands on.
    held = [kw for t, kw in shell.samples if t > ts]
    assert held and max(held) <= 9000.0

    # Past its scheduled end an ERS obligation is held, never restored on a timer.
    shell.run_for(2 * 3600, period_s=60.0)
    assert shell.now_s > event.end
    assert restores(shell.setpoints[before:], {}) == []
    assert shell.records("obligation_ended") == []
    plan = shell.plans[-1]
    assert plan["active_obligations"] == ["ers-1"]
    assert any("past its scheduled end, held until recalled" in r for r in plan["reasons"])
    assert max(kw for t, kw in shell.samples if t > ts) <= 9000.0

    # Recall: journaled as the cancel of ers-1, acknowledged; then restores, most efficient first.
    modes = shell.modes()
    recall_s = shell.now_s
    recalled = len(shell.setpoints)
    ack = shell.grid_event(GridEvent(id="ers-1", kind="cancel"))
    assert (ack.accepted, ack.code) == (True, "cancelled")
    kind, entry, subject = shell.journal[-1]
    assert (kind, entry["cancels"], subject) == ("grid_event", "ers-1", "ers-1")
    shell.run_for(120)
    restored = restores(shell.setpoints[recalled:], modes)
    # Most efficient first: (each batch goes out in the site's order of groups)
    order = [{s.group_id for s in batch} for _ts, batch in sorted(batches(restored).items())]
    assert order == [set(merit[3:5]), set(merit[1:3]), {merit[0]}]
    assert all(s.reason.startswith("run: restored") for s in restored)
    assert recall_s < restored[0].setpoint.ts <= recall_s + shell.config.control.period_s
    check_staggered(shell, restored)
    ledger = [r.data["kw"] for _t, r in shell.records("restore")]
    assert sum(ledger) == pytest.approx(sum(site_kw_added(shell, s) for s in restored))
    ended = [r.data for _t, r in shell.records("plan") if r.data.get("obligations_ended")]
    assert [e["obligations_ended"] for e in ended] == [["ers-1"]]


def test_recall_redelivered_is_a_duplicate_on_the_core_clock(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    shell.start()
    shell.grid_event(GridEvent(id="ers-2", kind="limit", kw=9000.0, program="ERS-10"))
    shell.run_for(120)
    assert shell.grid_event(GridEvent(id="ers-2", kind="cancel")).code == "cancelled"
    shell.run_for(5)
    # A QoS 1 redelivery of the recall, seconds later on the core's clock: a duplicate (HISTORY_S).
    again = shell.grid_event(GridEvent(id="ers-2", kind="cancel"))
    assert (again.accepted, again.code) == (True, "duplicate")


def test_under_frequency_trip_hold_and_release(tmp_path: Path) -> None:
    def pickup(data: dict) -> None:
        data["control"]["trip_pickup_ms"] = 250  # the meter refreshes its frequency every 250 ms

    shell = Shell(tmp_path, pickup)
    shell.start()
    shell.run_for(5, meter_reads=POLL)  # the meter at its poll rate
    settings = shell.core.trigger.settings
    assert (settings.pickup_s, settings.confirm_samples, settings.confirm_on_change) == (0.25, 2, True)
    stage_1 = shell.core.stages[0]
    armed = shell.armed[1][0]
    assert armed == ("c01", "c02", "c03")

    # One bad refresh held for one refresh window (three reads of one value): never a trip.
    shell.hz = 59.5
    for _ in range(3):
        shell.advance(1 / POLL)
        shell.meter()
    shell.hz = 60.0
    shell.run_for(5, meter_reads=POLL)
    assert shell.trips == []

    # A sustained dip below stage 1 (above stage 2) that holds one value: the first read counts,
    # reads of the same value count again only once sent >= pickup after the counted one came back.
    shell.hz = 59.80
    assert stage_1.threshold_hz > shell.hz > shell.core.stages[1].threshold_hz
    first_mono_s = shell.now_mono_s + 1 / POLL
    # The read back at +0.375 was sent at +0.359 (>= 0.25); the one back at +0.25 was sent too soon.
    fired_mono_s = first_mono_s + 3 / POLL
    before = len(shell.setpoints)
    modes = shell.modes()
    shell.run_for(30, meter_reads=POLL)  # the frequency stays low
    (order,) = shell.trips
    assert (order.stage, order.cause, order.hz) == (1, "frequency", 59.80)
    assert order.sample_mono_s == fired_mono_s
    assert order.seq > max(s.setpoint.seq for s in shell.setpoints[:before])
    hold = ufr_obligation_id(order.seq)
    ((_t, trip),) = [(t, c) for t, c in shell.commands if isinstance(c, RecordInBackground)]
    assert (trip.kind, trip.data["groups"], trip.data["seq"]) == ("trip", list(armed), order.seq)
    assert hold in shell.plans[-1]["active_obligations"]
    assert all(
        shell.plans[-1]["groups"][g]["reason"]
        == f"curtail: held, no restore while obligation '{hold}' is active"
        for g in armed
    )
    assert restores(shell.setpoints[before:], modes) == []
    assert all(s.setpoint.mode == "curtail" for s in shell.setpoints[before:] if s.group_id in armed)

    # Back above the stage but below the release frequency: still held, however long.
    shell.hz = 59.90
    shell.run_for(90, meter_reads=POLL)
    assert shell.records("trip_released") == []
    assert restores(shell.setpoints[before:], modes) == []

    # At or above release_hz for release_after_s: released at exactly that read, then restores.
    shell.hz = 60.0
    normal_s = shell.now_s + 1 / POLL
    shell.run_for(settings.release_after_s - 1.0, meter_reads=POLL)
    assert shell.records("trip_released") == []
    assert restores(shell.setpoints[before:], modes) == []
    shell.run_for(30, meter_reads=POLL)
    ((released_s, released),) = shell.records("trip_released")
    assert released.data == {"obligations": [hold]}
    assert released_s == normal_s + settings.release_after_s
    restored = restores(shell.setpoints[before:], modes)
    assert {s.group_id for s in restored} == set(armed)
    assert all(s.reason.startswith("run: restored") for s in restored)
    assert released_s < restored[0].setpoint.ts <= released_s + 1.0
    assert hold not in shell.plans[-1]["active_obligations"]
    check_staggered(shell, restored)
    assert len(shell.trips) == 1


def test_price_spike_with_economics_on(tmp_path: Path) -> None:
    def economics(data: dict) -> None:
        data["economics"]["enabled"] = True

    shell = Shell(tmp_path, economics)
    hashprice = shell.config.economics.hashprice_usd_per_th_day
    break_even = {g: break_even_usd_per_mwh(spec, hashprice) for g, spec in shell.specs.items()}
    shell.price_usd_per_mwh = 40.0  # every group pays
    shell.start()
    shell.run_for(120)
    assert all(s.setpoint.mode == "run" for s in shell.setpoints)

    # The spike: every group whose break-even is below it sleeps at once, the others run on.
    shell.price_usd_per_mwh = 100.0
    losing = {g for g, usd in break_even.items() if usd is not None and usd < 100.0}
    assert losing == {"c01", "c02", "c03", "c04", "c05", "c06"}
    before = len(shell.setpoints)
    spike_s = shell.now_s + 1.0
    shell.run_for(30)
    shell.run_for(300, period_s=30.0)
    curtailed = [s for s in shell.setpoints[before:] if s.setpoint.mode == "curtail"]
    assert {s.group_id for s in curtailed} == losing
    assert len(curtailed) == len(losing)
    assert {s.setpoint.ts for s in curtailed} == {spike_s}
    for sent in curtailed:
        assert (
            sent.reason
            == f"curtail: economics: $100.00/MWh > break-even ${break_even[sent.group_id]:.2f}/MWh"
        )
    assert shell.plans[-1]["active_obligations"] == []

    # The AI tenants are untouched: never capped, in the plan or on the wire.
    assert shell.tenant_caps() and all(cap is None for _t, cap, _r in shell.tenant_caps())
    assert all(t["power_cap_kw"] is None for t in shell.plans[-1]["tenants"].values())

    # Five minutes at the high price, long past the minimum off-time: nothing comes back.
    modes = shell.modes()
    assert restores(shell.setpoints[before:], {}) == []

    # The price falls, but within the deadband below the least efficient groups' break-even: those
    # hold; the others return, staggered within the ramp.
    shell.price_usd_per_mwh = 68.0
    deadband = shell.config.economics.price_deadband_usd_per_mwh
    holding = {g for g in losing if break_even[g] - deadband <= 68.0}
    assert holding == {"c01", "c02"}
    fall_s = shell.now_s + 1.0
    restored_from = len(shell.setpoints)
    shell.run_for(120)
    restored = restores(shell.setpoints[restored_from:], modes)
    assert {s.group_id for s in restored} == losing - holding
    assert restored[0].setpoint.ts == fall_s
    assert all(s.reason.startswith("run: restored") for s in restored)
    check_staggered(shell, restored)
    for group_id in holding:
        reason = shell.plans[-1]["groups"][group_id]["reason"]
        assert (
            reason
            == f"curtail: economics: $68.00/MWh within the deadband below ${break_even[group_id]:.2f}/MWh"
        )

    # Below it: the last two return.
    modes = shell.modes()
    shell.price_usd_per_mwh = 50.0
    restored_from = len(shell.setpoints)
    shell.run_for(60)
    restored = restores(shell.setpoints[restored_from:], modes)
    assert {s.group_id for s in restored} == holding
    assert all(s.reason.startswith("run: restored") for s in restored)
    assert all(cap is None for _t, cap, _r in shell.tenant_caps())
    assert len(shell.tenant_caps()) == 2  # said once at start-up, never changed


def test_stale_meter_during_an_obligation_is_never_zero(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    shell.start()
    shell.run_for(10)
    event = GridEvent(id="limit-1", kind="limit", kw=9000.0, end=shell.now_s + 180.0)
    assert shell.grid_event(event).accepted
    shell.run_for(60)
    assert shell.plans[-1]["active_obligations"] == ["limit-1"]
    curtailed = {g for g, mode in shell.modes().items() if mode == "curtail"}
    assert len(curtailed) == 5

    # The meter goes silent: known for stale_after_s after its last read, then unknown (never 0 kW).
    shell.meter_live = False
    shell.step()
    unknown = "no load increase: site meter unknown"
    stale_after_s = shell.config.meter.stale_after_s
    assert stale_after_s == 1.0
    assert unknown not in shell.plans[-1]["reasons"]
    silent_from = len(shell.plans)
    shell.step()
    assert unknown in shell.plans[-1]["reasons"]
    assert shell.plans[-1]["flex"]["site_kw"] is None
    # A reduce event needs a baseline from the meter: refused, not computed from 0 kW.
    ack = shell.grid_event(GridEvent(id="reduce-1", kind="reduce", kw=1000.0, end=shell.now_s + 600.0))
    assert (ack.accepted, ack.code) == (False, "no_baseline")

    # The obligation ends while the meter is unknown: journaled, but nothing restored.
    modes = shell.modes()
    before = len(shell.setpoints)
    shell.run_for(event.end - shell.now_s + 90.0)
    ((ended_s, ended),) = shell.records("obligation_ended")
    assert (ended.data, ended.subject) == ({"id": "limit-1"}, "limit-1")
    assert event.end <= ended_s < event.end + 1.0
    assert restores(shell.setpoints[before:], modes) == []
    plan = shell.plans[-1]
    assert plan["active_obligations"] == []
    assert unknown in plan["reasons"]
    for group_id in curtailed:
        assert plan["groups"][group_id]["reason"] == "curtail: held, no restore while site meter unknown"
    assert all(unknown in p["reasons"] for p in shell.plans[silent_from:])

    # Reads resume: the plan proceeds at the next cycle.
    shell.meter_live = True
    resumed_s = shell.now_s + 1.0
    shell.run_for(60)
    assert unknown not in shell.plans[-1]["reasons"]
    restored = restores(shell.setpoints[before:], modes)
    assert {s.group_id for s in restored} == curtailed
    assert restored[0].setpoint.ts == resumed_s
    check_staggered(shell, restored)
