"""What the controller core asks its shell to do, in the order it must happen.

The shell carries out a list front to back and reports each outcome that matters back to the core
(`SiteController.setpoints_sent`, `.outlets_switched`, ...), so the core's state only ever moves on a
result, never on an intention: a setpoint the broker did not take is not "commanded".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mullet.daemon.core.shed_verifier import PendingShed
from mullet.drivers.protocol import GridEventAck, GroupSetpoint, TenantSetpoint

Outlet = tuple[str, int]  # (pdu_id, outlet)
JournalItem = tuple[str, dict[str, Any], str | None]  # (kind, data, subject)


@dataclass(frozen=True, slots=True)
class Record:
    """Queue a journal row (not awaited: bounded queue, rate-limited kinds)."""

    kind: str
    data: dict[str, Any]
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class RecordDurably:
    """Journal rows and wait until they are on disk, before anything after them happens."""

    items: tuple[JournalItem, ...]


@dataclass(frozen=True, slots=True)
class RecordInBackground:
    """A durable journal write off the hot path (a trip: its commands are already out)."""

    kind: str
    data: dict[str, Any]
    subject: str | None
    what: str


@dataclass(frozen=True, slots=True)
class SendSetpoints:
    """Journal all of them durably, then publish each (retained, QoS 1) and report every outcome with
    `SiteController.setpoints_sent`."""

    setpoints: tuple[tuple[str, GroupSetpoint, str], ...]  # (group_id, setpoint, reason)
    watch: bool = True  # False for a re-issue: it repeats a command, so no new ack or shed to watch


@dataclass(frozen=True, slots=True)
class SendTenantCaps:
    """Publish each tenant cap in order, stopping at the first the broker does not take; report each
    one taken with `SiteController.tenant_cap_sent`."""

    caps: tuple[tuple[str, TenantSetpoint, str], ...]  # (tenant_id, setpoint, reason)


@dataclass(frozen=True, slots=True)
class SendPlan:
    """Publish the plan document (retained); report success with `SiteController.plan_published`."""

    summary: dict[str, Any]
    payload: bytes


@dataclass(frozen=True, slots=True)
class SwitchOutlets:
    """Switch a group's PDU outlets; report with `SiteController.outlets_switched`. `on=False` is an
    escalation's hard cut (`pending` says which shed it escalates)."""

    group_id: str
    outlets: tuple[Outlet, ...]
    on: bool
    pending: PendingShed | None = None  # for a cut: the shed it escalates


@dataclass(frozen=True, slots=True)
class Acknowledge:
    """Answer a grid event on grid/event/ack (and to its HTTP/OpenADR caller). A drill's answer goes
    to its caller only (`publish` False): the grid did not ask for it."""

    ack: GridEventAck
    publish: bool = True


@dataclass(frozen=True, slots=True)
class Republish:
    """Say again what the devices were told, byte-identical (after a reconnect or a foreign write)."""

    group_setpoints: tuple[tuple[str, GroupSetpoint], ...]
    tenant_setpoints: tuple[tuple[str, TenantSetpoint], ...]


@dataclass(frozen=True, slots=True)
class TripOrder:
    """Fire the armed trip at `stage` now: the fast path's broadcast and PDU writes."""

    stage: int
    seq: int
    cause: str  # "frequency" or the grid event id that asked for an immediate deployment
    sample_mono_s: float
    epoch: int | None
    hz: float | None = None


Command = (
    Record
    | RecordDurably
    | RecordInBackground
    | SendSetpoints
    | SendTenantCaps
    | SendPlan
    | SwitchOutlets
    | Acknowledge
    | Republish
)
