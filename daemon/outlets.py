"""What the daemon needs from a PDU driver: cut or restore a set of outlets, and say how it went."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Outlet = tuple[str, int]  # (pdu_id, outlet)


@dataclass(frozen=True, slots=True)
class OutletOutcome:
    ok: bool
    detail: str


class OutletSwitch(Protocol):
    async def cut(self, outlets: list[Outlet]) -> OutletOutcome: ...

    async def restore(self, outlets: list[Outlet]) -> OutletOutcome: ...
