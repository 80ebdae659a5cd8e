"""What the PDU driver takes and returns: why things fail (`FAILURE_REASONS`), a switch's results
(`SwitchResult` for one PDU, `PoolResult` across PDUs), and the shapes of the configuration it reads
(`PduSpec`, `OutletRefLike`: the daemon's `[[pdus]]` and outlet refs satisfy them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

# Bounded label values (metrics): why a request, or an outlet of a switch, failed.
FAILURE_REASONS = (
    "unreachable",  # no TCP connection (refused, reset, connect timed out)
    "timeout",  # connected, but no answer within timeout_s
    "modbus_error",  # a read answered with a Modbus exception, or too short
    "refused",  # an outlet write answered with a Modbus exception (e.g. not logged in)
    "login_failed",  # the login write answered with a Modbus exception (wrong key?)
    "implausible",  # a power reading that is not finite or negative (not cached)
    "bad_outlet",  # an outlet number the PDU does not have
    "unknown_pdu",  # PduPool: an outlet on a PDU the pool does not hold
    "closed",  # the client was closed
    "internal_error",  # a bug, caught so that the caller still gets its result
)
PduState = Literal["new", "connecting", "up", "unresponsive", "down", "closed"]


@dataclass(frozen=True, slots=True)
class SwitchResult:
    """What one PDU did with one `switch()`; times are `time.monotonic()` seconds.

    `failed` are the requested outlets whose write was not acknowledged (their state is unknown),
    `reason` the first failure's reason (None when all were acknowledged, even after a re-login).
    `writes` counts the Modbus write requests sent, logins included; `logged_in` says whether a login
    write was among them. `issued_s` is when the first outlet write went out (None if none did).
    """

    pdu_id: str
    on: bool
    outlets: tuple[int, ...]
    failed: tuple[int, ...]
    reason: str | None
    writes: int
    logged_in: bool
    started_s: float
    issued_s: float | None
    done_s: float

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def elapsed_s(self) -> float:
        return self.done_s - self.started_s


@dataclass(frozen=True, slots=True)
class PoolResult:
    """Per-PDU results of one `PduPool` switch, all started together (`started_s`/`done_s` monotonic)."""

    on: bool
    results: Mapping[str, SwitchResult]
    started_s: float
    done_s: float

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results.values())

    @property
    def elapsed_s(self) -> float:
        return self.done_s - self.started_s

    @property
    def failed(self) -> list[tuple[str, int]]:
        return [(pdu_id, outlet) for pdu_id, result in self.results.items() for outlet in result.failed]


class PduSpec(Protocol):
    """What a client needs from `config.pdus[]` (daemon.config.PduSection)."""

    @property
    def pdu_id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def device_id(self) -> int: ...
    @property
    def profile(self) -> str: ...
    @property
    def outlets(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def keepalive_s(self) -> float: ...
    @property
    def stale_after_s(self) -> float: ...


class OutletRefLike(Protocol):
    """An outlet as configured (daemon.config.OutletRef): `pdu` id and 1-based `outlet`."""

    @property
    def pdu(self) -> str: ...
    @property
    def outlet(self) -> int: ...


OutletRefs = Iterable[OutletRefLike | tuple[str, int]]
