"""ERCOT system load, forecast and actual, from the files an operator's cron drops (docs/programs.md,
"4CP": the formats and how to fetch them; Mullet itself makes no network call).

Three formats:
- canonical: `interval_start,actual_mw,forecast_mw` (ISO-8601 with a UTC offset; either value may be
  empty), the form the replay's scenarios keep;
- ERCOT's NP3-565-CD "Seven-Day Load Forecast by Model and Weather Zone": one row per model and hour,
  the row with InUseFlag Y is the forecast ERCOT uses;
- ERCOT's NP6-345-CD "Actual System Load by Weather Zone".

ERCOT's rows are hour-ending in Central Prevailing Time: 01:00 covers 00:00-01:00 and 24:00 the day's
last hour. On the autumn day the hour ending 02:00 comes twice, the second with DSTFlag Y; on the
spring day the hour ending 03:00 does not exist. Both are placed by the local time's UTC offset.

A bad row is rejected and counted with its line number; the rest of the file is kept. A file that
looks half-written (no final newline, not decodable, no data rows, over the bounds) is refused as a
whole (`SystemLoadError`), so a reader keeps its last good data.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

Format = Literal["canonical", "ercot"]
FORMATS: tuple[Format, ...] = ("canonical", "ercot")
CENTRAL = "America/Chicago"
MAX_BYTES = 32 * 1024 * 1024  # a seven-day forecast with every model is ~0.2 MB
MAX_ROWS = 200_000  # data rows read from one file
MAX_REASONS = 20  # rejection messages kept; all are counted
INTERVALS_S = (300.0, 900.0, 1800.0, 3600.0)


@dataclass(frozen=True, slots=True)
class SystemLoadPoint:
    """One interval of ERCOT system load (MW); None where the file does not say."""

    start_s: float
    interval_s: float
    actual_mw: float | None
    forecast_mw: float | None


@dataclass(frozen=True, slots=True)
class SystemLoadFile:
    """What one file gave: its points in time order and the rows it rejected."""

    points: tuple[SystemLoadPoint, ...]
    rejected: int  # rows rejected, all counted
    reasons: tuple[str, ...]  # "<file>:<line>: why" for the first MAX_REASONS of them
    report: str  # "canonical", "NP3-565-CD" or "NP6-345-CD"


class SystemLoadError(ValueError):
    """The whole file is refused (unreadable, half-written, or not the format)."""


def read_system_load(path: str | Path) -> list[SystemLoadPoint]:
    """The canonical CSV at `path`, strictly: any bad row is an error that lists every bad row (for
    scenario data, which must be clean). `load_system_load` keeps the good rows instead."""
    loaded = load_system_load(path, "canonical")
    if loaded.rejected:
        more = loaded.rejected - len(loaded.reasons)
        tail = [f"... and {more} more"] if more > 0 else []
        raise SystemLoadError("; ".join([*loaded.reasons, *tail]))
    return list(loaded.points)


def load_system_load(
    path: str | Path, fmt: Format = "canonical", *, timezone: str = CENTRAL
) -> SystemLoadFile:
    """The points in the file at `path` with bad rows counted; SystemLoadError refuses the whole file.
    `fmt` "ercot" takes either of ERCOT's two reports, told apart by the header; `timezone` is where
    ERCOT's dates and hours are (Central Prevailing Time)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SystemLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_system_load(raw, fmt, name=str(path), timezone=timezone)


