"""Render the golden ERS-10 event's report (tests/data/report_ers10.jsonl) in America/Chicago and
screenshot its plot to docs/img/report-example.png, the picture docs/reports.md shows.

    .venv/bin/python docs/report_png.py [--out docs/img/report-example.png]

Needs the dev extra's playwright and a Chromium at /usr/bin/chromium (Debian's `chromium`).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from mullet.daemon.records.journal import Journal
from mullet.daemon.records.report import build_report
from mullet.daemon.records.report_render import render

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "data" / "report_ers10.jsonl"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def load_journal(path: Path, rows: Path = RECORDED) -> None:
    """A journal in the daemon's schema holding the recorded rows."""
    Journal(path).close()
    db = sqlite3.connect(path)
    with db:
        for line in rows.read_text().splitlines():
            row = json.loads(line)
            db.execute(
                "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)",
                (row["wall_s"], row["kind"], row["subject"], json.dumps(row["data"])),
            )
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "img" / "report-example.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "journal.sqlite"
        load_journal(journal)
        html = Path(tmp) / "report.html"
        # The 4 pre-notice intervals: the two-hour recording has no like days for ERS's default baseline.
        report = build_report(journal, "ers-2025-06-15", baseline="pre_notice_intervals")
        html.write_text(render(report, "html", timezone="America/Chicago"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(device_scale_factor=1.5)
            page.goto(html.as_uri())
            page.locator("svg.event-plot").screenshot(path=args.out)
            browser.close()
    print(f"{args.out}: {Path(args.out).stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
