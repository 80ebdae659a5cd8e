"""Site configuration: one TOML file, validated up front so a bad key is named before anything runs.

Every field is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mullet.daemon.secrets import SecretError, check_secret_file
from mullet.drivers.device_profiles import ProfileError, load_meter_profile
from mullet.policies.model import GroupSpec, PolicySettings, SiteSpec, TenantSpec, TripStage
from mullet.policies.programs import Program, catalogue_with
from mullet.policies.trigger import StageBudget, TriggerSettings, stage_budgets

PositiveKw = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeKw = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=0, le=65535)]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


def _secret_file(path: str) -> str:
    try:
        check_secret_file(path)
    except SecretError as exc:
        raise ValueError(str(exc)) from None
    return path


def _public_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"no such file {path!r}")
    return path


# A file holding a secret: must exist and be unreadable by others (daemon/secrets.py).
SecretFile = Annotated[str, AfterValidator(_secret_file)]
PublicFile = Annotated[str, AfterValidator(_public_file)]
# The name of a systemd credential (a file in $CREDENTIALS_DIRECTORY); resolved at start-up.
CredentialName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")]


class _Strict(BaseModel):
    # Unknown keys are errors in config (unlike on the wire): a typo must not silently fall back.
    model_config = ConfigDict(extra="forbid", frozen=True)


# Site-size limits (docs/configuration.md): the largest site designed for is 600 groups (~57,000
# ASICs, 200 MW) with 30 tenants and 50 PDUs; bench/policy_bench.py plans 6,000 groups in ~12 ms p50.
# Beyond these a config is a mistake (a generator gone wrong), not a site: check-config says so rather
# than the daemon starting and never becoming ready.
MAX_GROUPS = 2_000
MAX_TENANTS = 200
MAX_PDUS = 256  # two connections each (daemon/fds.py)
MAX_OUTLETS_PER_GROUP = 64
MAX_TRIP_STAGES = 16
MAX_PROGRAMS = 64


class ListenerLimits(_Strict):
    """Connection limits of an HTTP listener (daemon/http_guard.py): beyond `max_connections` a new
    connection is closed at once; a request's headers must arrive within `header_timeout_s` of its
    first byte (or of the connection opening), its body within `body_timeout_s`; an idle keep-alive
    connection is closed after `idle_timeout_s`."""

    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class SiteSection(_Strict):
    site_id: Ident
    interconnect_kw: PositiveKw
    safety_margin_kw: NonNegativeKw = 0.0
    base_load_kw: NonNegativeKw = 0.0


class MqttSection(_Strict):
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


class MeterSection(_Strict):
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

    @field_validator("profile")
    @classmethod
    def _profile_loads(cls, name: str) -> str:
        try:
            load_meter_profile(name)
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        return name


class PduSection(_Strict):
    pdu_id: Ident
    host: str = "127.0.0.1"
    port: Port
    device_id: Annotated[int, Field(ge=0, le=247)] = 1
    profile: str = "netio-coils"
    outlets: Annotated[int, Field(ge=1, le=256)]
    # Driver timings (drivers/pdu.py): a small timeout and no retries on the real-time path.
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


class OutletRef(_Strict):
    pdu: Ident
    outlet: Annotated[int, Field(ge=1, le=256)]


class GroupSection(_Strict):
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
    outlets: Annotated[list[OutletRef], Field(max_length=MAX_OUTLETS_PER_GROUP)] = []

    @model_validator(mode="after")
    def _below_rated(self) -> GroupSection:
        if self.sleep_kw is not None and self.sleep_kw >= self.rated_kw:
            raise ValueError(f"sleep_kw: must be < rated_kw ({self.rated_kw:g}), got {self.sleep_kw:g}")
        if self.min_power_kw is not None and self.min_power_kw > self.rated_kw:
            raise ValueError(
                f"min_power_kw: must be <= rated_kw ({self.rated_kw:g}), got {self.min_power_kw:g}"
            )
        return self


class TenantSection(_Strict):
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


class TripStageSection(_Strict):
    stage: Annotated[int, Field(ge=1, le=16)]
    threshold_hz: Annotated[float, Field(gt=40, lt=70)]
    shed_kw: PositiveKw
    hard_cut: bool = False


class ControlSection(_Strict):
    period_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    telemetry_stale_after_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    max_event_kw_factor: Annotated[float, Field(ge=1, le=100)] = 2.0
    # Grid obligations held at once (pending or in force); a new event beyond it is refused
    # `too_many_obligations`, so no flood of distinct events can grow the book, plan or journal unbounded.
    max_obligations: Annotated[int, Field(ge=1, le=10_000)] = 100
    deadband_kw: NonNegativeKw = 50.0
    restore_ramp_kw_per_min: PositiveKw = 10_000.0
    restore_stagger_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    min_on_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    min_off_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    trip_stages: Annotated[list[TripStageSection], Field(max_length=MAX_TRIP_STAGES)] = []
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


class EconomicsSection(_Strict):
    enabled: bool = False
    # Mining revenue per TH/s per day; sets each group's break-even $/MWh from its J/TH.
    hashprice_usd_per_th_day: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    price_deadband_usd_per_mwh: NonNegativeKw = 5.0
    price_stale_after_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0


def _unique_ints(section: str, key: str, values: list[int]) -> None:
    if len(set(values)) != len(values):
        duplicate = next(v for v in values if values.count(v) > 1)
        raise ValueError(f"{section}: duplicate {key} {duplicate}")


class ProgramSection(_Strict):
    """A grid program added to the shipped catalogue, or replacing the entry of the same name."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    deadline_s: Annotated[float, Field(gt=0, le=86_400)]
    max_duration_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    sustain_s: Annotated[float, Field(gt=0, le=7 * 86_400)] | None = None
    recall: Literal["timer", "explicit"] = "timer"
    trigger_hz: Annotated[float, Field(gt=40, lt=70)] | None = None
    summary: Annotated[str, Field(max_length=200)] = ""


