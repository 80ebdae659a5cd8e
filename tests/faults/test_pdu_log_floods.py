"""PDU log floods (issue 17, finding 7): a PDU that goes silent, answers garbage or goes away, kept
alive by a running `mulletd` over real Modbus TCP, is logged once per change of state with the
reason (drivers/health.py), never once per failed keep-alive read or reconnect attempt.

Before: the PDU driver logged `pdu state` on connection changes only (a PDU answering Modbus
exceptions to every read said nothing) and `pdu cut connection lost` on every drop of the cut
connection.
"""

from __future__ import annotations

from faultkit import Faulty, faulty_site
from helpers import until

PDU = "pdu-a"
# Keep-alive reads 4 a second (the default: 1): the same failures come sooner; what bounds the test
# is the health's 5 s between lines (drivers/health.py), which each phase waits for.
KEEPALIVE_S = 0.25


def _fast_keepalive(data: dict) -> None:
    for pdu in data["pdus"]:
        if pdu["pdu_id"] == PDU:
            pdu["keepalive_s"] = KEEPALIVE_S


def _failures(reason: str) -> str:
    return f'mullet_pdu_request_failures_total{{pdu="{PDU}",reason="{reason}"}}'


def _pdu_lines(run: Faulty, since: int) -> list[dict]:
    return [
        r
        for r in run.log_records()[since:]
        if str(r.get("event", "")).startswith("pdu ") and r.get("pdu") == PDU
    ]


async def _many_more(run: Faulty, reason: str, count: int) -> None:
    """Until `count` more keep-alive failures of `reason` (~4 a second) have been counted."""
    base = await run.metric(_failures(reason), 0.0)
    await run.until_metric(_failures(reason), lambda v: v >= base + count, 90, 0.0)


async def _logged(run: Faulty, event: str, since: int) -> None:
    """Until the PDU's `event` line is in the log from record `since` on (a line waits out the
    health's gap after the one before)."""
    await until(lambda: any(r["event"] == event for r in _pdu_lines(run, since)), 30, f"{event!r} logged")


async def test_a_silent_garbage_then_stopped_pdu_logs_its_health_once_per_change(
    mqtt_broker, tmp_path
) -> None:
    async with faulty_site(mqtt_broker, tmp_path, _fast_keepalive) as run:
        sim = run.site.pdus[PDU]
        start = len(run.log_records())

        # Blackholed: the connection stays open, no read is answered (6 keep-alives and more).
        sim.responding = False
        await _many_more(run, "timeout", 6)
        await _logged(run, "pdu down", start)
        down = [r for r in _pdu_lines(run, start) if r["event"] == "pdu down"]
        assert len(down) == 1, _pdu_lines(run, start)
        assert "no answer within" in down[0]["reason"]

        # Garbage: every read answered with a Modbus exception (6 keep-alives and more).
        sim.exceptions = True
        sim.responding = True
        await _many_more(run, "modbus_error", 6)
        await _logged(run, "pdu garbage", start)
        garbage = [r for r in _pdu_lines(run, start) if r["event"] == "pdu garbage"]
        assert len(garbage) == 1, _pdu_lines(run, start)
        assert "Modbus exception" in garbage[0]["reason"]

        # Back: one "pdu up".
        sim.exceptions = False
        await until(
            lambda: any(r["event"] == "pdu up" for r in _pdu_lines(run, start)), 30, "pdu up after garbage"
        )

        # Gone (listener closed, both connections dropped, every reconnect refused), then back.
        middle = len(run.log_records())
        await sim.stop()
        await _many_more(run, "unreachable", 6)
        await sim.start()
        await until(
            lambda: sum(r["event"] == "pdu cut connection up" for r in _pdu_lines(run, middle)) == 1,
            30,
            "the cut connection back",
        )
        await until(
            lambda: any(r["event"] == "pdu up" for r in _pdu_lines(run, middle)), 30, "pdu up after restart"
        )
        events = [r["event"] for r in _pdu_lines(run, middle)]
        assert events.count("pdu down") == 1, events
        assert events.count("pdu cut connection down") == 1, events
        assert events.count("pdu cut connection up") == 1, events

        # Over ~20 s of faults (dozens of failed keep-alives and the reconnects): a handful of PDU lines, and
        # none of pymodbus' own.
        records = run.log_records()[start:]
        assert not [r for r in records if str(r.get("logger", "")).startswith("pymodbus")]
        events = [r["event"] for r in _pdu_lines(run, start)]
        print(f"{len(events)} PDU lines, {len(records)} lines in all: {events}")
        assert events.count("pdu up") == 2, events
        assert len(events) <= 10, events
