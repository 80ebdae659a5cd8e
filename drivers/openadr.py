"""OpenADR 2.0b VEN (openleadr, HTTP pull): registration, events in, opt responses, TELEMETRY_USAGE out.

The protocol side only: events arrive as plain `AdrEvent`s and the caller's `decide` answers
`optIn`/`optOut`; what an event means for the site is the daemon's business. openleadr is pull-based,
so an event reaches us about one poll after the VTN queues it. openleadr awaits `decide` inside its poll
job: it must return quickly (it never runs on the control loop's path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from openleadr import OpenADRClient

from mullet.drivers.wait_for_guard import reraise_swallowed_cancel

log = structlog.get_logger("mullet.openadr")

Opt = Literal["optIn", "optOut"]

# openleadr logs every message at INFO on its own logger; its warnings are what an operator needs.
logging.getLogger("openleadr").setLevel(logging.WARNING)
logging.getLogger("apscheduler").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class AdrInterval:
    start_s: float
    end_s: float | None  # None: open-ended (duration 0 in OpenADR means "until further notice")
    value: float


@dataclass(frozen=True, slots=True)
class AdrSignal:
    name: str  # SIMPLE, LOAD_DISPATCH, ...
    type: str  # level, setpoint, delta, ...
    intervals: tuple[AdrInterval, ...]
    unit: str | None = None  # itemBase unit, e.g. "W"
    scale: str | None = None  # SI scale code, e.g. "k", "M", "none"


@dataclass(frozen=True, slots=True)
class AdrEvent:
    event_id: str
    modification_number: int
    status: str  # far, near, active, completed, cancelled
    market_context: str
    start_s: float
    end_s: float | None
    signals: tuple[AdrSignal, ...]
    test_event: bool = False


class AdrEventError(ValueError):
    """An event payload we cannot read (the VEN opts out of it)."""


def parse_event(event: dict[str, Any]) -> AdrEvent:
    """openleadr's event dict -> AdrEvent; raises AdrEventError for what does not parse."""
    try:
        descriptor = event["event_descriptor"]
        period = event["active_period"]
        start_s = period["dtstart"].timestamp()
        duration = period.get("duration") or timedelta(0)
        end_s = start_s + duration.total_seconds() if duration > timedelta(0) else None
        raw_signals = event.get("event_signals") or []
        if isinstance(raw_signals, dict):
            raw_signals = raw_signals.get("event_signals") or []
        signals = []
        for raw in raw_signals:
            intervals = []
            for interval in raw.get("intervals") or []:
                i_start = interval.get("dtstart")
                i_start_s = i_start.timestamp() if i_start is not None else start_s
                i_duration = interval.get("duration") or timedelta(0)
                i_end_s = i_start_s + i_duration.total_seconds() if i_duration > timedelta(0) else end_s
                intervals.append(AdrInterval(i_start_s, i_end_s, float(interval["signal_payload"])))
            measurement = raw.get("measurement") or {}
            signals.append(
                AdrSignal(
                    name=str(raw["signal_name"]),
                    type=str(raw["signal_type"]),
                    intervals=tuple(intervals),
                    unit=measurement.get("unit"),
                    scale=measurement.get("scale"),
                )
            )
        return AdrEvent(
            event_id=str(descriptor["event_id"]),
            modification_number=int(descriptor.get("modification_number") or 0),
            status=str(descriptor.get("event_status") or "far"),
            market_context=str(descriptor.get("market_context") or ""),
            start_s=start_s,
            end_s=end_s,
            signals=tuple(signals),
            test_event=bool(descriptor.get("test_event")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AdrEventError(f"{type(exc).__name__}: {exc}") from None


class _Client(OpenADRClient):  # type: ignore[misc]
    """openleadr's client with the poll interval set by us rather than by the VTN when configured."""

    forced_poll_s: float | None = None

    async def create_party_registration(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().create_party_registration(*args, **kwargs)
        if self.registration_id and self.forced_poll_s is not None:
            self.poll_frequency = timedelta(seconds=self.forced_poll_s)
        return result


class OpenAdrVen:
    def __init__(
        self,
        *,
        vtn_url: str,
        ven_name: str,
        ven_id: str | None,
        poll_s: float | None,
        report_interval_s: int,
        resource_id: str,
        decide: Callable[[AdrEvent], Awaitable[tuple[Opt, str]]],
        site_power_kw: Callable[[], float | None],
        on_registered: Callable[[bool], None] = lambda registered: None,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self.vtn_url = vtn_url
        self.ven_name = ven_name
        self.ven_id = ven_id
        self.poll_s = poll_s
        self.report_interval_s = report_interval_s
        self.resource_id = resource_id
        self.decide = decide
        self.site_power_kw = site_power_kw
        self.on_registered = on_registered
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.client: _Client | None = None
        self.registered = asyncio.Event()

    def _build(self) -> _Client:
        client = _Client(
            ven_name=self.ven_name,
            vtn_url=self.vtn_url,
            ven_id=self.ven_id,
            show_fingerprint=False,
            disable_signature=True,
        )
        client.forced_poll_s = self.poll_s
        interval = timedelta(seconds=self.report_interval_s)
        client.add_report(
            callback=self._report_value,
            resource_id=self.resource_id,
            measurement="power_real",
            unit="W",
            scale="k",  # kW
            sampling_rate=interval,
            report_duration=interval,
            power_hertz=60,
        )
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        return client

    def _report_value(self) -> list[tuple[datetime, float]]:
        """One TELEMETRY_USAGE sample: site power in kW now; nothing (not 0) while it is unknown."""
        power_kw = self.site_power_kw()
        if power_kw is None:
            return []
        return [(datetime.now(UTC), round(power_kw, 3))]

    async def _on_event(self, event: dict[str, Any]) -> Opt:
        try:
            parsed = parse_event(event)
        except AdrEventError as exc:
            log.warning("openadr event unreadable, opting out", detail=str(exc)[:300])
            return "optOut"
        try:
            opt, _reason = await self.decide(parsed)
        except Exception:  # a bug in our mapping must not leave the VTN without an answer
            log.exception("openadr event handler failed, opting out", event_id=parsed.event_id)
            return "optOut"
        return opt

    async def run(self) -> None:
        """Register (retrying with backoff and jitter), then let openleadr poll until cancelled."""
        failures = 0
        try:
            while True:
                client = self._build()
                self.client = client
                try:
                    await client.run()
                finally:
                    reraise_swallowed_cancel()
                if client.registration_id:
                    break
                await client.stop()
                failures += 1
                delay_s = random.uniform(
                    self.retry_min_s, min(self.retry_max_s, self.retry_min_s * 2**failures)
                )
                log.warning("openadr registration failed, retrying", url=self.vtn_url, retry_in_s=delay_s)
                await asyncio.sleep(delay_s)
            log.info(
                "openadr registered",
                ven_id=client.ven_id,
                registration_id=client.registration_id,
                poll_s=client.poll_frequency.total_seconds(),
            )
            self.registered.set()
            self.on_registered(True)
            await asyncio.Event().wait()  # openleadr's scheduler polls and reports from here on
        finally:
            self.on_registered(False)
            if self.client is not None:
                with contextlib.suppress(Exception):
                    await self.client.stop()
