"""The HTML report of `mulletd replay`: every configuration side by side, in one self-contained file.

The summary rows are render_text's, the plots inline SVG (daemon/replay/svg.py); no script and no
external resource. Every string from the input (labels come from file names, event ids, verdicts) is
escaped, and nothing reads the clock, so the same results give the same bytes (docs/replay.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from html import escape
from typing import Any

from mullet.daemon.replay.render_fourcp import summer_html
from mullet.daemon.replay.render_text import ROWS, cell, ramp_line, when
from mullet.daemon.replay.results import MAX_EVENTS_LISTED
from mullet.daemon.replay.svg import Series, bar_chart, time_chart

# Events drawn in the bar charts (each table still lists up to MAX_EVENTS_LISTED).
MAX_EVENTS_PLOTTED = 60
PALETTE = ("#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")
DASHES = (None, "6 3", "2 2")
AI, MINING, SITE = "#4e79a7", "#f28e2b", "#333333"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.fail { color: #b00; font-weight: bold; }
svg text { font-size: 11px; fill: #222; }
svg .grid { stroke: #e4e4e4; }
svg .axis { stroke: #555; }
svg .marker { stroke: #000; stroke-dasharray: 4 3; stroke-width: 1.5; }
svg text.missing { font-size: 9px; fill: #b00; }
svg text.value { font-size: 9px; }
"""


