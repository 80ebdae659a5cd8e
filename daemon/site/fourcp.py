"""The live 4CP service (`[fourcp] enabled`, docs/programs.md "4CP"): reads ERCOT's system load from the
files an operator's cron refreshes, runs the day scheduler at the site's decide times, journals every
decision and submits each hold as a `4CP` limit event through the one grid-event queue.

A file is re-read when its mtime or size changes; one refused (half-written, not the format) leaves
the last good data in use, and is tried again when it changes. Without a fresh forecast for today
(in a 4CP month) nothing is decided: the state change is logged once and shown in
`mullet_fourcp_forecast_ready`; a decide time passed meanwhile is taken when a fresh one arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from mullet.daemon.config import Config
from mullet.daemon.config.fourcp import FourCpSection
from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.fourcp import FourCpScheduler, day_span_s, to_event
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.daemon.site.intake import Intake
from mullet.drivers.ercot_load import SystemLoadError, SystemLoadPoint, load_system_load
from mullet.policies.economics import mining_margin_usd_per_kwh
from mullet.policies.fourcp import FourCpDecision

log = structlog.get_logger("mullet.fourcp")

ACK_TIMEOUT_S = 10.0
REASON_CHARS = 300  # a journal entry and a log line carry at most this much of a reason
JOURNAL_KIND = "fourcp_decision"


@dataclass
class _Source:
    """One file: the stamp last read (good or refused) and the last good points."""

    role: str  # "forecast" or "actual": the metric label
    path: Path
    stamp: tuple[int, int] | None = None  # (mtime_ns, size)
    good_mtime_s: float | None = None  # the mtime of the file the points came from
    points: tuple[SystemLoadPoint, ...] = ()
    state: str = "unread"  # "ok", "missing", "refused": logged when it changes


class FourCpService:
    def __init__(
        self, config: Config, core: SiteController, intake: Intake, journal: Journal, metrics: Metrics
    ) -> None:
        self.section: FourCpSection = config.fourcp
        self.config = config
        self.core, self.intake, self.journal, self.metrics = core, intake, journal, metrics
        self.scheduler = FourCpScheduler(self.section.rule(), self.section.timezone, self.section.decide_at)
        self.zone = ZoneInfo(self.section.timezone)
        self.sources: list[_Source] = []
        if self.section.forecast_file is not None:
            self.sources.append(_Source("forecast", Path(self.section.forecast_file)))
        if self.section.actual_file is not None:
            self.sources.append(_Source("actual", Path(self.section.actual_file)))
        self.state = "starting"  # "ready", "stale", "missing", "off_season", "standby"
        self.last: FourCpDecision | None = None
        metrics.fourcp_forecast_ready.set(0.0)

    async def run(self) -> None:
        while True:
            try:
                await self.tick(time.time(), time.monotonic())
            except Exception:  # one bad pass must not end the service; the next one retries
                log.exception("4CP pass failed")
            await asyncio.sleep(self.section.poll_s)

    async def tick(self, now_s: float, now_mono_s: float) -> None:
        """Re-read what changed, then decide at the decide times passed (wall clock: epoch)."""
        for source in self.sources:
            await self._refresh(source)
        forecast = self.sources[0] if self.sources and self.sources[0].role == "forecast" else None
        age_s = None if forecast is None or forecast.good_mtime_s is None else now_s - forecast.good_mtime_s
        self.metrics.fourcp_forecast_age.set(math.nan if age_s is None else max(0.0, age_s))
        state, detail = self._readiness(now_s, forecast, age_s)
        self._set_state(state, detail)
        if state not in ("ready", "off_season"):
            return
        curtail_kw = sum(g.rated_kw for g in self.core.site.groups)
        margin, note = self._margin(now_mono_s)
        for decision in self.scheduler.due(now_s, curtail_kw=curtail_kw, margin_usd_per_kwh=margin or 0.0):
            if note:
                decision = dataclasses.replace(decision, reason=f"{decision.reason}; {note}")
            await self._decided(decision, now_s, curtail_kw, margin)

    # ---- files -------------------------------------------------------------------------------

    async def _refresh(self, source: _Source) -> None:
        try:
            stat = os.stat(source.path)
        except OSError as exc:
            source.stamp = None
            self._file_state(source, "missing", f"cannot stat: {exc.strerror or exc}")
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == source.stamp:
            return
        source.stamp = stamp
        try:
            # In a worker thread: a file at the reader's bounds takes seconds to parse, and the event
            # loop carries the meter and the fast path.
            loaded = await asyncio.to_thread(
                load_system_load, source.path, self.section.file_format, timezone=self.section.timezone
            )
        except SystemLoadError as exc:
            self.metrics.fourcp_file_loads.labels(file=source.role, result="refused").inc()
            source.state = "changed"  # each refused version is logged
            self._file_state(source, "refused", f"{str(exc)[:REASON_CHARS]}; the last good data is kept")
            return
        self.metrics.fourcp_file_loads.labels(file=source.role, result="ok").inc()
        if loaded.rejected:
            self.metrics.fourcp_rows_rejected.labels(file=source.role).inc(loaded.rejected)
        source.points, source.good_mtime_s = loaded.points, stat.st_mtime
        self.scheduler.observe(loaded.points)
        source.state = "ok"
        log.info(
            "4CP file loaded",
            file=source.role,
            path=str(source.path),
            report=loaded.report,
            points=len(loaded.points),
            first=_iso(loaded.points[0].start_s),
            last=_iso(loaded.points[-1].start_s),
            rejected=loaded.rejected,
            reasons=list(loaded.reasons[:5]),
        )

    def _file_state(self, source: _Source, state: str, detail: str) -> None:
        """Logged once per change (a file missing for a week is one line); a missing file is counted
        when it goes missing, a refused one per version read."""
        if source.state == state:
            return
        if state == "missing":
            self.metrics.fourcp_file_loads.labels(file=source.role, result="missing").inc()
        log.warning("4CP file unusable", file=source.role, path=str(source.path), state=state, detail=detail)
        source.state = state

    # ---- deciding ----------------------------------------------------------------------------

    def _readiness(self, now_s: float, forecast: _Source | None, age_s: float | None) -> tuple[str, str]:
        if not self.core.commanding:
            return "standby", "a standby decides nothing: the leader does"
        today = datetime.fromtimestamp(now_s, self.zone).date()
        if today.month not in self.section.months:
            return "off_season", f"month {today.month} is outside the 4CP months"
        if forecast is None:
            return "missing", "no [fourcp] forecast_file configured"
        if age_s is None:
            return "missing", f"no forecast read yet from {forecast.path}"
        if age_s > self.section.max_forecast_age_s:
            return (
                "stale",
                f"the forecast file is {age_s:.0f} s old (max {self.section.max_forecast_age_s:g} s)",
            )
        start_s, end_s = day_span_s(today, self.zone)
        if not any(start_s <= p.start_s < end_s and p.forecast_mw is not None for p in forecast.points):
            return "missing", f"the forecast file holds no interval of {today.isoformat()}"
        return "ready", ""

    def _set_state(self, state: str, detail: str) -> None:
        self.metrics.fourcp_forecast_ready.set(1.0 if state == "ready" else 0.0)
        if state == self.state:
            return
        if state in ("stale", "missing"):
            log.warning("4CP: no decisions", state=state, detail=detail)
        else:
            log.info("4CP state", state=state, detail=detail or None)
        self.state = state

    def _margin(self, now_mono_s: float) -> tuple[float | None, str]:
        """Mining's margin per kWh at the latest fresh price; None (and why) when it is unknown."""
        price = self.core.state.price_usd_per_mwh(now_mono_s)
        if price is None:
            return None, "margin unknown (no fresh energy price): the window's cost is taken as 0"
        margin = mining_margin_usd_per_kwh(
            self.core.site.groups, self.config.economics.hashprice_usd_per_th_day, price
        )
        if margin is None:
            return None, "margin unknown (no hashprice or break-even): the window's cost is taken as 0"
        return margin, ""

    async def _decided(
        self, decision: FourCpDecision, now_s: float, curtail_kw: float, margin: float | None
    ) -> None:
        self.last = decision
        label = "hold" if decision.curtail else "run"
        self.metrics.fourcp_decisions.labels(decision=label).inc()
        self.metrics.fourcp_peak_probability.set(_nan(decision.p_peak))
        self.metrics.fourcp_break_even_probability.set(_nan(decision.p_threshold))
        entry = decision_entry(decision, curtail_kw, margin)
        self.journal.record(JOURNAL_KIND, entry, subject=decision.label)
        log.info("4CP decision", **entry)
        if decision.curtail:
            await self._submit(decision, now_s)

    async def _submit(self, decision: FourCpDecision, now_s: float) -> None:
        """The hold as a `4CP` limit event through the grid-event queue: decided, journaled before it
        is accepted, then planned like any obligation. A refusal is logged and counted."""
        event = to_event(decision, now_s)
        try:
            ack = await asyncio.wait_for(self.intake.submit_grid_event(event), ACK_TIMEOUT_S)
        except TimeoutError:
            self.metrics.fourcp_events.labels(outcome="timeout").inc()
            log.error("4CP hold not answered", event_id=event.id, timeout_s=ACK_TIMEOUT_S)
            return
        outcome = "duplicate" if ack.code == "duplicate" else ("accepted" if ack.accepted else "rejected")
        self.metrics.fourcp_events.labels(outcome=outcome).inc()
        (log.info if ack.accepted else log.error)(
            "4CP hold submitted",
            event_id=event.id,
            outcome=outcome,
            code=ack.code,
            reason=ack.reason[:REASON_CHARS],
        )

    def status(self) -> dict[str, Any]:
        last = self.last
        return {
            "state": self.state,
            "files": {
                s.role: {"path": str(s.path), "state": s.state, "mtime_s": s.good_mtime_s}
                for s in self.sources
            },
            "last_decision": None if last is None else {"label": last.label, "curtail": last.curtail},
        }


