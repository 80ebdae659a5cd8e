"""Device profiles are data (drivers/profiles/*.toml), like evcc templates: a new meter or PDU model
is a new file, not new code."""

from __future__ import annotations

import math
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
    """One measured value: `raw * scale * 10**(the sf point's raw)` in the point's unit.

    `scale` is a fixed multiplier from the register map (kW to W: 1000; a x10 integer: 0.1).
    `sf` names an int16 scale-factor point read in the same block (SunSpec "sunssf"), and
    `not_implemented` is the raw value that means "no measurement" (SunSpec: int16 0x8000,
    uint16 0xFFFF, acc32 0): unknown, never 0."""

    name: str
    address: int
    type: PointType
    scale: float = 1.0
    sf: str | None = None
    not_implemented: int | None = None

    def __post_init__(self) -> None:
        _check_address(f"point {self.name!r}: address", self.address)
        if self.type not in _REGISTERS_PER_TYPE:
            raise ProfileError(
                f"point {self.name!r}: type must be one of {sorted(_REGISTERS_PER_TYPE)}, got {self.type!r}"
            )
        if not (isinstance(self.scale, int | float) and math.isfinite(self.scale) and self.scale > 0):
            raise ProfileError(f"point {self.name!r}: scale must be a finite number > 0, got {self.scale!r}")

    @property
    def count(self) -> int:
        return _REGISTERS_PER_TYPE[self.type]


@dataclass(frozen=True, slots=True)
class SunSpecRef:
    """A profile point located by SunSpec discovery: point `point` of the meter model (201-204) as
    pysunspec2 defines it, times `scale` (e.g. TotWhImp in Wh: 0.001 for kWh)."""

    point: str
    scale: float = 1.0


@dataclass(frozen=True, slots=True)
class MeterProfile:
    name: str
    table: Literal["input", "holding"]
    word_order: Literal["big", "little"]
    points: dict[str, Point]
    # How often the meter recomputes its frequency register: reads closer together than this can
    # return one measurement twice (the trip pickup; docs/programs.md, "the detection budget").
    frequency_refresh_s: float
    # A SunSpec profile has no fixed addresses: `points` is empty until drivers/sunspec.py has
    # discovered the meter model on the device and located these (profile point -> SunSpec point).
    sunspec: dict[str, SunSpecRef] | None = None

    def block(self, names: tuple[str, ...]) -> tuple[int, int]:
        """One (start, count) read covering `names` and their scale factors: fewer round trips than
        one read per point, and a value is never combined with a scale factor read at another time."""
        if self.sunspec is not None and not self.points:
            raise ProfileError(f"{self.name}: a SunSpec profile has addresses only after discovery")
        chosen = [self.points[n] for n in names]
        chosen += [self.points[p.sf] for p in chosen if p.sf is not None]
        start = min(p.address for p in chosen)
        end = max(p.address + p.count for p in chosen)
        if end - start > 125:  # Modbus limit for one FC 03/04 read
            raise ProfileError(f"{self.name}: points {names} span {end - start} registers > 125")
        return start, end - start


SwitchStyle = Literal["coil", "holding"]
RegisterTable = Literal["input", "holding"]
WordOrder = Literal["big", "little"]

MAX_READ_REGISTERS = 125  # Modbus limit for one FC 03/04 read
MAX_OUTLETS = 256  # config.pdus[].outlets upper bound
_ADDRESS_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class PduLogin:
    """A write the PDU needs before it accepts outlet writes: `value` to holding register `register`
    (FC 06). The session ends after `idle_s` without a write (reads do not keep it alive)."""

    register: int
    value: int
    idle_s: float

    def __post_init__(self) -> None:
        _check_address("login.register", self.register)
        if not 0 <= self.value <= 0xFFFF:
            raise ProfileError(f"login.value must be 0..65535, got {self.value}")
        if not (math.isfinite(self.idle_s) and self.idle_s > 0):
            raise ProfileError(f"login.idle_s must be > 0, got {self.idle_s}")


