"""Simulated switched PDU (NETIO-style coils) with its register map taken from the device profile.

Outlet n is coil `coil_base + n` (FC 01 read, FC 05/15 write) and reports its power on registers
`power_base + 2n` (+1) in the profile's type and scale. The PDU only knows outlet states; what an
outlet feeds, and what switching it does to that load, is the caller's (`SimulatedSite`) business via
`outlet_power_w` and `on_switch`.
"""

from __future__ import annotations

from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from mullet.drivers.device_profiles import PduProfile, load_pdu_profile
from mullet.simulators.modbus_server import (
    READ_COILS,
    READ_HOLDING,
    READ_INPUT,
    WRITE_COIL,
    WRITE_COILS,
    Blocks,
    ModbusDeviceServer,
    unused_bits,
    unused_registers,
)
from mullet.simulators.registers import encode_point

_COIL_CODES = frozenset({READ_COILS, WRITE_COIL, WRITE_COILS})
_POWER_STRIDE = 2  # registers per outlet, whatever the power type


class PduSim(ModbusDeviceServer):
    """Modbus/TCP PDU with `outlets` outlets, all on at start.

    `switches` records every outlet write received over Modbus as `(outlet, on)`, in order, so tests
    can see what a client asked for (local `set_outlet()` calls are not recorded).
    """

    def __init__(
        self,
        pdu_id: str,
        outlets: int,
        *,
        outlet_power_w: Callable[[int], float],
        on_switch: Callable[[int, bool], None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        device_id: int = 1,
        profile: PduProfile | str = "netio-coils",
    ) -> None:
        super().__init__(name=pdu_id, host=host, port=port, device_id=device_id)
        self.pdu_id = pdu_id
        self.outlets = outlets
        self.profile = load_pdu_profile(profile) if isinstance(profile, str) else profile
        self.outlets_on: dict[int, bool] = dict.fromkeys(range(1, outlets + 1), True)
        self.switches: list[tuple[int, bool]] = []
        self._outlet_power_w = outlet_power_w
        self._on_switch = on_switch
        self._power_code = READ_INPUT if self.profile.power_table == "input" else READ_HOLDING

    def is_on(self, outlet: int) -> bool:
        return self.outlets_on[outlet]

    def set_outlet(self, outlet: int, on: bool) -> None:
        """Switch an outlet as if by hand (also what a Modbus write does)."""
        if outlet not in self.outlets_on:
            raise KeyError(f"{self.pdu_id} has no outlet {outlet}")
        changed = self.outlets_on[outlet] != on
        self.outlets_on[outlet] = on
        if changed and self._on_switch is not None:
            self._on_switch(outlet, on)

    def outlet_power_w(self, outlet: int) -> float:
        return self._outlet_power_w(outlet) if self.outlets_on[outlet] else 0.0

    def _blocks(self) -> Blocks:
        coils = [SimData(self.profile.coil_base + 1, count=self.outlets, values=True, datatype=DataType.BITS)]
        power = [
            SimData(
                self.profile.power_base + _POWER_STRIDE,
                count=_POWER_STRIDE * self.outlets,
                values=0,
                datatype=DataType.REGISTERS,
            )
        ]
        if self.profile.power_table == "input":
            return coils, unused_bits(), unused_registers(), power
        return coils, unused_bits(), power, unused_registers()

    def _on_request(
        self,
        function_code: int,
        block_start: int,
        address: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code in _COIL_CODES:
            return self._coils(block_start, address, registers, values)
        if function_code == self._power_code:
            for outlet in self.outlets_on:
                offset = self.profile.power_base + _POWER_STRIDE * outlet - block_start
                words = encode_point(
                    self.outlet_power_w(outlet) / self.profile.power_scale_w,
                    self.profile.power_type,
                )
                registers[offset : offset + len(words)] = words
            return None
        return ExcCodes.ILLEGAL_FUNCTION

    def _coils(
        self,
        block_start: int,
        address: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        first = address - self.profile.coil_base
        count = len(values) if values is not None else 1
        if first < 1 or first + count - 1 > self.outlets:
            return ExcCodes.ILLEGAL_ADDRESS
        if values is not None:
            for index, value in enumerate(values):
                self.switches.append((first + index, bool(value)))
                self.set_outlet(first + index, bool(value))
        # Bit tables are packed 16 coils per register, lowest coil in the lowest bit.
        registers[:] = [0] * len(registers)
        for outlet, on in self.outlets_on.items():
            if on:
                bit = self.profile.coil_base + outlet
                registers[bit // 16 - block_start] |= 1 << (bit % 16)
        return None
