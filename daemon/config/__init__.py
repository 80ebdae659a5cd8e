"""Site configuration: one TOML file, validated up front so a bad key is named before anything runs.

Every field is documented in docs/configuration.md; keep the two in step. This module holds the whole
file's model (`Config`, with the checks across sections) and is where its users import from; the
parts live by job: field types and limits (`config_fields`), the site's sections (`config_sections`),
the services' sections (`config_services`), what is derived for the policy and the trip budgets
(`config_derived`), and reading files with `path: reason` errors (`config_loading`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from mullet.daemon.config.derived import (
    meter_frequency_refresh_s,
    policy_site,
    program_catalogue,
    trigger_settings,
    trip_budget_lines,
    trip_budgets,
    trip_stages,
)
from mullet.daemon.config.fields import (
    MAX_GROUPS,
    MAX_OUTLETS_PER_GROUP,
    MAX_PDUS,
    MAX_PROGRAMS,
    MAX_TENANTS,
    MAX_TRIP_STAGES,
    CredentialName,
    Ident,
    NonNegativeKw,
    Port,
    PositiveKw,
    PublicFile,
    SecretFile,
    Strict,
    unique,
)
from mullet.daemon.config.fourcp import FourCpSection
from mullet.daemon.config.loading import ConfigError, load_model, parse_model
from mullet.daemon.config.sections import (
    ControlSection,
    EconomicsSection,
    GroupSection,
    MeterSection,
    MqttSection,
    OutletRef,
    PduSection,
    ProgramSection,
    SiteSection,
    TenantSection,
    TripStageSection,
)
from mullet.daemon.config.services import (
    HaSection,
    HttpApiSection,
    JournalSection,
    ListenerLimits,
    MetricsSection,
    OpenAdrSection,
    QseSection,
    SimpleLevelSection,
    SimTenantSection,
    SimulatorSection,
)
from mullet.policies.model import SiteSpec, TripStage
from mullet.policies.programs import Program
from mullet.policies.trigger import StageBudget, TriggerSettings


class Config(Strict):
    site: SiteSection
    mqtt: MqttSection = MqttSection()
    meter: MeterSection = MeterSection()
    pdus: list[PduSection] = Field(default_factory=list, max_length=MAX_PDUS)
    groups: Annotated[list[GroupSection], Field(min_length=1, max_length=MAX_GROUPS)]
    tenants: list[TenantSection] = Field(default_factory=list, max_length=MAX_TENANTS)
    control: ControlSection = ControlSection()
    economics: EconomicsSection = EconomicsSection()
    fourcp: FourCpSection = FourCpSection()
    metrics: MetricsSection = MetricsSection()
    journal: JournalSection = JournalSection()
    simulator: SimulatorSection = SimulatorSection()
    programs: list[ProgramSection] = Field(default_factory=list, max_length=MAX_PROGRAMS)
    openadr: OpenAdrSection = OpenAdrSection()
    http_api: HttpApiSection = HttpApiSection()
    qse: QseSection = QseSection()
    ha: HaSection | None = None  # absent: one daemon, no lease, no epoch on the wire

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        unique("groups", "group_id", [g.group_id for g in self.groups])
        unique("tenants", "tenant_id", [t.tenant_id for t in self.tenants])
        unique("pdus", "pdu_id", [p.pdu_id for p in self.pdus])
        pdus = {p.pdu_id: p for p in self.pdus}
        for gi, group in enumerate(self.groups):
            for oi, ref in enumerate(group.outlets):
                where = f"groups[{gi}].outlets[{oi}]"
                if ref.pdu not in pdus:
                    raise ValueError(f"{where}.pdu: unknown pdu {ref.pdu!r}")
                if ref.outlet > pdus[ref.pdu].outlets:
                    raise ValueError(
                        f"{where}.outlet: pdu {ref.pdu!r} has {pdus[ref.pdu].outlets} outlets,"
                        f" got {ref.outlet}"
                    )
        unique("simulator.tenants", "tenant_id", [t.tenant_id for t in self.simulator.tenants])
        ramp_kw = self.control.restore_ramp_kw_per_min
        for index, group in enumerate(self.groups):
            sleep_kw = (
                group.sleep_kw
                if group.sleep_kw is not None
                else group.rated_kw * self.simulator.sleep_fraction
            )
            if not group.supports_power_target and group.rated_kw - sleep_kw > ramp_kw:
                raise ValueError(
                    f"control.restore_ramp_kw_per_min: groups[{index}] needs {group.rated_kw - sleep_kw:g}"
                    f" kW to restart, more than the ramp allows in a minute ({ramp_kw:g});"
                    " it would never restore"
                )
        if self.economics.enabled and self.economics.hashprice_usd_per_th_day is None:
            blind = [i for i, g in enumerate(self.groups) if g.break_even_usd_per_mwh is None]
            if blind:
                raise ValueError(
                    "economics.hashprice_usd_per_th_day: required when economics is enabled and a group"
                    f" has no break_even_usd_per_mwh (groups[{blind[0]}] has none)"
                )
        unique("programs", "name", [p.name.casefold() for p in self.programs])
        qse = self.qse
        if qse.fail_safe_limit_kw is not None and qse.fail_safe_limit_kw > self.site.interconnect_kw:
            raise ValueError(
                f"qse.fail_safe_limit_kw: {qse.fail_safe_limit_kw:g} kW is above the interconnect"
                f" ({self.site.interconnect_kw:g} kW): it would limit nothing"
            )
        tenant_ids = {t.tenant_id for t in self.tenants}
        for si, sim in enumerate(self.simulator.tenants):
            if sim.tenant_id not in tenant_ids:
                raise ValueError(f"simulator.tenants[{si}].tenant_id: unknown tenant {sim.tenant_id!r}")
        return self

    @property
    def topic_root(self) -> str:
        return self.mqtt.topic_root or f"mullet/{self.site.site_id}"

    def site_spec(self) -> SiteSpec:
        """The pure-policy view of the site (no I/O settings)."""
        return policy_site(
            self.site,
            self.groups,
            self.tenants,
            self.control,
            self.economics,
            sleep_fraction=self.simulator.sleep_fraction,
        )

    def program_catalogue(self) -> dict[str, Program]:
        return program_catalogue(self.programs)

    def meter_frequency_refresh_s(self) -> float:
        return meter_frequency_refresh_s(self.meter)

    def trigger_settings(self) -> TriggerSettings:
        return trigger_settings(self.control, self.meter)

    def stage_budgets(self) -> list[StageBudget]:
        return trip_budgets(self.control, self.meter, self.programs)

    def stage_budget_lines(self) -> list[tuple[bool, str]]:
        return trip_budget_lines(self.control, self.meter, self.programs)

    def trip_stages(self) -> tuple[TripStage, ...]:
        return trip_stages(self.control)

    def summary(self) -> str:
        mining_kw = sum(g.rated_kw for g in self.groups)
        ai_kw = sum(t.reserved_kw for t in self.tenants)
        return (
            f"site {self.site.site_id}: interconnect {self.site.interconnect_kw:g} kW, "
            f"{len(self.groups)} mining groups ({mining_kw:g} kW rated), "
            f"{len(self.tenants)} AI tenants ({ai_kw:g} kW reserved), {len(self.pdus)} PDUs, "
            f"meter {self.meter.profile} at {self.meter.host}:{self.meter.port}, broker {self.mqtt.url}"
            + self._qse_summary()
        )

    def _qse_summary(self) -> str:
        if not self.qse.enabled:
            return ""
        access = "read-write" if self.qse.allow_writes else "read-only"
        return f", QSE link on {self.qse.host}:{self.qse.port} ({access})"


def parse_config(data: dict[str, Any]) -> Config:
    return parse_model(Config, data)


def load_config(path: str | Path) -> Config:
    return load_model(Config, path)


__all__ = [
    "MAX_GROUPS",
    "MAX_OUTLETS_PER_GROUP",
    "MAX_PDUS",
    "MAX_PROGRAMS",
    "MAX_TENANTS",
    "MAX_TRIP_STAGES",
    "Config",
    "ConfigError",
    "ControlSection",
    "CredentialName",
    "EconomicsSection",
    "GroupSection",
    "HaSection",
    "HttpApiSection",
    "Ident",
    "JournalSection",
    "ListenerLimits",
    "MeterSection",
    "MetricsSection",
    "MqttSection",
    "NonNegativeKw",
    "OpenAdrSection",
    "OutletRef",
    "PduSection",
    "Port",
    "PositiveKw",
    "ProgramSection",
    "PublicFile",
    "QseSection",
    "SecretFile",
    "SimTenantSection",
    "SimpleLevelSection",
    "SimulatorSection",
    "SiteSection",
    "TenantSection",
    "TripStageSection",
    "load_config",
    "load_model",
    "parse_config",
    "parse_model",
]