@dataclass(frozen=True, slots=True)
class PduProfile:
    """How one PDU model switches outlets and reports their power (see drivers/profiles/*.toml).

    Outlet `n` (1-based) is switched at `switch_base + n`: a coil (FC 05 / FC 15; set = on) for
    `switch = "coil"`, a holding register (FC 06 / FC 16) written with `on_code` / `off_code` for
    `switch = "holding"`. Its power is `power_type` at `power_base + power_stride * n` in
    `power_table`, times `power_scale_w`. Construction validates (ProfileError), so a profile built
    in code or with `dataclasses.replace` is checked like a loaded one.
    """

    name: str
    switch: SwitchStyle
    switch_base: int
    power_table: RegisterTable
    power_base: int
    power_type: PointType
    power_scale_w: float
    power_word_order: WordOrder = "big"
    power_stride: int = 0  # 0: the size of power_type
    on_code: int = 1  # coil style: always 1 (set) / 0 (cleared)
    off_code: int = 0
    multi_write: bool = False  # FC 15 / FC 16 across contiguous outlets
    login: PduLogin | None = None

    def __post_init__(self) -> None:
        where = f"pdu profile {self.name!r}"
        if self.switch not in ("coil", "holding"):
            raise ProfileError(f"{where}: switch must be 'coil' or 'holding', got {self.switch!r}")
        if self.power_table not in ("input", "holding"):
            raise ProfileError(f"{where}: power_table must be 'input' or 'holding', got {self.power_table!r}")
        if self.power_type not in _REGISTERS_PER_TYPE:
            raise ProfileError(
                f"{where}: power_type must be one of {sorted(_REGISTERS_PER_TYPE)}, got {self.power_type!r}"
            )
        if self.power_word_order not in ("big", "little"):
            raise ProfileError(f"{where}: power_word_order must be 'big' or 'little'")
        _check_address(f"{where}: switch_base", self.switch_base)
        _check_address(f"{where}: power_base", self.power_base)
        if not (math.isfinite(self.power_scale_w) and self.power_scale_w > 0):
            raise ProfileError(f"{where}: power_scale_w must be > 0, got {self.power_scale_w}")
        size = _REGISTERS_PER_TYPE[self.power_type]
        if self.power_stride == 0:
            object.__setattr__(self, "power_stride", size)
        if not size <= self.power_stride <= MAX_READ_REGISTERS:
            raise ProfileError(
                f"{where}: power_stride must be {size}..{MAX_READ_REGISTERS} for {self.power_type},"
                f" got {self.power_stride}"
            )
        if self.switch == "coil":
            if (self.on_code, self.off_code) != (1, 0):
                raise ProfileError(f"{where}: on_code/off_code apply to switch = 'holding' only")
        else:
            for key, code in (("on_code", self.on_code), ("off_code", self.off_code)):
                if not 0 <= code <= 0xFFFF:
                    raise ProfileError(f"{where}: {key} must be 0..65535, got {code}")
            if self.on_code == self.off_code:
                raise ProfileError(f"{where}: on_code and off_code must differ")

    @property
    def power_size(self) -> int:
        """Registers of one power value (1 or 2)."""
        return _REGISTERS_PER_TYPE[self.power_type]

    @property
    def coil_base(self) -> int:
        """`switch_base` under its coil-style name."""
        return self.switch_base

    def switch_address(self, outlet: int) -> int:
        return self.switch_base + outlet

    def power_address(self, outlet: int) -> int:
        return self.power_base + self.power_stride * outlet

    def code(self, on: bool) -> int:
        return self.on_code if on else self.off_code

    def power_reads(self, outlets: int) -> list[tuple[int, int, int]]:
        """Reads covering outlets 1..`outlets`: `(first outlet, start address, register count)`, each
        at most 125 registers."""
        per_read = MAX_READ_REGISTERS // self.power_stride
        reads = []
        for first in range(1, outlets + 1, per_read):
            last = min(first + per_read - 1, outlets)
            reads.append((first, self.power_address(first), self.power_stride * (last - first + 1)))
        return reads

    def check_outlets(self, outlets: int) -> None:
        """ProfileError unless a PDU with `outlets` outlets fits this map: every address within
        0..65535 and, in the holding table, switch, power and login registers apart."""
        where = f"pdu profile {self.name!r} with {outlets} outlets"
        if not 1 <= outlets <= MAX_OUTLETS:
            raise ProfileError(f"{where}: outlets must be 1..{MAX_OUTLETS}")
        switch = range(self.switch_address(1), self.switch_address(outlets) + 1)
        power = range(self.power_address(1), self.power_address(outlets) + self.power_stride)
        if switch.stop - 1 > _ADDRESS_MAX or power.stop - 1 > _ADDRESS_MAX:
            raise ProfileError(f"{where}: addresses beyond {_ADDRESS_MAX}")
        holding: list[tuple[str, range]] = []
        if self.switch == "holding":
            holding.append(("switch registers", switch))
        if self.power_table == "holding":
            holding.append(("power registers", power))
        if self.login is not None:
            holding.append(("login register", range(self.login.register, self.login.register + 1)))
        for i, (name_a, a) in enumerate(holding):
            for name_b, b in holding[i + 1 :]:
                if a.start < b.stop and b.start < a.stop:
                    raise ProfileError(f"{where}: {name_a} overlap {name_b}")