class SimpleLevelSection(_Strict):
    """What an OpenADR SIMPLE signal level means at this site."""

    level: Annotated[int, Field(ge=1, le=3)]
    kind: Literal["limit", "reduce"]
    kw: NonNegativeKw


class OpenAdrSection(_Strict):
    enabled: bool = False
    vtn_url: str = "http://127.0.0.1:8080/OpenADR2/Simple/2.0b"
    ven_name: Annotated[str, Field(min_length=1, max_length=128)] = "mullet"
    # Leave unset to take the venID the VTN assigns at registration.
    ven_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    # Seconds between polls; unset = what the VTN requests. Event latency is about one poll.
    poll_s: Annotated[float, Field(ge=1, le=86_400)] | None = None
    # TELEMETRY_USAGE (site power, kW) offered at this sampling interval; whole seconds.
    report_interval_s: Annotated[int, Field(ge=1, le=3600)] = 60
    resource_id: Annotated[str, Field(min_length=1, max_length=128)] = "site"
    default_program: Annotated[str, Field(min_length=1, max_length=64)] = "generic"
    # Event market context (program URI) -> program name in the catalogue.
    market_contexts: dict[str, Annotated[str, Field(min_length=1, max_length=64)]] = {}
    simple_levels: list[SimpleLevelSection] = []
    # How long the VEN's event handler waits for the daemon to journal an event before opting out.
    response_timeout_s: Annotated[float, Field(gt=0, le=30)] = 5.0

    @field_validator("vtn_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {url!r}")
        return url

    @model_validator(mode="after")
    def _levels_unique(self) -> OpenAdrSection:
        _unique_ints("simple_levels", "level", [level.level for level in self.simple_levels])
        return self


class HttpApiSection(ListenerLimits):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 9110
    # Write endpoints need `Authorization: Bearer <token>`; without a token source they are refused.
    token_file: SecretFile | None = None
    token_credential: CredentialName | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            raise ValueError("token: an inline token would sit in the config file; use token_file")
        return data

    @model_validator(mode="after")
    def _one_token_source(self) -> HttpApiSection:
        if self.token_file is not None and self.token_credential is not None:
            raise ValueError("token_credential: set token_file or token_credential, not both")
        return self


