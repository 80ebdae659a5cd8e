"""Verification of sheds: a command is not a result.

Miner firmware can answer OK and keep hashing (docs/agents.md), so every group told to shed is
watched until its own telemetry (or its PDU outlets' power) shows it below its shed threshold. A group
that has not confirmed by its deadline is returned as overdue, for the daemon to escalate to a PDU hard
cut. An unknown reading never confirms anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingShed:
    group_id: str
    via: str  # "setpoint" or "trip"
    since_mono_s: float
    deadline_mono_s: float


@dataclass(frozen=True, slots=True)
class Confirmed:
    group_id: str
    via: str
    after_s: float
    source: str  # "telemetry" (the controller's own power_kw) or "pdu" (its outlets' power readback)


# group_id -> kW, or None when unknown; the PDU reading also takes the time the shed began and must
# have been read after it (an older reading says nothing about the command).
TelemetryKw = Callable[[str], float | None]
OutletsKw = Callable[[str, float], float | None]


class ShedVerifier:
    def __init__(self, *, deadline_s: float, threshold_kw: dict[str, float]) -> None:
        self.deadline_s = deadline_s
        self.threshold_kw = threshold_kw
        self.pending: dict[str, PendingShed] = {}

    def expect(self, group_id: str, now_mono_s: float, via: str) -> None:
        """A shed command went out; the first one starts the clock (a repeat does not reset it)."""
        if group_id not in self.pending:
            self.pending[group_id] = PendingShed(group_id, via, now_mono_s, now_mono_s + self.deadline_s)

    def forget(self, group_id: str) -> None:
        """The group was commanded back to run, or escalated: nothing left to verify."""
        self.pending.pop(group_id, None)

    def check(
        self, now_mono_s: float, power_kw: TelemetryKw, outlets_kw: OutletsKw | None = None
    ) -> tuple[list[Confirmed], list[PendingShed]]:
        confirmed: list[Confirmed] = []
        overdue: list[PendingShed] = []
        for group_id, pending in list(self.pending.items()):
            threshold_kw = self.threshold_kw[group_id]
            source: str | None = None
            reading = power_kw(group_id)
            if reading is not None and reading <= threshold_kw:
                source = "telemetry"
            elif outlets_kw is not None:
                measured = outlets_kw(group_id, pending.since_mono_s)
                if measured is not None and measured <= threshold_kw:
                    source = "pdu"
            if source is not None:
                del self.pending[group_id]
                confirmed.append(Confirmed(group_id, pending.via, now_mono_s - pending.since_mono_s, source))
            elif now_mono_s >= pending.deadline_mono_s:
                del self.pending[group_id]
                overdue.append(pending)
        return confirmed, overdue
