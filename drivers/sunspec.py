"""SunSpec meters (models 201-204): discovery of the meter model on a device, and its points located
from the SunSpec Alliance's own model definitions (pysunspec2), not from hand-typed offsets.

Per the SunSpec Modbus specification (SunSpec Device Information Model Specification, "device
discovery"): a device marks its map with "SunS" (0x53756E53) at a base address, tried in the order
40000, 0, 50000; model headers (ID, L) follow from base + 2, each model's points after its header, until
the end marker ID 0xFFFF. Values are integers with a scale factor point ("sunssf"): value = raw x
10**sf, and a value or a scale factor reading its type's "not implemented" value means no measurement.

Only the definitions come from pysunspec2: its Modbus client is synchronous, so the reads here go
through the caller's pymodbus async client (drivers/meter.py), never blocking the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from functools import lru_cache

from sunspec2 import device as sunspec_device
from sunspec2 import mb as sunspec_mb

from mullet.drivers.device_profiles import MeterProfile, Point, PointType, ProfileError

SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
DEFAULT_BASES = (40000, 0, 50000)
METER_MODELS = (201, 202, 203, 204)  # single phase, split phase, wye, delta
END_MODEL_ID = sunspec_mb.SUNS_END_MODEL_ID
COMMON_MODEL = 1
MAX_MODELS = 64  # a walk stops here: a device whose map never ends is not followed forever
SF_MIN, SF_MAX = -10, 10  # the range the SunSpec specification allows a sunssf

# SunSpec point type -> (register type, its "not implemented" raw value as that register type).
TYPES: dict[str, tuple[PointType, int]] = {
    "int16": ("int16", sunspec_mb.SUNS_UNIMPL_INT16),
    "uint16": ("uint16", sunspec_mb.SUNS_UNIMPL_UINT16),
    "acc16": ("uint16", sunspec_mb.SUNS_UNIMPL_ACC16),
    "int32": ("int32", sunspec_mb.SUNS_UNIMPL_INT32),
    "uint32": ("uint32", sunspec_mb.SUNS_UNIMPL_UINT32),
    "acc32": ("uint32", sunspec_mb.SUNS_UNIMPL_ACC32),
    "sunssf": ("int16", sunspec_mb.SUNS_UNIMPL_SUNSSF),
}


class DiscoveryError(Exception):
    """The device answered, but not with a usable SunSpec meter map. `reason` labels a metric."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPoint:
    """A point of a SunSpec model as pysunspec2 defines it: `offset` from the model's ID register."""

    name: str
    offset: int
    sunspec_type: str
    sf: str | None


@lru_cache(maxsize=8)
def model_points(model_id: int) -> dict[str, ModelPoint]:
    """The top-level points of model `model_id` (its header ID and L at offsets 0 and 1)."""
    definition = sunspec_device.get_model_def(model_id)
    points: dict[str, ModelPoint] = {}
    offset = 0
    for spec in definition["group"]["points"]:
        sf = spec.get("sf")
        points[spec["name"]] = ModelPoint(
            spec["name"], offset, spec["type"], sf if isinstance(sf, str) else None
        )
        offset += int(spec["size"])
    return points


def model_length(model_id: int) -> int:
    """L, the registers after the header, of the model as defined (105 for 201-204)."""
    points = model_points(model_id)
    last = max(points.values(), key=lambda p: p.offset)
    return last.offset + int(sunspec_mb.point_type_info[last.sunspec_type].len) - 2


def _point(name: str, model_address: int, point: ModelPoint, scale: float, sf: str | None) -> Point:
    if point.sunspec_type not in TYPES:
        raise ProfileError(
            f"SunSpec point {point.name} has type {point.sunspec_type}, not a number Mullet reads"
        )
    register_type, not_implemented = TYPES[point.sunspec_type]
    return Point(name, model_address + point.offset, register_type, scale, sf, not_implemented)


def resolve(profile: MeterProfile, model_id: int, model_address: int) -> MeterProfile:
    """`profile` (a SunSpec one) with its points at their addresses in the model found at
    `model_address` (the model's ID register), each with its scale-factor point."""
    if profile.sunspec is None:
        raise ProfileError(f"{profile.name} is not a SunSpec profile")
    defined = model_points(model_id)
    points: dict[str, Point] = {}
    for name, ref in profile.sunspec.items():
        if ref.point not in defined:
            raise ProfileError(f"{profile.name}: model {model_id} has no point {ref.point!r}")
        point = defined[ref.point]
        sf_name = None
        if point.sf is not None:
            sf_name = f"{name}.sf"
            points[sf_name] = _point(sf_name, model_address, defined[point.sf], 1.0, None)
        points[name] = _point(name, model_address, point, ref.scale, sf_name)
    return dataclasses.replace(profile, points=points)


ReadRegisters = Callable[[int, int], Awaitable[list[int] | None]]


async def discover(
    read: ReadRegisters, bases: tuple[int, ...] = DEFAULT_BASES, model: int | None = None
) -> tuple[int, int]:
    """(model id, address of its ID register) of the first meter model (or of `model`) on the device.

    `read(address, count)` returns the registers, or None when the device answered with a Modbus
    exception; a timeout or a lost connection propagates (the device is down, not "not SunSpec").
    DiscoveryError when the device answered without a SunSpec map or without a meter model."""
    base = None
    for candidate in bases:
        registers = await read(candidate, 2)
        if registers is not None and tuple(registers[:2]) == SUNS_MARKER:
            base = candidate
            break
    if base is None:
        tried = ", ".join(str(b) for b in bases)
        raise DiscoveryError("not_sunspec", f"no SunSpec marker 'SunS' at {tried}")
    address = base + 2
    seen: list[int] = []
    for _ in range(MAX_MODELS):
        header = await read(address, 2)
        if header is None or len(header) < 2:
            raise DiscoveryError("bad_model_map", f"no model header at {address} (models so far: {seen})")
        model_id, length = header[0], header[1]
        if model_id == END_MODEL_ID:
            wanted = f"model {model}" if model is not None else f"a meter model {METER_MODELS}"
            raise DiscoveryError("no_meter_model", f"SunSpec map at {base} has no {wanted}: models {seen}")
        seen.append(model_id)
        if model_id in METER_MODELS and model in (None, model_id):
            if length < model_length(model_id):
                defined = model_length(model_id)
                detail = f"model {model_id} at {address} is {length} registers, defined as {defined}"
                raise DiscoveryError("bad_model_map", detail)
            return model_id, address
        address += 2 + length
        if address + 2 > 0x10000:
            raise DiscoveryError("bad_model_map", f"models run past the last address: {seen}")
    raise DiscoveryError("bad_model_map", f"no end marker after {MAX_MODELS} models from {base}")
