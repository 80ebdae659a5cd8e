"""The replayed site's physics: mining groups (the simulators' `MiningGroup`: linear ramps, sleep
draw, PDU cuts), AI tenants drawing min(demand, cap) at once (GPU caps act in ~0.1 s), a constant
base load, and the scripted grid frequency. Pure and clock-free: the engine says how far to advance."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from mullet.daemon.config import Config
from mullet.daemon.replay.scenario import NOMINAL_HZ, PhysicsSection
from mullet.simulators.ai import DEFAULT_DEMAND_FRACTION
from mullet.simulators.mining import MiningGroup, SimGroupSpec

_EPS_KW = 1e-6


@dataclass
class Tenant:
    tenant_id: str
    firm_kw: float  # reserved minus the contracted flexible share: never capped below this
    demand_kw: float
    cap_kw: float | None = None
    violation_s: float = 0.0
    violations: int = 0
    _violating: bool = False

    @property
    def power_kw(self) -> float:
        return self.demand_kw if self.cap_kw is None else min(self.demand_kw, self.cap_kw)

    def check_sla(self, dt_s: float) -> None:
        """Firm power denied: capped below what it asks for, up to its firm kW."""
        violating = self.power_kw < min(self.demand_kw, self.firm_kw) - _EPS_KW
        if violating:
            self.violation_s += dt_s
            if not self._violating:
                self.violations += 1
        self._violating = violating


@dataclass(frozen=True, slots=True)
class Step:
    """Mean powers over one step (TH/s for hashing)."""

    site_kw: float
    ai_kw: float
    mining_kw: float
    curtailed_kw: float
    hashing_ths: float


class SitePhysics:
    def __init__(self, config: Config, physics: PhysicsSection) -> None:
        sim = config.simulator
        sleep_fraction = physics.sleep_fraction if physics.sleep_fraction is not None else sim.sleep_fraction
        self.groups: dict[str, MiningGroup] = {}
        # Hashing TH/s per kW above the sleep draw: rated kW hashes rated kW x 1000 / (J/TH); asleep
        # (fans and control boards) it hashes nothing.
        self.hash_ths_per_kw: dict[str, float] = {}
        for g in config.groups:
            group = MiningGroup(
                SimGroupSpec(
                    g.group_id,
                    g.rated_kw,
                    g.efficiency_j_per_th,
                    supports_power_target=g.supports_power_target,
                    sleep_kw=g.sleep_kw,
                    outlets=tuple((o.pdu, o.outlet) for o in g.outlets),
                ),
                sleep_fraction=sleep_fraction,
                curtail_s=physics.curtail_s or sim.curtail_s,
                resume_s=physics.resume_s or sim.resume_s,
            )
            self.groups[g.group_id] = group
            span_kw = max(group.rated_kw - group.sleep_kw, _EPS_KW)
            self.hash_ths_per_kw[g.group_id] = group.rated_kw * 1000.0 / g.efficiency_j_per_th / span_kw
        # Per group: TH x h below its rated hashrate (asleep, partial, ramping, cut), the absorber's cost.
        self.given_up_thh: dict[str, float] = dict.fromkeys(self.groups, 0.0)
        self.tenants = {
            t.tenant_id: Tenant(
                t.tenant_id, t.reserved_kw - t.flexible_kw, t.reserved_kw * DEFAULT_DEMAND_FRACTION
            )
            for t in config.tenants
        }
        self.base_kw = config.site.base_load_kw

    def advance(self, dt_s: float) -> Step:
        """Everything `dt_s` on; the step's means (ramps are linear: the trapezoid of its ends)."""
        mining0, curtailed0, hashing0 = self.mining()
        before_kw = [group.power_kw for group in self.groups.values()]
        for group in self.groups.values():
            group.advance(dt_s)
        mining1, curtailed1, hashing1 = self.mining()
        self._give_up(before_kw, dt_s)
        ai_kw = self.ai_kw()
        for tenant in self.tenants.values():
            tenant.check_sla(dt_s)
        mining_kw = (mining0 + mining1) / 2.0
        return Step(
            self.base_kw + ai_kw + mining_kw,
            ai_kw,
            mining_kw,
            (curtailed0 + curtailed1) / 2.0,
            (hashing0 + hashing1) / 2.0,
        )

    def _give_up(self, before_kw: list[float], dt_s: float) -> None:
        """Each group's hashrate below rated over the step: hashing is linear in power above the sleep
        draw, so the trapezoid of the step's ends (as the ledger's revenue)."""
        rate, given_up = self.hash_ths_per_kw, self.given_up_thh
        h_per_s = dt_s / 3600.0
        for (group_id, group), p0_kw in zip(self.groups.items(), before_kw, strict=True):
            p1_kw = group.power_kw
            if p0_kw == p1_kw == group.rated_kw:
                continue
            sleep_kw, per_kw = group.sleep_kw, rate[group_id]
            rated_ths = (group.rated_kw - sleep_kw) * per_kw
            h0 = max(0.0, p0_kw - sleep_kw) * per_kw
            h1 = max(0.0, p1_kw - sleep_kw) * per_kw
            given_up[group_id] += (rated_ths - (h0 + h1) / 2.0) * h_per_s

    def mining(self) -> tuple[float, float, float]:
        """(mining kW, curtailed kW, hashing TH/s) now."""
        mining_kw = curtailed_kw = hashing_ths = 0.0
        rate = self.hash_ths_per_kw
        for group_id, group in self.groups.items():
            power_kw = group.power_kw
            mining_kw += power_kw
            curtailed_kw += group.rated_kw - power_kw
            if power_kw > group.sleep_kw:
                hashing_ths += (power_kw - group.sleep_kw) * rate[group_id]
        return mining_kw, curtailed_kw, hashing_ths

    def ai_kw(self) -> float:
        return sum(t.power_kw for t in self.tenants.values())

    def site_kw(self) -> float:
        return self.base_kw + sum(g.power_kw for g in self.groups.values()) + self.ai_kw()

    def settled(self) -> bool:
        return all(g.mode != "ramping" for g in self.groups.values())


class FrequencyScript:
    """(Unix s, Hz) points, linear in between, nominal outside them."""

    def __init__(self, points: tuple[tuple[float, float], ...]) -> None:
        self.points = points
        self.times = [t for t, _hz in points]

    def hz_at(self, t_s: float) -> float:
        points = self.points
        if not points or t_s < points[0][0] or t_s > points[-1][0]:
            return NOMINAL_HZ
        hi = min(bisect.bisect_right(self.times, t_s), len(points) - 1)  # >= 1: t_s >= the first time
        (t0, f0), (t1, f1) = points[hi - 1], points[hi]
        if t_s >= t1:
            return f1
        return f0 + (f1 - f0) * (t_s - t0) / (t1 - t0)

    def excursion(self, t_s: float, poll_s: float) -> bool:
        """Whether the meter must be read at its poll rate: the frequency is, or is about to be, below
        nominal."""
        points = self.points
        if not points or t_s < points[0][0] or t_s >= points[-1][0]:
            return False
        return self.hz_at(t_s) < NOMINAL_HZ - 1e-9 or self.hz_at(t_s + poll_s) < NOMINAL_HZ - 1e-9
