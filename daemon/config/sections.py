"""The site config's sections about the site itself: its devices (`[mqtt]`, `[meter]`, `[[pdus]]`,
`[[groups]]`, `[[tenants]]`), how it is controlled (`[control]`, `[economics]`) and the grid programs it
takes part in (`[[programs]]`). Every field is documented in docs/configuration.md."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mullet.daemon.config.fields import (
    MAX_OUTLETS_PER_GROUP,
    MAX_TRIP_STAGES,
    CredentialName,
    Ident,
    NonNegativeKw,
    Port,
    PositiveKw,
    PublicFile,
    SecretFile,
    Strict,
    TimeZoneName,
)
from mullet.drivers.device_profiles import ProfileError, load_meter_profile
from mullet.policies.scoring import BaselineMethod


class SiteSection(Strict):
    site_id: Ident
    interconnect_kw: PositiveKw
    safety_margin_kw: NonNegativeKw = 0.0
    base_load_kw: NonNegativeKw = 0.0
    # IANA name of the site's time zone: what reports label their time axes and days in (ERCOT's
    # settlement days are Central Prevailing Time: America/Chicago). Journals and exports stay in UTC.
    timezone: TimeZoneName = "UTC"


class MqttSection(Strict):
    url: str = "mqtt://127.0.0.1:1883"
    topic_root: str | None = None
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=1, le=3600)] = 10
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    # The daemon is one client of its own site broker: back within ~1.5 s of the broker (issue 8's
    # resync target is 2 s); controllers, hundreds of them, spread their reconnects wider.
    reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = 1.5
    # Authentication and TLS (docs/operations.md): the password from a file or a systemd credential,
    # never inline; TLS needs an mqtts:// url; a client certificate is optional.
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    password_file: SecretFile | None = None
    password_credential: CredentialName | None = None
    ca_file: PublicFile | None = None
    cert_file: PublicFile | None = None
    key_file: SecretFile | None = None

    @model_validator(mode="after")
    def _auth_and_tls(self) -> MqttSection:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("password_credential: set password_file or password_credential, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("key_file: cert_file and key_file go together")
        tls_keys = [k for k in ("ca_file", "cert_file") if getattr(self, k) is not None]
        if tls_keys and not self.url.startswith("mqtts://"):
            raise ValueError(f"{tls_keys[0]}: TLS settings need an mqtts:// url, got {self.url!r}")
        return self

    @field_validator("topic_root")
    @classmethod
    def _plain_topic(cls, root: str | None) -> str | None:
        if root is not None and (not root.strip("/") or any(c in root for c in "+#\0")):
            raise ValueError(f"must be a plain topic prefix without wildcards, got {root!r}")
        return root

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttSection:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s: must be >= reconnect_min_s ({self.reconnect_min_s:g}),"
                f" got {self.reconnect_max_s:g}"
            )
        return self

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        if not url.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"must start with mqtt:// or mqtts://, got {url!r}")
        if urlsplit(url).password is not None:  # never echo the url: it holds a password
            raise ValueError("a password in the url would sit in the config file; use password_file")
        return url


class MeterSection(Strict):
    host: str = "127.0.0.1"
    port: Port = 5020
    device_id: Annotated[int, Field(ge=0, le=247)] = 1
    profile: str = "eastron-sdm630"
    poll_hz: Annotated[float, Field(gt=0, le=100)] = 10.0
    timeout_s: Annotated[float, Field(gt=0, le=5)] = 0.2
    stale_after_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # How often this meter recomputes its frequency register, when measured on site to differ from
    # the profile's `frequency_refresh_s` (absent: the profile's).
    frequency_refresh_s: Annotated[float, Field(gt=0, le=10)] | None = None
    # A SunSpec profile only: the base address of the SunSpec map (absent: discovery tries 40000, 0,
    # 50000) and which meter model to use when the device has several (absent: the first of 201-204).
    sunspec_base: Annotated[int, Field(ge=0, le=65533)] | None = None
    sunspec_model: Literal[201, 202, 203, 204] | None = None

    @field_validator("profile")
    @classmethod
    def _profile_loads(cls, name: str) -> str:
        try:
            load_meter_profile(name)
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _sunspec_keys(self) -> MeterSection:
        if load_meter_profile(self.profile).sunspec is None:
            for key in ("sunspec_base", "sunspec_model"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: applies to a SunSpec profile only, not {self.profile!r}")
        return self


class PduSection(Strict):
    pdu_id: Ident
    host: str = "127.0.0.1"
    port: Port
    device_id: Annotated[int, Field(ge=0, le=247)] = 1
    profile: str = "netio-coils"
    outlets: Annotated[int, Field(ge=1, le=256)]
    # Driver timings (drivers/pdu/client.py): a small timeout and no retries on the real-time path.
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.2
    keepalive_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    stale_after_s: Annotated[float, Field(gt=0, le=600)] = 3.0

    @model_validator(mode="after")
    def _stale_after_keepalive(self) -> PduSection:
        if self.stale_after_s <= self.keepalive_s:
            raise ValueError(
                f"stale_after_s ({self.stale_after_s}) must exceed keepalive_s ({self.keepalive_s}),"
                " or every reading goes stale before the next one"
            )
        return self


class OutletRef(Strict):
    pdu: Ident
    outlet: Annotated[int, Field(ge=1, le=256)]


class GroupSection(Strict):
    group_id: Ident
    rated_kw: PositiveKw
    efficiency_j_per_th: PositiveKw
    priority: Annotated[int, Field(ge=0, le=1000)] = 100
    supports_power_target: bool = False
    # Lowest power target the firmware accepts (only with supports_power_target); default 30 % of rated.
    min_power_kw: NonNegativeKw | None = None
    sleep_kw: NonNegativeKw | None = None
    # Per-group overrides of [control] min_on_s / min_off_s.
    min_on_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    min_off_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    # Economics: curtail above this energy price; default derived from [economics] hashprice.
    break_even_usd_per_mwh: Annotated[float, Field(allow_inf_nan=False)] | None = None
    outlets: list[OutletRef] = Field(default_factory=list, max_length=MAX_OUTLETS_PER_GROUP)

    @model_validator(mode="after")
    def _below_rated(self) -> GroupSection:
        if self.sleep_kw is not None and self.sleep_kw >= self.rated_kw:
            raise ValueError(f"sleep_kw: must be < rated_kw ({self.rated_kw:g}), got {self.sleep_kw:g}")
        if self.min_power_kw is not None and self.min_power_kw > self.rated_kw:
            raise ValueError(
                f"min_power_kw: must be <= rated_kw ({self.rated_kw:g}), got {self.min_power_kw:g}"
            )
        return self


class TenantSection(Strict):
    tenant_id: Ident
    reserved_kw: PositiveKw
    headroom_kw: NonNegativeKw = 0.0
    # Contracted share of reserved_kw a grid emergency may cap (after all mining is shed).
    flexible_kw: NonNegativeKw = 0.0

    @model_validator(mode="after")
    def _flexible_within_reserved(self) -> TenantSection:
        if self.flexible_kw > self.reserved_kw:
            raise ValueError(
                f"flexible_kw: must be <= reserved_kw ({self.reserved_kw:g}), got {self.flexible_kw:g}"
            )
        return self


class TripStageSection(Strict):
    stage: Annotated[int, Field(ge=1, le=16)]
    threshold_hz: Annotated[float, Field(gt=40, lt=70)]
    shed_kw: PositiveKw
    hard_cut: bool = False


class ControlSection(Strict):
    period_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    telemetry_stale_after_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    max_event_kw_factor: Annotated[float, Field(ge=1, le=100)] = 2.0
    # Grid obligations held at once (pending or in force); a new event beyond it is refused
    # `too_many_obligations`, so no flood of distinct events can grow the book, plan or journal unbounded.
    max_obligations: Annotated[int, Field(ge=1, le=10_000)] = 100
    deadband_kw: NonNegativeKw = 50.0
    restore_ramp_kw_per_min: PositiveKw = 10_000.0
    restore_stagger_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    # The absorber (policies/plan_absorber.py), off by default: the import's ramp limit mining keeps it
    # within as far as it can, and the share of the mining rating held back to fill AI drops from.
    import_ramp_kw_per_min: PositiveKw | None = None
    import_ramp_kw_per_10s: PositiveKw | None = None
    swing_reserve_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    min_on_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    min_off_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    trip_stages: list[TripStageSection] = Field(default_factory=list, max_length=MAX_TRIP_STAGES)
    # Verification: a shed group must show power_kw <= sleep + fraction x (rated - sleep) within the
    # deadline, or its PDU outlets are cut (firmware sleep takes ~5 s: LuxOS, docs/agents.md).
    shed_deadline_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    shed_confirm_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    # Fast path: independent meter measurements in a row at or below a stage's threshold before it
    # fires (policies/trigger.py). A reading counts as a new measurement when its value changed
    # (`trip_confirm_on_change`) or it was read at least `trip_pickup_ms` after the last counted one
    # (absent: the meter's frequency refresh interval), so one bad refresh can never trip a stage.
    trip_confirm_samples: Annotated[int, Field(ge=1, le=20)] = 2
    trip_pickup_ms: Annotated[float, Field(ge=0, le=10_000)] | None = None
    trip_confirm_on_change: bool = True
    max_rocof_hz_per_s: Annotated[float, Field(gt=0, le=100)] = 5.0
    # A fired stage holds restores until the frequency is back at or above this for release_after_s.
    release_hz: Annotated[float, Field(gt=40, lt=70)] = 59.95
    release_after_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    # How long mining firmware takes to sleep (LuxOS: ~5 s). A program whose deadline is shorter is
    # met on the fast path (policies/programs.py).
    firmware_sleep_s: Annotated[float, Field(gt=0, le=600)] = 5.0

    @model_validator(mode="after")
    def _ramps_ordered(self) -> ControlSection:
        per_10s, per_min = self.import_ramp_kw_per_10s, self.import_ramp_kw_per_min
        if per_10s is not None and per_min is not None and per_10s > per_min:
            raise ValueError(
                f"import_ramp_kw_per_10s: must be <= import_ramp_kw_per_min ({per_min:g}), got {per_10s:g}"
            )
        return self

    @model_validator(mode="after")
    def _stages_ordered(self) -> ControlSection:
        stages = sorted(self.trip_stages, key=lambda s: s.stage)
        for stage in stages:
            if self.release_hz <= stage.threshold_hz:
                raise ValueError(
                    f"release_hz: must be above every trip threshold (stage {stage.stage} trips at"
                    f" {stage.threshold_hz:g} Hz), got {self.release_hz:g}"
                )
        for a, b in itertools.pairwise(stages):
            if a.stage == b.stage:
                raise ValueError(f"trip_stages: duplicate stage {a.stage}")
            if b.threshold_hz >= a.threshold_hz:
                raise ValueError(
                    f"trip_stages: stage {b.stage} must trip below stage {a.stage}'s"
                    f" {a.threshold_hz:g} Hz, got {b.threshold_hz:g} Hz"
                )
        return self


class EconomicsSection(Strict):
    enabled: bool = False
    # Mining revenue per TH/s per day; sets each group's break-even $/MWh from its J/TH.
    hashprice_usd_per_th_day: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    price_deadband_usd_per_mwh: NonNegativeKw = 5.0
    price_stale_after_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0


class ProgramSection(Strict):
    """A grid program added to the shipped catalogue, or replacing the entry of the same name."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    deadline_s: Annotated[float, Field(gt=0, le=86_400)]
    max_duration_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    sustain_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    recall: Literal["timer", "explicit"] = "timer"
    trigger_hz: Annotated[float, Field(gt=40, lt=70)] | None = None
    summary: Annotated[str, Field(max_length=200)] = ""
    # How `mulletd report` finds this program's baseline (docs/reports.md); unset: the program's rule
    # (ERS-10/ERS-30: middle_8_of_10, others: meter_before_event).
    baseline: BaselineMethod | None = None