class MetricsSection(ListenerLimits):
    host: str = "127.0.0.1"
    port: Port = 9108
    # A scraper or two: a smaller cap than the API's.
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 16


class JournalSection(_Strict):
    path: str = "mullet-journal.sqlite"
    # Entries older than this are deleted (except those recovery replays); None keeps everything.
    # At least a day: a report needs the baseline intervals before an event's notice.
    retention_days: Annotated[float, Field(ge=1, le=36_500)] | None = 400.0
    # Entries waiting for the writer; beyond it `record()` drops and counts (never blocks).
    queue_size: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    # The site meter's power is journaled at most this often, for compliance reports.
    site_power_every_s: Annotated[float, Field(gt=0, le=900)] = 1.0


class SimTenantSection(_Strict):
    tenant_id: Ident
    demand_trace_kw: Annotated[list[NonNegativeKw], Field(min_length=1)]
    trace_step_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0


class SimulatorSection(_Strict):
    tick_hz: Annotated[float, Field(gt=0, le=100)] = 10.0
    curtail_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    resume_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    sleep_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.02
    telemetry_period_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    frequency_hz: Annotated[float, Field(gt=40, lt=70)] = 60.0
    # (seconds since start, Hz) steps; the meter holds each value until the next step.
    frequency_script: list[tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(gt=40, lt=70)]]] = []
    tenants: list[SimTenantSection] = []
    # With a broker ACL (deploy/mosquitto/acl): each simulated controller logs in as its own identity,
    # `mining/<group_id>` or `ai/<tenant_id>`, with this password; unset = [mqtt]'s credentials.
    mqtt_password_file: SecretFile | None = None


def _etcd_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


class HaSection(_Strict):
    """Active/standby at one site (docs/fleet.md section 6): two daemons, a leader lease in etcd."""

    # etcd client endpoints, "host:port", tried in turn (etcd's v3 gRPC API, etcd >= 3.4).
    etcd_endpoints: Annotated[
        list[Annotated[str, AfterValidator(_etcd_endpoint)]], Field(min_length=1, max_length=16)
    ]
    # The site's election key; both daemons of a site name the same one. Default /mullet/<site_id>/leader.
    election_key: Annotated[str, Field(min_length=2, max_length=256, pattern=r"^/[^\s]*$")] | None = None
    node_id: Ident  # this daemon's name in the pair; must differ between the two
    lease_ttl_s: Annotated[int, Field(ge=1, le=60)] = 2


