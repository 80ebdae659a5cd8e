"""The site config's sections about the daemon's services: its HTTP listeners (`[metrics]`,
`[http_api]`), the `[journal]`, the OpenADR VEN (`[openadr]`), the QSE link (`[qse]`), active/standby
(`[ha]`) and the simulated site (`[simulator]`). Every field is documented in docs/configuration.md."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from mullet.daemon.config.fields import (
    CredentialName,
    Ident,
    NonNegativeKw,
    Port,
    PositiveKw,
    SecretFile,
    Strict,
)
from mullet.drivers import extras


class ListenerLimits(Strict):
    """Connection limits of an HTTP listener (daemon/http_guard.py): beyond `max_connections` a new
    connection is closed at once; a request's headers must arrive within `header_timeout_s` of its
    first byte (or of the connection opening), its body within `body_timeout_s`; an idle keep-alive
    connection is closed after `idle_timeout_s`."""

    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


def _unique_ints(section: str, key: str, values: list[int]) -> None:
    if len(set(values)) != len(values):
        duplicate = next(v for v in values if values.count(v) > 1)
        raise ValueError(f"{section}: duplicate {key} {duplicate}")


class SimpleLevelSection(Strict):
    """What an OpenADR SIMPLE signal level means at this site."""

    level: Annotated[int, Field(ge=1, le=3)]
    kind: Literal["limit", "reduce"]
    kw: NonNegativeKw


class OpenAdrSection(Strict):
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
    market_contexts: dict[str, Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=dict
    )
    simple_levels: list[SimpleLevelSection] = Field(default_factory=list)
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
        if self.enabled:
            _require_extra("openleadr", "the OpenADR VEN")
        return self


def _require_extra(module: str, part: str) -> None:
    """A configured part whose library is not installed is a config error naming the extra."""
    problem = extras.missing(module, part)
    if problem is not None:
        raise ValueError(problem)


# The products a QSE deploys over the link (drivers/qse_points.py PRODUCTS; docs/qse.md).
QSE_PRODUCTS = ("ERS-10", "ERS-30", "ECRS", "Non-Spin", "RRS")


def _networks(entries: list[str]) -> list[str]:
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"not an address or network: {entry!r}") from None
    return entries


class QseSection(Strict):
    """The QSE link (docs/qse.md): a Modbus TCP server for the QSE's RTU or SCADA gateway."""

    enabled: bool = False
    host: str = "127.0.0.1"
    # 502 is Modbus's port; binding it needs CAP_NET_BIND_SERVICE (deploy/systemd grants none).
    port: Port = 5020
    device_id: Annotated[int, Field(ge=1, le=247)] = 1
    # Client addresses or networks allowed to connect; everything else is closed at accept.
    allow: Annotated[list[str], AfterValidator(_networks), Field(min_length=1, max_length=64)] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"]
    )
    allow_writes: bool = False
    max_connections: Annotated[int, Field(ge=1, le=64)] = 4
    # The QSE's heartbeat register must change at least this often, or the link counts as lost.
    heartbeat_timeout_s: Annotated[float, Field(ge=1, le=3600)] = 20.0
    # On a lost link: "hold" keeps what is deployed (and nothing that adds load is applied until the
    # link is back); "limit" also holds site import under fail_safe_limit_kw until it is back.
    fail_safe: Literal["hold", "limit"] = "hold"
    fail_safe_limit_kw: NonNegativeKw | None = None
    # The reduction a product deploys when the QSE asserts it with 0 MW in its amount register.
    deploy_kw: dict[str, PositiveKw] = Field(default_factory=dict)
    # The same point list read-only over DNP3 (docs/qse.md section 7), on `host`, to `allow`: needs the
    # optional extra (pip install 'mullet[dnp3]').
    dnp3: bool = False
    dnp3_port: Port = 20000
    dnp3_outstation_address: Annotated[int, Field(ge=0, le=0xFFEF)] = 1024
    dnp3_master_address: Annotated[int, Field(ge=0, le=0xFFEF)] = 1

    @field_validator("deploy_kw")
    @classmethod
    def _products(cls, amounts: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(amounts) - set(QSE_PRODUCTS))
        if unknown:
            raise ValueError(f"unknown product {unknown[0]!r}; the products are {', '.join(QSE_PRODUCTS)}")
        return amounts

    @model_validator(mode="after")
    def _fail_safe_level(self) -> QseSection:
        if self.fail_safe == "limit" and self.fail_safe_limit_kw is None:
            raise ValueError('fail_safe_limit_kw: required when fail_safe = "limit"')
        if self.dnp3 and self.dnp3_outstation_address == self.dnp3_master_address:
            raise ValueError("dnp3_master_address: must differ from dnp3_outstation_address")
        if self.enabled and self.dnp3:
            _require_extra("py1815", "dnp3")
        return self


