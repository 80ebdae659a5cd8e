"""The QSE point list over DNP3 (IEEE 1815): a read-only outstation, an optional extra (`mullet[dnp3]`).

Some QSE gateways poll DNP3 rather than Modbus. This serves the same point list
(drivers/qse_points.py) with py1815, a pure-Python asyncio outstation, reading every value from the
same `ReadFn` as the Modbus server at the moment of the request (no copy refreshed on a timer):

- analog inputs (g30v5, float32 with flags) 0 .. len(INPUT_POINTS) - 1: the input points in order;
  then len(INPUT_POINTS) + j: holding point j's current level (what the QSE last wrote);
- binary inputs (g1v2, with flags) 0..7: the health bits (HEALTH_BITS).

Unknown (NaN) is sent as 0.0 with ONLINE clear and REFERENCE_ERR set, never as a valid 0.0: a master
that honours the flags discards it. A class 0 (integrity) read answers everything; classes 1 to 3 are
empty (no event buffers: a QSE polls integrity every few seconds); any other object or variation is
refused as unknown (IIN2.1), a range outside the points as a parameter error (IIN2.2).

Read-only: no control (CROB, g12) or analog output (g41) is offered, so py1815 answers every select,
operate and direct operate as an outstation with no outputs (IIN2.1, object unknown) and drops a
direct operate that asks for no response. Writes need their own design before DNP3 may carry them: a
deployment here is a held level (deployed while 1, recalled at 0), which maps onto neither a pulsed
CROB nor a latch without deciding what a select-before-operate timeout, a repeated operate or a
lost association means for a held deployment, and every write must be journaled before it is
acknowledged. The QSE writes over Modbus (drivers/qse_server.py).

py1815 serves one master association per listener (a second connection displaces the first) and has
no address allowlist without TLS, so the listener here closes a connection from outside `allow`
before it reaches the session, like the Modbus server. py1815 is imported when the outstation starts,
so the daemon runs without the extra installed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import structlog

from mullet.drivers import extras
from mullet.drivers.qse_points import HEALTH_BITS, HOLDING_POINTS, INPUT_POINTS, Table
from mullet.drivers.qse_server import Network, ReadFn, RefusedFn, allowed

if TYPE_CHECKING:
    from py1815 import OutstationServer
    from py1815.application import ObjectHeader

log = structlog.get_logger("mullet.qse")

# Analog input index of each point: the input points, then the holding points' levels.
ANALOG_INDEX: Mapping[str, int] = {p.name: i for i, p in enumerate(INPUT_POINTS + HOLDING_POINTS)}
ANALOG_COUNT = len(ANALOG_INDEX)
BINARY_COUNT = len(HEALTH_BITS)
IDLE_TIMEOUT_S = 300.0  # py1815's default: a master that said nothing this long is gone
# Link addresses 0xFFF0 and up are DNP3's own (broadcast, self-address, reserved).
MAX_LINK_ADDRESS = 0xFFEF

# The variations served (0: "any", answered with the one below).
_ANALOG_VARIATIONS = (0, 5)  # g30v5: float32 with flags (v1 to v4 would round MW to integers)
_BINARY_VARIATIONS = (0, 2)  # g1v2: with flags (v1, packed, carries no quality)


class QseDnp3Outstation:
    """A DNP3 outstation serving the QSE point list read-only; `start`/`stop` on the running loop."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        outstation_address: int,
        master_address: int,
        allow: tuple[Network, ...],
        read: ReadFn,
        refused: RefusedFn,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        """ValueError for link addresses DNP3 reserves or that are equal (checked here, without py1815,
        so a bad config fails at startup)."""
        for name, address in (("outstation", outstation_address), ("master", master_address)):
            if not 0 <= address <= MAX_LINK_ADDRESS:
                raise ValueError(f"DNP3 {name} address {address} is outside 0..{MAX_LINK_ADDRESS}")
        if outstation_address == master_address:
            raise ValueError(f"DNP3 outstation and master addresses are both {master_address}")
        if not idle_timeout_s > 0:
            raise ValueError(f"DNP3 idle timeout {idle_timeout_s} s is not positive")
        self.host = host
        self.outstation_address = outstation_address
        self.master_address = master_address
        self.allow = allow
        self.idle_timeout_s = idle_timeout_s
        self._port = port
        self._points = _Points(read)
        self._refused = refused
        self._server: OutstationServer | None = None

    @property
    def port(self) -> int:
        """The bound port once started (port 0 binds a free one)."""
        return self._server.port if self._server is not None else self._port

    @property
    def connected(self) -> bool:
        """Whether a master association is connected now."""
        return self._server is not None and self._server.connected

    async def start(self) -> None:
        """Bind and listen; ImportError naming the extra without py1815, OSError if the port is taken."""
        if self._server is not None:
            return
        extras.require("py1815", "DNP3")
        from py1815 import Session

        session = Session(
            self._points,
            outstation_address=self.outstation_address,
            master_address=self.master_address,
        )
        bind = f"[{self.host}]:{self._port}" if ":" in self.host else f"{self.host}:{self._port}"
        server = _listener_type()(session, self._admit, bind=bind, idle_timeout=self.idle_timeout_s)
        await server.start()
        self._server = server
        log.info(
            "qse dnp3 outstation listening",
            host=self.host,
            port=server.port,
            outstation_address=self.outstation_address,
            master_address=self.master_address,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._port = server.port
            await server.stop()

    def _admit(self, peer: Any) -> bool:
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if allowed(host, self.allow):
            return True
        self._refused("not_allowed", f"{host}:{peer[1]}" if host else "?")
        return False


@cache
def _listener_type() -> Callable[..., OutstationServer]:
    """py1815's listener with the address allowlist checked before a connection is admitted (a
    refused peer must not displace the association). Built on first use: py1815 is an extra."""
    import asyncio
    import contextlib

    from py1815 import OutstationServer, Session

    class Listener(OutstationServer):
        def __init__(self, session: Session, admit: Callable[[Any], bool], **kwargs: Any) -> None:
            super().__init__(session, **kwargs)
            self._admit = admit

        # py1815 0.3.0's connection handler (the version is pinned): the one place before admission.
        async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not self._admit(writer.get_extra_info("peername")):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                return
            await super()._handle(reader, writer)

    return Listener


class _Points:
    """py1815's ReadProvider: the point list encoded at each read (synchronous by py1815's contract)."""

    def __init__(self, read: ReadFn) -> None:
        self._read = read
        self._failing = False

    def read(self, headers: Sequence[ObjectHeader]) -> bytes:
        from py1815 import UnknownObject
        from py1815.application import CLASS_GROUP
        from py1815.objects import GROUP_ANALOG_INPUT, GROUP_BINARY_INPUT

        cache_: dict[Table, Mapping[str, float]] = {}
        body = b""
        for h in headers:
            if h.group == CLASS_GROUP and h.event_class is not None:
                if h.event_class == 0:
                    body += self._binaries(cache_, 0, BINARY_COUNT - 1)
                    body += self._analogs(cache_, 0, ANALOG_COUNT - 1)
                continue  # classes 1 to 3: no events are kept
            if h.group == GROUP_ANALOG_INPUT and h.variation in _ANALOG_VARIATIONS:
                body += self._analogs(cache_, *_span(h, ANALOG_COUNT))
            elif h.group == GROUP_BINARY_INPUT and h.variation in _BINARY_VARIATIONS:
                body += self._binaries(cache_, *_span(h, BINARY_COUNT))
            else:
                raise UnknownObject(f"group {h.group} variation {h.variation} is not served")
        return body

    def _values(self, cache_: dict[Table, Mapping[str, float]], table: Table) -> Mapping[str, float]:
        """One read of a table per request; a failing read serves every point as unknown."""
        if table not in cache_:
            try:
                cache_[table] = self._read(table)
                if self._failing:
                    self._failing = False
                    log.info("qse dnp3 point values readable again")
            except Exception:
                if not self._failing:
                    self._failing = True
                    log.exception("qse dnp3 point values unreadable: served as unknown (flags offline)")
                cache_[table] = {}
        return cache_[table]

    def _analogs(self, cache_: dict[Table, Mapping[str, float]], start: int, stop: int) -> bytes:
        from py1815.objects import AnalogPoint, AnalogQuality, AnalogVariation, analog_range

        inputs = self._values(cache_, "input") if start < len(INPUT_POINTS) else {}
        levels = self._values(cache_, "holding") if stop >= len(INPUT_POINTS) else {}
        points = []
        for index in range(start, stop + 1):
            if index < len(INPUT_POINTS):
                value = inputs.get(INPUT_POINTS[index].name, math.nan)
            else:
                value = levels.get(HOLDING_POINTS[index - len(INPUT_POINTS)].name, math.nan)
            if math.isnan(value):
                points.append(AnalogPoint(0.0, AnalogQuality.REFERENCE_ERR))  # ONLINE clear: unknown
            else:
                points.append(AnalogPoint(value, AnalogQuality.ONLINE))
        return analog_range(start, points, variation=AnalogVariation.FLOAT32_WITH_FLAG)

    def _binaries(self, cache_: dict[Table, Mapping[str, float]], start: int, stop: int) -> bytes:
        from py1815.objects import BinaryPoint, BinaryQuality, binary_range

        health = self._values(cache_, "input").get("health", math.nan)
        if not math.isfinite(health):
            points = [BinaryPoint(False, 0) for _ in range(start, stop + 1)]  # ONLINE clear: unknown
        else:
            bits = int(health)
            points = [BinaryPoint(bool(bits >> b & 1), BinaryQuality.ONLINE) for b in range(start, stop + 1)]
        return binary_range(start, points)


def _span(header: ObjectHeader, size: int) -> tuple[int, int]:
    """The index range (inclusive) a static read asks for, or ParameterError (IIN2.2)."""
    from py1815.application import QualifierCode
    from py1815.session import ParameterError

    qualifier = header.qualifier
    if qualifier == QualifierCode.ALL_OBJECTS:
        return 0, size - 1
    if header.start is not None and header.stop is not None:
        start, stop = header.start, header.stop
    elif qualifier in (QualifierCode.UINT8_COUNT, QualifierCode.UINT16_COUNT) and header.count:
        start, stop = 0, header.count - 1
    elif header.indices:
        start, stop = min(header.indices), max(header.indices)
        if list(header.indices) != list(range(start, stop + 1)):
            raise ParameterError("only a contiguous run of indexes is served")
    else:
        raise ParameterError(f"qualifier 0x{int(qualifier):02X} selects no points")
    if not 0 <= start <= stop < size:
        raise ParameterError(f"indexes {start}..{stop} are outside 0..{size - 1}")
    return start, stop