def decision_entry(decision: FourCpDecision, curtail_kw: float, margin: float | None) -> dict[str, Any]:
    """A decision as the journal keeps it: fixed keys, the reason cut to REASON_CHARS."""
    return {
        "label": decision.label,
        "curtail": decision.curtail,
        "start_s": decision.start_s,
        "end_s": decision.end_s,
        "limit_kw": decision.limit_kw,
        "p_peak": _round(decision.p_peak),
        "p_threshold": _round(decision.p_threshold),
        "forecast_peak_mw": decision.forecast_peak_mw,
        "reference_mw": decision.reference_mw,
        "curtail_kw": curtail_kw,
        "margin_usd_per_kwh": _round(margin),
        "reason": decision.reason[:REASON_CHARS],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="minutes")


def check_lines(section: FourCpSection, now_s: float) -> list[tuple[bool, str]]:
    """`mulletd check-config`'s word on 4CP: each file read now as the daemon would read it, with its
    span, rejected rows and age; (False, line) is a warning. Nothing when 4CP is off."""
    if not section.enabled:
        return []
    lines: list[tuple[bool, str]] = []
    if section.forecast_file is None:
        lines.append((False, "fourcp: enabled without forecast_file: nothing is decided in the 4CP months"))
    zone = ZoneInfo(section.timezone)
    for role, name in (("forecast", section.forecast_file), ("actual", section.actual_file)):
        if name is None:
            continue
        try:
            age_s = now_s - os.stat(name).st_mtime
            loaded = load_system_load(name, section.file_format, timezone=section.timezone)
        except OSError as exc:
            lines.append(
                (False, f"fourcp.{role}_file: {name}: {exc.strerror or exc} (the cron has not run?)")
            )
            continue
        except SystemLoadError as exc:
            lines.append((False, f"fourcp.{role}_file: refused: {str(exc)[:REASON_CHARS]}"))
            continue
        first, last = (
            datetime.fromtimestamp(p.start_s, zone).isoformat() for p in (loaded.points[0], loaded.points[-1])
        )
        stale = role == "forecast" and age_s > section.max_forecast_age_s
        lines.append(
            (
                not stale and not loaded.rejected,
                f"fourcp.{role}_file: {loaded.report}, {len(loaded.points)} intervals {first} to {last},"
                f" {loaded.rejected} rows rejected, {age_s / 3600:.1f} h old"
                + (f" (stale: over max_forecast_age_s {section.max_forecast_age_s:g} s)" if stale else ""),
            )
        )
        lines.extend((False, f"fourcp.{role}_file: {reason}") for reason in loaded.reasons[:3])
    return lines
