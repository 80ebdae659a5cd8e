"""A Modbus TCP client connection that puts a request on the wire without waiting for a loop turn.

pymodbus' async client costs ~40 us of Python per request on this VM and its write only leaves once a
task has been scheduled (bench/trip_latency.py: 50 PDU writes took ~2 ms to issue). The fast path needs
the write on the socket when `send()` returns. This module keeps pymodbus for what it does well, the
PDU classes and the MBAP framer (encode and decode), and owns only the connection.

One request is outstanding per connection at a time; others queue behind it and go out as its answer
arrives or it times out. The Modbus TCP implementation guide lets a client pipeline several
transactions, but devices need not serve them (pymodbus' own server drops the answer to a slow request
when a second one arrives), and a lost answer to an outlet cut is the worst place to find out.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteSingleRegisterRequest,
)

_MAX_TID = 0xFFFF
_FRAMER = FramerSocket(DecodePDU(is_server=False))  # buildFrame keeps no state


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request encoded ahead of time (the fast path's armed writes): sending it only puts the
    transaction id in front of the rest of the MBAP frame."""

    request: ModbusPDU
    tail: bytes  # the encoded frame after its transaction id

    @classmethod
    def of(cls, request: ModbusPDU) -> PreparedRequest:
        return cls(request, _FRAMER.buildFrame(request)[2:])


@dataclass(eq=False, slots=True)
class Transaction:
    """A request and the future of its answer; `written_s` (monotonic) once it is on the socket.
    The future fails with TimeoutError when no answer came within the timeout after writing, and with
    ConnectionResetError when the connection was lost first."""

    request: ModbusPDU
    answer: asyncio.Future[ModbusPDU]
    tail: bytes | None = None  # prebuilt frame after its id (PreparedRequest), else encoded when written
    tid: int = 0  # the MBAP transaction id it went out with
    written_s: float | None = None
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class ModbusTcpConnection(asyncio.Protocol):
    """One TCP connection: requests go out one at a time, each bounded by `timeout_s`."""

    def __init__(self, timeout_s: float, on_lost: Callable[[], None]) -> None:
        self.timeout_s = timeout_s
        self._framer = FramerSocket(DecodePDU(is_server=False))
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._inflight: Transaction | None = None
        self._untracked = 0  # the id of a write_now not yet tracked (the fast path's two halves)
        self._queue: deque[Transaction] = deque()
        self._tid = 0
        self.late_answers = 0  # answers that came after their request timed out

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport  # asyncio sets TCP_NODELAY on TCP transports

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._untracked = 0
        waiting = [self._inflight, *self._queue] if self._inflight else list(self._queue)
        self._inflight = None
        self._queue.clear()
        for transaction in waiting:
            self._settle(transaction, ConnectionResetError("connection to the device lost"))
        self._on_lost()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer:
            try:
                used, pdu = self._framer.handleFrame(self._buffer, 0, 0)
            except ModbusException:
                # Undecodable bytes: the stream is out of step, and only a new connection resyncs it.
                self._buffer = b""
                self.close()
                return
            if not used:
                return  # wait for the rest of the frame
            self._buffer = self._buffer[used:]
            if pdu is None:
                continue
            transaction = self._inflight
            if transaction is None or pdu.transaction_id != transaction.tid:
                self.late_answers += 1
                continue
            self._settle(transaction, pdu)
            self._next()

    def send(self, request: ModbusPDU | PreparedRequest) -> Transaction:
        """Write `request` now if the connection is idle, else queue it behind the outstanding one.
        Raises ConnectionResetError when not connected."""
        if not self.connected:
            raise ConnectionResetError("not connected")
        answer = asyncio.get_running_loop().create_future()
        if isinstance(request, PreparedRequest):
            transaction = Transaction(request.request, answer, request.tail)
        else:
            transaction = Transaction(request, answer)
        if self._inflight is None and not self._untracked:
            self._write(transaction)
        else:
            self._queue.append(transaction)
        return transaction

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def write_now(self, prepared: PreparedRequest) -> int:
        """The fast path's write, with nothing but the write before the next one: on the wire now if
        the connection is up and idle. Returns the transaction id it carries (0: not written, queue it
        with `send()`). The connection counts as busy until `track()` makes it a transaction."""
        transport = self._transport
        if transport is None or self._inflight is not None or self._untracked or transport.is_closing():
            return 0
        tid = self._untracked = self._tid = self._tid % _MAX_TID + 1
        transport.write(tid.to_bytes(2, "big") + prepared.tail)
        return tid

    def track(self, prepared: PreparedRequest, tid: int, written_s: float) -> Transaction:
        """The transaction of a `write_now`, its timeout running."""
        self._untracked = 0
        answer = asyncio.get_running_loop().create_future()
        self._inflight = transaction = Transaction(prepared.request, answer, prepared.tail, tid, written_s)
        self._start_timer(transaction)
        return transaction

    def _start_timer(self, transaction: Transaction) -> None:
        if transaction._timer is None and not transaction.answer.done():
            transaction._timer = asyncio.get_running_loop().call_later(
                self.timeout_s, self._expire, transaction
            )

    def _write(self, transaction: Transaction) -> None:
        assert self._transport is not None
        tid = self._tid = self._tid % _MAX_TID + 1
        transaction.tid = tid
        if transaction.tail is None:
            transaction.request.transaction_id = tid
            self._transport.write(_FRAMER.buildFrame(transaction.request))
        else:  # a prepared request may be shared: the bytes sent, not the request object, carry the tid
            self._transport.write(tid.to_bytes(2, "big") + transaction.tail)
        transaction.written_s = time.monotonic()
        self._inflight = transaction
        self._start_timer(transaction)

    def _expire(self, transaction: Transaction) -> None:
        if self._inflight is transaction:
            self._settle(transaction, TimeoutError(f"no answer within {self.timeout_s} s"))
            self._next()

    def _next(self) -> None:
        self._inflight = None
        while self._queue and self.connected:
            transaction = self._queue.popleft()
            if not transaction.answer.done():  # its waiter may have been cancelled meanwhile
                self._write(transaction)
                return

    @staticmethod
    def _settle(transaction: Transaction, outcome: ModbusPDU | BaseException) -> None:
        if transaction._timer is not None:
            transaction._timer.cancel()
        if transaction.answer.done():
            return
        if isinstance(outcome, BaseException):
            transaction.answer.set_exception(outcome)
        else:
            transaction.answer.set_result(outcome)


