"""OpenADR 2.0b end to end: a real openleadr VTN in this process on loopback, `mulletd run` with its VEN,
and the simulated site. openleadr is pull-based: everything here arrives within about one 1 s poll."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import Running, running_site, until
from openleadr import OpenADRServer, enums, objects, utils

from mullet.simulators.ports import free_port

VTN_ID = "Mullet-Test-VTN"  # mixed case: openleadr flags an all-lowercase VTN id as invalid
VEN_ID = "ven-Mullet-1"
ECRS_CONTEXT = "http://ercot.example/ECRS"


@dataclass
class Vtn:
    server: OpenADRServer
    url: str
    opts: dict[str, str] = field(default_factory=dict)
    reports: list[tuple[datetime, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_opt(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opts[event_id] = opt_type
        self.changed.set()

    async def opt_of(self, event_id: str, timeout_s: float = 10.0) -> str:
        async with asyncio.timeout(timeout_s):
            while event_id not in self.opts:
                self.changed.clear()
                await self.changed.wait()
        return self.opts.pop(event_id)

    async def reported(self, count: int, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.reports) < count:
                self.changed.clear()
                await self.changed.wait()

    def dispatch(self, kw: float, minutes: float = 10) -> str:
        return self.server.add_event(
            ven_id=VEN_ID,
            signal_name="LOAD_DISPATCH",
            signal_type="setpoint",
            intervals=[
                objects.Interval(
                    dtstart=datetime.now(UTC), duration=timedelta(minutes=minutes), signal_payload=kw
                )
            ],
            callback=self.on_opt,
            market_context=ECRS_CONTEXT,
        )

    def modify_payload(self, event_id: str, kw: float) -> None:
        event = utils.find_by(self.server.events[VEN_ID], "event_descriptor.event_id", event_id)
        utils.getmember(event, "event_signals")[0].intervals[0].signal_payload = kw
        utils.increment_event_modification_number(event)
        self.server.events_updated[VEN_ID] = True


@pytest.fixture
async def vtn() -> AsyncIterator[Vtn]:
    port = free_port()
    server = OpenADRServer(
        vtn_id=VTN_ID, http_port=port, http_host="127.0.0.1", requested_poll_freq=timedelta(seconds=10)
    )
    state = Vtn(server, f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b")

    async def register(registration_info: dict) -> tuple[str, str]:
        return VEN_ID, "reg-1"

    def register_report(
        ven_id, resource_id, measurement, unit, scale, min_sampling_interval, max_sampling_interval
    ):  # type: ignore[no-untyped-def]
        assert (resource_id, unit, scale) == ("site", "W", "k")

        def collect(values: list[tuple[datetime, float]]) -> None:
            state.reports.extend(values)
            state.changed.set()

        return collect, min_sampling_interval

    server.add_handler("on_create_party_registration", register)
    server.add_handler("on_register_report", register_report)
    await server.run()
    yield state
    await server.stop()


def _ven(vtn: Vtn):  # type: ignore[no-untyped-def]
    def mutate(data: dict) -> None:
        data["openadr"] = {
            "enabled": True,
            "vtn_url": vtn.url,
            "ven_name": "mullet-test",
            "poll_s": 1,  # the VTN asks for 10 s; the site's own setting wins
            "report_interval_s": 1,
            "market_contexts": {ECRS_CONTEXT: "ECRS"},
            "simple_levels": [{"level": 2, "kind": "limit", "kw": 8800}],
        }

    return mutate


def _plan_obligations(running: Running) -> list[str]:
    for m in reversed(running.observer.received):
        if m.topic == running.observer.topics.daemon_plan:
            return list(m.json()["active_obligations"])
    return []


async def _registered_at_full_load(running: Running) -> None:
    """Where each test starts: every miner running and the VEN registered with the VTN."""
    rated_kw = sum(g.rated_kw for g in running.config.groups)
    await until(lambda: running.site.mining_power_kw() >= 0.99 * rated_kw, 30, "full mining load")
    await until(lambda: running.metric("mullet_openadr_registered") == 1.0, 30, "VEN registered")


async def test_the_ven_opts_in_meets_dispatch_and_simple_events_reports_usage_and_restores_on_cancel(
    mqtt_broker, tmp_path: Path, vtn: Vtn
) -> None:
    async with running_site(mqtt_broker, tmp_path, _ven(vtn)) as running:
        site = running.site
        await _registered_at_full_load(running)

        # TELEMETRY_USAGE: the site's power in kW reaches the VTN every report interval.
        await vtn.reported(2, timeout_s=10)
        assert abs(vtn.reports[-1][1] - site.site_power_kw()) < 0.1 * site.site_power_kw()

        # LOAD_DISPATCH setpoint (ECRS: 10 min deadline, graceful) -> opt in, the site meets it in time.
        sent_s = time.monotonic()
        dispatch_id = vtn.dispatch(9500)
        assert await vtn.opt_of(dispatch_id) == enums.OPT.OPT_IN
        deadline_s = 600.0
        met_after_s = await until(lambda: site.site_power_kw() <= 9500, 30, "dispatch limit met")
        assert time.monotonic() - sent_s <= deadline_s
        assert met_after_s < 30
        ids = _plan_obligations(running)
        assert ids == [f"oadr-{dispatch_id}-m0-0-0"]

        # SIMPLE level 2 -> the configured 8800 kW limit, on top.
        simple_id = vtn.server.add_event(
            ven_id=VEN_ID,
            signal_name="SIMPLE",
            signal_type="level",
            intervals=[
                objects.Interval(dtstart=datetime.now(UTC), duration=timedelta(minutes=10), signal_payload=2)
            ],
            callback=vtn.on_opt,
            market_context="http://utility.example/dr",
        )
        assert await vtn.opt_of(simple_id) == enums.OPT.OPT_IN
        await until(lambda: site.site_power_kw() <= 8800, 30, "SIMPLE level limit met")

        # A modification replaces the dispatch's obligation (new modification number, new limit).
        vtn.modify_payload(dispatch_id, 9000)
        await until(
            lambda: (
                f"oadr-{dispatch_id}-m1-0-0" in _plan_obligations(running)
                and f"oadr-{dispatch_id}-m0-0-0" not in _plan_obligations(running)
            ),
            30,
            "modification applied",
        )

        # Cancelling both restores the load through the ramp.
        vtn.server.cancel_event(VEN_ID, dispatch_id)
        vtn.server.cancel_event(VEN_ID, simple_id)
        await until(lambda: _plan_obligations(running) == [], 30, "obligations cancelled")
        await until(lambda: all(g.commanded == "run" for g in site.groups.values()), 30, "restored")
        assert running.metric("mullet_openadr_event_handler_seconds_count") >= 3


async def test_an_event_the_site_cannot_deliver_is_opted_out_with_a_reason(
    mqtt_broker, tmp_path: Path, vtn: Vtn
) -> None:
    async with running_site(mqtt_broker, tmp_path, _ven(vtn)) as running:
        site = running.site
        await _registered_at_full_load(running)
        # 2 MW: AI and base load alone are above it; shedding every miner cannot get there.
        event_id = vtn.dispatch(2000)
        assert await vtn.opt_of(event_id) == enums.OPT.OPT_OUT
        await until(
            lambda: (
                running.metric('mullet_openadr_events_total{opt="optOut",reason="cannot_deliver"}', 0.0)
                == 1.0
            ),
            30,
            "opt-out counted",
        )
        records = [json.loads(line) for line in running.log_path.read_text().splitlines()]
        opt_out = next(r for r in records if r["event"] == "openadr event" and r["opt"] == "optOut")
        assert opt_out["code"] == "cannot_deliver" and "sheddable" in opt_out["reason"]
        # Nothing was acted on.
        assert running.metric("mullet_grid_obligations_active") == 0.0
        assert all(g.commanded == "run" for g in site.groups.values())
