"""4CP in `mulletd replay` (daemon/replay/fourcp.py) and the day scheduler it shares with the live
daemon (daemon/core/fourcp.py): the rule's windows land as 4CP events, never-curtail and the oracle run
beside it, each 4CP interval is scored avoided or missed, bad system-load rows are refused; the
scheduler decides once per decide time, reads no actual before its interval ended, stays bounded.

Three days of hand-made hourly system load in tmp_path: a few seconds of replay.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mullet.daemon.cli import main
from mullet.daemon.core.fourcp import MAX_POINTS, FourCpScheduler, to_event
from mullet.daemon.replay.scenario import ScenarioError, load_scenario
from mullet.drivers.ercot_load import SystemLoadPoint
from mullet.policies.fourcp import FourCpRule

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "site.example.toml"
CENTRAL = ZoneInfo("America/Chicago")
DAY0 = datetime(2023, 8, 8, tzinfo=CENTRAL)
HOUR_S = 3600.0
# Daily peaks (MW): a low day, a middling one, a record: against a prior of 82,000 MW the rule runs
# on the first, holds on the last.
PEAKS_MW = (70_000.0, 76_000.0, 86_000.0)
SHAPE = [0.62, 0.6, 0.58, 0.57, 0.57, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.89]
SHAPE += [0.92, 0.95, 0.97, 0.99, 1.0, 0.99, 0.96, 0.92, 0.86, 0.8, 0.72, 0.66]


def at(day: int, hour: float) -> datetime:
    return DAY0 + timedelta(days=day, hours=hour)


def write_load(path: Path, extra: str = "") -> None:
    rows = ["interval_start,actual_mw,forecast_mw"]
    for day, peak in enumerate(PEAKS_MW):
        for hour, share in enumerate(SHAPE):
            rows.append(f"{at(day, hour).isoformat()},{peak * share:.1f},{peak * share:.1f}")
    (path).write_text("\n".join(rows) + "\n" + extra)


def write_summer(tmp_path: Path) -> tuple[Path, Path]:
    """Scenario and overlay: two 4CP intervals at 16:45 CDT, one on the low day (the rule runs: a
    miss), one on the record day (the rule holds: avoided)."""
    write_load(tmp_path / "load.csv")
    (tmp_path / "4cp.csv").write_text(
        "interval_start,month,peak_mw\n"
        f"{at(0, 16.75).isoformat()},8,70000\n{at(2, 16.75).isoformat()},8,86000\n"
    )
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        f"""
[scenario]
name = "three days"
start = {at(0, 0).isoformat()}
end = {at(3, 0).isoformat()}
step_s = 60
[prices]
usd_per_mwh = 45
[hashprice]
usd_per_th_day = 0.07
[fourcp]
file = "4cp.csv"
usd_per_kw_year = 60
system_load_file = "load.csv"
"""
    )
    overlay = tmp_path / "fourcp-on.toml"
    overlay.write_text(
        '[fourcp]\nenabled = true\nusd_per_kw_year = 60\nhold_kw = 0\nreference_peak_mw = {"8" = 82000}\n'
    )
    return scenario, overlay


def test_rule_windows_land_as_4cp_events_beside_never_and_the_oracle(tmp_path: Path, capsys) -> None:
    scenario, overlay = write_summer(tmp_path)
    out = tmp_path / "out.json"
    html = tmp_path / "report.html"
    argv = ["replay", "--config", str(EXAMPLE), "--scenario", str(scenario), "--compare", str(overlay)]
    assert main([*argv, "--fourcp-baselines", "--json", str(out), "-o", str(html)]) == 0
    results = {r["label"]: r for r in json.loads(out.read_text())}
    assert set(results) == {
        "site.example",
        "site.example-never",
        "site.example-oracle",
        "fourcp-on",
        "fourcp-on-never",
        "fourcp-on-oracle",
    }

    def fourcp_events(label: str) -> list[str]:
        return [e["event_id"] for e in results[label]["events"] if e["program"] == "4CP"]

    rule_ids = fourcp_events("fourcp-on")
    assert rule_ids and all(i.startswith("4cp-2023-08-10-") for i in rule_ids), rule_ids
    assert fourcp_events("site.example") == []  # [fourcp] off: the rule does not run
    assert "4CP: [fourcp] is off in this configuration: no rule" in results["site.example"]["notes"]
    assert fourcp_events("fourcp-on-never") == []
    assert fourcp_events("fourcp-on-oracle") == ["4cp-oracle-1", "4cp-oracle-2"]

    score = results["fourcp-on"]["fourcp_summer"]
    per = score["strategies"]
    assert [i["avoided"] for i in per["rule"]["intervals"]] == [False, True]
    assert [i["avoided"] for i in per["never"]["intervals"]] == [False, False]
    assert [i["avoided"] for i in per["oracle"]["intervals"]] == [True, True]
    assert (per["rule"]["avoided"], per["never"]["avoided"], per["oracle"]["avoided"]) == (1, 0, 2)
    missed, avoided = per["rule"]["intervals"]
    assert missed["mining_kw"] == pytest.approx(score["mining_rating_kw"])
    assert avoided["mining_kw"] < 0.05 * score["mining_rating_kw"]
    assert per["never"]["window_hours"] == 0
    assert per["oracle"]["window_hours"] == pytest.approx(2 * (0.25 + 300 / 3600), abs=1e-3)
    assert per["rule"]["window_hours"] > per["oracle"]["window_hours"]
    # The charge follows the site's kW in the intervals; the value is charge saved less margin lost.
    assert per["oracle"]["charge_usd"] < per["rule"]["charge_usd"] < per["never"]["charge_usd"]
    assert per["never"]["net_vs_never_usd"] == 0
    assert per["rule"]["margin_given_up_usd"] > 0
    expected = (per["never"]["charge_usd"] - per["rule"]["charge_usd"]) - per["rule"]["margin_given_up_usd"]
    assert per["rule"]["net_vs_never_usd"] == pytest.approx(expected, abs=0.05)
    assert per["oracle"]["net_vs_oracle_usd"] == 0
    held = {d["day"] for d in score["decisions"] if d["curtail"]}
    assert held == {"2023-08-10"} and score["days_held"] == 1
    assert all(d["p"] is not None and d["p_star"] is not None for d in score["decisions"] if d["curtail"])
    text = capsys.readouterr().out
    assert "[fourcp-on] 4CP summer score" in text and "MISSED" in text and "avoided" in text
    assert "4CP summer score: fourcp-on" in html.read_text()


def test_bad_system_load_rows_are_refused_with_the_line(tmp_path: Path) -> None:
    scenario, _overlay = write_summer(tmp_path)
    write_load(tmp_path / "load.csv", f"{at(3, 0).isoformat()},nan,80000\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario)
    problems = " ".join(caught.value.problems)
    assert "fourcp.system_load_file" in problems and "load.csv:" in problems, problems


def test_baselines_need_the_years_intervals(tmp_path: Path, capsys) -> None:
    scenario, _overlay = write_summer(tmp_path)
    scenario.write_text(scenario.read_text().split("[fourcp]")[0])  # no [fourcp]: no intervals
    assert main(["replay", "--config", str(EXAMPLE), "--scenario", str(scenario), "--fourcp-baselines"]) == 2
    assert "--fourcp-baselines" in capsys.readouterr().err


# ---- the scheduler (pure) ------------------------------------------------------------------------


def scheduler() -> FourCpScheduler:
    rule = FourCpRule(usd_per_kw_year=60.0, reference_peak_mw={8: 82_000.0})
    return FourCpScheduler(rule, "America/Chicago", [time(6), time(13)])


def day_points(day: int, peak_mw: float, *, actual: bool = True) -> list[SystemLoadPoint]:
    return [
        SystemLoadPoint(
            at(day, hour).timestamp(), HOUR_S, peak_mw * share if actual else None, peak_mw * share
        )
        for hour, share in enumerate(SHAPE)
    ]


def due(s: FourCpScheduler, when: datetime) -> list:
    return s.due(when.timestamp(), curtail_kw=8000.0, margin_usd_per_kwh=0.05)


def test_the_scheduler_decides_once_per_decide_time() -> None:
    s = scheduler()
    s.observe(day_points(2, 86_000.0, actual=False))
    assert due(s, at(2, 0)) == []  # the first call: no decide time of today passed yet
    assert [d.label for d in due(s, at(2, 6))] == ["2023-08-10"]
    assert due(s, at(2, 6)) == []
    assert due(s, at(2, 12.9)) == []
    assert due(s, at(2, 6.5)) == []  # the clock went back: nothing again
    decisions = due(s, at(2, 13.5))
    assert len(decisions) == 1 and decisions[0].curtail
    # A call after a gap: one decision per day, not one per decide time missed.
    s.observe(day_points(3, 86_000.0, actual=False) + day_points(4, 86_000.0, actual=False))
    assert [d.label for d in due(s, at(4, 14))] == ["2023-08-11", "2023-08-12"]


def test_the_first_call_catches_up_todays_latest_decide_time_only() -> None:
    s = scheduler()
    s.observe(day_points(2, 86_000.0, actual=False))
    decisions = due(s, at(2, 14))
    assert len(decisions) == 1 and decisions[0].label == "2023-08-10"


def test_the_scheduler_reads_no_actual_before_its_interval_ended() -> None:
    s = scheduler()
    forecast = day_points(2, 80_000.0, actual=False)
    s.observe(forecast)
    # The 06:00-07:00 actual, twice the forecast, arrives early (a feed mislabelled, a clock ahead).
    early = forecast[6]
    s.observe([SystemLoadPoint(early.start_s, HOUR_S, 2 * (early.forecast_mw or 0.0), None)])
    assert due(s, at(2, 0)) == []
    (decision,) = due(s, at(2, 6))
    assert decision.forecast_peak_mw == pytest.approx(80_000.0)  # not scaled by the unfinished hour
    (later,) = due(s, at(2, 13))
    assert later.forecast_peak_mw is not None and later.forecast_peak_mw > 80_000.0  # once ended: used


def test_the_month_reference_is_the_months_actuals_before_the_day() -> None:
    s = FourCpScheduler(FourCpRule(usd_per_kw_year=60.0), "America/Chicago", [time(13)])
    s.observe(day_points(0, 79_000.0) + day_points(1, 81_000.0) + day_points(2, 80_000.0, actual=False))
    s.observe([SystemLoadPoint(at(2, 3).timestamp(), HOUR_S, 99_000.0, None)])  # today's: not the month's
    (decision,) = due(s, at(2, 13))
    assert decision.reference_mw == pytest.approx(81_000.0)


def test_the_rule_is_told_the_days_left_and_the_recent_daily_peaks() -> None:
    def decision_after(history_mw: float):
        s = FourCpScheduler(FourCpRule(usd_per_kw_year=60.0), "America/Chicago", [time(13)])
        # A day of last month (its peak is history, not this month's reference) and one of this month.
        s.observe(
            day_points(-10, history_mw) + day_points(1, 70_000.0) + day_points(2, 80_000.0, actual=False)
        )
        (decision,) = due(s, at(2, 13))
        return decision

    mild, hot = decision_after(75_000.0), decision_after(95_000.0)
    assert "21 day(s) left" in mild.reason  # 2023-08-10: eleven to 31 August
    # A recent day hotter than today's forecast makes the rest of the month likelier to top it.
    assert hot.reference_mw == mild.reference_mw
    assert hot.p_peak is not None and mild.p_peak is not None and hot.p_peak < mild.p_peak


def test_the_scheduler_is_bounded_and_rejects_bad_points() -> None:
    s = scheduler()
    start = datetime(2023, 5, 1, tzinfo=CENTRAL).timestamp()
    for day in range(120):  # four months, a day at a time
        day_s = start + day * 86_400.0
        s.observe(SystemLoadPoint(day_s + h * HOUR_S, HOUR_S, 60_000.0 + h, 60_000.0 + h) for h in range(24))
        s.due(day_s + 86_399.0, curtail_kw=8000.0, margin_usd_per_kwh=0.05)
        assert len(s) <= 62 * 24
    s.observe(SystemLoadPoint(start + 200 * 86_400.0 + n * 300.0, 300.0, None, 1.0) for n in range(30_000))
    assert len(s) <= MAX_POINTS
    s.observe(
        [
            SystemLoadPoint(start, HOUR_S, math.nan, None),
            SystemLoadPoint(start, HOUR_S, -5.0, None),
            SystemLoadPoint(start, 0.0, 5.0, None),
            SystemLoadPoint(start, HOUR_S, None, None),
        ]
    )
    assert s.rejected == 4


def test_a_hold_becomes_a_4cp_limit_event_and_a_run_none() -> None:
    s = scheduler()
    s.observe(day_points(2, 86_000.0, actual=False) + day_points(0, 70_000.0, actual=False))
    (hold,) = due(s, at(2, 6))
    event = to_event(hold, at(2, 6).timestamp())
    assert (event.kind, event.program, event.source, event.kw) == ("limit", "4CP", "fourcp", 0.0)
    assert (event.start, event.end) == (hold.start_s, hold.end_s)
    assert event.id == hold.obligation_id(at(2, 6).timestamp())
    low = scheduler()
    low.observe(day_points(0, 70_000.0, actual=False))
    (run,) = due(low, at(0, 6))
    assert not run.curtail
    with pytest.raises(ValueError, match="holds nothing"):
        to_event(run, at(0, 6).timestamp())


@pytest.mark.parametrize("summer", ["ercot-summer-2022", "ercot-summer-2023"])
def test_the_shipped_summers_and_overlays_parse(summer: str) -> None:
    from mullet.daemon.replay.configs import load_configs

    folder = ROOT / "simulators" / "scenarios"
    scenario = load_scenario(folder / summer / "scenario.toml")
    assert scenario.fourcp is not None and len(scenario.fourcp.intervals) == 4
    assert len(scenario.fourcp.system_load) == 122 * 24
    overlays = sorted((folder / "ercot-summer-2023").glob("fourcp-*.toml"))
    configs = load_configs(EXAMPLE, overlays)
    assert [c.fourcp.enabled for _label, c in configs] == [False] + [True] * len(overlays)


def test_a_forecast_is_read_only_once_it_was_published(tmp_path: Path) -> None:
    """Day D's forecast is known from `forecast_known_h` after D's midnight (default 06:00, EIA-930's
    timing): a 05:00 decide time finds none, unless the scenario says it was out the day before."""
    from mullet.daemon.replay.configs import load_configs
    from mullet.daemon.replay.fourcp import run_rule

    scenario, overlay = write_summer(tmp_path)
    overlay.write_text(overlay.read_text() + 'decide_at = ["05:00:00"]\n')
    _site, (_label, config) = load_configs(EXAMPLE, [overlay])
    decisions = run_rule(config, load_scenario(scenario)).decisions
    assert [d.reason for _t, d in decisions] == ["run: no forecast for the day"] * 3
    scenario.write_text(scenario.read_text() + "forecast_known_h = -18\n")
    decisions = run_rule(config, load_scenario(scenario)).decisions
    assert [d.label for _t, d in decisions if d.curtail] == ["2023-08-10"]
    assert all(d.forecast_peak_mw is not None for _t, d in decisions)