class ModbusTcpClient:
    """The requests a PDU driver makes, over a `ModbusTcpConnection` it (re)opens on demand."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float,
        on_connection: Callable[[bool], None],
        keepalive_s: float | None = None,
    ) -> None:
        """`keepalive_s`: TCP keep-alive probes after that long idle and as often, three unanswered
        closing the connection, for a connection that may carry no requests for a long time."""
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.on_connection = on_connection
        self.keepalive_s = keepalive_s
        self.connection: ModbusTcpConnection | None = None  # the open one, if any

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.connection.connected

    async def connect(self) -> bool:
        """One attempt bounded by `timeout_s`; OSError/TimeoutError propagate to the caller."""
        if self.connected:
            return True
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout_s):
            transport, connection = await loop.create_connection(
                lambda: ModbusTcpConnection(self.timeout_s, self._lost), self.host, self.port
            )
        if self.keepalive_s is not None:
            probe_s = max(1, math.ceil(self.keepalive_s))  # the kernel counts whole seconds
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, probe_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, probe_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        self.connection = connection
        self.on_connection(True)
        return True

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def _lost(self) -> None:
        self.on_connection(False)

    def send(self, request: ModbusPDU | PreparedRequest) -> Transaction:
        """See ModbusTcpConnection.send; ConnectionResetError when not connected."""
        if self.connection is None:
            raise ConnectionResetError("not connected")
        return self.connection.send(request)

    async def execute(self, request: ModbusPDU) -> ModbusPDU:
        """The answer; TimeoutError, or ConnectionResetError (an OSError) when the link is down."""
        return await self.send(request).answer

    # the requests the PDU driver makes by name (outlet writes it builds itself: drivers/pdu/writes.py)

    async def write_register(self, address: int, value: int, device_id: int) -> ModbusPDU:
        return await self.execute(
            WriteSingleRegisterRequest(address=address, registers=[value], dev_id=device_id)
        )

    async def read_input_registers(self, address: int, count: int, device_id: int) -> ModbusPDU:
        return await self.execute(ReadInputRegistersRequest(address=address, count=count, dev_id=device_id))

    async def read_holding_registers(self, address: int, count: int, device_id: int) -> ModbusPDU:
        return await self.execute(ReadHoldingRegistersRequest(address=address, count=count, dev_id=device_id))