class Config(_Strict):
    site: SiteSection
    mqtt: MqttSection = MqttSection()
    meter: MeterSection = MeterSection()
    pdus: Annotated[list[PduSection], Field(max_length=MAX_PDUS)] = []
    groups: Annotated[list[GroupSection], Field(min_length=1, max_length=MAX_GROUPS)]
    tenants: Annotated[list[TenantSection], Field(max_length=MAX_TENANTS)] = []
    control: ControlSection = ControlSection()
    economics: EconomicsSection = EconomicsSection()
    metrics: MetricsSection = MetricsSection()
    journal: JournalSection = JournalSection()
    simulator: SimulatorSection = SimulatorSection()
    programs: Annotated[list[ProgramSection], Field(max_length=MAX_PROGRAMS)] = []
    openadr: OpenAdrSection = OpenAdrSection()
    http_api: HttpApiSection = HttpApiSection()
    ha: HaSection | None = None  # absent: one daemon, no lease, no epoch on the wire

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        _unique("groups", "group_id", [g.group_id for g in self.groups])
        _unique("tenants", "tenant_id", [t.tenant_id for t in self.tenants])
        _unique("pdus", "pdu_id", [p.pdu_id for p in self.pdus])
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
        _unique("simulator.tenants", "tenant_id", [t.tenant_id for t in self.simulator.tenants])
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
        _unique("programs", "name", [p.name.casefold() for p in self.programs])
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
        control = self.control
        sleep_fraction = self.simulator.sleep_fraction
        return SiteSpec(
            interconnect_kw=self.site.interconnect_kw,
            safety_margin_kw=self.site.safety_margin_kw,
            base_load_kw=self.site.base_load_kw,
            groups=tuple(
                GroupSpec(
                    group_id=g.group_id,
                    rated_kw=g.rated_kw,
                    efficiency_j_per_th=g.efficiency_j_per_th,
                    priority=g.priority,
                    sleep_kw=g.sleep_kw if g.sleep_kw is not None else g.rated_kw * sleep_fraction,
                    supports_power_target=g.supports_power_target,
                    min_power_kw=g.min_power_kw if g.min_power_kw is not None else g.rated_kw * 0.3,
                    min_on_s=g.min_on_s if g.min_on_s is not None else control.min_on_s,
                    min_off_s=g.min_off_s if g.min_off_s is not None else control.min_off_s,
                    break_even_usd_per_mwh=g.break_even_usd_per_mwh,
                )
                for g in self.groups
            ),
            tenants=tuple(
                TenantSpec(
                    tenant_id=t.tenant_id,
                    reserved_kw=t.reserved_kw,
                    headroom_kw=t.headroom_kw,
                    flexible_kw=t.flexible_kw,
                )
                for t in self.tenants
            ),
            settings=PolicySettings(
                deadband_kw=control.deadband_kw,
                restore_ramp_kw_per_min=control.restore_ramp_kw_per_min,
                restore_stagger_s=control.restore_stagger_s,
                economics_enabled=self.economics.enabled,
                hashprice_usd_per_th_day=self.economics.hashprice_usd_per_th_day,
                price_deadband_usd_per_mwh=self.economics.price_deadband_usd_per_mwh,
                trip_stages=self.trip_stages(),
            ),
        )

    def program_catalogue(self) -> dict[str, Program]:
        """The shipped programs with this site's `[[programs]]` added or replacing them by name."""
        return catalogue_with(
            Program(
                name=p.name,
                deadline_s=p.deadline_s,
                max_duration_s=p.max_duration_s,
                sustain_s=p.sustain_s,
                recall=p.recall,
                trigger_hz=p.trigger_hz,
                summary=p.summary,
            )
            for p in self.programs
        )

    def meter_frequency_refresh_s(self) -> float:
        """The meter's frequency refresh interval: measured on site (config) or the profile's."""
        if self.meter.frequency_refresh_s is not None:
            return self.meter.frequency_refresh_s
        return load_meter_profile(self.meter.profile).frequency_refresh_s

    def trigger_settings(self) -> TriggerSettings:
        control = self.control
        pickup_ms = control.trip_pickup_ms
        return TriggerSettings(
            confirm_samples=control.trip_confirm_samples,
            pickup_s=self.meter_frequency_refresh_s() if pickup_ms is None else pickup_ms / 1000.0,
            confirm_on_change=control.trip_confirm_on_change,
            max_rocof_hz_per_s=control.max_rocof_hz_per_s,
            release_hz=control.release_hz,
            release_after_s=control.release_after_s,
        )

    def stage_budgets(self) -> list[StageBudget]:
        """Each armed stage's worst time from a sustained crossing to its trip, against the deadline
        of the frequency-triggered program at its threshold (the meter's timeout bounds a read)."""
        deadlines = {
            p.trigger_hz: (p.name, p.deadline_s)
            for p in self.program_catalogue().values()
            if p.trigger_hz is not None
        }
        return stage_budgets(
            self.trip_stages(),
            deadlines,
            self.trigger_settings(),
            refresh_s=self.meter_frequency_refresh_s(),
            poll_period_s=1.0 / self.meter.poll_hz,
            round_trip_s=self.meter.timeout_s,
        )

    def stage_budget_lines(self) -> list[tuple[bool, str]]:
        """(ok, line) per armed stage for check-config and the start-up log: a stage whose worst
        case misses its program's deadline is not ok."""
        out: list[tuple[bool, str]] = []
        settings = self.trigger_settings()
        how = (
            f"meter refresh {self.meter_frequency_refresh_s():g} s, poll {1.0 / self.meter.poll_hz:g} s,"
            f" read timeout {self.meter.timeout_s:g} s, {settings.confirm_samples} measurements,"
            f" pickup {settings.pickup_s:g} s"
        )
        for budget in self.stage_budgets():
            line = (
                f"trip stage {budget.stage} at {budget.threshold_hz:g} Hz fires within"
                f" {budget.worst_fire_s:.3f} s of a sustained crossing"
                f" ({budget.moving_fire_s:.3f} s if each refresh changes the value; {how})"
            )
            if budget.program is not None:
                verdict = "meets" if budget.meets_deadline else "MISSES"
                line += (
                    f": {verdict} {budget.program}'s {budget.deadline_s:g} s deadline before the devices act"
                )
            out.append((budget.meets_deadline is not False, line))
        return out

    def trip_stages(self) -> tuple[TripStage, ...]:
        return tuple(
            TripStage(stage=s.stage, threshold_hz=s.threshold_hz, shed_kw=s.shed_kw, hard_cut=s.hard_cut)
            for s in sorted(self.control.trip_stages, key=lambda s: s.stage)
        )

    def summary(self) -> str:
        mining_kw = sum(g.rated_kw for g in self.groups)
        ai_kw = sum(t.reserved_kw for t in self.tenants)
        return (
            f"site {self.site.site_id}: interconnect {self.site.interconnect_kw:g} kW, "
            f"{len(self.groups)} mining groups ({mining_kw:g} kW rated), "
            f"{len(self.tenants)} AI tenants ({ai_kw:g} kW reserved), {len(self.pdus)} PDUs, "
            f"meter {self.meter.profile} at {self.meter.host}:{self.meter.port}, broker {self.mqtt.url}"
        )


