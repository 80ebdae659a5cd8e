"""Compressed-time soak: the control rules against the simulators' physics on a simulated clock.

What runs is real: the policy (`compute_plan`, `now` passed in), the grid-event book (`ObligationBook`:
validation, programs, expiry), the under-frequency trigger (`FrequencyTrigger`), the journal
(`Journal`, SQLite, setpoints committed before they are "sent"), and the simulated mining groups'
physics and command rules (`MiningGroup`: seq dedupe, armed trips, firmware ramps). What is modelled
here, in a few lines each, is the daemon's wiring (one cycle per simulated second, setpoints delivered
only while the broker and the controller are up, retained setpoints re-delivered on reconnect, a
group's reading unknown while it cannot report, trips entered into the memory as the daemon does),
the AI tenants' demand and the grid. It does NOT run the daemon process, MQTT or Modbus: the real-time
soak (tests/faults/test_soak.py, behind MULLET_SOAK_REAL_S) does.

Random, seeded: grid events (limits from every program, cancels, reduces, refused ones), frequency
dips (stage 1 and 2, some deep), price swings (economics on), broker outages (no delivery, no
telemetry) and controller dropouts (one group dark for a while; its miners keep their last command).

Invariants, checked on every simulated second and tallied:
- `obligation`: site import above an active obligation's limit (or the interconnect) for longer than
  `RESPONSE_S` (firmware sleep + two cycles), unless nothing could have met it then (a dark group
  still drawing rated kW and unreachable: tallied as `excused`);
- `firm_ai`: a tenant cap below its firm kW, or a tenant drawing less than min(demand, firm);
- `flapping`: a group commanded back to run within its min_off_s of a curtail (trips included), or
  more than MAX_SWITCHES_PER_HOUR mode switches in any hour;
- `journal`: the journal's last setpoint per group differs from the last one sent, a setpoint was sent
  that is not on disk, or the book rebuilt from the journal differs from the live one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
import tomllib
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from mullet.daemon.config import Config, parse_config
from mullet.daemon.core.obligation_book import Decision, ObligationBook
from mullet.daemon.records.journal import Journal
from mullet.daemon.site.simulated import group_spec
from mullet.drivers.protocol import GridEvent, GroupSetpoint
from mullet.policies.model import GroupMemory, Obligation, PolicyMemory, SiteSnapshot
from mullet.policies.plan import compute_plan
from mullet.policies.trigger import FrequencyTrigger, TriggerSettings, trip_hold
from mullet.simulators.mining import MiningGroup

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "site.example.toml"
T0_S = 1_767_225_600.0  # 2026-01-01 00:00 UTC
CYCLE_S = 1.0
RESPONSE_S = 5.0 + 2 * CYCLE_S + 1.0  # firmware sleep + two cycles + a tick of physics
MAX_SWITCHES_PER_HOUR = 20
TOL_KW = 1.0


def soak_config() -> Config:
    data = tomllib.loads(EXAMPLE.read_text())
    data["economics"].update(enabled=True)
    data["control"].update(release_after_s=30.0)
    return parse_config(data)


@dataclass
class Tallies:
    checks: Counter[str] = field(default_factory=Counter)  # invariant -> seconds checked
    violations: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)  # what happened
    examples: list[str] = field(default_factory=list)

    def violate(self, invariant: str, detail: str) -> None:
        self.violations[invariant] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{invariant}: {detail}")


class Soak:
    def __init__(self, config: Config, journal: Journal, seed: int) -> None:
        self.config = config
        self.site = config.site_spec()
        self.rng = random.Random(seed)
        self.journal = journal
        sim = config.simulator
        self.groups = {
            g.group_id: MiningGroup(
                group_spec(g), sleep_fraction=sim.sleep_fraction, curtail_s=5.0, resume_s=10.0
            )
            for g in config.groups
        }
        self.spec = {g.group_id: g for g in self.site.groups}
        self.book = ObligationBook.from_config(config)
        self.trigger = FrequencyTrigger(
            config.trip_stages(),
            TriggerSettings(
                confirm_samples=config.control.trip_confirm_samples,
                release_hz=config.control.release_hz,
                release_after_s=config.control.release_after_s,
            ),
        )
        self.memory = PolicyMemory()
        self.commanded: dict[str, GroupSetpoint] = {}
        self.armed: dict[str, int | None] = {}
        self.seq = 1000
        self.tallies = Tallies()
        # the world
        self.broker_up = True
        self.dark: dict[str, float] = {}  # group -> until (its controller is offline)
        self.last_seen: dict[str, float] = {}
        self.price = 40.0
        self.frequency_hz = 60.0
        self.dip_until = -math.inf
        self.demand = {t.tenant_id: t.reserved_kw * 0.9 for t in self.site.tenants}
        self.caps: dict[str, float | None] = {t.tenant_id: None for t in self.site.tenants}
        self.over_since: dict[str, float] = {}
        self.curtailed_at: dict[str, float] = {}
        self.switches: dict[str, deque[float]] = defaultdict(deque)
        self.sent_seqs: set[int] = set()
        self.event_n = 0

    # ---- the world -----------------------------------------------------------------------------

    def reachable(self, group_id: str, now: float) -> bool:
        return self.broker_up and self.dark.get(group_id, -math.inf) <= now

    def site_kw(self) -> float:
        ai_kw = sum(self.ai_kw(t) for t in self.demand)
        return self.config.site.base_load_kw + ai_kw + sum(g.power_kw for g in self.groups.values())

    def ai_kw(self, tenant_id: str) -> float:
        cap = self.caps[tenant_id]
        return self.demand[tenant_id] if cap is None else min(self.demand[tenant_id], cap)

    def perturb(self, now: float) -> None:
        rng, tallies = self.rng, self.tallies
        for tenant in self.site.tenants:  # AI demand wanders within its reservation
            step = rng.gauss(0, 0.01) * tenant.reserved_kw
            self.demand[tenant.tenant_id] = min(
                tenant.reserved_kw, max(0.3 * tenant.reserved_kw, self.demand[tenant.tenant_id] + step)
            )
        if rng.random() < 1 / 900:  # a price swing every ~15 min
            self.price = rng.choice([20.0, 45.0, 80.0, 110.0, 150.0, 400.0, -10.0])
            tallies.events["price_swing"] += 1
        if rng.random() < 1 / 1800:  # a grid event every ~30 min
            self.grid_event(now)
        if rng.random() < 1 / 3600 and now > self.dip_until + 300:  # a dip every ~hour
            depth = rng.choice([59.8, 59.8, 59.65])
            self.frequency_hz = depth
            self.dip_until = now + rng.uniform(5, 120)
            tallies.events[f"dip_{depth}"] += 1
        if now >= self.dip_until and self.frequency_hz < 60.0:
            self.frequency_hz = rng.choice([59.97, 60.0, 60.02])
        if self.broker_up and rng.random() < 1 / 2700:  # a broker restart every ~45 min
            self.broker_up = False
            self.broker_back = now + rng.uniform(1, 20)
            tallies.events["broker_restart"] += 1
        elif not self.broker_up and now >= self.broker_back:
            self.broker_up = True
            self.on_reconnect(now)
        if rng.random() < 1 / 1200:  # a controller drops out every ~20 min
            group_id = rng.choice(list(self.groups))
            self.dark[group_id] = now + rng.uniform(2, 300)
            tallies.events["controller_dropout"] += 1

    def grid_event(self, now: float) -> None:
        rng = self.rng
        active = [o for o in self.book.obligations.values() if not o.event_id.startswith("ufr-")]
        if active and rng.random() < 0.4:
            event = GridEvent(id=rng.choice(active).event_id, kind="cancel", source="soak")
        else:
            self.event_n += 1
            firm_floor_kw = (
                self.config.site.base_load_kw
                + self.config.site.safety_margin_kw
                + sum(t.reserved_kw + t.headroom_kw for t in self.site.tenants)
                + sum(g.sleep_kw for g in self.site.groups)
            )
            program = rng.choice(["ERS-10", "ERS-30", "ECRS", "Non-Spin", "generic", "4CP", "CLR"])
            kind = rng.choice(["limit", "limit", "limit", "reduce"])
            if kind == "limit":
                kw = rng.uniform(firm_floor_kw + 200, self.config.site.interconnect_kw)
            else:
                # Mostly within what running mining can give; a reduce beyond it is accepted and
                # unmeetable (the plan says infeasible), which the obligation check excuses.
                sheddable_kw = sum(g.power_kw - g.sleep_kw for g in self.groups.values())
                kw = rng.uniform(100, max(200.0, 1.2 * sheddable_kw))
            if rng.random() < 0.05:
                kw = rng.choice([-5.0, 1e9])  # refused: negative, absurd
            end = now + rng.uniform(600, 7200) if rng.random() < 0.7 else None
            event = GridEvent(id=f"soak-{self.event_n}", kind=kind, kw=kw, end=end, program=program)
        decision = self.book.decide(event, now_s=now, site_power_kw=self.site_kw())
        self.tallies.events[f"event_{decision.code}"] += 1
        if decision.accepted and not decision.duplicate:
            self.journal.record(
                "grid_event",
                {
                    "event": event.model_dump(),
                    "obligation": dataclasses.asdict(decision.obligation) if decision.obligation else None,
                    "cancels": decision.cancels,
                },
                subject=event.id,
            )
            self.book.apply(event, decision, now)

    def on_reconnect(self, now: float) -> None:
        """Retained setpoints reach every controller that is up (what a reconnect re-publishes)."""
        for group_id, setpoint in self.commanded.items():
            if self.reachable(group_id, now):
                self.groups[group_id].apply(setpoint)

    # ---- the daemon's cycle, modelled ------------------------------------------------------------

    def frequency_sample(self, now: float) -> None:
        verdict = self.trigger.observe(self.frequency_hz, now)
        if verdict.fire is not None:
            self.trip(verdict.fire, now)
        if verdict.released:
            for event_id in [e for e in self.book.obligations if e.startswith("ufr-")]:
                del self.book.obligations[event_id]
            self.tallies.events["trip_released"] += 1

    def trip(self, stage: int, now: float) -> None:
        self.seq += 1
        self.tallies.events[f"trip_stage_{stage}"] += 1
        tripped = [g for g, s in self.armed.items() if s is not None and s <= stage]
        for group_id in self.groups:
            if self.reachable(group_id, now):
                self.groups[group_id].trip(stage)  # the broadcast; each acts on its own arming
        groups = dict(self.memory.groups)
        for group_id in tripped:
            groups[group_id] = GroupMemory("curtail", None, now)
            self.note_mode(group_id, "curtail", now)
        self.memory = dataclasses.replace(self.memory, groups=groups)
        hold = trip_hold(self.seq, stage, self.site.interconnect_kw, now)
        self.book.obligations[hold.event_id] = hold

    async def cycle(self, now: float) -> None:
        for group_id in self.groups:
            if self.reachable(group_id, now):
                self.last_seen[group_id] = now
        self.book.expire(now)
        stale_s = self.config.control.telemetry_stale_after_s
        snapshot = SiteSnapshot(
            site_power_kw=self.site_kw() if self.broker_up or True else None,  # the meter is Modbus
            tenant_power_kw={t: (self.ai_kw(t) if self.broker_up else None) for t in self.demand},
            group_power_kw={
                g: (grp.power_kw if now - self.last_seen.get(g, -math.inf) <= stale_s else None)
                for g, grp in self.groups.items()
            },
            price_usd_per_mwh=self.price,
        )
        plan = compute_plan(self.site, snapshot, list(self.book.obligations.values()), now, self.memory)
        self.memory = plan.memory
        self.armed = {d.group_id: d.trip_stage for d in plan.decisions}
        for tenant_decision in plan.tenants:
            if self.broker_up:
                self.caps[tenant_decision.tenant_id] = tenant_decision.power_cap_kw
            tenant = next(t for t in self.site.tenants if t.tenant_id == tenant_decision.tenant_id)
            self.tallies.checks["firm_ai"] += 1
            cap = tenant_decision.power_cap_kw
            if cap is not None and cap < tenant.reserved_kw - tenant.flexible_kw - 1e-6:
                self.tallies.violate("firm_ai", f"{tenant.tenant_id} capped at {cap} at {now - T0_S:.0f} s")
            firm_kw = tenant.reserved_kw - tenant.flexible_kw
            if self.ai_kw(tenant.tenant_id) < min(self.demand[tenant.tenant_id], firm_kw) - 1e-6:
                self.tallies.violate("firm_ai", f"{tenant.tenant_id} below firm at {now - T0_S:.0f} s")
        if not self.broker_up:
            return  # nothing goes out; the memory is what the policy intends
        changed = []
        for decision in plan.decisions:
            previous = self.commanded.get(decision.group_id)
            wanted = (decision.mode, decision.power_kw, decision.trip_stage)
            if previous is None or (previous.mode, previous.power_kw, previous.trip_stage) != wanted:
                self.seq += 1
                changed.append(
                    (
                        decision,
                        GroupSetpoint(
                            seq=self.seq,
                            mode=decision.mode,
                            power_kw=decision.power_kw,
                            trip_stage=decision.trip_stage,
                            ts=now,
                        ),
                    )
                )
        if changed:
            await self.journal.durable_many(
                [
                    ("setpoint", {**sp.model_dump(exclude={"v"}), "reason": d.reason}, d.group_id)
                    for d, sp in changed
                ]
            )
        for decision, setpoint in changed:
            previous = self.commanded.get(decision.group_id)
            if previous is None or previous.mode != setpoint.mode:
                self.check_switch(decision.group_id, setpoint.mode, decision.reason, now)
            self.commanded[decision.group_id] = setpoint
            self.sent_seqs.add(setpoint.seq)
            if self.reachable(decision.group_id, now):
                self.groups[decision.group_id].apply(setpoint)
        self.tallies.events["setpoints"] += len(changed)

    def note_mode(self, group_id: str, mode: str, now: float) -> None:
        if mode == "curtail":
            self.curtailed_at[group_id] = now
        history = self.switches[group_id]
        history.append(now)
        while history and history[0] <= now - 3600:
            history.popleft()
        if len(history) > MAX_SWITCHES_PER_HOUR:
            self.tallies.violate(
                "flapping", f"{group_id}: {len(history)} switches in an hour at {now - T0_S:.0f} s"
            )

    def check_switch(self, group_id: str, mode: str, reason: str, now: float) -> None:
        self.tallies.checks["flapping"] += 1
        if mode == "run":
            since = self.curtailed_at.get(group_id)
            if since is not None and now - since < self.spec[group_id].min_off_s - 1e-6:
                self.tallies.violate(
                    "flapping", f"{group_id} back to run {now - since:.0f} s after a curtail"
                )
        self.note_mode(group_id, mode, now)

    # ---- invariants ----------------------------------------------------------------------------

    def check_obligations(self, now: float) -> None:
        site_kw = self.site_kw()
        limits = [(o.event_id, o.site_limit_kw()) for o in self.book.obligations.values() if o.active(now)]
        limits.append(("interconnect", self.site.interconnect_kw))
        # The least the site could draw now: every group it can reach asleep, the others as they are.
        floor_kw = (
            self.config.site.base_load_kw
            + sum(self.ai_kw(t) for t in self.demand)
            + sum(
                (self.spec[g].sleep_kw if self.reachable(g, now) else grp.power_kw)
                for g, grp in self.groups.items()
            )
        )
        for event_id, limit_kw in limits:
            self.tallies.checks["obligation"] += 1
            if site_kw <= limit_kw + TOL_KW:
                self.over_since.pop(event_id, None)
                continue
            since = self.over_since.setdefault(event_id, now)
            if floor_kw > limit_kw - self.config.site.safety_margin_kw:
                self.over_since[event_id] = now  # not meetable now: the clock starts once it is
                self.tallies.events["obligation_excused_s"] += 1
                continue
            self.tallies.events["over_within_response_s"] += 1
            if now - since > RESPONSE_S:
                self.tallies.violate(
                    "obligation", f"{site_kw:.0f} kW > {event_id} {limit_kw:.0f} kW for {now - since:.0f} s"
                )

    async def check_journal(self, now: float) -> None:
        """What a restarted daemon would recover equals what this one holds."""
        await self.journal.flush()
        self.tallies.checks["journal"] += 1
        on_disk = self.journal.last_setpoints()
        for group_id, setpoint in self.commanded.items():
            if on_disk.get(group_id, {}).get("seq") != setpoint.seq:
                self.tallies.violate(
                    "journal", f"{group_id}: sent {setpoint.seq}, on disk {on_disk.get(group_id)}"
                )
        journaled = {int(d["seq"]) for _w, _k, _s, d in self.journal.entries("setpoint")}
        if not self.sent_seqs <= journaled:
            self.tallies.violate("journal", f"{len(self.sent_seqs - journaled)} setpoints sent, not on disk")
        replay = ObligationBook(
            interconnect_kw=self.config.site.interconnect_kw,
            max_event_kw_factor=self.config.control.max_event_kw_factor,
            stages=self.book.stages,
            programs=self.config.program_catalogue(),
        )
        for wall_s, _k, _s, data in self.journal.entries("grid_event"):  # as recovery.replay_obligations
            obligation = Obligation(**data["obligation"]) if data.get("obligation") else None
            replay.apply(
                GridEvent.model_validate(data["event"]),
                Decision(True, "recovered", obligation=obligation, cancels=data.get("cancels")),
                wall_s,
            )
        replay.expire(now)
        self.book.expire(now)
        live = {k: v for k, v in self.book.obligations.items() if not k.startswith("ufr-")}
        if replay.obligations != live:
            self.tallies.violate(
                "journal", f"book from the journal {sorted(replay.obligations)} != live {sorted(live)}"
            )


async def run_soak(hours: float, seed: int, journal_path: Path) -> tuple[Tallies, float]:
    config = soak_config()
    journal = Journal(journal_path)
    writer = asyncio.create_task(journal.run())
    soak = Soak(config, journal, seed)
    started = time.perf_counter()
    steps = int(hours * 3600 / CYCLE_S)
    try:
        for step in range(steps):
            now = T0_S + step * CYCLE_S
            soak.perturb(now)
            soak.frequency_sample(now)
            await soak.cycle(now)
            for group in soak.groups.values():
                group.advance(CYCLE_S)
            soak.check_obligations(now + CYCLE_S)
            if step % 3600 == 3599:
                await soak.check_journal(now)
        await soak.check_journal(T0_S + steps * CYCLE_S)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        journal.close()
    soak.tallies.events["simulated_s"] = steps
    return soak.tallies, time.perf_counter() - started
