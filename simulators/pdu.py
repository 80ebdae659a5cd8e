"""Simulated switched PDUs in both switching styles, with register maps taken from the device profile.

- `CoilPduSim` (`switch = "coil"`, NETIO style): outlet n is coil `switch_base + n`; FC 01 reads,
  FC 05 writes, FC 15 too when the profile has `multi_write`.
- `HoldingPduSim` (`switch = "holding"`, MicroBT style): outlet n is holding register
  `switch_base + n`; FC 03 reads its on/off code, FC 06 writes `on_code`/`off_code` (any other value
  is refused with ILLEGAL_VALUE), FC 16 too when the profile has `multi_write`.

Shared by both: outlet n reports its power at `power_base + power_stride * n` in the profile's table,
type, scale and word order; and, when the profile has a `[login]`, outlet writes are refused with
DEVICE_FAILURE until the key is written to the login register (FC 06; a wrong key is ILLEGAL_VALUE and
ends the session). The session belongs to the device, not to a connection; every accepted write
(login or outlet) keeps it open for `login.idle_s`, reads do not. The login register reads 1 while a
session is open, else 0. Power and states are readable without a login.

A PDU only knows outlet states; what an outlet feeds, and what switching it does to that load, is the
caller's (`SimulatedSite`) business via `outlet_power_w` and `on_switch`. `make_pdu_sim` builds the
class a profile needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from mullet.drivers.device_profiles import PduProfile, SwitchStyle, load_pdu_profile
from mullet.simulators.modbus_server import (
    READ_COILS,
    READ_HOLDING,
    READ_INPUT,
    WRITE_COIL,
    WRITE_COILS,
    WRITE_REGISTER,
    WRITE_REGISTERS,
    Blocks,
    ModbusDeviceServer,
    unused_bits,
    unused_registers,
)
from mullet.simulators.registers import encode_point

_COIL_CODES = frozenset({READ_COILS, WRITE_COIL, WRITE_COILS})
_HOLDING_CODES = frozenset({READ_HOLDING, WRITE_REGISTER, WRITE_REGISTERS})
NOT_LOGGED_IN = ExcCodes.DEVICE_FAILURE  # the answer to an outlet write without a login session

Values = list[int] | list[bool] | None


class PduSimBase(ModbusDeviceServer):
    """Modbus/TCP PDU with `outlets` outlets, all on at start.

    `switches` records every outlet write accepted over Modbus as `(outlet, on)`, in order, so tests
    can see what a client asked for (local `set_outlet()` calls are not recorded). `logins`,
    `bad_logins` and `refused` (outlet writes refused for want of a login) count what the login
    gate saw. `clock` (monotonic seconds) times the login session.
    """

    switch_style: ClassVar[SwitchStyle]

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name=pdu_id, host=host, port=port, device_id=device_id)
        self.pdu_id = pdu_id
        self.outlets = outlets
        self.profile = load_pdu_profile(profile) if isinstance(profile, str) else profile
        if self.profile.switch != self.switch_style:
            raise ValueError(
                f"{type(self).__name__} simulates switch = {self.switch_style!r} PDUs;"
                f" profile {self.profile.name!r} has switch = {self.profile.switch!r}"
            )
        self.profile.check_outlets(outlets)
        self.outlets_on: dict[int, bool] = dict.fromkeys(range(1, outlets + 1), True)
        self.switches: list[tuple[int, bool]] = []
        self.logins = 0
        self.bad_logins = 0
        self.refused = 0
        self._session_until_s: float | None = None
        self._clock = clock
        self._outlet_power_w = outlet_power_w
        self._on_switch = on_switch

    # model

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

    @property
    def logged_in(self) -> bool:
        """Whether outlet writes are accepted now (always, for a profile without a login)."""
        if self.profile.login is None:
            return True
        return self._session_until_s is not None and self._clock() < self._session_until_s

    def expire_login(self) -> None:
        """End the login session now, as the idle timeout or a device reboot would."""
        self._session_until_s = None

    # register tables

    def _blocks(self) -> Blocks:
        holding = self._holding_switch_data()
        login = self.profile.login
        if login is not None:
            holding.append(SimData(login.register, count=1, values=0, datatype=DataType.REGISTERS))
        power = [
            SimData(
                self.profile.power_address(1),
                count=self.profile.power_stride * self.outlets,
                values=0,
                datatype=DataType.REGISTERS,
            )
        ]
        inputs: list[SimData] = []
        if self.profile.power_table == "input":
            inputs = power
        else:
            holding.extend(power)
        return (
            self._coil_data() or unused_bits(),
            unused_bits(),
            holding or unused_registers(),
            inputs or unused_registers(),
        )

    def _coil_data(self) -> list[SimData]:
        return []

    def _holding_switch_data(self) -> list[SimData]:
        return []

    def _on_request(
        self,
        function_code: int,
        block_start: int,
        address: int,
        registers: list[int],
        values: Values,
    ) -> ExcCodes | None:
        if function_code in _HOLDING_CODES:
            if values is not None:
                return self._write_holding(function_code, address, [int(v) for v in values])
            self._refresh_holding(block_start, registers)
            return None
        if function_code == READ_INPUT:
            if self.profile.power_table == "input":
                self._refresh_power(block_start, registers)
            return None
        if function_code in _COIL_CODES:
            return self._coil_request(function_code, block_start, address, registers, values)
        return ExcCodes.ILLEGAL_FUNCTION

    def _refresh_holding(self, block_start: int, registers: list[int]) -> None:
        self._refresh_switch_registers(block_start, registers)
        if self.profile.login is not None:
            registers[self.profile.login.register - block_start] = int(self.logged_in)
        if self.profile.power_table == "holding":
            self._refresh_power(block_start, registers)

    def _refresh_switch_registers(self, block_start: int, registers: list[int]) -> None:
        """Holding-register switch states (HoldingPduSim)."""

    def _refresh_power(self, block_start: int, registers: list[int]) -> None:
        profile = self.profile
        for outlet in self.outlets_on:
            offset = profile.power_address(outlet) - block_start
            words = encode_point(
                self.outlet_power_w(outlet) / profile.power_scale_w,
                profile.power_type,
                profile.power_word_order,
            )
            registers[offset : offset + len(words)] = words

    def _write_holding(self, function_code: int, address: int, values: list[int]) -> ExcCodes | None:
        login = self.profile.login
        if login is not None and address <= login.register < address + len(values):
            if function_code != WRITE_REGISTER:
                return ExcCodes.ILLEGAL_FUNCTION
            if values[0] != login.value:
                self.bad_logins += 1
                self._session_until_s = None
                return ExcCodes.ILLEGAL_VALUE
            self.logins += 1
            self._touch()
            return None
        return self._write_switch_registers(function_code, address, values)

    def _write_switch_registers(self, function_code: int, address: int, values: list[int]) -> ExcCodes | None:
        """Outlet writes by holding register (HoldingPduSim); anything else is read-only."""
        return ExcCodes.ILLEGAL_ADDRESS

    def _coil_request(
        self, function_code: int, block_start: int, address: int, registers: list[int], values: Values
    ) -> ExcCodes | None:
        """Coil reads and writes (CoilPduSim)."""
        return ExcCodes.ILLEGAL_FUNCTION

    # writes shared by both styles

    def _outlets_addressed(
        self, function_code: int, multi_code: int, address: int, count: int
    ) -> int | ExcCodes:
        """First outlet of a write of `count` outlets at `address`, or why it is refused."""
        if function_code == multi_code and not self.profile.multi_write:
            return ExcCodes.ILLEGAL_FUNCTION
        first = address - self.profile.switch_base
        if first < 1 or first + count - 1 > self.outlets:
            return ExcCodes.ILLEGAL_ADDRESS
        return first

    def _apply(self, first: int, states: list[bool]) -> ExcCodes | None:
        """Switch outlets `first`.. to `states`, if the login gate lets the write through."""
        if not self.logged_in:
            self.refused += 1
            return NOT_LOGGED_IN
        self._touch()
        for index, on in enumerate(states):
            self.switches.append((first + index, on))
            self.set_outlet(first + index, on)
        return None

    def _touch(self) -> None:
        if self.profile.login is not None:
            self._session_until_s = self._clock() + self.profile.login.idle_s


class CoilPduSim(PduSimBase):
    """NETIO-style PDU: outlets are coils (set = on)."""

    switch_style = "coil"

    def _coil_data(self) -> list[SimData]:
        return [
            SimData(self.profile.switch_address(1), count=self.outlets, values=True, datatype=DataType.BITS)
        ]

    def _coil_request(
        self, function_code: int, block_start: int, address: int, registers: list[int], values: Values
    ) -> ExcCodes | None:
        count = len(values) if values is not None else 1
        first = self._outlets_addressed(function_code, WRITE_COILS, address, count)
        if isinstance(first, ExcCodes):
            return first
        if values is not None and (refused := self._apply(first, [bool(v) for v in values])):
            return refused
        # Bit tables are packed 16 coils per register, lowest coil in the lowest bit.
        registers[:] = [0] * len(registers)
        for outlet, on in self.outlets_on.items():
            if on:
                bit = self.profile.switch_address(outlet)
                registers[bit // 16 - block_start] |= 1 << (bit % 16)
        return None


class HoldingPduSim(PduSimBase):
    """MicroBT-style PDU: outlets are holding registers written with on/off codes, after a login."""

    switch_style = "holding"

    def _holding_switch_data(self) -> list[SimData]:
        return [
            SimData(
                self.profile.switch_address(1),
                count=self.outlets,
                values=self.profile.on_code,
                datatype=DataType.REGISTERS,
            )
        ]

    def _refresh_switch_registers(self, block_start: int, registers: list[int]) -> None:
        for outlet, on in self.outlets_on.items():
            registers[self.profile.switch_address(outlet) - block_start] = self.profile.code(on)

    def _write_switch_registers(self, function_code: int, address: int, values: list[int]) -> ExcCodes | None:
        first = self._outlets_addressed(function_code, WRITE_REGISTERS, address, len(values))
        if isinstance(first, ExcCodes):
            return first
        codes = {self.profile.on_code: True, self.profile.off_code: False}
        if any(value not in codes for value in values):
            return ExcCodes.ILLEGAL_VALUE
        return self._apply(first, [codes[value] for value in values])


_BY_STYLE: dict[str, type[PduSimBase]] = {"coil": CoilPduSim, "holding": HoldingPduSim}


def make_pdu_sim(
    pdu_id: str,
    outlets: int,
    *,
    outlet_power_w: Callable[[int], float],
    on_switch: Callable[[int, bool], None] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    device_id: int = 1,
    profile: PduProfile | str = "netio-coils",
    clock: Callable[[], float] = time.monotonic,
) -> PduSimBase:
    """The simulator class the profile's switching style needs, built with these arguments."""
    resolved = load_pdu_profile(profile) if isinstance(profile, str) else profile
    return _BY_STYLE[resolved.switch](
        pdu_id,
        outlets,
        outlet_power_w=outlet_power_w,
        on_switch=on_switch,
        host=host,
        port=port,
        device_id=device_id,
        profile=resolved,
        clock=clock,
    )