def _unique(section: str, key: str, values: list[str]) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}[{index}].{key}: duplicate {value!r}")
        seen.add(value)


class ConfigError(Exception):
    """A config that cannot be used; each line is `path: reason`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_BOUND_WORDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_BOUND_KEYS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def _format_error(err: Any) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind in _BOUND_WORDS:
        bound = err["ctx"][_BOUND_KEYS[kind]]
        reason = f"must be {_BOUND_WORDS[kind]} {bound:g}, got {got!r}"
    elif kind == "missing":
        reason = "required key is missing"
    elif kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "too_long" and "max_length" in err.get("ctx", {}):
        # Never echo the input: it is the whole (huge) list.
        ctx = err["ctx"]
        actual = ctx.get("actual_length")
        reason = f"at most {ctx['max_length']:,} entries (a site-size limit, docs/configuration.md)"
        reason += f", got {actual:,}" if isinstance(actual, int) else ""
    elif kind == "finite_number":
        reason = f"must be a finite number, got {got!r}"
    elif kind == "value_error":
        message = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        path = _format_loc(tuple(err["loc"]))
        head = message.split(": ", 1)[0]
        # Cross-checks already say `path: reason` from the top; field checks say `field: reason`.
        if re.match(r"^(groups|tenants|pdus|simulator|economics|control|programs)\b", head):
            return message
        if re.fullmatch(r"[a-z_]+", head) and ": " in message:
            return f"{path}.{message}" if path else message
        reason = message
    else:
        reason = f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {got!r}"
    path = _format_loc(tuple(err["loc"]))
    return f"{path}: {reason}" if path else reason


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data` as `model`; ConfigError listing every problem as `path: reason`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_format_error(e) for e in exc.errors()]) from None


def load_model(model: type[M], path: str | Path) -> M:
    """Read and validate a TOML file as `model` (the site, an agent or the fleet dispatcher)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_model(model, data)


def parse_config(data: dict[str, Any]) -> Config:
    return parse_model(Config, data)


def load_config(path: str | Path) -> Config:
    return load_model(Config, path)


__all__ = ["Config", "ConfigError", "load_config", "load_model", "parse_config", "parse_model"]
