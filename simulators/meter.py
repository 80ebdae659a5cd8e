"""Simulated site meter (e.g. Eastron SDM630) with its register map taken from the device profile.

Registers are laid out from the profile's points, so the simulator and the driver cannot disagree on
addresses: one contiguous table from the lowest to the highest point, so a driver may read several
points in one request (registers between points read as 0; the real meter has other measurements
there), with float/int encoding and word order per the profile. Values are computed when a request
arrives, except frequency: a real meter measures it over a window of cycles and refreshes the register
every `frequency_refresh_s` (the profile's), so the simulator holds each value for one refresh window
and reads within a window return the same measurement. `import_kwh` integrates power via `advance()`.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from mullet.drivers.device_profiles import MeterProfile, load_meter_profile
from mullet.simulators.modbus_server import (
    READ_HOLDING,
    READ_INPUT,
    Blocks,
    ModbusDeviceServer,
    unused_bits,
    unused_registers,
)
from mullet.simulators.registers import encode_point


class FrequencyScript:
    """Grid frequency over time: `default_hz` until the first step, then each step's value held
    until the next one (steps are `(seconds since start, Hz)`)."""

    def __init__(self, default_hz: float, steps: Sequence[tuple[float, float]] = ()) -> None:
        ordered = sorted(steps)
        self.default_hz = default_hz
        self._times_s = [t for t, _ in ordered]
        self._values_hz = [hz for _, hz in ordered]

    def at(self, elapsed_s: float) -> float:
        index = bisect_right(self._times_s, elapsed_s)
        return self._values_hz[index - 1] if index else self.default_hz


class MeterSim(ModbusDeviceServer):
    """Modbus/TCP meter reporting `power_kw()` (as W), `frequency_hz()` and integrated import kWh.

    `override(point, value)` pins a point to a fixed value (NaN included) until `clear_overrides()`,
    to test how readers handle bad or extreme readings. `glitch_frequency(hz)` makes the next
    refresh window, and only that one, report `hz`.
    """

    def __init__(
        self,
        *,
        power_kw: Callable[[], float],
        frequency_hz: Callable[[], float],
        host: str = "127.0.0.1",
        port: int = 0,
        device_id: int = 1,
        profile: MeterProfile | str = "eastron-sdm630",
        voltage_v: float = 230.0,
        name: str = "meter",
        frequency_refresh_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`frequency_refresh_s`: None takes the profile's; 0 makes every read a fresh measurement."""
        super().__init__(name=name, host=host, port=port, device_id=device_id)
        self.profile = load_meter_profile(profile) if isinstance(profile, str) else profile
        self.voltage_v = voltage_v
        self.import_kwh = 0.0
        self.overrides: dict[str, float] = {}
        self._power_kw = power_kw
        self._frequency_hz = frequency_hz
        points = self.profile.points.values()
        self._start = min(p.address for p in points)
        self._end = max(p.address + p.count for p in points)
        self._function_code = READ_INPUT if self.profile.table == "input" else READ_HOLDING
        self.frequency_refresh_s = (
            self.profile.frequency_refresh_s if frequency_refresh_s is None else frequency_refresh_s
        )
        self.refreshes = 0  # refresh windows that were read, each one frequency measurement
        # (Hz, reads) of the last completed windows: how often each measurement was read.
        self.windows: deque[tuple[float, int]] = deque(maxlen=64)
        self._reads_in_window = 0
        self._clock = clock
        self._origin_s = clock()
        self._window = -1
        self._held_hz = math.nan
        self._glitch_hz: float | None = None

    @property
    def held_hz(self) -> float:
        """The frequency measurement of the current refresh window (NaN before the first read)."""
        return self._held_hz

    def glitch_frequency(self, hz: float) -> None:
        """The next refresh window reports `hz` instead of the grid's frequency: one bad measurement
        (a meter's computation or a CT transient), held for one window like any other."""
        self._glitch_hz = hz

    def _measured_hz(self, grid_hz: float) -> float:
        if self.frequency_refresh_s <= 0:
            return grid_hz
        window = int((self._clock() - self._origin_s) // self.frequency_refresh_s)
        if window != self._window:
            if self._reads_in_window:
                self.windows.append((self._held_hz, self._reads_in_window))
            self._window = window
            self.refreshes += 1
            self._held_hz = grid_hz if self._glitch_hz is None else self._glitch_hz
            self._glitch_hz = None
            self._reads_in_window = 0
        self._reads_in_window += 1
        return self._held_hz

    def override(self, point: str, value: float) -> None:
        if point not in self.profile.points:
            raise KeyError(f"{self.profile.name} has no point {point!r}")
        self.overrides[point] = value

    def clear_overrides(self, point: str | None = None) -> None:
        if point is None:
            self.overrides.clear()
        else:
            self.overrides.pop(point, None)

    def advance(self, dt_s: float) -> None:
        """Integrate import energy over `dt_s` (export does not count as import)."""
        power_kw = self._power_kw()
        if math.isfinite(power_kw) and power_kw > 0:
            self.import_kwh += power_kw * dt_s / 3600.0

    def values(self) -> dict[str, float]:
        """Every point as the meter would answer it now."""
        live: dict[str, float] = {
            "power_w": self._power_kw() * 1000.0,
            "frequency_hz": self._measured_hz(self._frequency_hz()),
            "import_kwh": self.import_kwh,
        }
        out: dict[str, float] = {}
        for name in self.profile.points:
            if name in self.overrides:
                out[name] = self.overrides[name]
            elif name in live:
                out[name] = live[name]
            elif name.startswith("voltage_"):
                out[name] = self.voltage_v
            else:
                out[name] = 0.0
        return out

    def _blocks(self) -> Blocks:
        table = [SimData(self._start, count=self._end - self._start, values=0, datatype=DataType.REGISTERS)]
        if self.profile.table == "input":
            return unused_bits(), unused_bits(), unused_registers(), table
        return unused_bits(), unused_bits(), table, unused_registers()

    def _on_request(
        self,
        function_code: int,
        block_start: int,
        address: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code != self._function_code:
            return ExcCodes.ILLEGAL_FUNCTION
        for name, value in self.values().items():
            point = self.profile.points[name]
            offset = point.address - block_start
            registers[offset : offset + point.count] = encode_point(
                value, point.type, self.profile.word_order
            )
        return None
