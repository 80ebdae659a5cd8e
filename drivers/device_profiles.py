"""Device profiles are data (drivers/profiles/*.toml), like evcc templates: a new meter or PDU model
is a new file, not new code."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

PointType = Literal["float32", "uint16", "int16", "uint32", "int32"]
_REGISTERS_PER_TYPE: dict[str, int] = {"float32": 2, "uint16": 1, "int16": 1, "uint32": 2, "int32": 2}


class ProfileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    address: int
    type: PointType

    @property
    def count(self) -> int:
        return _REGISTERS_PER_TYPE[self.type]


@dataclass(frozen=True, slots=True)
class MeterProfile:
    name: str
    table: Literal["input", "holding"]
    word_order: Literal["big", "little"]
    points: dict[str, Point]

    def block(self, names: tuple[str, ...]) -> tuple[int, int]:
        """One (start, count) read covering `names`: fewer round trips than one read per point."""
        chosen = [self.points[n] for n in names]
        start = min(p.address for p in chosen)
        end = max(p.address + p.count for p in chosen)
        if end - start > 125:  # Modbus limit for one FC 03/04 read
            raise ProfileError(f"{self.name}: points {names} span {end - start} registers > 125")
        return start, end - start


@dataclass(frozen=True, slots=True)
class PduProfile:
    name: str
    switch: Literal["coil"]
    coil_base: int
    power_table: Literal["input", "holding"]
    power_base: int
    power_type: PointType
    power_scale_w: float


def _read(name: str) -> dict[str, Any]:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ProfileError(f"profile name {name!r} is not a plain name")
    try:
        text = resources.files("mullet.drivers").joinpath(f"profiles/{name}.toml").read_text("utf-8")
    except FileNotFoundError:
        raise ProfileError(f"no device profile named {name!r}") from None
    return tomllib.loads(text)


def load_meter_profile(name: str) -> MeterProfile:
    data = _read(name)
    if data.get("kind") != "meter":
        raise ProfileError(f"profile {name!r} is not a meter profile")
    points = {
        point_name: Point(point_name, int(spec["address"]), spec["type"])
        for point_name, spec in data["points"].items()
    }
    for required in ("power_w", "frequency_hz"):
        if required not in points:
            raise ProfileError(f"meter profile {name!r} lacks point {required!r}")
    return MeterProfile(name=data["name"], table=data["table"], word_order=data["word_order"], points=points)


def load_pdu_profile(name: str) -> PduProfile:
    data = _read(name)
    if data.get("kind") != "pdu":
        raise ProfileError(f"profile {name!r} is not a PDU profile")
    return PduProfile(
        name=data["name"],
        switch=data["switch"],
        coil_base=int(data["coil_base"]),
        power_table=data["power_table"],
        power_base=int(data["power_base"]),
        power_type=data["power_type"],
        power_scale_w=float(data["power_scale_w"]),
    )
