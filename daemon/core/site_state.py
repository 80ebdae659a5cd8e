"""Latest readings with their monotonic arrival times; anything older than its limit is unknown."""

from __future__ import annotations

from dataclasses import dataclass, field

from mullet.drivers.meter import MeterSample
from mullet.drivers.protocol import GroupState, TenantState
from mullet.policies.model import SiteSnapshot


@dataclass
class SiteState:
    meter_stale_after_s: float
    telemetry_stale_after_s: float
    price_stale_after_s: float = 900.0
    meter: MeterSample | None = None
    groups: dict[str, tuple[GroupState, float]] = field(default_factory=dict)
    tenants: dict[str, tuple[TenantState, float]] = field(default_factory=dict)
    groups_online: dict[str, bool] = field(default_factory=dict)
    tenants_online: dict[str, bool] = field(default_factory=dict)
    price: tuple[float, float] | None = None  # ($/MWh, monotonic arrival)

    def site_power_kw(self, now_s: float) -> float | None:
        if self.meter is None or now_s - self.meter.monotonic_s > self.meter_stale_after_s:
            return None
        return self.meter.power_kw

    def tenant_power_kw(self, tenant_id: str, now_s: float) -> float | None:
        entry = self.tenants.get(tenant_id)
        if entry is None or now_s - entry[1] > self.telemetry_stale_after_s:
            return None
        if not self.tenants_online.get(tenant_id, True):
            return None
        return entry[0].power_kw

    def group_power_kw(self, group_id: str, now_s: float) -> float | None:
        entry = self.groups.get(group_id)
        if entry is None or now_s - entry[1] > self.telemetry_stale_after_s:
            return None
        if not self.groups_online.get(group_id, True):
            return None
        return entry[0].power_kw

    def price_usd_per_mwh(self, now_s: float) -> float | None:
        if self.price is None or now_s - self.price[1] > self.price_stale_after_s:
            return None
        return self.price[0]

    def snapshot(self, tenant_ids: list[str], group_ids: list[str], now_s: float) -> SiteSnapshot:
        return SiteSnapshot(
            site_power_kw=self.site_power_kw(now_s),
            tenant_power_kw={t: self.tenant_power_kw(t, now_s) for t in tenant_ids},
            group_power_kw={g: self.group_power_kw(g, now_s) for g in group_ids},
            price_usd_per_mwh=self.price_usd_per_mwh(now_s),
        )
