"""Typed inputs and outputs of the policy engine: plain frozen data, no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

GroupMode = Literal["run", "curtail"]
ObligationKind = Literal["limit", "reduce", "base_point"]

NEVER = float("-inf")  # "since" of a group no plan has switched yet: its min on/off times are satisfied


@dataclass(frozen=True, slots=True)
class GroupSpec:
    group_id: str
    rated_kw: float
    efficiency_j_per_th: float
    priority: int
    # Residual draw while asleep (fans, control boards): a curtailed group is not 0 kW.
    sleep_kw: float
    supports_power_target: bool = False
    # Lowest power target the firmware accepts; below it the group sleeps instead.
    min_power_kw: float = 0.0
    # Anti-flapping: a group stays on (off) at least this long after a switch, unless a limit forces it.
    min_on_s: float = 0.0
    min_off_s: float = 0.0
    # Economics: curtail when the energy price is above this. None: derived from the hashprice.
    break_even_usd_per_mwh: float | None = None


@dataclass(frozen=True, slots=True)
class TenantSpec:
    tenant_id: str
    # Power the tenant has contracted and may draw at any time (SLA).
    reserved_kw: float
    # Extra the site keeps free above the tenant's load so it can ramp without waiting for mining,
    # whose firmware needs seconds to shed (LuxOS ~5 s, docs/agents.md).
    headroom_kw: float
    # Part of reserved_kw the contract lets a grid emergency cap; reserved - flexible is firm.
    flexible_kw: float = 0.0

    @property
    def firm_kw(self) -> float:
        return self.reserved_kw - self.flexible_kw


@dataclass(frozen=True, slots=True)
class TripStage:
    """An under-frequency stage: groups armed at it shed `shed_kw` between them when it fires."""

    stage: int
    threshold_hz: float
    shed_kw: float
    # Cut the armed groups' PDU outlets too: for deadlines shorter than firmware sleep (seconds).
    hard_cut: bool = False


@dataclass(frozen=True, slots=True)
class PolicySettings:
    # Restore only when the plan still fits with this much to spare (hysteresis against flapping).
    deadband_kw: float = 0.0
    # Utilities commonly allow 10-30 MW/min of load ramp (docs/configuration.md): default the low end.
    restore_ramp_kw_per_min: float = 10_000.0
    # Restores are spread: at most restore_stagger_s / 60 of the minute's ramp in any such window.
    restore_stagger_s: float = 10.0
    economics_enabled: bool = False
    hashprice_usd_per_th_day: float | None = None
    price_deadband_usd_per_mwh: float = 0.0
    trip_stages: tuple[TripStage, ...] = ()
    # The absorber (policies/plan_absorber.py), off by default: the site import may move at most this
    # much in any 60 s / 10 s, as far as mining can make up an AI swing. None: no such limit.
    import_ramp_kw_per_min: float | None = None
    import_ramp_kw_per_10s: float | None = None
    # Share of the mining rating kept in partial targets or asleep so that an AI drop can be filled.
    swing_reserve_fraction: float = 0.0


@dataclass(frozen=True, slots=True)
class SiteSpec:
    interconnect_kw: float
    safety_margin_kw: float
    base_load_kw: float
    groups: tuple[GroupSpec, ...]
    tenants: tuple[TenantSpec, ...]
    settings: PolicySettings = PolicySettings()


@dataclass(frozen=True, slots=True)
class Obligation:
    """An accepted grid obligation. `limit`: site import <= kw. `reduce`: import <= baseline - kw.
    `base_point`: mining consumption follows kw up and down (an ERCOT SCED base point for a Controllable
    Load Resource); it sets the mining budget, not the site import, and a later one replaces it."""

    event_id: str
    kind: ObligationKind
    kw: float
    start_s: float
    end_s: float | None
    baseline_kw: float | None = None
    program: str = "generic"
    # Whether the program lets the site cap AI tenants' flexible shares once all mining is shed.
    allows_ai_flex: bool = False
    # The program's response deadline and how it is met (policies/programs.py), fixed at acceptance.
    deadline_s: float | None = None
    actuation: str = ""  # "fast_path" or "graceful"; "" for obligations older than the catalogue
    actuation_reason: str = ""
    # The program ends only on an explicit recall (ERCOT ERS): `end_s` is informational, never a timer.
    explicit_recall: bool = False

    def active(self, now: float) -> bool:
        if self.explicit_recall:
            return self.start_s <= now
        return self.start_s <= now and (self.end_s is None or now < self.end_s)

    def site_limit_kw(self) -> float:
        """The site import this obligation allows; `math.inf` for a base point, which limits mining
        (the policy's mining budget), not the import."""
        if self.kind == "base_point":
            return math.inf
        if self.kind == "limit":
            return self.kw
        # A reduce obligation without a baseline cannot be honoured; the daemon refuses to accept
        # one, so this is the conservative answer should it ever reach the policy.
        if self.baseline_kw is None:
            return 0.0
        return max(0.0, self.baseline_kw - self.kw)


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's hold on one group: `mode` until `until_s`, whatever the rules would decide."""

    group_id: str
    mode: GroupMode
    until_s: float
    note: str = ""

    def active(self, now: float) -> bool:
        return now < self.until_s


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """What the daemon knows now. None means unknown (stale or unread), never zero."""

    site_power_kw: float | None
    tenant_power_kw: Mapping[str, float | None]
    # Groups absent here are unknown too.
    group_power_kw: Mapping[str, float | None] = field(default_factory=dict)
    price_usd_per_mwh: float | None = None


@dataclass(frozen=True, slots=True)
class GroupMemory:
    mode: GroupMode
    power_kw: float | None
    since_s: float


@dataclass(frozen=True, slots=True)
class PolicyMemory:
    """What one plan hands the next: the commands in force, when they began, recent restores."""

    groups: Mapping[str, GroupMemory] = field(default_factory=dict)
    # (time, kW) of every load increase the plans commanded in the last minute: the ramp ledger.
    restores: tuple[tuple[float, float], ...] = ()
    # AI caps in force (kW by tenant): held while an obligation or an unknown reading lasts, then
    # lifted within the restore ramp like any other load increase.
    caps: Mapping[str, float] = field(default_factory=dict)
    # (time, kW): the site import the plans planned from that time on, for the import ramp: only what
    # can still be a window's highest or lowest (plan_absorber), so it stays small. () with the ramp off.
    imports: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class GroupDecision:
    group_id: str
    mode: GroupMode
    power_kw: float | None
    reason: str
    trip_stage: int | None = None


@dataclass(frozen=True, slots=True)
class TenantDecision:
    tenant_id: str
    power_cap_kw: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    computed_at_s: float
    site_limit_kw: float
    binding_constraint: str
    ai_allowance_kw: float
    mining_budget_kw: float
    mining_planned_kw: float
    feasible: bool
    active_obligations: tuple[str, ...]
    decisions: tuple[GroupDecision, ...]
    reasons: tuple[str, ...]
    tenants: tuple[TenantDecision, ...] = ()
    memory: PolicyMemory = PolicyMemory()
    # What mining could draw under the site's own limits, a base point aside (the QSE reports it as
    # the maximum power consumption); None for plans made before it was kept.
    mining_max_kw: float | None = None
    # The swing reserve this plan keeps (kW of mining held below what the budget allows, up to the
    # reserve's share) and the hashrate that costs; 0 with no reserve configured.
    swing_reserve_kw: float = 0.0
    swing_reserve_th_s: float = 0.0

    def modes(self) -> dict[str, GroupMode]:
        return {d.group_id: d.mode for d in self.decisions}

    def curtailed(self) -> tuple[str, ...]:
        return tuple(d.group_id for d in self.decisions if d.mode == "curtail")
