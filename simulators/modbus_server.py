"""A pymodbus TCP server whose registers are computed from a live model on every request.

pymodbus 3.16 servers are built from `SimDevice`/`SimData` (the old datastore contexts are deprecated
wrappers over them). A device's `action` hook runs before each request is answered and may rewrite the
block's registers in place, so reads always see the model as of that moment instead of a copy refreshed
on a timer, and writes reach the model before the reply goes out.

Fault switches for tests: `responding = False` keeps the connection open but sends no replies (the
client times out; writes are not applied), and `stop()`/`start()` close and reopen the listener (the
client gets connection refused) on the same port; `exceptions = True` answers every request with a
Modbus exception (DEVICE_FAILURE), like a device whose application has failed behind a live stack.
"""

from __future__ import annotations

import abc

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from mullet.drivers.modbus_listener import ModbusListener

_log = structlog.get_logger()

# SimDevice with separate tables: (coils, discrete inputs, holding registers, input registers).
Blocks = tuple[list[SimData], list[SimData], list[SimData], list[SimData]]

READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT = 1, 2, 3, 4
WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS = 5, 6, 15, 16


def unused_bits() -> list[SimData]:
    """Placeholder for a bit table a device does not have: SimDevice needs every table non-empty,
    and bit tables cannot be marked invalid, so the `action` hook rejects their function codes."""
    return [SimData(0, count=16, values=False, datatype=DataType.BITS)]


def unused_registers() -> list[SimData]:
    """Placeholder for a register table a device does not have: every address is invalid."""
    return [SimData(0, datatype=DataType.INVALID)]


class ModbusDeviceServer(ModbusListener):
    """One simulated Modbus/TCP device on its own port (port 0 binds a free one; see `port`)."""

    def __init__(self, *, name: str, host: str, port: int, device_id: int) -> None:
        super().__init__(host=host, port=port)
        self.name = name
        self.device_id = device_id
        self.responding = True
        self.exceptions = False
        self.requests = 0

    @abc.abstractmethod
    def _blocks(self) -> Blocks:
        """The register tables, built once per start."""

    @abc.abstractmethod
    def _on_request(
        self,
        function_code: int,
        block_start: int,
        address: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Refresh `registers` (the whole table, in place) from the model and apply writes.

        `block_start` is the table's first address; for bit tables it is counted in 16-bit
        registers, with bit `b` at register `b // 16 - block_start`, bit position `b % 16`."""

    def _build(self) -> ModbusTcpServer:
        device = SimDevice(self.device_id, simdata=self._blocks(), action=self._action)
        return ModbusTcpServer(device, address=(self.host, self._port), trace_packet=self._trace_packet)

    def _started(self) -> None:
        _log.debug("modbus sim listening", device=self.name, host=self.host, port=self._port)

    def _stopped(self) -> None:
        _log.debug("modbus sim stopped", device=self.name, port=self._port)

    async def _action(
        self,
        function_code: int,
        block_start: int,
        address: int,
        _count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if not self.responding:
            return ExcCodes.DEVICE_FAILURE  # never seen: _trace_packet drops the reply
        self.requests += 1
        if self.exceptions:
            return ExcCodes.DEVICE_FAILURE
        return self._on_request(function_code, block_start, address, registers, values)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # An empty frame is never written: the request goes unanswered, like a hung device.
        return data if not sending or self.responding else b""
