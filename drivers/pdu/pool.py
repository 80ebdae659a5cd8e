"""`PduPool`: one `PduClient` per configured PDU, switching outlets on several PDUs concurrently.

Device errors never raise into the caller: results carry the outlets that were not acknowledged and a
reason from `FAILURE_REASONS`, and each client counts its failures by reason. The fast path arms a
cut with `prepare`, and fires it in two halves: `write_armed` (every first write on its socket) and
`follow_armed` (the rest, and the answers, in a task).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mullet.drivers.pdu.client import ArmedWrite, PduClient
from mullet.drivers.pdu.types import OutletRefs, PduSpec, PoolResult, SwitchResult
from mullet.drivers.pdu.writes import PreparedSwitch


@dataclass(frozen=True, slots=True)
class PreparedPoolSwitch:
    """A switch across PDUs, prepared ahead of time (`PduPool.prepare`)."""

    on: bool
    by_pdu: Mapping[str, PreparedSwitch]
    unknown: Mapping[str, tuple[int, ...]]  # outlets on PDUs the pool does not hold
    armed: tuple[tuple[PduClient, PreparedSwitch], ...]  # by_pdu with its clients, for write_armed


@dataclass(frozen=True, slots=True)
class ArmedWrites:
    """`PduPool.write_armed`: the writes that could go at once were on their sockets at `written_s`
    (monotonic); `written[i]` is where `prepared.armed[i]`'s write went (None: in `follow_armed`)."""

    prepared: PreparedPoolSwitch
    started_s: float
    written_s: float
    written: list[ArmedWrite | None]


class PduPool:
    """A `PduClient` per configured PDU; switches outlets on all of them concurrently."""

    def __init__(self, clients: Iterable[PduClient]) -> None:
        self.clients: dict[str, PduClient] = {}
        for client in clients:
            if client.pdu_id in self.clients:
                raise ValueError(f"duplicate pdu_id {client.pdu_id!r}")
            self.clients[client.pdu_id] = client

    @classmethod
    def from_config(cls, pdus: Iterable[PduSpec], **options: Any) -> PduPool:
        """One client per `config.pdus[]` entry; `options` go to every `PduClient`."""
        return cls(PduClient.from_spec(spec, **options) for spec in pdus)

    async def start(self) -> None:
        """Connect to every PDU at once; returns within about two timeouts even if some are down."""
        await asyncio.gather(*(client.start() for client in self.clients.values()))

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients.values()))

    @staticmethod
    def group(outlet_refs: OutletRefs) -> dict[str, tuple[int, ...]]:
        """Outlets by PDU id, e.g. to arm a cut ahead of time and fire it with `switch_grouped`."""
        grouped: dict[str, list[int]] = {}
        for ref in outlet_refs:
            pdu_id, outlet = ref if isinstance(ref, tuple) else (ref.pdu, ref.outlet)
            grouped.setdefault(pdu_id, []).append(outlet)
        return {pdu_id: tuple(outlets) for pdu_id, outlets in grouped.items()}

    async def cut(self, outlet_refs: OutletRefs) -> PoolResult:
        """Switch `outlet_refs` off: every PDU's writes at once."""
        return await self.switch_grouped(self.group(outlet_refs), on=False)

    async def switch(self, outlet_refs: OutletRefs, on: bool) -> PoolResult:
        return await self.switch_grouped(self.group(outlet_refs), on)

    async def switch_grouped(self, by_pdu: Mapping[str, Sequence[int]], on: bool) -> PoolResult:
        """Switch outlets already grouped by PDU, all PDUs concurrently; never raises for device errors
        (an unknown PDU id is a result with reason `unknown_pdu`)."""
        return await self.switch_now(self.prepare(by_pdu, on))

    def prepare(self, by_pdu: Mapping[str, Sequence[int]], on: bool) -> PreparedPoolSwitch:
        """Check and batch a switch ahead of time (the fast path arms its cuts with this)."""
        prepared = {p: self.clients[p].prepare_switch(o, on) for p, o in by_pdu.items() if p in self.clients}
        return PreparedPoolSwitch(
            on=on,
            by_pdu=prepared,
            unknown={p: tuple(sorted(set(o))) for p, o in by_pdu.items() if p not in self.clients},
            armed=tuple((self.clients[p], s) for p, s in prepared.items()),
        )

    def switch_now(self, prepared: PreparedPoolSwitch) -> asyncio.Task[PoolResult]:
        """Every PDU's first write is on its socket when this returns (see `PduClient.switch_now`);
        the task collects the answers."""
        return self.follow_armed(self.write_armed(prepared))

    def write_armed(self, prepared: PreparedPoolSwitch) -> ArmedWrites:
        """The first half of `switch_now`, all a trip waits for: every first write that can go at
        once is on its socket when this returns (the fast path sends its broadcast next)."""
        started_s = time.monotonic()
        written = [client.write_armed(s) for client, s in prepared.armed]
        return ArmedWrites(prepared, started_s, time.monotonic(), written)

    def follow_armed(self, writes: ArmedWrites) -> asyncio.Task[PoolResult]:
        """The second half: timeouts started, the rest queued; the task collects the answers."""
        switching = [
            client.follow_armed(s, armed, writes.written_s)
            for (client, s), armed in zip(writes.prepared.armed, writes.written, strict=True)
        ]
        prepared = writes.prepared
        return asyncio.get_running_loop().create_task(
            self._collect(switching, prepared.unknown, prepared.on, writes.started_s)
        )

    @staticmethod
    async def _collect(
        switching: list[Coroutine[Any, Any, SwitchResult]],
        unknown: Mapping[str, tuple[int, ...]],
        on: bool,
        started_s: float,
    ) -> PoolResult:
        results = {result.pdu_id: result for result in await asyncio.gather(*switching)}
        for pdu_id, outlets in unknown.items():
            results[pdu_id] = SwitchResult(
                pdu_id=pdu_id,
                on=on,
                outlets=outlets,
                failed=outlets,
                reason="unknown_pdu",
                writes=0,
                logged_in=False,
                started_s=started_s,
                issued_s=None,
                done_s=started_s,
            )
        return PoolResult(on=on, results=results, started_s=started_s, done_s=time.monotonic())

    def outlet_power_w(self, pdu_id: str, outlet: int) -> float | None:
        client = self.clients.get(pdu_id)
        return None if client is None else client.outlet_power_w(outlet)

    def power_w(self, outlet_refs: OutletRefs, *, read_since_s: float | None = None) -> float | None:
        """Total cached power of `outlet_refs` in W, or None if any of them is unknown or stale, or
        (with `read_since_s`, monotonic) was read before then."""
        total = 0.0
        for pdu_id, outlets in self.group(outlet_refs).items():
            client = self.clients.get(pdu_id)
            value = None if client is None else client.outlets_power_w(outlets)
            if value is None or client is None:
                return None
            if read_since_s is not None:
                read_at = [client.outlet_read_s(outlet) for outlet in outlets]
                if any(read_s is None or read_s < read_since_s for read_s in read_at):
                    return None
            total += value
        return total

    async def read_power(self, pdu_ids: Iterable[str] | None = None) -> dict[str, bool]:
        """Read power now on the given PDUs (default all), concurrently; whether each read succeeded."""
        chosen = [
            self.clients[p] for p in (self.clients if pdu_ids is None else pdu_ids) if p in self.clients
        ]
        done = await asyncio.gather(*(client.read_power() for client in chosen))
        return {client.pdu_id: ok for client, ok in zip(chosen, done, strict=True)}
