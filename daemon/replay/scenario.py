"""A replay scenario: timestamped inputs (prices, hashprice, AI demand, grid events, frequency) read
from the CSV files a TOML file names, checked before anything runs (docs/replay.md gives the format).

Every problem is reported as `file:line: reason`, all of them at once, as the site config does: a
backtest that silently skipped a malformed price row would report a margin the site never had.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError, model_validator

from mullet.daemon.config.fields import Ident, NonNegativeKw, Strict
from mullet.daemon.config.loading import ConfigError, load_model
from mullet.drivers.ercot_load import SystemLoadError, SystemLoadPoint, read_system_load
from mullet.drivers.protocol import GridEvent
from mullet.simulators.ai_trace import smoothed

# Bounds on what one scenario may hold: a year of 5-minute prices is 105,120 rows; a scenario beyond
# these is a generator gone wrong, and would otherwise hold the machine's memory.
MAX_ROWS = 1_000_000
MAX_DURATION_S = 400 * 86_400.0
NOMINAL_HZ = 60.0

T = TypeVar("T")


class ScenarioError(ConfigError):
    """A scenario that cannot be replayed; `problems` lists every reason as `where: what`."""


# ---- the TOML file -----------------------------------------------------------------------------


class RunSection(Strict):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    start: datetime
    end: datetime
    # The control-cycle resolution while anything moves (the daemon's [control] period_s by default).
    step_s: Annotated[float, Field(gt=0, le=60)] | None = None
    # Meter reads during a frequency excursion (the daemon's [meter] poll_hz by default).
    meter_poll_s: Annotated[float, Field(gt=0, le=1)] | None = None


class FileSection(Strict):
    file: str


class PricesSection(Strict):
    """The energy price: a file of intervals, or one flat $/MWh for the whole period (an assumption
    the scenario's README must say)."""

    file: str | None = None
    usd_per_mwh: Annotated[float, Field(allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _one(self) -> PricesSection:
        if (self.file is None) == (self.usd_per_mwh is None):
            raise ValueError("prices: give either file or usd_per_mwh")
        return self


class HashpriceSection(Strict):
    file: str | None = None
    usd_per_th_day: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class TenantTraceSection(Strict):
    tenant_id: Ident
    file: str
    # GPU-side smoothing (power caps, rack storage): every change of the trace spread over this many
    # seconds, in one-second steps (simulators/ai_trace.py, `smoothed`); 0: as written.
    smooth_s: Annotated[int, Field(ge=0, le=3600)] = 0


class FourCpSection(Strict):
    file: str  # the year's 4CP intervals: interval_start,month,peak_mw
    usd_per_kw_year: NonNegativeKw = 0.0
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 900.0
    # Avoidance windows the operator would have called (start,end,limit_kw): each becomes a `limit`
    # event under program "4CP" delivered at its start.
    avoid_file: str | None = None
    # ERCOT system load (drivers/ercot_load.py's canonical CSV): with it, a site config with
    # `[fourcp] enabled = true` runs the 4CP rule over the period as the live daemon would.
    system_load_file: str | None = None
    # A day the file has no forecast for: "none" leaves it undecided; "persistence" forecasts it
    # as the day before's actuals, hour by hour (known at midnight: an honest, crude forecast).
    missing_forecast: Literal["none", "persistence"] = "none"
    # When day D's forecast is known, in hours after D's local midnight (negative: the day before).
    # 6: EIA-930's copy of ERCOT's day-ahead forecast is public by 06:00 CDT on D.
    forecast_known_h: Annotated[float, Field(ge=-48, le=24, allow_inf_nan=False)] = 6.0


class ProgramRateSection(Strict):
    """What a program pays: capacity ($/MW per hour committed) and deployed energy ($/MWh)."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    committed_kw: NonNegativeKw = 0.0
    capacity_usd_per_mw_h: NonNegativeKw = 0.0
    energy_usd_per_mwh: NonNegativeKw = 0.0


class PhysicsSection(Strict):
    """Device response (the simulator's defaults: LuxOS-class sleep in ~5 s, back in ~10 s)."""

    curtail_s: Annotated[float, Field(gt=0, le=600)] | None = None
    resume_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    sleep_fraction: Annotated[float, Field(ge=0, lt=1)] | None = None


class ScenarioFile(Strict):
    scenario: RunSection
    prices: PricesSection | None = None
    hashprice: HashpriceSection | None = None
    tenants: list[TenantTraceSection] = Field(default_factory=list, max_length=200)
    events: FileSection | None = None
    frequency: FileSection | None = None
    fourcp: FourCpSection | None = None
    programs: list[ProgramRateSection] = Field(default_factory=list, max_length=64)
    physics: PhysicsSection = PhysicsSection()


# ---- what the engine reads ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FourCp:
    intervals: tuple[tuple[float, str, float | None], ...]  # (start Unix s, month, peak MW)
    usd_per_kw_year: float
    interval_s: float
    system_load: tuple[SystemLoadPoint, ...] = ()
    missing_forecast: str = "none"
    forecast_known_h: float = 6.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    start_s: float
    end_s: float
    step_s: float | None
    meter_poll_s: float | None
    prices: tuple[tuple[float, float], ...]  # (from Unix s, $/MWh), in time order
    hashprice: tuple[tuple[float, float], ...]  # (from Unix s, $/TH/day)
    demand_kw: dict[str, tuple[tuple[float, float], ...]]  # per tenant: (from Unix s, kW)
    events: tuple[tuple[float, GridEvent], ...]  # (delivered at Unix s, event)
    frequency: tuple[tuple[float, float], ...]  # (Unix s, Hz), linear in between
    fourcp: FourCp | None
    programs: tuple[ProgramRateSection, ...]
    physics: PhysicsSection
    sources: dict[str, str] = field(default_factory=dict)  # what each input was read from
    # What the site drew in the period, when it was recorded (a journal: from_journal.py): (from Unix s,
    # kW), a step series; NaN from where nothing was recorded. Shown beside the replayed figures.
    recorded_kw: tuple[tuple[float, float], ...] = ()

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def step_at(series: tuple[tuple[float, float], ...], t_s: float) -> float | None:
    """The value in force at `t_s` of a step series (from Unix s, value); None before its first step."""
    index = bisect.bisect_right(series, (t_s, math.inf)) - 1
    return series[index][1] if index >= 0 else None


def parse_time(text: str) -> float:
    """Unix seconds from ISO-8601 with a UTC offset (or Z), or from a plain number of Unix seconds.
    A time without an offset is refused: a backtest a DST shift moved by an hour is wrong quietly."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"time {text!r} is not a Unix time")
        return value
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r} is neither ISO-8601 nor Unix seconds") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return moment.timestamp()


def _number(text: str, what: str, *, allow_negative: bool = True) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {text!r} is not finite")
    if value < 0 and not allow_negative:
        raise ValueError(f"{what} {value:g} is negative")
    return value


class _Reader:
    """Collects every problem across the files rather than stopping at the first."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}

    def path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.base / path

    def rows(self, name: str, columns: tuple[str, ...]) -> Iterator[tuple[str, dict[str, str]]]:
        """(where, row) for each data row; `columns` must all be in the header."""
        path = self.path(name)
        try:
            handle = path.open(newline="", encoding="utf-8")
        except OSError as exc:
            self.problems.append(f"{path}: cannot read: {exc.strerror}")
            return
        with handle:
            reader = csv.DictReader(row for row in handle if not row.startswith("#"))
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                self.problems.append(f"{path}: header lacks {', '.join(missing)} (has {reader.fieldnames})")
                return
            count = 0
            for row in reader:
                count += 1
                if count > MAX_ROWS:
                    self.problems.append(f"{path}: more than {MAX_ROWS} rows")
                    return
                yield f"{path}:{reader.line_num}", row
        self.sources[name] = str(path)

    def series(
        self, name: str, time_column: str, value_column: str, value: Callable[[str], float]
    ) -> tuple[tuple[float, float], ...]:
        """A step series: strictly increasing times, one value each."""
        out: list[tuple[float, float]] = []
        for where, row in self.rows(name, (time_column, value_column)):
            try:
                point = (parse_time(row[time_column] or ""), value(row[value_column] or ""))
            except ValueError as exc:
                self.problems.append(f"{where}: {exc}")
                continue
            if out and point[0] <= out[-1][0]:
                self.problems.append(f"{where}: time is not after the previous row's")
                continue
            out.append(point)
        return tuple(out)

    def parse(self, where: str, parse: Callable[[], T]) -> T | None:
        try:
            return parse()
        except ValidationError as exc:
            for error in exc.errors():
                loc = ".".join(str(p) for p in error["loc"])
                self.problems.append(f"{where}: {loc}: {error['msg']}")
        except ValueError as exc:
            self.problems.append(f"{where}: {exc}")
        return None


def _event(row: dict[str, str]) -> tuple[float, GridEvent]:
    at_s = parse_time(row["time"] or "")
    data: dict[str, Any] = {"id": row["id"], "kind": row["kind"], "source": "replay"}
    if row.get("kw"):
        data["kw"] = _number(row["kw"], "kw")
    for key in ("start", "end"):
        if row.get(key):
            data[key] = parse_time(row[key])
    if row.get("program"):
        data["program"] = row["program"]
    if row.get("allow_ai_flex"):
        data["allow_ai_flex"] = row["allow_ai_flex"].strip().lower() in ("1", "true", "yes")
    if row.get("trip_stage"):
        data["trip_stage"] = int(row["trip_stage"])
    return at_s, GridEvent.model_validate(data)


def load_scenario(path: str | Path) -> Scenario:
    """The scenario at `path` with every input read and checked; ScenarioError lists all problems."""
    path = Path(path)
    try:
        spec = load_model(ScenarioFile, path)
    except ConfigError as exc:
        raise ScenarioError(exc.problems) from None
    reader = _Reader(path.parent)
    run = spec.scenario
    problems = reader.problems
    if run.start.tzinfo is None or run.end.tzinfo is None:
        problems.append(f"{path}: scenario.start and scenario.end need a UTC offset")
        raise ScenarioError(problems)
    start_s, end_s = run.start.timestamp(), run.end.timestamp()
    if not 0 < end_s - start_s <= MAX_DURATION_S:
        problems.append(f"{path}: scenario.end must be after start, at most {MAX_DURATION_S / 86400:g} days")

    prices: tuple[tuple[float, float], ...] = ()
    if spec.prices is not None and spec.prices.usd_per_mwh is not None:
        prices = ((start_s, spec.prices.usd_per_mwh),)
    elif spec.prices is not None and spec.prices.file is not None:
        prices = reader.series(
            spec.prices.file, "interval_start", "usd_per_mwh", lambda t: _number(t, "price")
        )
    hashprice: tuple[tuple[float, float], ...] = ()
    if spec.hashprice is not None:
        if spec.hashprice.file is not None:
            hashprice = reader.series(
                spec.hashprice.file,
                "date",
                "usd_per_th_day",
                lambda t: _number(t, "hashprice", allow_negative=False),
            )
        elif spec.hashprice.usd_per_th_day is not None:
            hashprice = ((start_s, spec.hashprice.usd_per_th_day),)
    demand: dict[str, tuple[tuple[float, float], ...]] = {}
    for trace in spec.tenants:
        if trace.tenant_id in demand:
            problems.append(f"{path}: tenants: {trace.tenant_id!r} named twice")
        series = reader.series(trace.file, "time", "kw", lambda t: _number(t, "kw", allow_negative=False))
        if trace.smooth_s > 1:
            series = tuple(smoothed(iter(series), trace.smooth_s))
        demand[trace.tenant_id] = series
    events: list[tuple[float, GridEvent]] = []
    if spec.events is not None:
        columns = ("time", "id", "kind")
        for where, row in reader.rows(spec.events.file, columns):
            event = reader.parse(where, lambda row=row: _event(row))  # type: ignore[misc]
            if event is not None:
                events.append(event)
    frequency: tuple[tuple[float, float], ...] = ()
    if spec.frequency is not None:
        frequency = reader.series(
            spec.frequency.file, "time", "hz", lambda t: _number(t, "hz", allow_negative=False)
        )
        for moment, hz in frequency:
            if not 40 < hz < 70:
                problems.append(f"{spec.frequency.file}: {hz:g} Hz at {moment:.3f} is not a grid frequency")
    fourcp = None
    if spec.fourcp is not None:
        intervals = []
        for where, row in reader.rows(spec.fourcp.file, ("interval_start", "month")):
            try:
                peak = row.get("peak_mw") or ""
                intervals.append(
                    (
                        parse_time(row["interval_start"] or ""),
                        row["month"],
                        _number(peak, "peak_mw") if peak else None,
                    )
                )
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
        system_load: list[SystemLoadPoint] = []
        if spec.fourcp.system_load_file is not None:
            load_path = reader.path(spec.fourcp.system_load_file)
            try:
                system_load = read_system_load(load_path)
            except SystemLoadError as exc:
                problems.append(f"fourcp.system_load_file: {exc}")
            else:
                reader.sources[spec.fourcp.system_load_file] = str(load_path)
        fourcp = FourCp(
            tuple(intervals),
            spec.fourcp.usd_per_kw_year,
            spec.fourcp.interval_s,
            tuple(system_load),
            spec.fourcp.missing_forecast,
            spec.fourcp.forecast_known_h,
        )
        if spec.fourcp.avoid_file is not None:
            for n, (where, row) in enumerate(
                reader.rows(spec.fourcp.avoid_file, ("start", "end", "limit_kw"))
            ):
                avoid = reader.parse(where, lambda row=row, n=n: _avoid(row, n))  # type: ignore[misc]
                if avoid is not None:
                    events.append(avoid)
    events.sort(key=lambda item: item[0])  # stable: same-time rows keep their file order
    names = [p.name.casefold() for p in spec.programs]
    if len(set(names)) != len(names):
        problems.append(f"{path}: programs: a program is named twice")
    if problems:
        raise ScenarioError(problems)
    return Scenario(
        name=run.name,
        start_s=start_s,
        end_s=end_s,
        step_s=run.step_s,
        meter_poll_s=run.meter_poll_s,
        prices=prices,
        hashprice=hashprice,
        demand_kw=demand,
        events=tuple(events),
        frequency=frequency,
        fourcp=fourcp,
        programs=tuple(spec.programs),
        physics=spec.physics,
        sources=reader.sources,
    )


def _avoid(row: dict[str, str], n: int) -> tuple[float, GridEvent]:
    start_s, end_s = parse_time(row["start"] or ""), parse_time(row["end"] or "")
    limit_kw = _number(row["limit_kw"] or "", "limit_kw", allow_negative=False)
    event = GridEvent(
        id=f"4cp-avoid-{n + 1}",
        kind="limit",
        kw=limit_kw,
        start=start_s,
        end=end_s,
        program="4CP",
        source="replay",
    )
    return start_s, event
