"""A trip needs independent meter measurements: one bad refresh never trips, a sustained dip does,
within the stage's budget (`mulletd run` against the simulated site over mosquitto and Modbus TCP)."""

from __future__ import annotations

import json
import time

import pytest
from helpers import Running, until

from mullet.simulators.meter import MeterSim

REFRESH_S = 0.2


def _fast_meter(data: dict) -> None:
    # A meter that refreshes frequency every 0.2 s, read at 50 Hz: ten reads of each measurement.
    data["meter"].update(poll_hz=50, frequency_refresh_s=REFRESH_S)
    data["control"].update(trip_confirm_samples=2, release_after_s=1.0)


def _fast_sunspec_meter(data: dict) -> None:
    # The same meter as a SunSpec model 204 at base 0: found by discovery, read as integers with
    # scale factors (Hz_SF -2: the dip's 0.01 Hz steps are representable).
    _fast_meter(data)
    data["meter"].update(profile="sunspec", sunspec_base=0, sunspec_model=204)


class _Dip:
    """Grid frequency for the simulated meter: normal, then a dip that moves 0.01 Hz at every refresh
    from 59.80 Hz, remembering when each dip measurement was first latched (wall clock)."""

    def __init__(self, meter: MeterSim) -> None:
        self.meter = meter
        self.from_window: int | None = None
        self.latched_at: dict[float, float] = {}

    def at(self, _elapsed_s: float) -> float:
        if self.from_window is None:
            return 60.0
        hz = round(59.80 - 0.01 * (self.meter.refreshes - self.from_window), 2)
        self.latched_at.setdefault(hz, time.time())
        return hz


@pytest.mark.parametrize("running", [_fast_meter, _fast_sunspec_meter], indirect=True)
async def test_one_refresh_of_a_bad_value_never_trips_and_a_sustained_dip_trips_within_the_budget(
    running: Running,
) -> None:
    site, topics = running.site, running.topics
    assert site.meter.profile.name == running.config.meter.profile  # the meter the daemon reads
    dip = _Dip(site.meter)
    site.frequency = dip  # type: ignore[assignment]
    await until(lambda: any(g.trip_stage == 1 for g in site.groups.values()), 30, "stage 1 armed")
    armed = {gid for gid, g in site.groups.items() if g.trip_stage is not None}

    # One refresh window reports 59.5 Hz between windows of 60.0 Hz, read ~10 times by the daemon.
    window = site.meter.refreshes
    site.meter.glitch_frequency(59.5)
    await until(lambda: site.meter.refreshes >= window + 3, 30, "the glitch window and two more")
    glitch_reads = [reads for hz, reads in site.meter.windows if hz == 59.5]
    assert glitch_reads and glitch_reads[0] >= 2, "the daemon read the bad measurement more than once"
    assert not [m for m in running.observer.received if m.topic == topics.trip]
    assert running.metrics().total("mullet_trips_total") == 0
    assert all(site.groups[g].commanded == "run" for g in armed)

    # A real dip: 59.80, 59.79, ... one value per refresh. Stage 1 fires on the second measurement.
    started_s = time.time()
    dip.from_window = site.meter.refreshes
    trip = await running.observer.wait_for(lambda m: m.topic == topics.trip, 30, what="the trip")
    await until(lambda: all(site.groups[g].commanded == "curtail" for g in armed), 30, "armed groups shed")
    fired = next(r for r in running.log_records() if r.get("event") == "trip fired")
    assert fired["hz"] == pytest.approx(59.79)
    budget = running.config.stage_budgets()[0]
    after_crossing_s = json.loads(trip.payload)["ts"] - started_s
    assert 0 < after_crossing_s <= budget.worst_fire_s, (after_crossing_s, budget)
