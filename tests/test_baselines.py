"""ERCOT baselines and the 15-minute scoring rules, on fixed meter series checked by hand below.

The site is in America/Chicago (CDT, UTC-5, in September 2026). The event day is Tuesday 2026-09-15;
Labor Day is Monday 2026-09-07. The event window is the two intervals 14:00 and 14:15 local; the notice
falls in the 14:00 interval, so the event-day adjustment reads 12:00-13:00 (the 4 intervals ending an
hour before 14:00).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import EXAMPLE, write_config

from mullet.daemon.cli import main as mulletd
from mullet.daemon.config import Config, parse_config
from mullet.daemon.records.journal import Journal
from mullet.daemon.records.report import build_report
from mullet.policies import baselines
from mullet.policies.baselines import Baseline, IntervalMean, Sample
from mullet.policies.scoring import ReportRule, Score, score

TZ = ZoneInfo("America/Chicago")
EVENT_DAY = dt.date(2026, 9, 15)
D = dt.date


def at(day: dt.date, hour: int, minute: int = 0) -> float:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ).timestamp()


WINDOW = [at(EVENT_DAY, 14, 0), at(EVENT_DAY, 14, 15)]
ADJUSTMENT = baselines.adjustment_slots(at(EVENT_DAY, 14, 2))
# Weekday like days before 2026-09-15 (most recent first) and their (14:00, 14:15) kW:
LIKE = {
    D(2026, 9, 14): (1500, 1500),  # highest mean: dropped
    D(2026, 9, 11): (1000, 1100),
    D(2026, 9, 9): (1010, 1110),
    D(2026, 9, 8): (1020, 1120),
    D(2026, 9, 4): (1030, 1130),
    D(2026, 9, 2): (1040, 1140),
    D(2026, 9, 1): (1050, 1150),
    D(2026, 8, 31): (1060, 1160),
    D(2026, 8, 28): (1070, 1170),
    D(2026, 8, 27): (500, 500),  # lowest mean: dropped
}
# Days that must not be used; 99,999 kW would show in any baseline they entered.
DECOYS = {
    D(2026, 9, 13): "Sunday",
    D(2026, 9, 12): "Saturday",
    D(2026, 9, 10): "an event day",
    D(2026, 9, 7): "Labor Day (an ERCOT holiday)",
    D(2026, 9, 6): "Sunday",
    D(2026, 9, 5): "Saturday",
    D(2026, 9, 3): "a gap: half its samples",
    D(2026, 8, 26): "the 11th like day",
}
EXCLUDED = {D(2026, 9, 10)}
EVENT_DAY_ADJUSTMENT_KW = (1200, 1200, 1100, 1100)  # actual at 12:00, 12:15, 12:30, 12:45


def _history(like: dict[dt.date, tuple[int, int]], decoys: bool = True) -> dict[float, IntervalMean]:
    history: dict[float, IntervalMean] = {}
    for day, kws in like.items():
        for start_s, kw in zip(WINDOW, kws, strict=True):
            history[baselines.on_day(start_s, EVENT_DAY, day, TZ)] = IntervalMean(kw, 1.0)
        for start_s in ADJUSTMENT:
            history[baselines.on_day(start_s, EVENT_DAY, day, TZ)] = IntervalMean(1000.0, 1.0)
    for day in DECOYS if decoys else ():
        for start_s in WINDOW + ADJUSTMENT:
            coverage = 0.5 if day == D(2026, 9, 3) else 1.0
            history[baselines.on_day(start_s, EVENT_DAY, day, TZ)] = IntervalMean(99_999.0, coverage)
    for start_s, kw in zip(ADJUSTMENT, EVENT_DAY_ADJUSTMENT_KW, strict=True):
        history[start_s] = IntervalMean(kw, 1.0)
    return history


def test_ercot_holidays_are_computed() -> None:
    assert sorted(baselines.ercot_holidays(2026)) == [
        D(2026, 1, 1),  # New Year's Day
        D(2026, 5, 25),  # Memorial Day: last Monday of May (May 31 is a Sunday)
        D(2026, 7, 4),  # Independence Day
        D(2026, 9, 7),  # Labor Day: first Monday of September
        D(2026, 11, 26),  # Thanksgiving: fourth Thursday of November
        D(2026, 11, 27),  # the day after
        D(2026, 12, 24),  # Christmas Eve
        D(2026, 12, 25),  # Christmas Day
    ]
    assert baselines.weekend_or_holiday(D(2026, 9, 7)) and not baselines.weekend_or_holiday(D(2026, 9, 8))


def test_middle_8_of_10_like_days_and_event_day_adjustment() -> None:
    history = _history(LIKE)
    found = baselines.middle_8_of_10(
        history, event_day=EVENT_DAY, window=WINDOW, excluded_days=EXCLUDED, tz=TZ, extra=ADJUSTMENT
    )
    # Like days: the weekdays before 09-15 that are not holidays, without events, covered: 09-14, 11,
    # [10 event], 9, 8, [7 Labor Day], 4, [3 gap], 2, 1, 08-31, 28, 27 = 10; weekends skipped; 08-26 not
    # needed. Dropped: 09-14 (mean 1500, highest) and 08-27 (500, lowest).
    assert found.days == (
        D(2026, 9, 11),
        D(2026, 9, 9),
        D(2026, 9, 8),
        D(2026, 9, 4),
        D(2026, 9, 2),
        D(2026, 9, 1),
        D(2026, 8, 31),
        D(2026, 8, 28),
    )
    # 14:00: (1000 + 1010 + ... + 1070) / 8 = 8280 / 8 = 1035; 14:15: 9080 / 8 = 1135.
    # The 8 days' baseline at 12:00-12:45 is 1000; the event day drew 1200, 1200, 1100, 1100 there:
    # adjustment = (200 + 200 + 100 + 100) / 4 = +150 kW -> 1185 and 1285.
    assert found.kw is not None
    unadjusted = [1035.0, 1135.0]
    assert [found.kw[s] for s in WINDOW] == pytest.approx(unadjusted)
    adjusted = baselines.adjusted(found, history, ADJUSTMENT)
    assert adjusted.kw is not None
    assert [adjusted.kw[s] for s in WINDOW] == pytest.approx([1185.0, 1285.0])
    assert "event-day adjustment +150.0 kW over 4 intervals" in adjusted.detail
    assert "dropped lowest 2026-08-27, highest 2026-09-14" in found.detail
    assert "1 skipped for an event or drill, 1 for data below 90%" in found.detail


def test_weekend_event_uses_weekend_days_and_holidays() -> None:
    event_day = D(2026, 9, 12)  # a Saturday
    window = [at(event_day, 14)]
    history = {}
    for back in range(1, 46):
        day = event_day - dt.timedelta(days=back)
        kw = 1000.0 if baselines.weekend_or_holiday(day) else 99_999.0
        history[baselines.on_day(window[0], event_day, day, TZ)] = IntervalMean(kw, 1.0)
    found = baselines.middle_8_of_10(history, event_day=event_day, window=window, excluded_days=(), tz=TZ)
    # Like days: 09-07 (Labor Day, a Monday), 09-06, 09-05, 08-30, 29, 23, 22, 16, 15, 09. All at 1000:
    # ties are ranked by date, so 08-09 and 09-07 are dropped; every weekday (99,999) left out.
    assert found.kw is not None and found.kw[window[0]] == pytest.approx(1000.0)
    assert found.detail.startswith("middle 8 of 10 weekend/holiday like days 2026-08-09..2026-09-07")


def test_too_few_like_days_gives_no_baseline_and_says_why() -> None:
    nine = {day: kws for day, kws in LIKE.items() if day != D(2026, 8, 27)}
    history = _history(nine)
    del history[baselines.on_day(WINDOW[0], EVENT_DAY, D(2026, 8, 26), TZ)]  # the 11th like day too
    found = baselines.middle_8_of_10(
        history, event_day=EVENT_DAY, window=WINDOW, excluded_days=EXCLUDED, tz=TZ
    )
    assert found.kw is None
    assert found.detail.startswith(
        "9 weekday like days with data in the 45 days before 2026-09-15, 10 needed"
    )


def test_regression_fits_weekend_and_trend() -> None:
    # Every day d before the event: kW = 1000 + 200 x weekend_or_holiday(d) + 5 x (d - 09-15 in days),
    # so the least-squares fit is exact and gives 1000 + 0 + 0 = 1000 kW on the (weekday) event day.
    # A plain mean of the 30 days would not: it carries the weekend share and the trend.
    history: dict[float, IntervalMean] = {}
    for back in range(1, 61):
        day = EVENT_DAY - dt.timedelta(days=back)
        kw = 1000.0 + 200.0 * baselines.weekend_or_holiday(day) - 5.0 * back
        for start_s in WINDOW[:1] + ADJUSTMENT:
            coverage = 0.5 if day == D(2026, 9, 3) else 1.0
            history[baselines.on_day(start_s, EVENT_DAY, day, TZ)] = IntervalMean(kw, coverage)
    for start_s in ADJUSTMENT:
        history[start_s] = IntervalMean(1100.0, 1.0)
    found = baselines.regression(
        history, event_day=EVENT_DAY, window=WINDOW[:1], excluded_days=EXCLUDED, tz=TZ, extra=ADJUSTMENT
    )
    # The 30 most recent days without an event and with data: 09-14 back to 08-14 less 09-10 and 09-03.
    assert len(found.days) == 30 and found.days[0] == D(2026, 9, 14) and found.days[-1] == D(2026, 8, 14)
    assert found.kw is not None and found.kw[WINDOW[0]] == pytest.approx(1000.0)
    assert "no weather or daylight terms" in found.detail
    # The event day drew 1100 at 12:00-12:45, where the fit also gives 1000: adjustment +100 -> 1100.
    adjusted = baselines.adjusted(found, history, ADJUSTMENT)
    assert adjusted.kw is not None and adjusted.kw[WINDOW[0]] == pytest.approx(1100.0)


def test_meter_before_is_the_whole_interval_before_the_notices() -> None:
    notice_s = at(EVENT_DAY, 14, 7)  # in the 14:00 interval: the baseline is 13:45-14:00
    samples = [
        Sample(at(EVENT_DAY, 13, 44), 9999.0),  # before 13:45: out
        Sample(at(EVENT_DAY, 13, 45), 1000.0),
        Sample(at(EVENT_DAY, 13, 50), 1200.0),
        Sample(at(EVENT_DAY, 13, 55), 1400.0),
        Sample(at(EVENT_DAY, 14, 0), 9999.0),  # the notice's own interval: out
    ]
    found = baselines.meter_before(samples, notice_s=notice_s, window=WINDOW)
    # (1000 + 1200 + 1400) / 3 = 1200 kW in every interval.
    assert found.kw == {WINDOW[0]: pytest.approx(1200.0), WINDOW[1]: pytest.approx(1200.0)}


# ---- scoring: the sustained response period in clock-aligned intervals --------------------------

B = at(EVENT_DAY, 14, 0)  # an interval boundary
RULE = ReportRule("middle_8_of_10")


def _score(end_s: float, samples: list[Sample]) -> Score:
    return score(
        kind="reduce",
        kw=2000.0,
        fixed_baseline_kw=None,
        notice_s=B + 420,
        deploy_s=B + 420,  # deployment at 14:07
        deadline_s=600.0,  # a 10-minute ramp: the sustained response period starts at 14:17
        end_s=end_s,
        in_progress=False,
        samples=samples,
        rule=RULE,
        method="middle_8_of_10",
        history_baseline=Baseline({B: 11000.0, B + 900: 10000.0, B + 1800: 9000.0}, "fixed for the test"),
    )


def test_partial_first_interval_scored_on_its_part() -> None:
    # Samples each minute: 9500 kW from 14:07 to 14:16 (the ramp), 8000 kW 14:17-14:29, 7200 kW 14:30-14:44.
    samples = [Sample(B + 60 * m, 9500.0) for m in range(7, 17)]
    samples += [Sample(B + 60 * m, 8000.0) for m in range(17, 30)]
    samples += [Sample(B + 60 * m, 7200.0) for m in range(30, 45)]
    result = _score(B + 2700, samples)  # ends 14:45
    got = [(i.start_s - B, i.end_s - B, i.samples, i.baseline_kw, i.target_kw) for i in result.intervals]
    # The 14:15 interval is scored on 14:17-14:30 (780 s, 13 samples, the ramp's 9500s left out) against
    # its own baseline 10000 (target 10000 - 2000 = 8000); 14:30-14:45 against 9000 (target 7000).
    assert got == [(1020, 1800, 13, 10000.0, 8000.0), (1800, 2700, 15, 9000.0, 7000.0)]
    # Factors: (10000 - 8000) / 2000 = 1; (9000 - 7200) / 2000 = 0.9.
    # Event: (780 x 1 + 900 x 0.9) / 1680 = 1590 / 1680 = 0.946429: below 0.95.
    assert [i.performance_factor for i in result.intervals] == pytest.approx([1.0, 0.9])
    assert result.performance_factor == pytest.approx(1590 / 1680)
    # The event's baseline: (780 x 10000 + 900 x 9000) / 1680 = 15,900,000 / 1680 = 9464.29 kW.
    assert result.baseline_kw == pytest.approx(15_900_000 / 1680)
    assert result.target_kw == pytest.approx(15_900_000 / 1680 - 2000)
    assert result.scored and not result.passed
    assert result.verdict == ["performance factor 0.946 < 0.95"]


def test_event_ending_inside_its_ramp_is_not_scored() -> None:
    samples = [Sample(B + 60 * m, 9500.0) for m in range(7, 12)]
    result = _score(B + 720, samples)  # ends at 14:12, 5 min into its 10-min ramp
    assert result.scored is False and result.performance_factor is None and result.intervals == []
    assert result.verdict == [
        "not scored: the event ended 300 s after deployment, inside its 600 s ramp period,"
        " which is never scored"
    ]
    assert not any("factor" in line or "deadline" in line for line in result.verdict)


def test_meter_baseline_shown_for_an_event_ending_inside_its_ramp() -> None:
    # meter_before: the 13:45-14:00 interval, 10000 kW; the event (reduce 2000 kW) ends at 14:12 in its ramp.
    samples = [Sample(B - 900 + 60 * m, 10_000.0) for m in range(15)]
    samples += [Sample(B + 60 * m, 9500.0) for m in range(7, 12)]
    result = score(
        kind="reduce",
        kw=2000.0,
        fixed_baseline_kw=None,
        notice_s=B + 420,
        deploy_s=B + 420,
        deadline_s=600.0,
        end_s=B + 720,
        in_progress=False,
        samples=samples,
        rule=RULE,
        method="meter_before",
    )
    assert result.scored is False and result.performance_factor is None
    assert (result.baseline_kw, result.target_kw) == (10_000.0, 8000.0)  # 10000 - 2000
    assert result.time_to_target_s is None and result.met_deadline is None  # neither met nor missed


# ---- from a journal: one GROUP BY, the excluded days, the config's choice -----------------------

NOTICE_S = at(EVENT_DAY, 14, 2)
EVENT = "ers-2026-09-15"


def _journal(path: Path) -> None:
    Journal(path).close()
    rows: list[tuple[float, str, str | None, str]] = []

    def interval(start_s: float, kw: float, count: int = 15) -> None:
        for k in range(count):
            rows.append((start_s + 30 + 60 * k, "site_power", None, json.dumps({"kw": kw})))

    history = _history(LIKE)
    for start_s, mean in history.items():
        interval(start_s, mean.kw, 15 if mean.coverage == 1.0 else 7)  # 7 x 60 s = 47 % of 900 s
    interval(at(EVENT_DAY, 13, 45), 1300.0)  # the interval before the notice's: meter_before
    for start_s in WINDOW:
        interval(start_s, 600.0)
    past = {
        "event": {"id": "ers-0910", "kind": "limit", "program": "ERS-10"},
        "obligation": {"kind": "limit"},
    }
    rows.append((at(D(2026, 9, 10), 15), "grid_event", "ers-0910", json.dumps(past)))
    obligation = {"kind": "limit", "kw": 700.0, "start_s": NOTICE_S, "deadline_s": 600.0}
    event = {"id": EVENT, "kind": "limit", "kw": 700.0, "program": "ERS-10"}
    rows.append((NOTICE_S, "grid_event", EVENT, json.dumps({"event": event, "obligation": obligation})))
    cancel = {"event": {"id": "recall", "kind": "cancel"}, "obligation": None, "cancels": EVENT}
    rows.append((at(EVENT_DAY, 14, 30), "grid_event", "recall", json.dumps(cancel)))
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)",
            sorted(rows),
        )
    db.close()


def _config_data(path: Path, programs: list[dict[str, object]]) -> dict:
    data = tomllib.loads(EXAMPLE.read_text())
    data["site"]["timezone"] = "America/Chicago"
    data["journal"]["path"] = str(path)
    data["programs"] = programs
    return data


def _config(path: Path, programs: list[dict[str, object]]) -> Config:
    return parse_config(_config_data(path, programs))


def test_report_reads_history_and_the_config_choice(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _journal(path)
    config = _config(path, [])
    report = build_report(path, EVENT, config=config)  # ERS-10's default: middle_8_of_10
    assert report.baseline_method == "middle_8_of_10"
    # As in test_middle_8_of_10_like_days_and_event_day_adjustment, read from 1-minute samples:
    # 14:00 1185, 14:15 1285; scored 14:12-14:15 (180 s) and 14:15-14:30 (900 s).
    assert [(i.start_s - B, i.baseline_kw) for i in report.intervals] == [
        (720, pytest.approx(1185.0)),
        (900, pytest.approx(1285.0)),
    ]
    # Event baseline (180 x 1185 + 900 x 1285) / 1080 = 1,369,800 / 1080 = 1268.33 kW; target 700 kW.
    assert report.baseline_kw == pytest.approx(1_369_800 / 1080)
    assert report.target_kw == 700.0 and report.passed  # 600 kW drawn: delivered >= obligated

    chosen = _config(path, [{"name": "ERS-10", "deadline_s": 600, "baseline": "meter_before"}])
    report = build_report(path, EVENT, config=chosen)
    assert report.baseline_method == "meter_before" and report.baseline_kw == pytest.approx(1300.0)
    # --baseline still overrides the config's choice.
    report = build_report(path, EVENT, baseline="regression", config=chosen)
    assert report.baseline_method == "regression" and report.baseline_kw is None
    # 16 days with data (the 10 like days and 6 decoys; 09-10 an event, 09-03 a gap), 30 needed.
    assert report.baseline_detail.startswith(
        "16 non-event days with data in the 60 days before 2026-09-15, 30 needed"
    )


def test_report_command_uses_the_configs_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.sqlite"
    _journal(path)
    programs: list[dict[str, object]] = [{"name": "ERS-10", "deadline_s": 600, "baseline": "meter_before"}]
    _, config_path = write_config(_config_data(path, programs), tmp_path / "site.toml")
    command = ["report", "--config", str(config_path), "--event", EVENT, "--format", "json"]
    assert mulletd(command) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["baseline_method"], data["baseline_kw"]) == ("meter_before", 1300.0)
    # --baseline overrides it: middle_8_of_10 gives the per-interval baselines found above.
    assert mulletd([*command, "--baseline", "middle_8_of_10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [i["baseline_kw"] for i in data["intervals"]] == [1185.0, 1285.0]