def _check_address(what: str, address: int) -> None:
    if not 0 <= address <= _ADDRESS_MAX:
        raise ProfileError(f"{what} must be 0..{_ADDRESS_MAX}, got {address}")


def _read(name: str) -> dict[str, Any]:
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ProfileError(f"profile name {name!r} is not a plain name")
    try:
        text = resources.files("mullet.drivers").joinpath(f"profiles/{name}.toml").read_text("utf-8")
    except FileNotFoundError:
        raise ProfileError(f"no device profile named {name!r}") from None
    return tomllib.loads(text)


_METER_KEYS = frozenset({"name", "kind", "table", "word_order", "frequency_refresh_s", "points", "sunspec"})
_POINT_KEYS = frozenset({"address", "type", "scale"})
_SUNSPEC_POINT_KEYS = frozenset({"sunspec", "scale"})


def load_meter_profile(name: str) -> MeterProfile:
    data = _read(name)
    if data.get("kind") != "meter":
        raise ProfileError(f"profile {name!r} is not a meter profile")
    where = f"meter profile {name!r}"
    _unknown(data, _METER_KEYS, where)
    sunspec = _get(data, "sunspec", bool, where, False)
    table = _get(data, "table", str, where)
    word_order = _get(data, "word_order", str, where)
    if table not in ("input", "holding"):
        raise ProfileError(f"{where}: table must be 'input' or 'holding', got {table!r}")
    if word_order not in ("big", "little"):
        raise ProfileError(f"{where}: word_order must be 'big' or 'little', got {word_order!r}")
    if sunspec and (table, word_order) != ("holding", "big"):
        raise ProfileError(f"{where}: SunSpec maps are holding registers, high word first")
    specs = _get(data, "points", dict, where)
    points: dict[str, Point] = {}
    refs: dict[str, SunSpecRef] = {}
    for point_name, spec in specs.items():
        point_where = f"{where} [points.{point_name}]"
        if not isinstance(spec, dict):
            raise ProfileError(f"{point_where}: must be a table")
        scale = float(_get(spec, "scale", (int, float), point_where, 1.0))
        if not (math.isfinite(scale) and scale > 0):
            raise ProfileError(f"{point_where}: scale must be a finite number > 0, got {scale}")
        if sunspec:
            _unknown(spec, _SUNSPEC_POINT_KEYS, point_where)
            refs[point_name] = SunSpecRef(_get(spec, "sunspec", str, point_where), scale)
        else:
            _unknown(spec, _POINT_KEYS, point_where)
            try:
                points[point_name] = Point(
                    point_name,
                    _get(spec, "address", int, point_where),
                    _get(spec, "type", str, point_where),
                    scale,
                )
            except ProfileError as exc:
                raise ProfileError(f"{where}: {exc}") from None
    for required in ("power_w", "frequency_hz"):
        if required not in (refs if sunspec else points):
            raise ProfileError(f"meter profile {name!r} lacks point {required!r}")
    refresh_s = _get(data, "frequency_refresh_s", (int, float), where)
    if not (math.isfinite(refresh_s) and 0 < refresh_s <= 10):
        raise ProfileError(
            f"meter profile {name!r}: frequency_refresh_s must be in (0, 10] s, got {refresh_s}"
        )
    profile = MeterProfile(
        name=_get(data, "name", str, where),
        table=table,
        word_order=word_order,
        points=points,
        frequency_refresh_s=float(refresh_s),
        sunspec=refs if sunspec else None,
    )
    if not sunspec:
        profile.block(("power_w", "frequency_hz"))  # the one read the driver makes must fit
    return profile


