"""Outlet switching as Modbus write requests, from the PDU's profile: which outlets go in one request
(contiguous runs when the profile allows multi writes), the request itself, and one PDU's switch
prepared ahead of time (`PreparedSwitch`, what an armed cut holds)."""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import WriteMultipleCoilsRequest, WriteSingleCoilRequest
from pymodbus.pdu.register_message import WriteMultipleRegistersRequest, WriteSingleRegisterRequest

from mullet.drivers.device_profiles import PduProfile
from mullet.drivers.modbus_tcp import PreparedRequest

MAX_COILS_PER_WRITE = 1968  # FC 15
MAX_REGISTERS_PER_WRITE = 123  # FC 16


def write_batches(profile: PduProfile, outlets: list[int]) -> list[tuple[int, int]]:
    """(first outlet, count) per write request: contiguous runs when multi writes are allowed."""
    if not profile.multi_write:
        return [(outlet, 1) for outlet in outlets]
    limit = MAX_COILS_PER_WRITE if profile.switch == "coil" else MAX_REGISTERS_PER_WRITE
    runs: list[tuple[int, int]] = []
    for outlet in outlets:
        if runs and runs[-1][0] + runs[-1][1] == outlet and runs[-1][1] < limit:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((outlet, 1))
    return runs


def write_request(profile: PduProfile, device_id: int, first: int, count: int, on: bool) -> ModbusPDU:
    """The request that switches outlets `first` .. `first + count - 1` on or off."""
    address = profile.switch_address(first)
    if profile.switch == "coil":
        if count == 1:
            return WriteSingleCoilRequest(address=address, bits=[on], dev_id=device_id)
        return WriteMultipleCoilsRequest(address=address, bits=[on] * count, dev_id=device_id)
    code = profile.code(on)
    if count == 1:
        return WriteSingleRegisterRequest(address=address, registers=[code], dev_id=device_id)
    return WriteMultipleRegistersRequest(address=address, registers=[code] * count, dev_id=device_id)


@dataclass(frozen=True, slots=True)
class PreparedSwitch:
    """One PDU's part of an armed cut, checked and batched ahead of time: (first outlet, count) per
    write request."""

    on: bool
    outlets: tuple[int, ...]
    batches: tuple[tuple[int, int], ...]  # of the valid outlets; switch() reports the others
    first: PreparedRequest | None  # the first batch's write, encoded
