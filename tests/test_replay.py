"""`mulletd replay`: the scenario format, determinism, the quiet skip, the figures it reports.

All in-process on the simulated clock (no broker, no sockets): a few hours of site time cost well
under a second. The live-against-replay check is tests/test_replay_fidelity.py.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mullet.daemon.cli import main
from mullet.daemon.config import Config, parse_config
from mullet.daemon.replay.engine import Replay
from mullet.daemon.replay.physics import Tenant
from mullet.daemon.replay.render_text import tracking_lines
from mullet.daemon.replay.results import interval_table, summarize, to_json
from mullet.daemon.replay.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "site.example.toml"
START = datetime(2023, 8, 1, 12, 0, tzinfo=UTC)


def iso(offset_s: float) -> str:
    return (START + timedelta(seconds=offset_s)).isoformat()


def example(economics: bool = False) -> Config:
    data = tomllib.loads(EXAMPLE.read_text())
    data["economics"]["enabled"] = economics
    return parse_config(data)


def write_scenario(tmp_path: Path, hours: float = 3.0) -> Path:
    """Prices every 5 min with a spike in the second hour and a 30-second one later, an ERS-10 reduce
    and its recall, a 4CP interval and an avoidance window, a frequency dip, an AI trace with a
    training job starting."""
    prices = ["interval_start,usd_per_mwh"]
    for n in range(int(hours * 12)):
        prices.append(f"{iso(n * 300)},{400.0 if 12 <= n < 18 or n == 21 else 25.0 + n % 3}")
        if n == 21:  # a 30-second spike: the restore after it waits for min_off_s, with no input due
            prices.append(f"{iso(n * 300 + 30)},25.0")
    (tmp_path / "prices.csv").write_text("\n".join(prices) + "\n")
    (tmp_path / "ai.csv").write_text(f"time,kw\n{iso(0)},900\n{iso(1800)},1700\n{iso(9000)},1100\n")
    (tmp_path / "events.csv").write_text(
        "time,id,kind,kw,start,end,program\n"
        f"{iso(2400)},ers-a,reduce,2500,,{iso(4200)},ERS-10\n"
        f"{iso(4500)},ers-a,cancel,,,,\n"
    )
    (tmp_path / "hz.csv").write_text(
        f"time,hz\n{iso(6000)},60.0\n{iso(6001)},59.8\n{iso(6030)},59.8\n{iso(6035)},60\n"
    )
    (tmp_path / "4cp.csv").write_text("interval_start,month,peak_mw\n" + f"{iso(7200)},August,85000\n")
    (tmp_path / "avoid.csv").write_text(f"start,end,limit_kw\n{iso(6900)},{iso(8100)},4000\n")
    text = f"""
