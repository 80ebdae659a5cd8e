"""The 4CP summer score (daemon/replay/fourcp.py, `summer_score`) as text lines and an HTML table."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

from mullet.daemon.replay.render_text import cell, when

TOTALS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("peaks avoided", lambda s: f"{s['avoided']} of {s['scored']}"),
    ("transmission charge ($)", lambda s: cell(s["charge_usd"])),
    ("4CP window hours", lambda s: cell(s["window_hours"])),
    ("mining margin ($)", lambda s: cell(s["net_mining_margin_usd"])),
    ("margin given up vs never ($)", lambda s: cell(s["margin_given_up_usd"])),
    ("net value vs never ($)", lambda s: cell(s["net_vs_never_usd"])),
    ("net value vs oracle ($)", lambda s: cell(s["net_vs_oracle_usd"])),
)


def _interval_cell(interval: dict[str, Any]) -> str:
    if interval["avoided"] is None:
        return "outside"
    return f"{cell(interval['site_kw'])} kW {'avoided' if interval['avoided'] else 'MISSED'}"


def _grid(score: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per 4CP interval, then the totals; one column per strategy."""
    per = score["strategies"]
    names = list(per)
    head = ["", *(f"{name} ({per[name]['label']})" for name in names)]
    rows = []
    first = per[names[0]]["intervals"]
    for index, interval in enumerate(first):
        label = f"{interval['month']:>2} {when(interval['interval_start_s'])}"
        rows.append([label, *(_interval_cell(per[name]["intervals"][index]) for name in names)])
    for title, get in TOTALS:
        rows.append([title, *(get(per[name]) for name in names)])
    return head, rows


def summer_lines(label: str, score: dict[str, Any]) -> list[str]:
    head, rows = _grid(score)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        f"[{label}] 4CP summer score (hold {cell(score['hold_kw'])} kW,"
        f" mining {cell(score['mining_rating_kw'])} kW; avoided: mining at or under the hold's room"
        " beside the AI load + 5 % of its rating):"
    ]
    for row in [head, *rows]:
        lines.append(
            "  "
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    decided = len(score["decisions"]) + score["decisions_not_listed"]
    lines.append(
        f"  rule: held {score['days_held']} day(s) in {decided}"
        " decisions (each with p and p* in the JSON: fourcp_summer.decisions)"
    )
    lines.extend(f"  note: {note}" for note in score["notes"])
    return lines


def summer_html(label: str, score: dict[str, Any]) -> str:
    head, rows = _grid(score)
    body = "\n".join(
        "<tr>"
        + f"<td>{escape(row[0])}</td>"
        + "".join(f'<td class="num">{escape(c)}</td>' for c in row[1:])
        + "</tr>"
        for row in rows
    )
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    held = [d for d in score["decisions"] if d["curtail"]]
    days = ", ".join(f"{d['day']} (p {d['p']}, p* {d['p_star']})" for d in held[:60])
    return (
        f"<h2>4CP summer score: {escape(label)}</h2>\n"
        f"<p>hold {escape(cell(score['hold_kw']))} kW; an interval is avoided when mining averaged at most"
        " the hold's room beside the AI load plus 5 % of its rating.</p>\n"
        f"<table>\n<tr>{header}</tr>\n{body}\n</table>\n"
        f"<p>rule held {score['days_held']} day(s): {escape(days)}</p>"
    )
