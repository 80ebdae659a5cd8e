"""drivers/ercot_load.py: the canonical CSV and ERCOT's two published reports (NP3-565-CD forecast,
NP6-345-CD actuals), hour-ending placed in Central time across both DST changes, bad rows counted with
their line numbers, and a half-written file refused as a whole."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mullet.drivers.ercot_load import (
    MAX_REASONS,
    SystemLoadError,
    load_system_load,
    parse_system_load,
    read_system_load,
)


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def write(tmp_path: Path, text: str, name: str = "load.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


# The canonical CSV.


def test_canonical_reads_both_columns_either_may_be_empty(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# source: a comment line\n"
        "interval_start,actual_mw,forecast_mw\n"
        "2023-08-10T15:00:00-05:00,84100.5,83000\n"
        "2023-08-10T16:00:00-05:00,,85000\n"
        "\n"
        "2023-08-10T17:00:00-05:00,85400,\n",
    )
    points = read_system_load(path)
    assert [p.start_s for p in points] == [
        utc("2023-08-10T20:00"),
        utc("2023-08-10T21:00"),
        utc("2023-08-10T22:00"),
    ]
    assert [p.interval_s for p in points] == [3600.0] * 3
    assert [(p.actual_mw, p.forecast_mw) for p in points] == [
        (84100.5, 83000.0),
        (None, 85000.0),
        (85400.0, None),
    ]


def test_canonical_interval_is_the_files_step() -> None:
    loaded = parse_system_load(
        b"interval_start,actual_mw\n2023-08-10T16:30:00-05:00,1\n2023-08-10T16:45:00-05:00,2\n"
    )
    assert [p.interval_s for p in loaded.points] == [900.0, 900.0]
    with pytest.raises(SystemLoadError, match=r"not on a grid .*steps of 7 s"):
        parse_system_load(b"interval_start,actual_mw\n2023-08-10T16:30:00Z,1\n2023-08-10T16:30:07Z,2\n")


def test_canonical_bad_rows_are_counted_with_line_numbers_and_the_rest_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "interval_start,actual_mw,forecast_mw\n"  # 1
        "2023-08-10T15:00:00-05:00,84000,\n"  # 2 good
        "2023-08-10T16:00:00-05:00,nan,85000\n"  # 3 NaN
        "2023-08-10T16:00:00-05:00,-5,\n"  # 4 negative
        "2023-08-10T16:00:00,84000,\n"  # 5 no offset
        "yesterday,84000,\n"  # 6 bad time
        "2023-08-10T16:00:00-05:00,,\n"  # 7 no value
        "2023-08-10T16:00:00-05:00,84000\n"  # 8 a field short
        "2023-08-10T17:00:00-05:00,84500,85000\n"  # 9 good
        "2023-08-10T17:00:00-05:00,84500,85000\n"  # 10 duplicate
        "2023-08-10T14:00:00-05:00,84500,85000\n"  # 11 unsorted
        "2023-08-10T18:00:00-05:00,inf,1e3x\n",  # 12 not finite
    )
    loaded = load_system_load(path)
    assert [p.actual_mw for p in loaded.points] == [84000.0, 84500.0]
    assert loaded.rejected == 9
    lines = [int(reason.split(":")[1]) for reason in loaded.reasons]
    assert lines == [3, 4, 5, 6, 7, 8, 10, 11, 12]
    text = "\n".join(loaded.reasons)
    for expected in (
        "not finite",
        "not a positive load",
        "no UTC offset",
        "not ISO-8601",
        "neither",
        "fewer than the header",
        "duplicate",
        "before the previous",
    ):
        assert expected in text
    with pytest.raises(SystemLoadError, match=r"load.csv:3: actual_mw 'nan' is not finite"):
        read_system_load(path)


def test_rejections_are_all_counted_but_a_bounded_number_kept() -> None:
    rows = "".join(f"2023-08-10T{h:02d}:00:00-05:00,-1,\n" for h in range(24))
    loaded = parse_system_load(
        f"interval_start,actual_mw,forecast_mw\n2023-08-09T00:00:00-05:00,1,\n{rows}".encode()
    )
    assert loaded.rejected == 24 and len(loaded.reasons) == MAX_REASONS


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (
            b"interval_start,actual_mw,forecast_mw\n2023-08-10T15:00:00-05:00,84000,\n2023-08-10T16:00:00-05:0",
            "half-written",
        ),
        (b"", "empty"),
        (b"interval_start,actual_mw,forecast_mw\n", "no usable data rows"),
        (b"interval_start,actual_mw,forecast_mw\n2023-08-10T15:00:00-05:00,-1,\n", "no usable data rows"),
        (b"time,kw\n2023-08-10T15:00:00-05:00,1\n", "header needs"),
        (b"interval_start,actual_mw\n\xff\xfe\n", "not UTF-8"),
    ],
)
def test_a_file_that_is_not_whole_is_refused_as_a_whole(raw: bytes, why: str) -> None:
    with pytest.raises(SystemLoadError, match=why):
        parse_system_load(raw)


def test_an_unreadable_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(SystemLoadError, match="cannot read"):
        load_system_load(tmp_path / "absent.csv")


# ERCOT's reports: hour-ending in Central Prevailing Time.

FORECAST_HEADER = (
    '"DeliveryDate","HourEnding","Coast","East","FarWest","North","NorthCentral","SouthCentral",'
    '"Southern","West","SystemTotal","Model","InUseFlag","DSTFlag"\n'
)


def forecast_row(
    day: str, hour_ending: str, total: float, model: str = "E", in_use: str = "Y", dst: str = "N"
) -> str:
    zones = ",".join(f'"{total / 8:.2f}"' for _ in range(8))
    return f'"{day}","{hour_ending}",{zones},"{total:.2f}","{model}","{in_use}","{dst}"\n'


def test_forecast_takes_the_in_use_model_hour_ending_24_is_the_days_last_hour() -> None:
    raw = FORECAST_HEADER + "".join(
        forecast_row("08/10/2023", f"{h:02d}:00", 60_000 + 100 * h, model=model, in_use=use)
        for h in range(1, 25)
        for model, use in (("A3", "N"), ("E", "Y"), ("M", "N"))
    )
    loaded = parse_system_load(raw.encode(), "ercot")
    assert loaded.report == "NP3-565-CD" and loaded.rejected == 0
    assert len(loaded.points) == 24
    first, last = loaded.points[0], loaded.points[-1]
    assert first.start_s == utc("2023-08-10T05:00")  # HE 01:00 CDT starts at midnight, 05:00 UTC
    assert last.start_s == utc("2023-08-11T04:00")  # HE 24:00 starts 23:00 CDT
    assert (first.forecast_mw, first.actual_mw, last.forecast_mw) == (60_100.0, None, 62_400.0)


def test_forecast_autumn_day_has_25_hours_the_repeat_flagged() -> None:
    rows = [forecast_row("11/05/2023", "01:00", 40_000), forecast_row("11/05/2023", "02:00", 41_000)]
    rows.append(forecast_row("11/05/2023", "02:00", 42_000, dst="Y"))  # the repeated hour, standard time
    rows += [forecast_row("11/05/2023", f"{h:02d}:00", 43_000) for h in range(3, 25)]
    loaded = parse_system_load((FORECAST_HEADER + "".join(rows)).encode(), "ercot")
    assert loaded.rejected == 0 and len(loaded.points) == 25
    starts = [p.start_s for p in loaded.points]
    assert all(b - a == 3600 for a, b in itertools.pairwise(starts))
    assert starts[0] == utc("2023-11-05T05:00")  # 00:00 CDT
    assert [p.forecast_mw for p in loaded.points[1:3]] == [41_000.0, 42_000.0]
    assert starts[1] == utc("2023-11-05T06:00") and starts[2] == utc(
        "2023-11-05T07:00"
    )  # 01:00 CDT, 01:00 CST
    assert starts[-1] == utc("2023-11-06T05:00")  # HE 24:00 starts 23:00 CST


def test_forecast_spring_day_has_23_hours_and_the_missing_one_is_rejected() -> None:
    rows = [forecast_row("03/12/2023", f"{h:02d}:00", 40_000 + h) for h in range(1, 25) if h != 3]
    rows.append(forecast_row("03/12/2023", "03:00", 1))  # does not exist: 02:00-03:00 was skipped
    rows.append(forecast_row("03/13/2023", "05:00", 1, dst="Y"))  # flagged, but nothing repeats
    rows.append(forecast_row("03/13/2023", "25:00", 1))
    rows.append(forecast_row("13/13/2023", "05:00", 1))
    rows.append(forecast_row("03/13/2023", "06:00", 1, dst="?"))
    loaded = parse_system_load((FORECAST_HEADER + "".join(rows)).encode(), "ercot")
    assert len(loaded.points) == 23
    starts = [p.start_s for p in loaded.points]
    assert all(b - a == 3600 for a, b in itertools.pairwise(starts))
    assert starts[1] == utc("2023-03-12T07:00") and starts[2] == utc(
        "2023-03-12T08:00"
    )  # 01:00 CST, 03:00 CDT
    assert loaded.rejected == 5
    reasons = "\n".join(loaded.reasons)
    assert ":25: 2023-03-12 hour ending 03:00 does not exist" in reasons
    assert ":26: DSTFlag Y on 2023-03-13 hour ending 05:00, which is not repeated" in reasons
    assert ":27: hour ending '25:00'" in reasons and ":28: date '13/13/2023'" in reasons
    assert ":29: DSTFlag '?'" in reasons


def test_forecast_two_in_use_rows_for_one_hour_keep_the_first() -> None:
    raw = (
        FORECAST_HEADER
        + forecast_row("08/10/2023", "17:00", 80_000)
        + forecast_row("08/10/2023", "17:00", 1, model="M")
    )
    loaded = parse_system_load(raw.encode(), "ercot")
    assert [p.forecast_mw for p in loaded.points] == [80_000.0]
    assert loaded.rejected == 1 and "a second row for 08/10/2023 17:00" in loaded.reasons[0]


ACTUAL_HEADER = (
    '"OperDay","HourEnding","COAST","EAST","FAR_WEST","NORTH","NORTH_C","SOUTHERN","SOUTH_C","WEST",'
    '"TOTAL","DSTFlag"\n'
)


def actual_row(day: str, hour_ending: str, total: float, dst: str = "N") -> str:
    zones = ",".join(f"{total / 8:.2f}" for _ in range(8))
    return f"{day},{hour_ending},{zones},{total:.2f},{dst}\n"


def test_actuals_report_and_the_public_apis_iso_dates() -> None:
    rows = [actual_row("11/05/2023", "01:00", 40_000), actual_row("11/05/2023", "02:00", 41_000)]
    rows += [actual_row("11/05/2023", "02:00", 42_000, dst="Y"), actual_row("2023-11-05", "03:00", 43_000)]
    rows.append(actual_row("11/05/2023", "04:00", 0))
    loaded = parse_system_load((ACTUAL_HEADER + "".join(rows)).encode(), "ercot")
    assert loaded.report == "NP6-345-CD"
    assert [(p.start_s, p.actual_mw, p.forecast_mw) for p in loaded.points] == [
        (utc("2023-11-05T05:00"), 40_000.0, None),
        (utc("2023-11-05T06:00"), 41_000.0, None),
        (utc("2023-11-05T07:00"), 42_000.0, None),
        (utc("2023-11-05T08:00"), 43_000.0, None),
    ]
    assert loaded.rejected == 1 and ":6: TOTAL 0 is not a positive load" in loaded.reasons[0]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ('"Date","Hour","Load"\n"08/10/2023","17:00","1"\n', "neither NP3-565-CD"),
        ('"OperDay","HourEnding","TOTAL"\n"08/10/2023","17:00","1"\n', "without a dstflag column"),
        (FORECAST_HEADER + forecast_row("08/10/2023", "17:00", 80_000)[:-9], "half-written"),
    ],
)
def test_ercot_files_that_are_not_the_reports_are_refused(raw: str, why: str) -> None:
    with pytest.raises(SystemLoadError, match=why):
        parse_system_load(raw.encode(), "ercot")
