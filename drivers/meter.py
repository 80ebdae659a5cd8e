"""Site meter over Modbus TCP: one block read per sample, on a fixed schedule, never blocking for long.

pymodbus defaults (timeout 3 s, retries 3) can stall ~12 s on a dead meter (3 tries x 3 s, plus reconnects):
this path uses a small timeout and no retries, and a missed sample simply leaves the reading to go
stale, which the daemon treats as unknown, never as 0 kW.

A SunSpec meter (drivers/sunspec.py) has no fixed addresses: its meter model is discovered after each
connect, within a few timeouts; until then, and for a device that is not a SunSpec meter, every poll is
a counted rejection (the reading goes stale: unknown), and discovery is retried every
`DISCOVERY_RETRY_S`, not every poll.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from mullet.drivers import sunspec
from mullet.drivers.device_profiles import MeterProfile, Point, ProfileError
from mullet.drivers.health import DeviceHealth
from mullet.drivers.wait_for_guard import reraise_swallowed_cancel

log = structlog.get_logger("mullet.meter")

MAX_PLAUSIBLE_HZ = 100.0
DISCOVERY_TIMEOUTS = 10  # a whole SunSpec discovery gets this many request timeouts
DISCOVERY_RETRY_S = 5.0  # after a device answered without a usable SunSpec meter map


@dataclass(frozen=True, slots=True)
class MeterSample:
    power_kw: float
    frequency_hz: float
    monotonic_s: float  # when the read came back
    # When it was sent: the meter measured between the two (the trip's pickup counts from here).
    requested_s: float | None = None


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
        sunspec_bases: tuple[int, ...] = sunspec.DEFAULT_BASES,
        sunspec_model: int | None = None,
    ) -> None:
        """`sunspec_bases` / `sunspec_model`: where to look for the SunSpec map and which meter model
        to use (None: the first of 201-204); only for a SunSpec profile."""
        self.host = host
        self.port = port
        self.device_id = device_id
        self.profile = profile
        self.period_s = 1.0 / poll_hz
        self.timeout_s = timeout_s
        self.on_sample = on_sample
        self.on_reject = on_reject
        self.on_round_trip = on_round_trip
        self.sunspec_bases = sunspec_bases
        self.sunspec_model = sunspec_model
        # The located map: the profile itself, or a SunSpec one once discovered (None until then).
        self.layout: MeterProfile | None = None
        self.discovered: tuple[int, int] | None = None  # SunSpec (model id, model address)
        self._logged_discovery: tuple[int, int] | None = None
        self._discovery_failed: tuple[str, str] | None = None  # (reason, detail) until the retry
        self._retry_discovery_s = 0.0
        if profile.sunspec is None:
            self._locate(profile)
        else:
            for model_id in sunspec.METER_MODELS:  # the definitions load here, not on the event loop
                sunspec.model_points(model_id)
        # One log line per change of the meter's state, never one per failed poll (drivers/health.py).
        self.health = DeviceHealth("meter", log, address=f"{host}:{port}")

    def _locate(self, layout: MeterProfile) -> None:
        self._start, self._count = layout.block(("power_w", "frequency_hz"))
        self._power = layout.points["power_w"]
        self._frequency = layout.points["frequency_hz"]
        self.layout = layout

    async def run(self) -> None:
        client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        next_s = time.monotonic()
        try:
            while True:
                await self._poll_once(client)
                reraise_swallowed_cancel()  # pymodbus awaits through wait_for (Python 3.11)
                # Fixed-rate schedule; after a long stall skip missed slots instead of bursting.
                next_s += self.period_s
                now_s = time.monotonic()
                if next_s < now_s:
                    next_s = now_s + self.period_s
                await asyncio.sleep(next_s - now_s)
        finally:
            client.close()

    def _read(self, client: AsyncModbusTcpClient) -> Callable[..., Awaitable[Any]]:
        return client.read_input_registers if self.profile.table == "input" else client.read_holding_registers

    async def _discover(self, client: AsyncModbusTcpClient) -> bool:
        """Locate the SunSpec meter model; False (the poll counted as rejected) until it is."""
        now_s = time.monotonic()
        if self._discovery_failed is not None and now_s < self._retry_discovery_s:
            reason, detail = self._discovery_failed
            self.on_reject(reason)
            self.health.note("garbage", detail)
            return False
        read = self._read(client)

        async def registers(address: int, count: int) -> list[int] | None:
            response = await read(address, count=count, device_id=self.device_id)
            if response.isError() or len(response.registers) < count:
                return None
            return list(response.registers)

        try:
            async with asyncio.timeout(self.timeout_s * DISCOVERY_TIMEOUTS):
                model_id, address = await sunspec.discover(registers, self.sunspec_bases, self.sunspec_model)
            self._locate(sunspec.resolve(self.profile, model_id, address))
        except (sunspec.DiscoveryError, ProfileError) as exc:
            # ProfileError: the profile names a point this model does not define.
            reason = exc.reason if isinstance(exc, sunspec.DiscoveryError) else "bad_model_map"
            self._discovery_failed = (reason, f"not a usable SunSpec meter: {exc}")
            self._retry_discovery_s = now_s + DISCOVERY_RETRY_S
            self.on_reject(reason)
            self.health.note("garbage", self._discovery_failed[1])
            return False
        except (ModbusException, TimeoutError, OSError) as exc:
            self.on_reject("timeout")
            detail = str(exc).split("\n", 1)[0][:120]
            self.health.note("down", f"SunSpec discovery got no answer in time: {detail}")
            return False
        self._discovery_failed = None
        self.discovered = (model_id, address)
        if self.discovered != self._logged_discovery:  # once per map, not once per reconnect
            log.info(
                "meter sunspec model found",
                model=model_id,
                address=address,
                device=f"{self.host}:{self.port}",
            )
            self._logged_discovery = self.discovered
        return True

    async def _poll_once(self, client: AsyncModbusTcpClient) -> None:
        if not client.connected:
            try:
                await asyncio.wait_for(client.connect(), self.timeout_s * 5)
            except (TimeoutError, OSError, ModbusException):
                pass
            if not client.connected:
                self.on_reject("unreachable")
                self.health.note("down", f"cannot connect to {self.host}:{self.port}")
                return
            if self.profile.sunspec is not None:
                # A new connection may be a new device or new firmware: look again.
                self.layout, self.discovered = None, None
        if self.layout is None and not await self._discover(client):
            return
        started_s = time.monotonic()
        try:
            response = await self._read(client)(self._start, count=self._count, device_id=self.device_id)
        except (ModbusException, TimeoutError, OSError) as exc:
            self.on_reject("timeout")
            detail = str(exc).split("\n", 1)[0][:120]
            self.health.note("down", f"no usable answer within {self.timeout_s:g} s: {detail}")
            return
        done_s = time.monotonic()
        if self.on_round_trip is not None:
            self.on_round_trip(done_s - started_s)
        if response.isError() or len(response.registers) < self._count:
            self.on_reject("modbus_error")
            self.health.note("garbage", "a Modbus exception or a short answer")
            return
        power_w = self._decode(client, response.registers, self._power)
        frequency_hz = self._decode(client, response.registers, self._frequency)
        reason: str | None
        if isinstance(power_w, str) or isinstance(frequency_hz, str):
            reason = power_w if isinstance(power_w, str) else str(frequency_hz)
        else:
            reason = plausibility_error(power_w, frequency_hz)
        if reason is not None:
            self.on_reject(reason)
            self.health.note("garbage", f"implausible reading: {reason}")
            return
        assert isinstance(power_w, float) and isinstance(frequency_hz, float)
        # ~0.2 us while nothing changes: the sample's trip waits no longer than that.
        if done_s - started_s > self.timeout_s / 2:
            self.health.note("slow", f"answers in {done_s - started_s:.3f} s, over half the timeout")
        else:
            self.health.note("up")
        self.on_sample(
            MeterSample(
                power_kw=power_w / 1000.0,
                frequency_hz=frequency_hz,
                monotonic_s=done_s,
                requested_s=started_s,
            )
        )

    def _raw(self, client: AsyncModbusTcpClient, registers: Sequence[int], point: Point) -> int | float:
        offset = point.address - self._start
        value = client.convert_from_registers(
            list(registers[offset : offset + point.count]),
            data_type=getattr(client.DATATYPE, point.type.upper()),
            word_order=self.profile.word_order,
        )
        assert isinstance(value, int | float)
        return value

    def _decode(self, client: AsyncModbusTcpClient, registers: Sequence[int], point: Point) -> float | str:
        """The point's value in its unit, or why there is none: `not_implemented` (the meter says it
        has no such measurement) or `bad_scale_factor` (outside SunSpec's -10..10)."""
        raw = self._raw(client, registers, point)
        if point.not_implemented is not None and raw == point.not_implemented:
            return "not_implemented"
        value = float(raw) * point.scale
        if point.sf is not None:
            assert self.layout is not None
            sf_point = self.layout.points[point.sf]
            sf = self._raw(client, registers, sf_point)
            if sf == sf_point.not_implemented:
                return "not_implemented"
            if not sunspec.SF_MIN <= sf <= sunspec.SF_MAX:
                return "bad_scale_factor"
            value *= 10.0 ** int(sf)
        return value


class RefreshWatch:
    """How often the meter's frequency register changes, seen from the samples: the median time
    between changes over the last `window` changes. The trip confirmation's pickup assumes the
    profile's refresh interval; a register that changes more slowly could hold one bad measurement
    for longer than the pickup. A register with a coarse resolution can repeat a value across
    refreshes, so this can read high, never low (to within one poll period)."""

    def __init__(self, window: int = 31, min_changes: int = 5) -> None:
        self._intervals_s: deque[float] = deque(maxlen=window)
        self._min_changes = min_changes
        self._last_hz: float | None = None
        self._changed_s: float | None = None

    def observe(self, hz: float, t_s: float) -> None:
        if hz == self._last_hz:
            return
        if self._changed_s is not None:
            self._intervals_s.append(t_s - self._changed_s)
        self._last_hz = hz
        self._changed_s = t_s

    @property
    def interval_s(self) -> float | None:
        """The median interval between changes; None until `min_changes` were seen."""
        if len(self._intervals_s) < self._min_changes:
            return None
        return statistics.median(self._intervals_s)
