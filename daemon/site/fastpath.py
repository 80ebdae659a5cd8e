"""The fast path: fire a pre-armed trip in milliseconds.

Between the frequency sample and the commands there is no planning, no per-group fan-out and no disk
I/O: one `mining/trip` broadcast (every controller armed at or below the stage sheds at once) and, for
stages armed with `hard_cut`, the armed PDU outlet writes (prepared when the plan was armed), all on
their sockets before `fire` returns. Then, still inside `fire`, `on_fired` gets the trip (state,
journal, metrics: never before the commands), and `on_settled` its acknowledgements when they are back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from mullet.daemon.core.commands import Outlet, TripOrder
from mullet.daemon.core.trips import ArmedStage, TripRecord
from mullet.drivers.pdu import ArmedWrites, PduPool, PoolResult, PreparedPoolSwitch
from mullet.drivers.protocol import encode_trip

log = structlog.get_logger("mullet.fastpath")

# Returns once the PUBLISH is on the broker's socket: a future of its PUBACK, or None when nothing
# could be sent (not connected).
PublishNow = Callable[[bytes], "asyncio.Future[bool] | None"]


@dataclass(frozen=True, slots=True)
class TripSettled:
    """The same trip once the PUBACK and every PDU acknowledgement (or failure) are back."""

    trip: TripRecord
    issued_s: float | None  # the last PDU's outlet write, including any that connected first
    settled_s: float
    published: bool  # the broker acknowledged the trip (QoS 1 PUBACK)
    cut_result: PoolResult | BaseException | None

    @property
    def added_latency_s(self) -> float:
        return dataclasses.replace(self.trip, issued_s=self.issued_s).added_latency_s

    @property
    def settled_latency_s(self) -> float:
        return self.settled_s - self.trip.sample_mono_s


@dataclass(frozen=True, slots=True)
class _Prepared:
    groups: tuple[str, ...]
    outlets: tuple[Outlet, ...]
    cut: PreparedPoolSwitch | None


_UNARMED = _Prepared((), (), None)


class FastPath:
    """Carries out a `TripOrder` from the controller core; what each stage touches is armed by the
    core with every plan (`Arm`), and its PDU frames are prepared here, off the hot path."""

    def __init__(
        self,
        *,
        publish_trip: PublishNow,
        on_fired: Callable[[TripRecord], None],
        on_settled: Callable[[TripSettled], None],
        pdus: PduPool | None = None,
    ) -> None:
        self.publish_trip = publish_trip
        self.on_fired = on_fired
        self.on_settled = on_settled
        self.pdus = pdus
        self._armed: dict[int, _Prepared] = {}  # stage -> what a trip at that stage touches
        self._tasks: set[asyncio.Task[None]] = set()

    def arm(self, armed: Mapping[int, ArmedStage]) -> None:
        """Prepare each stage's PDU writes: the hot path only looks them up."""
        prepared: dict[int, _Prepared] = {}
        for stage, (groups, outlets) in armed.items():
            cut = self.pdus.prepare(PduPool.group(outlets), on=False) if outlets and self.pdus else None
            prepared[stage] = _Prepared(groups, outlets, cut)
        self._armed = prepared

    def fire(self, order: TripOrder) -> None:
        """Send the armed trip before returning: every armed PDU's first write and the broadcast are on
        their sockets, then `on_fired` records it; the acknowledgements follow in a task."""
        collecting = gc.isenabled()
        gc.disable()  # a collection here would add its pause to the trip (ms for a full one)
        try:
            self._fire(order)
        finally:
            if collecting:
                gc.enable()

    def _fire(self, order: TripOrder) -> None:
        stage, seq = order.stage, order.seq
        armed = self._armed.get(stage, _UNARMED)
        # Outlets first: a cut drops load in milliseconds, the broadcast starts a firmware sleep that
        # takes seconds (LuxOS ~5 s, docs/agents.md); and the broker's fan-out to hundreds of controllers,
        # once woken, competes with these writes for the CPU on a small site server. Only the
        # writes themselves go before the broadcast; their timeouts and the rest follow it.
        writes: ArmedWrites | None = None
        if armed.cut is not None and self.pdus is not None:
            try:
                writes = self.pdus.write_armed(armed.cut)
            except Exception:  # a driver bug must not keep the broadcast from going out
                log.exception("armed pdu cut did not start", stage=stage)
        ack: asyncio.Future[bool] | None = None
        try:
            ack = self.publish_trip(encode_trip(seq, stage, time.time(), order.epoch))
        except Exception:  # recorded as not published; the supervisor's curtail setpoints follow
            log.exception("trip broadcast failed", stage=stage, seq=seq)
        published_s = time.monotonic()
        cut: Awaitable[PoolResult] | None = None
        if writes is not None and self.pdus is not None:
            try:
                cut = self.pdus.follow_armed(writes)
            except Exception:
                log.exception("armed pdu cut did not complete", stage=stage)
        issued_s = writes.written_s if writes is not None else None
        record = TripRecord(
            stage,
            seq,
            order.cause,
            order.sample_mono_s,
            published_s,
            issued_s,
            armed.groups,
            armed.outlets,
            order.hz,
        )
        try:
            self.on_fired(record)  # the commands are out: now state, journal and metrics
        except Exception:
            log.exception("recording a trip failed", stage=stage, seq=seq)
        task = asyncio.get_running_loop().create_task(self._settle(record, ack, cut))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(
        self,
        record: TripRecord,
        ack: asyncio.Future[bool] | None,
        cut: Awaitable[PoolResult] | None,
    ) -> None:
        published, cut_result = await asyncio.gather(
            ack if ack is not None else _value(False),
            cut if cut is not None else _value(None),
            return_exceptions=True,
        )
        issued_s = record.issued_s
        if issued_s is not None and isinstance(cut_result, PoolResult):
            # A PDU that had to connect or log in first issued its outlet write later than that.
            issued_s = max([issued_s, *(r.issued_s for r in cut_result.results.values() if r.issued_s)])
        settled = TripSettled(
            trip=record,
            issued_s=issued_s,
            settled_s=time.monotonic(),
            published=published is True,
            cut_result=cut_result if isinstance(cut_result, PoolResult | BaseException) else None,
        )
        try:
            self.on_settled(settled)
        except Exception:  # this task runs outside the TaskGroup: say so rather than lose it
            log.exception("recording a trip's acknowledgements failed", stage=record.stage, seq=record.seq)


async def _value(value: object) -> object:
    return value