[scenario]
name = "test"
start = {START.isoformat()}
end = {(START + timedelta(hours=hours)).isoformat()}
[prices]
file = "prices.csv"
[hashprice]
usd_per_th_day = 0.05
[[tenants]]
tenant_id = "ai-a"
file = "ai.csv"
[events]
file = "events.csv"
[frequency]
file = "hz.csv"
[fourcp]
file = "4cp.csv"
avoid_file = "avoid.csv"
usd_per_kw_year = 60
[[programs]]
name = "ERS-10"
committed_kw = 2500
capacity_usd_per_mw_h = 10
energy_usd_per_mwh = 50
"""
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def run(config: Config, scenario_path: Path, **kwargs: bool) -> tuple[dict, list[dict], Replay]:
    replay = Replay(config, load_scenario(scenario_path), **kwargs).run()
    return summarize(replay, "x"), interval_table(replay), replay


def test_same_scenario_and_config_give_byte_identical_results(tmp_path: Path) -> None:
    path = write_scenario(tmp_path)
    first = to_json([{**r, "intervals": t} for r, t, _ in [run(example(True), path)]])
    second = to_json([{**r, "intervals": t} for r, t, _ in [run(example(True), path)]])
    assert first == second
    assert '"ers-a"' in first and '"price_usd_per_mwh": 400.0' in first  # a real result, not an empty one


def test_the_quiet_skip_changes_no_decision(tmp_path: Path) -> None:
    """Jumping over quiet stretches (the speed) against a control cycle every second (the daemon)."""
    path = write_scenario(tmp_path)
    skipped, _, fast = run(example(True), path)
    stepped, _, slow = run(example(True), path, always_step=True)
    assert fast.steps < slow.steps / 5
    assert skipped["wear"] == stepped["wear"]
    assert skipped["import_ramp"] == stepped["import_ramp"]  # the held value is sampled before inputs
    skipped_groups, stepped_groups = dict(skipped["groups"]), dict(stepped["groups"])
    given_up = skipped_groups.pop("hashrate_given_up_thh"), stepped_groups.pop("hashrate_given_up_thh")
    assert given_up[0] == pytest.approx(given_up[1], rel=1e-6) and given_up[0] > 0
    assert [g["wakes"] for g in skipped_groups.pop("per_group").values()] == [
        g["wakes"] for g in stepped_groups.pop("per_group").values()
    ]
    assert skipped_groups == stepped_groups
    assert skipped["trips"] == stepped["trips"]
    assert skipped["grid_acks"] == stepped["grid_acks"]
    for a, b in zip(skipped["events"], stepped["events"], strict=True):
        assert a["time_to_target_s"] == b["time_to_target_s"]
        assert a["performance_factor"] == pytest.approx(b["performance_factor"], abs=1e-3)
    for key in ("mining", "curtailed", "site"):
        assert skipped["energy_mwh"][key] == pytest.approx(stepped["energy_mwh"][key], rel=1e-6)


def test_figures_follow_the_scenario(tmp_path: Path) -> None:
    result, table, replay = run(example(True), write_scenario(tmp_path))
    # The ERS-10 reduce: met within its 10-minute deadline, scored, paid at the program's rates.
    (ers, avoid) = sorted(result["events"], key=lambda e: e["program"])[::-1][:2]
    assert ers["event_id"] == "ers-a" and ers["passed"] and ers["time_to_target_s"] <= 600
    assert ers["performance_factor"] >= 0.95 and ers["ended_by"] == "recall"
    assert avoid["program"] == "4CP" and avoid["kind"] == "limit"
    assert result["usd"]["dr_capacity"] == pytest.approx(2.5 * 10 * 3, rel=1e-9)
    assert result["usd"]["dr_energy"] == pytest.approx(ers["delivered_mwh"] * 50, abs=0.01)
    assert result["usd"]["dr_capacity_at_risk"] == 0.0  # its one event passed
    # The price spike ($400/MWh > every group's break-even): economics curtails, then restores.
    spike = [row for row in table if row["price_usd_per_mwh"] == 400.0]
    calm = [row for row in table if row["price_usd_per_mwh"] and row["price_usd_per_mwh"] < 30]
    assert min(r["mining_kw"] for r in spike[1:]) < 0.2 * max(r["mining_kw"] for r in calm)
    assert result["usd"]["curtailment_cost_avoided"] > 0
    # The frequency dip at 59.8 Hz fires stage 1 once; the 4CP interval falls inside the avoidance window.
    assert [t["stage"] for t in result["trips"]] == [1]
    (interval,) = result["fourcp"]["intervals"]
    assert interval["site_kw"] is not None and interval["site_kw"] <= 4000 + 1e-6
    assert result["fourcp"]["charge_usd"] == pytest.approx(interval["site_kw"] * 60 / 4, abs=0.01)
    assert result["ai_sla"]["violations"] == 0
    assert result["notes"] == []  # every input used
    assert result["wear"]["total_switches"] == sum(replay.switches.values()) > 0


def test_economics_on_earns_more_margin_on_a_price_spike(tmp_path: Path) -> None:
    path = write_scenario(tmp_path)
    off, _, _ = run(example(False), path)
    on, _, _ = run(example(True), path)
    assert on["usd"]["net_mining_margin"] > off["usd"]["net_mining_margin"]
    assert on["energy_mwh"]["curtailed"] > off["energy_mwh"]["curtailed"]
    assert on["energy_mwh"]["ai"] == off["energy_mwh"]["ai"]  # AI is never what pays for it


def test_a_tenant_capped_below_firm_is_counted() -> None:
    tenant = Tenant("ai-a", firm_kw=1000.0, demand_kw=1200.0, cap_kw=900.0)
    tenant.check_sla(10.0)
    tenant.check_sla(5.0)
    tenant.cap_kw = 1100.0
    tenant.check_sla(5.0)
    assert (tenant.violations, tenant.violation_s) == (1, 15.0)


def test_bad_scenarios_name_every_problem(tmp_path: Path) -> None:
    path = write_scenario(tmp_path)
    (tmp_path / "prices.csv").write_text(
        "interval_start,usd_per_mwh\n"
        f"{iso(0)},25\n"
        "2023-08-01T12:05:00,26\n"  # no UTC offset
        f"{iso(600)},nan\n"
        f"{iso(0)},27\n"  # not after the row before
    )
    (tmp_path / "events.csv").write_text(f"time,id,kind,kw\n{iso(60)},bad id!,reduce,100\n")
    (tmp_path / "hz.csv").write_text("clock,hz\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    text = "\n".join(caught.value.problems)
    assert "prices.csv:3: time '2023-08-01T12:05:00' has no UTC offset" in text
    assert "prices.csv:4: price 'nan' is not finite" in text
    assert "prices.csv:5: time is not after the previous row's" in text
    assert "events.csv:2: id:" in text
    assert "hz.csv: header lacks time" in text


def test_cli_compares_an_overlay_and_refuses_a_broken_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_scenario(tmp_path)
    overlay = tmp_path / "economics-on.toml"
    overlay.write_text("[economics]\nenabled = true\n")
    out_json = tmp_path / "out.json"
    code = main(
        [
            "replay",
            "--config",
            str(EXAMPLE),
            "--scenario",
            str(path),
            "--compare",
            str(overlay),
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "site.example" in printed and "economics-on" in printed and "net mining margin" in printed
    assert "note" not in printed
    results = json.loads(out_json.read_text())
    assert [r["label"] for r in results] == ["site.example", "economics-on"]
    assert [r["economics"] for r in results] == [False, True]
    assert len(results[0]["intervals"]) == 12  # 3 h of 15-min rows

    (tmp_path / "prices.csv").write_text("interval_start,usd_per_mwh\nyesterday,12\n")
    code = main(["replay", "--config", str(EXAMPLE), "--scenario", str(path)])
    assert code == 2
    assert "prices.csv:2: time 'yesterday' is neither ISO-8601 nor Unix seconds" in capsys.readouterr().err


def test_a_scenario_longer_than_allowed_is_refused(tmp_path: Path) -> None:
    path = write_scenario(tmp_path)
    text = path.read_text().replace(
        f"end = {(START + timedelta(hours=3)).isoformat()}",
        f"end = {(START + timedelta(days=500)).isoformat()}",
    )
    path.write_text(text)
    with pytest.raises(ScenarioError, match="at most 400 days"):
        load_scenario(path)


def test_inputs_a_configuration_cannot_use_are_noted_not_dropped_silently(tmp_path: Path) -> None:
    path = write_scenario(tmp_path)
    path.write_text(path.read_text() + '\n[[tenants]]\ntenant_id = "ai-z"\nfile = "ai.csv"\n')
    with (tmp_path / "events.csv").open("a") as events:
        events.write(f"{iso(-60)},early,limit,5000,,{iso(600)},generic\n")
    result, _, _ = run(example(), path)
    assert result["notes"] == [
        "demand trace of tenant 'ai-z': no such tenant in this config, ignored",
        "1 grid event(s) delivered outside the period, not replayed",
    ]


@dataclasses.dataclass
class _CapWatch(Tenant):
    """A replayed tenant that notes every cap the site sends it."""

    seen: list[float | None] = dataclasses.field(default_factory=list)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "cap_kw" and "seen" in self.__dict__:
            self.seen.append(value)  # type: ignore[arg-type]
        super().__setattr__(name, value)


def test_base_points_are_followed_down_and_up_and_tracked_per_interval(tmp_path: Path) -> None:
    """Issue 20's example: ~12 MW of mining given base points 8 -> 5 -> 9 MW over three SCED intervals,
    each a new event superseding the last. Once the ramp allows, mining tracks within 2 %."""
    data = tomllib.loads(EXAMPLE.read_text())
    data["site"]["interconnect_kw"] = 20_000
    data["groups"] = [
        {
            "group_id": f"m{n:02d}",
            "rated_kw": 1000,
            "efficiency_j_per_th": 20.0 + n,
            "priority": 10,
            "supports_power_target": True,
            "min_power_kw": 300,
        }
        for n in range(1, 13)
    ]
    data["pdus"] = []
    config = parse_config(data)
    (tmp_path / "events.csv").write_text(
        "time,id,kind,kw,program\n"
        f"{iso(300)},bp-1,base_point,8000,CLR\n"
        f"{iso(600)},bp-2,base_point,5000,CLR\n"
        f"{iso(900)},bp-3,base_point,9000,CLR\n"
    )
    (tmp_path / "scenario.toml").write_text(
        f'[scenario]\nname = "clr"\nstart = {START.isoformat()}\n'
        f"end = {(START + timedelta(seconds=1200)).isoformat()}\n"
        '[hashprice]\nusd_per_th_day = 0.05\n[events]\nfile = "events.csv"\n'
    )
    replay = Replay(config, load_scenario(tmp_path / "scenario.toml"))
    caps: list[float | None] = []
    for tenant_id, tenant in replay.tenants.items():  # the same dict as the physics'
        replay.tenants[tenant_id] = _CapWatch(**dataclasses.asdict(tenant), seen=caps)
    result = summarize(replay.run(), "x")
    rows = result["base_point_tracking"]
    print("\n" + "\n".join(tracking_lines(rows)))
    assert [(r["event_id"], r["base_point_kw"]) for r in rows] == [
        ("bp-1", 8000.0),
        ("bp-2", 5000.0),
        ("bp-3", 9000.0),
    ]
    for row in rows:
        assert row["seconds"] == 300.0
        assert row["settled_after_s"] is not None and row["settled_mae_pct"] < 2.0
    assert replay.events["bp-1"].ended_by == "superseded" and replay.events["bp-2"].ended_by == "superseded"
    assert result["events"] == []  # base points are tracked, not scored as ERS events
    assert caps and all(cap is None for cap in caps)  # AI tenants told, and never capped
    assert result["ai_sla"]["violations"] == 0
