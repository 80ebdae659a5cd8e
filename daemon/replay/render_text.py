"""The stdout summary: every configuration side by side, then each one's grid events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# The summary rows (name, value from a `summarize` dict): the text and the HTML report print the same ones.
ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("AI energy (MWh)", lambda r: r["energy_mwh"]["ai"]),
    ("mining energy (MWh)", lambda r: r["energy_mwh"]["mining"]),
    ("curtailed (MWh)", lambda r: r["energy_mwh"]["curtailed"]),
    ("mining revenue ($)", lambda r: r["usd"]["mining_revenue"]),
    ("mining energy cost ($)", lambda r: r["usd"]["mining_energy_cost"]),
    ("net mining margin ($)", lambda r: r["usd"]["net_mining_margin"]),
    ("curtailment cost avoided ($)", lambda r: r["usd"]["curtailment_cost_avoided"]),
    ("site energy cost ($)", lambda r: r["usd"]["site_energy_cost"]),
    ("DR income ($)", lambda r: r["usd"]["dr_income"]),
    ("DR capacity at risk ($)", lambda r: r["usd"]["dr_capacity_at_risk"]),
    ("margin incl. DR ($)", lambda r: r["usd"]["net_mining_margin_with_dr"]),
    ("grid events scored", lambda r: len(r["events"])),
    ("events passed", lambda r: sum(1 for e in r["events"] if e["passed"])),
    ("grid events refused", lambda r: r["grid_acks"]["rejected"]),
    ("under-frequency trips", lambda r: len(r["trips"])),
    ("4CP charge implied ($)", lambda r: (r["fourcp"] or {}).get("charge_usd")),
    ("AI SLA violations", lambda r: r["ai_sla"]["violations"]),
    ("group switches", lambda r: r["wear"]["total_switches"]),
    ("largest 60-s import change (kW)", lambda r: r["import_ramp"]["largest_60s_kw"]),
    ("largest 10-s import change (kW)", lambda r: r["import_ramp"]["largest_10s_kw"]),
    ("AI alone: largest 10-s / 60-s (kW)", lambda r: _ai_pair(r["import_ramp"])),
    ("ramp-limit violations 10 s / 60 s", lambda r: _pair(r["import_ramp"])),
    ("hashrate given up (TH·h)", lambda r: r["groups"]["hashrate_given_up_thh"]),
    ("wakes / sleeps / target changes", lambda r: _switching(r["groups"])),
    ("min on/off violations", lambda r: r["groups"]["min_on_violations"] + r["groups"]["min_off_violations"]),
    ("unpriced hours", lambda r: r["unpriced_hours"]),
]


def _pair(ramp: dict[str, Any]) -> str:
    return f"{cell(ramp['violations_10s'])} / {cell(ramp['violations_60s'])}"


def _ai_pair(ramp: dict[str, Any]) -> str:
    return f"{cell(ramp['ai_largest_10s_kw'])} / {cell(ramp['ai_largest_60s_kw'])}"


def _switching(groups: dict[str, Any]) -> str:
    return f"{groups['wakes']} / {groups['sleeps']} / {groups['target_changes']}"


def group_lines(result: dict[str, Any]) -> list[str]:
    """Per group: J/TH, TH x h given up, wakes / sleeps / target changes, min on and off broken."""
    lines = ["group    J/TH  given up TH·h  wakes  sleeps  targets  min on/off broken"]
    for group_id, g in result["groups"]["per_group"].items():
        lines.append(
            f"{group_id:<7} {g['efficiency_j_per_th']:>5g}  {cell(g['hashrate_given_up_thh']):>13}"
            f"  {g['wakes']:>5}  {g['sleeps']:>6}  {g['target_changes']:>7}"
            f"  {g['min_on_violations']} / {g['min_off_violations']}"
        )
    return lines


def ramp_line(result: dict[str, Any]) -> str:
    """The import's ramp against the limits it was judged by, and when its largest changes were."""
    ramp = result["import_ramp"]
    limits = (
        f"limits {cell(ramp['limit_kw_per_10s'])} kW/10 s, {cell(ramp['limit_kw_per_min'])} kW/min"
        if ramp["limit_kw_per_10s"] is not None or ramp["limit_kw_per_min"] is not None
        else "no ramp limit given: violations not counted"
    )
    ten = f"{cell(ramp['largest_10s_kw'])} kW in 10 s at {when(ramp['largest_10s_at_s'])}"
    sixty = f"{cell(ramp['largest_60s_kw'])} kW in 60 s at {when(ramp['largest_60s_at_s'])}"
    return f"largest import change: {ten}, {sixty}; {limits}"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def when(t_s: float | None) -> str:
    if t_s is None:
        return "-"
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_text(results: list[dict[str, Any]]) -> str:
    first = results[0]["scenario"]
    lines = [
        f"replay {first['name']}: {when(first['start_s'])} to {when(first['end_s'])} "
        f"({first['hours']:g} h, control step {first['control_step_s']:g} s)",
        "",
    ]
    width = max(len(name) for name, _ in ROWS)
    columns = [[cell(get(r)) for name, get in ROWS] for r in results]
    col_width = [
        max(len(r["label"]), *(len(c) for c in col)) for r, col in zip(results, columns, strict=True)
    ]
    lines.append(
        " " * width + "  " + "  ".join(r["label"].rjust(w) for r, w in zip(results, col_width, strict=True))
    )
    for index, (name, _get) in enumerate(ROWS):
        cells = "  ".join(col[index].rjust(w) for col, w in zip(columns, col_width, strict=True))
        lines.append(f"{name.ljust(width)}  {cells}")
    recorded = results[0].get("recorded")
    if recorded is not None:  # a journal's period: what the site really drew, beside the replayed figures
        replayed = ", ".join(f"{r['label']} {cell(r['energy_mwh']['site'])}" for r in results)
        lines.append("")
        lines.append(
            f"recorded: site {cell(recorded['site_mwh'])} MWh,"
            f" energy cost ${cell(recorded['site_energy_cost_usd'])}"
            f" ({cell(recorded['unrecorded_hours'])} h unrecorded); replayed site MWh: {replayed}"
        )
    for key, note in sorted(results[0].get("sources", {}).items()):
        if key.startswith("journal_"):
            lines.append(f"journal: {note}")
    for result in results:
        for note in result.get("notes", ()):
            lines.append(f"[{result['label']}] note: {note}")
    for result in results:
        lines.append("")
        lines.append(f"[{result['label']}] {ramp_line(result)}")
        lines.extend(f"  {line}" for line in group_lines(result))
    for result in results:
        fourcp = result["fourcp"]
        if fourcp is not None:
            lines.append("")
            lines.append(f"[{result['label']}] 4CP intervals (${fourcp['usd_per_kw_year']:g}/kW-year):")
            for interval in fourcp["intervals"]:
                lines.append(
                    f"  {when(interval['interval_start_s'])}  {interval['month']:>9}  "
                    f"site {cell(interval['site_kw'])} kW  -> ${cell(interval['charge_usd'])}"
                )
        if result["events"]:
            lines.append("")
            lines.append(f"[{result['label']}] grid events:")
            for e in result["events"]:
                ttt = "never" if e["time_to_target_s"] is None else f"{e['time_to_target_s']:g} s"
                pf = "-" if e["performance_factor"] is None else f"{e['performance_factor']:.3f}"
                lines.append(
                    f"  {e['event_id']} {e['program']} {e['kind']} {e['kw']:g} kW at {when(e['deploy_s'])}: "
                    f"target in {ttt} (deadline {cell(e['deadline_s'])} s), PF {pf}, "
                    f"shortfall {cell(e['shortfall_kwh'])} kWh, {'pass' if e['passed'] else 'FAIL'}"
                )
        tracking = result.get("base_point_tracking")
        if tracking:
            lines.append("")
            lines.append(f"[{result['label']}] base point tracking (5 min; settled: within deadband + 2 %):")
            lines.extend(f"  {line}" for line in tracking_lines(tracking))
    return "\n".join(lines) + "\n"


def tracking_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per base point per 5-minute interval: base point, mean mining, MAE, and the same after
    mining settled within the band."""
    lines = []
    for row in rows:
        settled = (
            "never settled"
            if row["settled_after_s"] is None
            else f"settled after {row['settled_after_s']:g} s: mining {cell(row['settled_mining_kw'])} kW,"
            f" MAE {cell(row['settled_mae_kw'])} kW ({cell(row['settled_mae_pct'])} %)"
        )
        lines.append(
            f"{when(row['interval_start_s'])} {row['event_id']} base point {cell(row['base_point_kw'])} kW:"
            f" mining {cell(row['mining_kw'])} kW, MAE {cell(row['mae_kw'])} kW ({cell(row['mae_pct'])} %);"
            f" {settled}"
        )
    return lines
