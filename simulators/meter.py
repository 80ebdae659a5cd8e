"""Simulated site meter (e.g. Eastron SDM630) with its register map taken from the device profile.

Registers are laid out from the profile's points, so the simulator and the driver cannot disagree on
addresses: one contiguous table from the lowest to the highest point, so a driver may read several
points in one request (registers between points read as 0; the real meter has other measurements
there), with float/int encoding and word order per the profile. Values are computed when a request
arrives, except frequency: a real meter measures it over a window of cycles and refreshes the register
every `frequency_refresh_s` (the profile's), so the simulator holds each value for one refresh window
and reads within a window return the same measurement. `import_kwh` integrates power via `advance()`.

A point's value is served in the profile's unit: the register holds `value / scale`. A SunSpec profile is
served as a real SunSpec map at `sunspec_base`: the "SunS" marker, common model 1, the meter model
(`sunspec_model`, 201-204) laid out from pysunspec2's definitions as the driver reads them, and the end
marker. Each scale factor is chosen per read as the smallest (down to -3) that makes every value it
scales representable; points the profile does not serve read as "not implemented", and so does a value
an integer cannot hold (NaN, infinity).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData

from mullet.drivers import sunspec
from mullet.drivers.device_profiles import MeterProfile, Point, load_meter_profile
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
        sunspec_base: int = sunspec.DEFAULT_BASES[0],
        sunspec_model: int = 203,
    ) -> None:
        """`frequency_refresh_s`: None takes the profile's; 0 makes every read a fresh measurement.
        `sunspec_base` / `sunspec_model`: where and which meter model a SunSpec profile is served."""
        super().__init__(name=name, host=host, port=port, device_id=device_id)
        self.profile = load_meter_profile(profile) if isinstance(profile, str) else profile
        self.voltage_v = voltage_v
        self.import_kwh = 0.0
        self.overrides: dict[str, float] = {}
        self.raw_overrides: dict[str, int] = {}  # SunSpec point name -> raw register value
        self._power_kw = power_kw
        self._frequency_hz = frequency_hz
        self._template: list[int] = []
        self.sunspec_model: int | None = None
        self.sunspec_model_address: int | None = None
        if self.profile.sunspec is not None:
            self._sunspec_map(sunspec_base, sunspec_model, device_id)
        else:
            self.layout = self.profile
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

    def _sunspec_map(self, base: int, model_id: int, device_id: int) -> None:
        """The SunSpec map's constant part, "not implemented" in every meter point; values per read."""
        if model_id not in sunspec.METER_MODELS:
            raise ValueError(f"sunspec_model must be one of {sunspec.METER_MODELS}, got {model_id}")
        common_length = sunspec.model_length(sunspec.COMMON_MODEL)
        model_address = base + 2 + 2 + common_length
        meter_length = sunspec.model_length(model_id)
        end = model_address + 2 + meter_length
        if end + 2 > 0x10000:
            raise ValueError(f"a SunSpec map at {base} runs past the last address")
        words = [0] * (end + 2 - base)
        words[0:2] = sunspec.SUNS_MARKER
        common = base + 2
        words[common - base : common - base + 2] = [sunspec.COMMON_MODEL, common_length]
        common_points = sunspec.model_points(sunspec.COMMON_MODEL)
        for point_name, text in (("Mn", "Mullet"), ("Md", "MeterSim"), ("SN", f"sim-{model_id}")):
            at = common + common_points[point_name].offset - base
            raw = text.encode("ascii")
            raw += b"\0" * (len(raw) % 2)
            words[at : at + len(raw) // 2] = [
                int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw) - 1, 2)
            ]
        words[common + common_points["DA"].offset - base] = device_id
        words[model_address - base : model_address - base + 2] = [model_id, meter_length]
        self._meter_points = sunspec.model_points(model_id)
        for point in self._meter_points.values():
            if point.offset >= 2 and point.sunspec_type in sunspec.TYPES:
                register_type, missing = sunspec.TYPES[point.sunspec_type]
                at = model_address + point.offset - base
                words[at : at + (2 if register_type.endswith("32") else 1)] = encode_point(
                    missing, register_type
                )
        words[end - base : end - base + 2] = [sunspec.END_MODEL_ID, 0]
        self._template = words
        self._start, self._end = base, end + 2
        self.sunspec_model, self.sunspec_model_address = model_id, model_address
        self.layout = sunspec.resolve(self.profile, model_id, model_address)

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
        if point not in self.layout.points:
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
        for name in self.layout.points:
            if name.endswith(".sf"):
                continue
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
        if self._template:
            registers[: len(self._template)] = self._template
            self._encode_scaled(block_start, registers)
            return None
        for name, value in self.values().items():
            point = self.layout.points[name]
            offset = point.address - block_start
            registers[offset : offset + point.count] = encode_point(
                value / point.scale, point.type, self.profile.word_order
            )
        return None

    def _encode_scaled(self, block_start: int, registers: list[int]) -> None:
        """Every served SunSpec value with its scale factor, chosen so the value fits its type."""
        values = self.values()
        groups: dict[str, list[Point]] = {}
        for name in values:
            point = self.layout.points[name]
            if point.sf is not None:
                groups.setdefault(point.sf, []).append(point)
        for sf_name, points in groups.items():
            raws = {p.name: values[p.name] / p.scale for p in points}
            finite = [abs(v) for v in raws.values() if math.isfinite(v)]
            sf = _scale_factor(max(finite, default=0.0), points[0].type)
            self._put(block_start, registers, self.layout.points[sf_name], sf)
            for point in points:
                raw = raws[point.name]
                missing = point.not_implemented if point.not_implemented is not None else 0
                self._put(
                    block_start, registers, point, round(raw / 10.0**sf) if math.isfinite(raw) else missing
                )
        model_address = self.sunspec_model_address
        assert model_address is not None
        for sunspec_name, raw_value in self.raw_overrides.items():
            model_point = self._meter_points[sunspec_name]
            register_type, _ = sunspec.TYPES[model_point.sunspec_type]
            at = model_address + model_point.offset - block_start
            registers[at : at + (2 if register_type.endswith("32") else 1)] = encode_point(
                raw_value, register_type
            )

    @staticmethod
    def _put(block_start: int, registers: list[int], point: Point, raw: int) -> None:
        at = point.address - block_start
        registers[at : at + point.count] = encode_point(raw, point.type)

    def override_raw(self, sunspec_point: str, raw: int) -> None:
        """Pin a SunSpec meter-model point (e.g. "W_SF") to a raw register value, after scaling."""
        if sunspec_point not in getattr(self, "_meter_points", {}):
            raise KeyError(f"{self.profile.name} serves no SunSpec point {sunspec_point!r}")
        self.raw_overrides[sunspec_point] = raw


_INT_MAX = {"int16": 0x7FFF, "uint16": 0xFFFE, "int32": 0x7FFF_FFFF, "uint32": 0xFFFF_FFFE}
MIN_SF = -3  # the finest scale the simulator serves (a mWh, a mHz)


def _scale_factor(magnitude: float, register_type: str) -> int:
    """The smallest scale factor (>= MIN_SF) at which `magnitude` fits `register_type`."""
    limit = _INT_MAX.get(register_type, 0x7FFF)
    for sf in range(MIN_SF, sunspec.SF_MAX + 1):
        if magnitude / 10.0**sf <= limit:
            return sf
    return sunspec.SF_MAX