def parse_system_load(
    raw: bytes, fmt: Format = "canonical", *, name: str = "<data>", timezone: str = CENTRAL
) -> SystemLoadFile:
    """`load_system_load` on bytes already read."""
    if fmt not in FORMATS:
        raise SystemLoadError(f"{name}: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if len(raw) > MAX_BYTES:
        raise SystemLoadError(f"{name}: larger than {MAX_BYTES} bytes")
    if not raw.strip():
        raise SystemLoadError(f"{name}: empty (still being written?)")
    if not raw.endswith(b"\n"):
        raise SystemLoadError(f"{name}: does not end in a newline: half-written, refused as a whole")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SystemLoadError(f"{name}: not UTF-8 at byte {exc.start}") from None
    rows = _Rows(name, text)
    header = rows.header
    if fmt == "canonical":
        points, report = _canonical(header, rows), "canonical"
    else:
        points, report = _ercot(header, rows, ZoneInfo(timezone))
    if not points:
        raise SystemLoadError(f"{name}: no usable data rows ({rows.count} rejected{rows.first()})")
    return SystemLoadFile(tuple(points), rows.count, tuple(rows.reasons), report)


class _Rows:
    """The file's header and data rows with their line numbers; `#` comments and blank lines skipped."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.count = 0
        self.reasons: list[str] = []
        # A comment line goes to csv as an empty line, so csv's line numbers stay the file's.
        self._reader = csv.reader("\n" if line.startswith("#") else line for line in text.splitlines(True))
        self.header = next((row for row in self._reader if row), [])
        self.header = [h.strip() for h in self.header]

    def reject(self, line: int, why: str) -> None:
        self.count += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{self.name}:{line}: {why}")

    def first(self) -> str:
        return f": {self.reasons[0]}" if self.reasons else ""

    def each(self) -> Iterator[tuple[int, dict[str, str]]]:
        count = 0
        for row in self._reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            count += 1
            if count > MAX_ROWS:
                raise SystemLoadError(f"{self.name}: more than {MAX_ROWS} data rows")
            if len(row) != len(self.header):
                more = "more" if len(row) > len(self.header) else "fewer"
                self.reject(
                    self._reader.line_num, f"{len(row)} fields, {more} than the header's {len(self.header)}"
                )
                continue
            yield self._reader.line_num, dict(zip(self.header, row, strict=True))


def _canonical(header: list[str], rows: _Rows) -> list[SystemLoadPoint]:
    if "interval_start" not in header or not {"actual_mw", "forecast_mw"} & set(header):
        raise SystemLoadError(
            f"{rows.name}: header needs interval_start and actual_mw and/or forecast_mw (has {header})"
        )
    found: list[tuple[int, float, float | None, float | None]] = []
    last_s = -math.inf
    for line, row in rows.each():
        try:
            start_s = _iso_time(row["interval_start"] or "")
            actual = _mw(row.get("actual_mw") or "", "actual_mw")
            forecast = _mw(row.get("forecast_mw") or "", "forecast_mw")
        except ValueError as exc:
            rows.reject(line, str(exc))
            continue
        if actual is None and forecast is None:
            rows.reject(line, "neither actual_mw nor forecast_mw")
        elif start_s == last_s:
            rows.reject(line, f"duplicate interval_start {row['interval_start']}")
        elif start_s < last_s:
            rows.reject(line, f"interval_start {row['interval_start']} is before the previous row's")
        else:
            found.append((line, start_s, actual, forecast))
            last_s = start_s
    interval_s = _interval(rows, [s for _, s, _, _ in found])
    return [SystemLoadPoint(s, interval_s, a, f) for _, s, a, f in found]


def _interval(rows: _Rows, starts: list[float]) -> float:
    """The file's interval: the longest of INTERVALS_S that every step between rows is a whole number
    of (a gap is a missing row, not a longer interval); hourly when there is one row."""
    steps = [b - a for a, b in itertools.pairwise(starts)]
    fits = [i for i in INTERVALS_S if all(step % i == 0 for step in steps)]
    if not fits:
        raise SystemLoadError(
            f"{rows.name}: rows are not on a grid of {', '.join(f'{i:g}' for i in INTERVALS_S)} s"
            f" (steps of {min(steps):g} s)"
        )
    return 3600.0 if not steps else max(fits)


# ERCOT's columns, lower-cased: the MIS CSVs and the public API's differ only in case.
_FORECAST = {"date": "deliverydate", "total": "systemtotal"}
_ACTUAL = {"date": "operday", "total": "total"}


def _ercot(header: list[str], rows: _Rows, zone: ZoneInfo) -> tuple[list[SystemLoadPoint], str]:
    lower = {h.lower(): h for h in header}
    if {"deliverydate", "systemtotal", "inuseflag"} <= set(lower):
        columns, report, forecast = _FORECAST, "NP3-565-CD", True
    elif {"operday", "total"} <= set(lower):
        columns, report, forecast = _ACTUAL, "NP6-345-CD", False
    else:
        raise SystemLoadError(
            f"{rows.name}: neither NP3-565-CD (DeliveryDate, SystemTotal, InUseFlag) nor NP6-345-CD"
            f" (OperDay, TOTAL) columns (has {header})"
        )
    for needed in ("hourending", "dstflag"):
        if needed not in lower:
            raise SystemLoadError(f"{rows.name}: {report} without a {needed} column (has {header})")
    by_start: dict[float, float] = {}
    for line, row in rows.each():
        cell = {key: (row[lower[key]] or "").strip() for key in lower}
        if forecast and cell["inuseflag"].upper() != "Y":
            continue  # another model's forecast for the hour
        try:
            start_s = _hour_start(cell[columns["date"]], cell["hourending"], cell["dstflag"], zone)
            mw = _mw(cell[columns["total"]], lower[columns["total"]])
        except ValueError as exc:
            rows.reject(line, str(exc))
            continue
        if mw is None:
            rows.reject(line, f"{lower[columns['total']]} is empty")
        elif start_s in by_start:
            rows.reject(line, f"a second row for {cell[columns['date']]} {cell['hourending']}")
        else:
            by_start[start_s] = mw
    points = [
        SystemLoadPoint(s, 3600.0, None if forecast else mw, mw if forecast else None)
        for s, mw in sorted(by_start.items())
    ]
    return points, report


def _hour_start(day_text: str, hour_ending: str, dst_flag: str, zone: ZoneInfo) -> float:
    """Epoch start of ERCOT's hour ending `hour_ending` on `day_text` in `zone`."""
    day = _date(day_text)
    hour_text = hour_ending.split(":", 1)
    try:
        hour = int(hour_text[0])
    except ValueError:
        raise ValueError(f"hour ending {hour_ending!r} is not HH:00") from None
    if not 1 <= hour <= 24 or (len(hour_text) > 1 and hour_text[1] not in ("00", "")):
        raise ValueError(f"hour ending {hour_ending!r} is not 01:00-24:00")
    repeated = {"Y": True, "N": False}.get(dst_flag.upper())
    if repeated is None:
        raise ValueError(f"DSTFlag {dst_flag!r} is neither Y nor N")
    local = datetime.combine(day, time(0)) + timedelta(hours=hour - 1)
    # Each reading of the local time that survives a trip through UTC: two in the repeated hour, none
    # in the skipped one.
    starts = sorted(
        {
            moment.timestamp()
            for moment in (local.replace(tzinfo=zone, fold=fold) for fold in (0, 1))
            if datetime.fromtimestamp(moment.timestamp(), zone).replace(tzinfo=None) == local
        }
    )
    if not starts:
        raise ValueError(f"{day} hour ending {hour_ending} does not exist (the clocks went forward)")
    if repeated and len(starts) == 1:
        raise ValueError(f"DSTFlag Y on {day} hour ending {hour_ending}, which is not repeated")
    return starts[-1] if repeated else starts[0]


def _date(text: str) -> date:
    for fmt in ("%m/%d/%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"date {text!r} is neither MM/DD/YYYY nor YYYY-MM-DD")


def _iso_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"interval_start {text!r} is not ISO-8601") from None
    if moment.tzinfo is None:
        raise ValueError(f"interval_start {text!r} has no UTC offset")
    return moment.timestamp()


def _mw(text: str, what: str) -> float | None:
    """A load in MW; empty is None (not known), anything else must be a positive finite number."""
    text = text.strip().replace(",", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not finite")
    if value <= 0:
        raise ValueError(f"{what} {value:g} is not a positive load")
    return value