class HttpApiSection(ListenerLimits):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 11581  # in no entry of Prometheus' default port allocations (docs/metrics.md)
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
    port: Port = 11580  # in no entry of Prometheus' default port allocations (docs/metrics.md)
    # A scraper or two: a smaller cap than the API's.
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 16


class JournalSection(Strict):
    path: str = "mullet-journal.sqlite"
    # Entries older than this are deleted (except those recovery replays); None keeps everything.
    # At least a day: a report needs the baseline intervals before an event's notice.
    retention_days: Annotated[float, Field(ge=1, le=36_500)] | None = 400.0
    # Entries waiting for the writer; beyond it `record()` drops and counts (never blocks).
    queue_size: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    # The site meter's power is journaled at most this often, for compliance reports.
    site_power_every_s: Annotated[float, Field(gt=0, le=900)] = 1.0
    # Around every trip, every meter sample from this long before to this long after, at the poll rate
    # (`trip_curve` entries): the sub-second response a 1 s `site_power` cannot show.
    trip_curve_before_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    trip_curve_after_s: Annotated[float, Field(gt=0, le=120)] = 5.0


class SimTenantSection(Strict):
    tenant_id: Ident
    demand_trace_kw: Annotated[list[NonNegativeKw], Field(min_length=1)]
    trace_step_s: Annotated[float, Field(gt=0, le=86_400)] = 10.0


class SimulatorSection(Strict):
    tick_hz: Annotated[float, Field(gt=0, le=100)] = 10.0
    curtail_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    resume_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    sleep_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.02
    telemetry_period_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    frequency_hz: Annotated[float, Field(gt=40, lt=70)] = 60.0
    # (seconds since start, Hz) steps; the meter holds each value until the next step.
    frequency_script: list[tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(gt=40, lt=70)]]] = (
        Field(default_factory=list)
    )
    tenants: list[SimTenantSection] = Field(default_factory=list)
    # With a broker ACL (deploy/mosquitto/acl): each simulated controller logs in as its own identity,
    # `mining/<group_id>` or `ai/<tenant_id>`, with this password; unset = [mqtt]'s credentials.
    mqtt_password_file: SecretFile | None = None


def _etcd_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


class HaSection(Strict):
    """Active/standby at one site (docs/fleet.md section 6): two daemons, a leader lease in etcd."""

    # etcd client endpoints, "host:port", tried in turn (etcd's v3 gRPC API, etcd >= 3.4).
    etcd_endpoints: Annotated[
        list[Annotated[str, AfterValidator(_etcd_endpoint)]], Field(min_length=1, max_length=16)
    ]
    # The site's election key; both daemons of a site name the same one. Default /mullet/<site_id>/leader.
    election_key: Annotated[str, Field(min_length=2, max_length=256, pattern=r"^/[^\s]*$")] | None = None
    node_id: Ident  # this daemon's name in the pair; must differ between the two
    lease_ttl_s: Annotated[int, Field(ge=1, le=60)] = 2

    @model_validator(mode="after")
    def _etcd_client_installed(self) -> HaSection:
        _require_extra("aetcd", "[ha]'s leader lease")
        return self