_PDU_KEYS = frozenset(
    {
        "name",
        "kind",
        "switch",
        "switch_base",
        "on_code",
        "off_code",
        "multi_write",
        "power_table",
        "power_base",
        "power_stride",
        "power_type",
        "power_scale_w",
        "power_word_order",
        "login",
    }
)
_LOGIN_KEYS = frozenset({"register", "value", "idle_s"})
_MISSING: Any = object()


def _get(
    data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = _MISSING
) -> Any:
    """`data[key]` checked against `kind` (bool is never an int here), as ProfileError."""
    if key not in data:
        if default is _MISSING:
            raise ProfileError(f"{where}: missing key {key!r}")
        return default
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ProfileError(f"{where}: {key} must be {_kind_name(kinds)}, got {value!r}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(
        {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(k, k.__name__)
        for k in kinds
    )


def _unknown(data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise ProfileError(f"{where}: unknown keys {extra}")


def load_pdu_profile(name: str) -> PduProfile:
    data = _read(name)
    if data.get("kind") != "pdu":
        raise ProfileError(f"profile {name!r} is not a PDU profile")
    where = f"pdu profile {name!r}"
    _unknown(data, _PDU_KEYS, where)
    switch = _get(data, "switch", str, where)
    holding = switch == "holding"
    login_data = _get(data, "login", dict, where, None)
    login = None
    if login_data is not None:
        login_where = f"{where} [login]"
        _unknown(login_data, _LOGIN_KEYS, login_where)
        login = PduLogin(
            register=_get(login_data, "register", int, login_where),
            value=_get(login_data, "value", int, login_where),
            idle_s=float(_get(login_data, "idle_s", (int, float), login_where)),
        )
    if not holding:
        for key in ("on_code", "off_code"):
            if key in data:
                raise ProfileError(f"{where}: {key} applies to switch = 'holding' only")
    return PduProfile(
        name=_get(data, "name", str, where),
        switch=switch,
        switch_base=_get(data, "switch_base", int, where),
        on_code=_get(data, "on_code", int, where) if holding else 1,
        off_code=_get(data, "off_code", int, where) if holding else 0,
        multi_write=_get(data, "multi_write", bool, where, False),
        login=login,
        power_table=_get(data, "power_table", str, where),
        power_base=_get(data, "power_base", int, where),
        power_stride=_get(data, "power_stride", int, where, 0),
        power_type=_get(data, "power_type", str, where),
        power_scale_w=float(_get(data, "power_scale_w", (int, float), where)),
        power_word_order=_get(data, "power_word_order", str, where, "big"),
    )
