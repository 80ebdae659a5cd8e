"""Site meter over Modbus TCP: one block read per sample, on a fixed schedule, never blocking for long.

pymodbus defaults (timeout 3 s, retries 3) can stall ~12 s on a dead meter (design.md section 5):
this path uses a small timeout and no retries, and a missed sample simply leaves the reading to go
stale, which the daemon treats as unknown, never as 0 kW.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from mullet.drivers.cancel import reraise_swallowed_cancel
from mullet.drivers.device_profiles import MeterProfile, Point

log = structlog.get_logger("mullet.meter")

MAX_PLAUSIBLE_HZ = 100.0


@dataclass(frozen=True, slots=True)
class MeterSample:
    power_kw: float
    frequency_hz: float
    monotonic_s: float


SampleHandler = Callable[[MeterSample], None]
RejectHandler = Callable[[str], None]


def plausibility_error(power_w: float, frequency_hz: float) -> str | None:
    """Why a raw sample must not be used, or None. The reason labels a metric."""
    if not (math.isfinite(power_w) and math.isfinite(frequency_hz)):
        return "not_finite"
    if frequency_hz <= 0 or frequency_hz > MAX_PLAUSIBLE_HZ:
        return "frequency_out_of_range"
    if power_w < 0:
        # Sites here never export; a negative import means a wiring or CT fault, not free power.
        return "negative_power"
    return None


class ModbusMeter:
    """Polls one meter at `poll_hz`: good samples go to `on_sample`, reasons for bad ones to `on_reject`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        device_id: int,
        profile: MeterProfile,
        poll_hz: float,
        timeout_s: float,
        on_sample: SampleHandler,
        on_reject: RejectHandler,
        on_round_trip: Callable[[float], None] | None = None,
        confirm_now: Callable[[], bool] | None = None,
        confirm_delay_s: float = 0.0,
        max_confirm_reads: int = 4,
    ) -> None:
        """`confirm_now` is asked after each sample; while it says yes the meter reads again after
        `confirm_delay_s` instead of waiting for the next slot (at most `max_confirm_reads` extra
        reads per slot), so a trip's confirming samples do not each cost a poll period."""
        self.host = host
        self.port = port
        self.device_id = device_id
        self.profile = profile
        self.period_s = 1.0 / poll_hz
        self.timeout_s = timeout_s
        self.on_sample = on_sample
        self.on_reject = on_reject
        self.on_round_trip = on_round_trip
        self.confirm_now = confirm_now
        self.confirm_delay_s = confirm_delay_s
        self.max_confirm_reads = max_confirm_reads
        self.confirm_reads = 0
        self._start, self._count = profile.block(("power_w", "frequency_hz"))
        self._power = profile.points["power_w"]
        self._frequency = profile.points["frequency_hz"]

    async def run(self) -> None:
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        next_s = time.monotonic()
        try:
            while True:
                await self._poll_once(client)
                reraise_swallowed_cancel()  # pymodbus awaits through wait_for (Python 3.11)
                for _ in range(self.max_confirm_reads):
                    if self.confirm_now is None or not self.confirm_now():
                        break
                    # Off the schedule: the next slot stays where it was.
                    await asyncio.sleep(self.confirm_delay_s)
                    self.confirm_reads += 1
                    await self._poll_once(client)
                    reraise_swallowed_cancel()
                # Fixed-rate schedule; after a long stall skip missed slots instead of bursting.
                next_s += self.period_s
                now_s = time.monotonic()
                if next_s < now_s:
                    next_s = now_s + self.period_s
                await asyncio.sleep(next_s - now_s)
        finally:
            client.close()

    async def _poll_once(self, client: AsyncModbusTcpClient) -> None:
        if not client.connected:
            try:
                await asyncio.wait_for(client.connect(), self.timeout_s * 5)
            except (TimeoutError, OSError, ModbusException):
                pass
            if not client.connected:
                self.on_reject("unreachable")
                return
        started_s = time.monotonic()
        try:
            read = (
                client.read_input_registers
                if self.profile.table == "input"
                else client.read_holding_registers
            )
            response = await read(self._start, count=self._count, device_id=self.device_id)
        except (ModbusException, TimeoutError, OSError) as exc:
            log.debug("meter read failed", error=str(exc))
            self.on_reject("timeout")
            return
        done_s = time.monotonic()
        if self.on_round_trip is not None:
            self.on_round_trip(done_s - started_s)
        if response.isError() or len(response.registers) < self._count:
            self.on_reject("modbus_error")
            return
        power_w = self._decode(client, response.registers, self._power)
        frequency_hz = self._decode(client, response.registers, self._frequency)
        reason = plausibility_error(power_w, frequency_hz)
        if reason is not None:
            self.on_reject(reason)
            return
        self.on_sample(MeterSample(power_kw=power_w / 1000.0, frequency_hz=frequency_hz, monotonic_s=done_s))

    def _decode(self, client: AsyncModbusTcpClient, registers: Sequence[int], point: Point) -> float:
        offset = point.address - self._start
        value = client.convert_from_registers(
            registers[offset : offset + point.count],
            data_type=getattr(client.DATATYPE, point.type.upper()),
            word_order=self.profile.word_order,
        )
        assert isinstance(value, int | float)
        return float(value)
