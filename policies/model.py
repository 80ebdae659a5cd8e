"""Typed inputs and outputs of the policy engine: plain frozen data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

GroupMode = Literal["run", "curtail"]
ObligationKind = Literal["limit", "reduce"]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    group_id: str
    rated_kw: float
    efficiency_j_per_th: float
    priority: int
    # Residual draw while asleep (fans, control boards): a curtailed group is not 0 kW.
    sleep_kw: float


@dataclass(frozen=True, slots=True)
class TenantSpec:
    tenant_id: str
    # Firm power the tenant may draw at any time (SLA); never curtailed.
    reserved_kw: float
    # Extra the site keeps free above the tenant's load so it can ramp without waiting for mining,
    # whose firmware needs seconds to shed (design.md section 6).
    headroom_kw: float


@dataclass(frozen=True, slots=True)
class SiteSpec:
    interconnect_kw: float
    safety_margin_kw: float
    base_load_kw: float
    groups: tuple[GroupSpec, ...]
    tenants: tuple[TenantSpec, ...]


@dataclass(frozen=True, slots=True)
class Obligation:
    """An accepted grid obligation. `limit`: site import <= kw. `reduce`: import <= baseline - kw."""

    event_id: str
    kind: ObligationKind
    kw: float
    start_s: float
    end_s: float | None
    baseline_kw: float | None = None
    program: str = "generic"

    def active(self, now: float) -> bool:
        return self.start_s <= now and (self.end_s is None or now < self.end_s)

    def site_limit_kw(self) -> float:
        if self.kind == "limit":
            return self.kw
        # A reduce obligation without a baseline cannot be honoured; the daemon refuses to accept
        # one, so this is the conservative answer should it ever reach the policy.
        if self.baseline_kw is None:
            return 0.0
        return max(0.0, self.baseline_kw - self.kw)


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    """What the daemon knows now. None means unknown (stale or unread), never zero."""

    site_power_kw: float | None
    tenant_power_kw: Mapping[str, float | None]
    # Modes commanded by the previous plan; groups absent here are assumed running.
    commanded_modes: Mapping[str, GroupMode] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroupDecision:
    group_id: str
    mode: GroupMode
    power_kw: float | None
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

    def modes(self) -> dict[str, GroupMode]:
        return {d.group_id: d.mode for d in self.decisions}

    def curtailed(self) -> tuple[str, ...]:
        return tuple(d.group_id for d in self.decisions if d.mode == "curtail")