def _color(index: int) -> tuple[str, str | None]:
    """A configuration's colour and dash: past the palette, the colours repeat dashed."""
    return PALETTE[index % len(PALETTE)], DASHES[(index // len(PALETTE)) % len(DASHES)]


def _td(value: Any, css: str = "n") -> str:
    return f'<td class="{css}">{escape(cell(value))}</td>'


def _table(head: Sequence[str], rows: Sequence[str]) -> str:
    ths = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table>\n<tr>{ths}</tr>\n" + "\n".join(rows) + "\n</table>"


def _header(results: list[dict[str, Any]]) -> str:
    sc = results[0]["scenario"]
    return (
        f"<h1>Replay: {escape(sc['name'])}</h1>\n"
        f"<p>Period {escape(when(sc['start_s']))} to {escape(when(sc['end_s']))} ({sc['hours']:g} h); "
        f"control step {sc['control_step_s']:g} s; {len(results)} configuration(s).</p>"
    )


def _summary(results: list[dict[str, Any]]) -> str:
    rows = [
        f"<tr><th>{escape(name)}</th>" + "".join(_td(get(r)) for r in results) + "</tr>" for name, get in ROWS
    ]
    return "<h2>Summary</h2>\n" + _table(["", *(r["label"] for r in results)], rows)


def _column(table: list[dict[str, Any]], key: str) -> list[tuple[float, float | None]]:
    return [(row["start_s"], row[key]) for row in table]


def _power_plots(results: list[dict[str, Any]], tables: list[list[dict[str, Any]]]) -> str:
    """One chart per configuration on a shared scale, so their shapes compare at a glance."""
    peak_kw = max((row["site_kw"] or 0.0 for table in tables for row in table), default=0.0)
    parts = ["<h2>Site power (15-minute averages)</h2>"]
    for result, table in zip(results, tables, strict=True):
        lines = [
            Series("site", SITE, _column(table, "site_kw")),
            Series("AI", AI, _column(table, "ai_kw")),
            Series("mining", MINING, _column(table, "mining_kw")),
        ]
        parts.append(f"<h3>{escape(result['label'])}</h3>")
        parts.append(time_chart(f"site power, {result['label']}", lines, "power (kW)", y_max=peak_kw))
    return "\n".join(parts)


def _price_plot(tables: list[list[dict[str, Any]]]) -> str:
    """The price is the scenario's, the same for every configuration."""
    points = _column(tables[0], "price_usd_per_mwh") if tables else []
    if not any(v is not None for _, v in points):
        return "<h2>Energy price</h2>\n<p>no price data</p>"
    chart = time_chart("energy price", [Series("price", "#555555", points)], "price ($/MWh)")
    return "<h2>Energy price</h2>\n" + chart


def _curtailed_plot(results: list[dict[str, Any]], tables: list[list[dict[str, Any]]]) -> str:
    widest = len(results) - 1
    lines = [
        dataclasses.replace(
            _series(r["label"], i, points=_column(t, "curtailed_kw")),
            width=1.5 + 2.0 * (widest - i) / max(1, widest),
        )
        for i, (r, t) in enumerate(zip(results, tables, strict=True))
    ]
    return "<h2>Curtailed</h2>\n" + time_chart("curtailed power", lines, "curtailed (kW)")


def _series(
    label: str,
    index: int,
    values: Sequence[float | None] = (),
    points: Sequence[tuple[float, float | None]] = (),
) -> Series:
    color, dash = _color(index)
    return Series(label, color, points=points, values=values, dash=dash)


def _event_plots(results: list[dict[str, Any]]) -> str:
    """Events matched across configurations by (notice time, id): a configuration that refused one has
    no bar there."""
    keys = sorted({(e["notice_s"], e["event_id"]) for r in results for e in r["events"]})
    if not keys:
        return "<h2>Grid events</h2>\n<p>no grid events</p>"
    shown = keys[:MAX_EVENTS_PLOTTED]
    by_key = [{(e["notice_s"], e["event_id"]): e for e in r["events"]} for r in results]
    groups = [str(event_id) for _, event_id in shown]
    deadlines = [
        next((m[k]["deadline_s"] for m in by_key if k in m and m[k]["deadline_s"] is not None), None)
        for k in shown
    ]

    def values(field: str) -> list[Series]:
        return [
            _series(r["label"], i, [m[k][field] if k in m else None for k in shown])
            for i, (r, m) in enumerate(zip(results, by_key, strict=True))
        ]

    note = f"<p>first {len(shown)} of {len(keys)} events drawn</p>\n" if len(keys) > len(shown) else ""
    ttt = bar_chart(
        "time to target",
        groups,
        values("time_to_target_s"),
        "time to target (s)",
        unit="s",
        markers=deadlines,
        marker_label="deadline",
        missing="never",
    )
    pf = bar_chart("performance factor", groups, values("performance_factor"), "performance factor")
    return f"<h2>Grid events</h2>\n{note}<h3>Time to target against the deadline</h3>\n{ttt}\n" + (
        f"<h3>Performance factor</h3>\n{pf}"
    )


def _fourcp_table(fourcp: dict[str, Any]) -> str:
    rows = [
        "<tr>"
        + f"<td>{escape(when(i['interval_start_s']))}</td><td>{escape(str(i['month']))}</td>"
        + "".join(_td(i[k]) for k in ("ercot_peak_mw", "site_kw", "charge_usd"))
        + "</tr>"
        for i in fourcp["intervals"]
    ]
    head = ["interval start (UTC)", "month", "ERCOT peak (MW)", "site (kW)", "charge ($)"]
    return (
        f"<h3>4CP intervals (${fourcp['usd_per_kw_year']:g}/kW-year; {escape(str(fourcp['note']))})</h3>\n"
        + _table(head, rows)
    )


def _events_table(result: dict[str, Any]) -> str:
    rows = []
    for e in result["events"][:MAX_EVENTS_LISTED]:
        verdict = "; ".join(str(v) for v in e["verdict"] or ())
        rows.append(
            "<tr>"
            + "".join(f"<td>{escape(str(e[k]))}</td>" for k in ("event_id", "program", "kind"))
            + _td(e["kw"])
            + f"<td>{escape(when(e['deploy_s']))}</td>"
            + "".join(
                _td(e[k]) for k in ("time_to_target_s", "deadline_s", "performance_factor", "shortfall_kwh")
            )
            + ("<td>pass</td>" if e["passed"] else '<td class="fail">FAIL</td>')
            + f"<td>{escape(verdict)}</td></tr>"
        )
    head = ["event", "program", "kind", "kW", "deployed (UTC)", "to target (s)", "deadline (s)", "PF"]
    table = _table([*head, "shortfall (kWh)", "result", "verdict"], rows)
    more = result.get("events_not_listed") or 0
    return "<h3>Grid events</h3>\n" + table + (f"\n<p>{more} more events not listed</p>" if more else "")


def _groups_table(result: dict[str, Any]) -> str:
    """Per group: what the site's import steadiness cost it (render_text.group_lines in HTML)."""
    keys = ("efficiency_j_per_th", "hashrate_given_up_thh", "wakes", "sleeps", "target_changes")
    rows = [
        f"<tr><td>{escape(group_id)}</td>"
        + "".join(_td(g[k]) for k in keys)
        + _td(f"{g['min_on_violations']} / {g['min_off_violations']}")
        + "</tr>"
        for group_id, g in result["groups"]["per_group"].items()
    ]
    head = ["group", "J/TH", "given up (TH·h)", "wakes", "sleeps", "target changes", "min on/off broken"]
    return f"<h3>Mining groups</h3>\n<p>{escape(ramp_line(result))}</p>\n" + _table(head, rows)


def _detail(result: dict[str, Any]) -> str:
    parts = [f"<h2>{escape(result['label'])}</h2>"]
    parts.append(_groups_table(result))
    if result["fourcp"] is not None:
        parts.append(_fourcp_table(result["fourcp"]))
    if result.get("fourcp_summer") is not None:
        parts.append(summer_html(result["label"], result["fourcp_summer"]))
    parts.append(_events_table(result) if result["events"] else "<p>no grid events scored</p>")
    return "\n".join(parts)


def render_html(results: list[dict[str, Any]], tables: list[list[dict[str, Any]]]) -> str:
    """The report: `results` from `summarize` and `tables` from `interval_table`, one per configuration."""
    if len(results) != len(tables):
        raise ValueError(f"{len(results)} results but {len(tables)} interval tables")
    name = results[0]["scenario"]["name"] if results else "replay"
    body = (
        [
            _header(results),
            _summary(results),
            _power_plots(results, tables),
            _price_plot(tables),
            _curtailed_plot(results, tables),
            _event_plots(results),
            *(_detail(r) for r in results),
        ]
        if results
        else ["<p>no configurations</p>"]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Replay: {escape(name)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
