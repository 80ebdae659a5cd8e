"""The QSE link's Modbus TCP server: the point list (drivers/qse_points.py) served with pymodbus.

Reads are computed at the moment of the request (`read`), so a point is as fresh as the reading behind
it, never a copy refreshed on a timer. Writes are checked against the point list first (address, whole
float32, range) and refused with the Modbus exception the protocol defines, counted through `refused`;
a write that passes is handed to `write` (one at a time) and answered only after it returns: the
daemon journals it there, so an acknowledged write is on disk.

Modbus has no authentication: the server binds one address, takes connections only from allowlisted
client addresses, at most `max_connections` at once, and refuses every write unless writes are
enabled (docs/operations.md says where it belongs on a site network).
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from mullet.drivers.modbus_listener import ModbusListener
from mullet.drivers.qse_points import (
    HOLDING_SIZE,
    INPUT_SIZE,
    Point,
    Table,
    decode,
    encode,
    points_at,
)

log = structlog.get_logger("mullet.qse")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Values of every point of a table by name (unknown: NaN); the daemon's view at the moment of a read.
ReadFn = Callable[[Table], Mapping[str, float]]
# (peer, {point: value}) of a checked write -> None (accepted) or the exception to answer.
WriteFn = Callable[[str, dict[str, float]], Awaitable[ExcCodes | None]]
# (reason, peer) of every refusal: a bounded label set (REFUSALS).
RefusedFn = Callable[[str, str], None]

REFUSALS = (
    "not_allowed",  # connection from an address outside the allowlist: closed at once
    "too_many_connections",
    "writes_disabled",  # ILLEGAL_FUNCTION
    "unsupported_function",  # ILLEGAL_FUNCTION: coils, discrete inputs, mask/read-write
    "reserved_address",  # ILLEGAL_ADDRESS
    "partial_float",  # ILLEGAL_ADDRESS: half of a float32
    "out_of_range",  # ILLEGAL_VALUE
)  # the daemon counts its own refusals of a checked write (`write`'s exception) itself

_READ_INPUT, _READ_HOLDING, _WRITE_ONE, _WRITE_MANY = 4, 3, 6, 16

# The peer of the request being handled: each request runs in its own task (pymodbus's handler), so a
# context variable set there is seen by the datastore hook it awaits and by nothing else.
_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("qse_peer", default="?")


def parse_allowlist(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or networks ("10.0.0.5", "10.20.0.0/24", "::1"); ValueError names a bad one."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def allowed(peer_host: str, allow: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer_host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allow)


class QseServer(ModbusListener):
    def __init__(
        self,
        *,
        host: str,
        port: int,
        device_id: int,
        allow: tuple[Network, ...],
        max_connections: int,
        writes_allowed: bool,
        read: ReadFn,
        write: WriteFn,
        refused: RefusedFn,
    ) -> None:
        super().__init__(host=host, port=port)
        self.device_id = device_id
        self.allow = allow
        self.max_connections = max_connections
        self.writes_allowed = writes_allowed
        self._read = read
        self._write = write
        self._refused = refused
        self._write_lock = asyncio.Lock()
        self.connections = 0

    def _build(self) -> ModbusTcpServer:
        blocks = (
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=HOLDING_SIZE, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=INPUT_SIZE, values=0, datatype=DataType.REGISTERS)],
        )
        device = SimDevice(self.device_id, simdata=blocks, action=self._action)
        return _Server(self, device, address=(self.host, self._port))

    def _started(self) -> None:
        log.info("qse modbus server listening", host=self.host, port=self._port, writes=self.writes_allowed)

    def _stopped(self) -> None:
        log.info("qse modbus server stopped", port=self._port)

    # ---- connections ---------------------------------------------------------------------------

    def admit(self, peer: str, host: str) -> bool:
        """Whether a new connection from `peer` may stay open (counted when it may)."""
        if not allowed(host, self.allow):
            self._refused("not_allowed", peer)
            return False
        if self.connections >= self.max_connections:
            self._refused("too_many_connections", peer)
            return False
        self.connections += 1
        return True

    # ---- requests ------------------------------------------------------------------------------

    async def _action(
        self,
        function_code: int,
        block_start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        peer = _PEER.get()
        if function_code == _READ_INPUT:
            self._fill(registers, block_start, "input", address, count)
            return None
        if function_code == _READ_HOLDING:
            self._fill(registers, block_start, "holding", address, count)
            return None
        if function_code in (_WRITE_ONE, _WRITE_MANY) and values is None:
            return None  # pymodbus 3.16 reads a single register write back through the hook: nothing to do
        if function_code not in (_WRITE_ONE, _WRITE_MANY):
            self._refused("unsupported_function", peer)
            return ExcCodes.ILLEGAL_FUNCTION
        if not self.writes_allowed:
            self._refused("writes_disabled", peer)
            return ExcCodes.ILLEGAL_FUNCTION
        words = [int(v) for v in values or ()]
        checked = check_write(address, words)
        if isinstance(checked, tuple):
            reason, code = checked
            self._refused(reason, peer)
            return code
        async with self._write_lock:  # one write at a time: journal order is wire order
            return await self._write(peer, checked)

    def _fill(self, registers: list[int], block_start: int, table: Table, address: int, count: int) -> None:
        values = self._read(table)
        for index, (point, offset) in enumerate(points_at(table, address, count)):
            word = 0
            if point is not None:
                word = encode(point, values.get(point.name, math.nan))[offset]
            registers[address + index - block_start] = word


def check_write(address: int, words: list[int]) -> dict[str, float] | tuple[str, ExcCodes]:
    """The points a write request sets, or why it is refused (reason, exception)."""
    changes: dict[str, float] = {}
    pending: tuple[Point, list[int]] | None = None
    for (point, offset), word in zip(points_at("holding", address, len(words)), words, strict=True):
        if point is None or not point.writable:
            return "reserved_address", ExcCodes.ILLEGAL_ADDRESS
        if offset == 0:
            if pending is not None:
                return "partial_float", ExcCodes.ILLEGAL_ADDRESS
            pending = (point, [word])
        elif pending is None or pending[0] is not point:
            return "partial_float", ExcCodes.ILLEGAL_ADDRESS
        else:
            pending[1].append(word)
        point, got = pending
        if len(got) == point.words:
            value = decode(point, got)
            if not math.isfinite(value) or not point.low <= value <= point.high:
                return "out_of_range", ExcCodes.ILLEGAL_VALUE
            changes[point.name] = value
            pending = None
    if pending is not None:
        return "partial_float", ExcCodes.ILLEGAL_ADDRESS
    return changes


class _Handler(ServerRequestHandler):
    """pymodbus's per-connection handler, with the allowlist at connect and the peer known per request."""

    owner: QseServer
    peer = "?"
    admitted = False

    def callback_connected(self) -> None:
        name = self.transport.get_extra_info("peername") if self.transport else None
        host = str(name[0]) if name else ""
        self.peer = f"{host}:{name[1]}" if name else "?"
        if not self.owner.admit(self.peer, host):
            self.transport.close()
            return
        self.admitted = True
        super().callback_connected()

    def callback_disconnected(self, exc: Exception | None) -> None:
        if self.admitted:
            self.admitted = False
            self.owner.connections -= 1
        super().callback_disconnected(exc)

    async def handle_request(self) -> None:
        if not self.admitted:
            return
        _PEER.set(self.peer)  # this request's own task: nothing else sees it
        await super().handle_request()  # type: ignore[no-untyped-call]  # untyped in pymodbus 3.16


class _Server(ModbusTcpServer):
    def __init__(self, owner: QseServer, device: SimDevice, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(device, **kwargs)

    def callback_new_connection(self) -> _Handler:
        handler = _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]
        handler.owner = self._owner
        return handler
