"""The QSE point list: every Modbus register the site exposes to its QSE's RTU or SCADA gateway.

One table is the source of truth: the server (drivers/qse_server.py) serves it, the daemon fills it
(daemon/site/qse.py) and docs/qse.md's tables are generated from it (`docs/qse_points.py --write`), so
the published list cannot drift from what is on the wire.

Conventions, as gateways expect them: 0-based register addresses (Modicon references are 30001 + the
address for input registers and 40001 + the address for holding registers); float32 is IEEE-754 in
big-endian word order (high word first, "ABCD"), and NaN means unknown (as SunSpec's float models do:
unknown is never 0 MW); a float32 is written with one FC 16 request covering both words.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

PointType = Literal["u16", "f32"]
Table = Literal["input", "holding"]

# Products a QSE deploys, in register order. Names as ERCOT writes them; `slug` names the points.
PRODUCTS: tuple[str, ...] = ("ERS-10", "ERS-30", "ECRS", "Non-Spin", "RRS")
# Under-frequency stage slots (config's [[control.trip_stages]] in stage order; MAX_TRIP_STAGES).
STAGE_SLOTS = 16

WORDS: Mapping[PointType, int] = {"u16": 1, "f32": 2}
# The largest MW a written float may carry: beyond any site (the config bounds it further).
MAX_WRITE_MW = 100_000.0


def slug(product: str) -> str:
    return product.lower().replace("-", "")


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    table: Table
    address: int
    type: PointType
    unit: str
    meaning: str
    # Holding points only: what a write may carry (inclusive), and whether it may be written at all.
    low: float = 0.0
    high: float = 0.0
    writable: bool = False

    @property
    def words(self) -> int:
        return WORDS[self.type]

    @property
    def reference(self) -> int:
        """The Modicon reference (1-based, with the table's leading digit)."""
        return (30001 if self.table == "input" else 40001) + self.address


class _Builder:
    def __init__(self, table: Table) -> None:
        self.table: Table = table
        self.address = 0
        self.points: list[Point] = []

    def add(self, name: str, type_: PointType, unit: str, meaning: str, **write: float | bool) -> None:
        point = Point(name, self.table, self.address, type_, unit, meaning, **write)  # type: ignore[arg-type]
        self.points.append(point)
        self.address += point.words

    def skip_to(self, address: int) -> None:
        assert address >= self.address, (address, self.address)
        self.address = address


def _input_points() -> list[Point]:
    b = _Builder("input")
    b.add("heartbeat", "u16", "count", "Counts up once per completed control cycle (wraps at 65535).")
    b.add("health", "u16", "bits", "Health bits: see the table below.")
    b.add("site_mw", "f32", "MW", "Site import at the point of interconnection (revenue meter).")
    b.add("mining_mw", "f32", "MW", "Mining draw: the load resource's consumption (see below).")
    b.add("ai_mw", "f32", "MW", "AI tenants' draw (their controllers' telemetry).")
    b.add("mpc_mw", "f32", "MW", "Maximum power consumption: what mining could draw under the site's limits.")
    b.add("lpc_fast_mw", "f32", "MW", "Low power consumption reachable within 0.5 s (armed fast path).")
    b.add("lpc_10min_mw", "f32", "MW", "Low power consumption reachable within 10 minutes.")
    b.add("lpc_30min_mw", "f32", "MW", "Low power consumption reachable within 30 minutes.")
    b.add("site_limit_mw", "f32", "MW", "The site import limit in force (the binding constraint's).")
    b.add("mining_budget_mw", "f32", "MW", "What the plan leaves mining (base point included).")
    b.add("site_mw_age_ms", "u16", "ms", "Age of the meter reading behind site_mw (65535: older or none).")
    b.add("mining_mw_age_ms", "u16", "ms", "Age of the oldest reading behind mining_mw (65535: none).")
    b.add("binding", "u16", "enum", "The binding constraint: see the table below.")
    b.add("qse_link", "u16", "enum", "0 waiting for the first heartbeat, 1 up, 2 lost (fail-safe applied).")
    b.add("qse_heartbeat_age_s", "u16", "s", "Seconds since the QSE's heartbeat last changed (65535: never).")
    b.add("command_count", "u16", "count", "Accepted writes that changed a point (wraps at 65535).")
    b.add("command_address", "u16", "address", "Holding address of the last accepted write's first point.")
    b.add("command_result", "u16", "enum", "Its result: see the table below.")
    b.add("command_value", "f32", "", "The value of that point as written.")
    b.skip_to(32)
    for product in PRODUCTS:
        s = slug(product)
        b.add(f"{s}_state", "u16", "enum", f"{product} deployment state: see the table below.")
        b.add(f"{s}_refusal", "u16", "enum", f"{product}: why its deployment was refused (0: not refused).")
        b.add(f"{s}_mw", "f32", "MW", f"{product}: the reduction deployed (0 when clear).")
    b.add("base_point_state", "u16", "enum", "Base point state (same values as a deployment's).")
    b.add("base_point_refusal", "u16", "enum", "Why the base point was refused (0: not refused).")
    b.add("base_point_mw", "f32", "MW", "The base point mining follows (NaN when none).")
    b.add("import_limit_state", "u16", "enum", "Import limit state (same values as a deployment's).")
    b.add("import_limit_refusal", "u16", "enum", "Why the import limit was refused (0: not refused).")
    b.add("import_limit_mw", "f32", "MW", "The import limit in force from the QSE (NaN when none).")
    b.skip_to(64)
    for slot in range(1, STAGE_SLOTS + 1):
        b.add(
            f"stage{slot}_number",
            "u16",
            "",
            f"Under-frequency slot {slot}: its stage number (0: none).",
        )
        b.add(f"stage{slot}_relay", "u16", "enum", f"Slot {slot}: relay state: see the table below.")
        b.add(f"stage{slot}_armed_mw", "f32", "MW", f"Slot {slot}: mining armed to shed at this stage.")
    return b.points


def _holding_points() -> list[Point]:
    b = _Builder("holding")
    flag = {"low": 0, "high": 1, "writable": True}
    mw = {"low": 0, "high": MAX_WRITE_MW, "writable": True}
    b.add(
        "qse_heartbeat",
        "u16",
        "count",
        "The QSE's heartbeat: any change proves the link.",
        low=0,
        high=65535,
        writable=True,
    )
    b.add("test_mode", "u16", "0/1", "1: new assertions are journaled and echoed, never actuated.", **flag)
    b.add("base_point_set_mw", "f32", "MW", "CLR base point for the mining consumption.", **mw)
    b.add("base_point_on", "u16", "0/1", "1: follow base_point_set_mw; 0: no base point.", **flag)
    b.skip_to(6)
    b.add("import_limit_set_mw", "f32", "MW", "Site import limit the QSE asks for.", **mw)
    b.add("import_limit_on", "u16", "0/1", "1: hold site import under import_limit_set_mw.", **flag)
    b.skip_to(10)
    for product in PRODUCTS:
        s = slug(product)
        b.add(f"{s}_deploy_mw", "f32", "MW", f"{product} reduction to deploy (0: configured amount).", **mw)
        b.add(f"{s}_deploy", "u16", "0/1", f"{product}: 1 deployed (held while 1), 0 recalled.", **flag)
        b.skip_to(b.address + 1)
    return b.points


INPUT_POINTS: tuple[Point, ...] = tuple(_input_points())
HOLDING_POINTS: tuple[Point, ...] = tuple(_holding_points())
INPUT_SIZE = INPUT_POINTS[-1].address + INPUT_POINTS[-1].words
HOLDING_SIZE = HOLDING_POINTS[-1].address + HOLDING_POINTS[-1].words + 1
POINTS: Mapping[str, Point] = {p.name: p for p in INPUT_POINTS + HOLDING_POINTS}

# Enumerations the tables above refer to (docs/qse.md prints them).
HEALTH_BITS: tuple[tuple[int, str], ...] = (
    (0, "controlling: this daemon leads and its control cycle runs"),
    (1, "site meter reading known"),
    (2, "every mining group's telemetry known"),
    (3, "every AI tenant's telemetry known"),
    (4, "QSE link up (its heartbeat is changing)"),
    (5, "test mode on"),
    (6, "fail-safe applied (QSE link lost)"),
    (7, "plan feasible (the limit in force can be met without touching firm AI power)"),
)
BINDING: tuple[tuple[int, str], ...] = (
    (0, "no plan yet"),
    (1, "interconnect"),
    (2, "a limit obligation"),
    (3, "a reduce obligation"),
    (4, "a base point"),
    (5, "an under-frequency hold"),
)
STATES: tuple[tuple[int, str], ...] = (
    (0, "clear"),
    (1, "deploying: accepted, not yet in the book (being journaled)"),
    (2, "deployed: an obligation in force"),
    (3, "refused: asserted, but the site refused it (the refusal register says why)"),
    (4, "test: asserted in test mode, not actuated"),
    (5, "held: cleared by the QSE while its link is lost; held until the link is back"),
)
RESULTS: tuple[tuple[int, str], ...] = (
    (0, "no write yet"),
    (1, "journaled: its effect is being applied"),
    (2, "in force: the obligation it asked for is in the book (or ended, for a recall)"),
    (3, "refused by the site: the point's refusal register says why"),
    (4, "test mode: journaled and echoed, not actuated"),
    (5, "no action needed: a setting (an amount, test mode) or a value already in force"),
)
RELAY: tuple[tuple[int, str], ...] = (
    (0, "no stage in this slot"),
    (1, "armed"),
    (2, "tripped: shed, held until the frequency recovers"),
    (3, "released: the frequency recovered; restoring through the ramp"),
)


# ---- register words -----------------------------------------------------------------------


def encode(point: Point, value: float) -> list[int]:
    """Register words for `value`: u16 rounded and clamped to 0..65535 (NaN: 65535, i.e. "no data"
    for ages and the like), f32 in big-endian word order with NaN kept."""
    if point.type == "f32":
        raw = struct.pack(">f", value)
        return [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]
    if math.isnan(value):
        return [0xFFFF]
    return [min(max(round(value), 0), 0xFFFF)]


def decode(point: Point, words: list[int]) -> float:
    if point.type == "f32":
        value: float = struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0]
        return value
    return float(words[0])


def _by_address(points: tuple[Point, ...]) -> dict[int, tuple[Point, int]]:
    return {p.address + i: (p, i) for p in points for i in range(p.words)}


_BY_ADDRESS: Mapping[Table, Mapping[int, tuple[Point, int]]] = {
    "input": _by_address(INPUT_POINTS),
    "holding": _by_address(HOLDING_POINTS),
}


def points_at(table: Table, address: int, count: int) -> Iterator[tuple[Point | None, int]]:
    """(point, offset within it) for each register of a request: None for a reserved register."""
    by_address = _BY_ADDRESS[table]
    for register in range(address, address + count):
        point, offset = by_address.get(register, (None, 0))
        yield point, offset
