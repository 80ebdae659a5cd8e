"""The program catalogue (pure): each program's deadline decides the actuation; duration and recall rules;
and the event checks with the code each refusal carries."""

from __future__ import annotations

import pytest

from mullet.daemon.core.obligation_book import REJECTION_CODES, ObligationBook
from mullet.drivers.protocol import GridEvent
from mullet.policies.capacity import required_reduction_kw, sheddable_kw
from mullet.policies.model import GroupSpec, SiteSnapshot, SiteSpec
from mullet.policies.plan import compute_plan
from mullet.policies.programs import (
    CATALOGUE,
    Program,
    catalogue_with,
    choose_actuation,
    fast_path_stage,
    resolve,
)

NOW_S = 1_800_000_000.0
FIRMWARE_SLEEP_S = 5.0
STAGES = {1: 59.85, 2: 59.7}


@pytest.mark.parametrize(
    ("name", "deadline_s", "path"),
    [
        ("FFR", 0.25, "fast_path"),
        ("RRS-UFR", 0.5, "fast_path"),
        ("ECRS", 600, "graceful"),
        ("Non-Spin", 1800, "graceful"),
        ("ERS-10", 600, "graceful"),
        ("ERS-30", 1800, "graceful"),
        ("CLR", 300, "graceful"),
        ("4CP", 900, "graceful"),
        ("generic", 600, "graceful"),
    ],
)
def test_each_program_s_deadline_chooses_its_actuation(name: str, deadline_s: float, path: str) -> None:
    program, note = resolve(name, CATALOGUE)
    assert note is None and program.deadline_s == deadline_s
    actuation = choose_actuation(program, FIRMWARE_SLEEP_S)
    assert actuation.path == path
    assert "firmware sleep 5 s" in actuation.reason


def test_the_choice_follows_the_firmware_not_the_program_name() -> None:
    # Firmware that needs 15 min to sleep cannot make ECRS's 10 minutes: fast path.
    assert choose_actuation(CATALOGUE["ecrs"], 900.0).path == "fast_path"
    assert choose_actuation(CATALOGUE["ffr"], 0.1).path == "graceful"


def test_only_ers_waits_for_an_explicit_recall() -> None:
    explicit = {p.name for p in CATALOGUE.values() if p.recall == "explicit"}
    assert explicit == {"ERS-10", "ERS-30"}


def test_unknown_programs_get_generic_rules_and_a_note_and_sites_may_add_their_own() -> None:
    program, note = resolve("EEA", CATALOGUE)
    assert program.name == "generic" and note is not None and "EEA" in note
    custom = catalogue_with([Program("utility-cpp", deadline_s=3600, recall="explicit")])
    assert resolve("UTILITY-CPP", custom)[0].recall == "explicit"
    assert resolve("ffr", custom)[0].deadline_s == 0.25  # the shipped ones stay


def test_fast_path_programs_deploy_the_stage_at_their_relay_setting() -> None:
    assert fast_path_stage(CATALOGUE["ffr"], STAGES) == 1
    assert fast_path_stage(CATALOGUE["rrs-ufr"], STAGES) == 2
    assert fast_path_stage(CATALOGUE["rrs-ufr"], {3: 59.8}) == 3  # no exact match: the first to fire
    assert fast_path_stage(CATALOGUE["ffr"], {}) is None


def _book(stages: dict[int, float] | None = None) -> ObligationBook:
    return ObligationBook(
        interconnect_kw=13_000,
        max_event_kw_factor=2.0,
        stages=STAGES if stages is None else stages,
        firmware_sleep_s=FIRMWARE_SLEEP_S,
    )


def test_a_fast_path_program_fires_its_stage_and_a_graceful_one_fires_nothing() -> None:
    ffr = _book().decide(
        GridEvent(id="f", kind="limit", kw=13_000, program="FFR"), now_s=NOW_S, site_power_kw=None
    )
    assert ffr.accepted and ffr.fire_stage == 1
    assert ffr.obligation is not None and ffr.obligation.actuation == "fast_path"
    assert "deadline 0.25 s < firmware sleep 5 s" in ffr.obligation.actuation_reason
    ecrs = _book().decide(
        GridEvent(id="e", kind="limit", kw=9000, program="ECRS"), now_s=NOW_S, site_power_kw=None
    )
    assert ecrs.accepted and ecrs.fire_stage is None
    assert ecrs.obligation is not None and ecrs.obligation.actuation == "graceful"
    assert "deadline 10 min >= firmware sleep 5 s" in ecrs.obligation.actuation_reason
    # A site that arms no stage cannot take a 0.25 s program.
    refused = _book({}).decide(
        GridEvent(id="f2", kind="limit", kw=13_000, program="FFR"), now_s=NOW_S, site_power_kw=None
    )
    assert not refused.accepted and refused.code == "no_fast_path"


def test_an_ers_obligation_outlives_its_scheduled_end_until_recalled() -> None:
    book = _book()
    event = GridEvent(id="ers", kind="limit", kw=9000, end=NOW_S + 60, program="ERS-10")
    decision = book.decide(event, now_s=NOW_S, site_power_kw=11_000)
    book.apply(event, decision, NOW_S)
    later_s = NOW_S + 3600
    assert book.expire(later_s) == []
    assert [o.event_id for o in book.active(later_s)] == ["ers"]
    # A timer program in the same book does end.
    timed = GridEvent(id="cp", kind="limit", kw=9500, end=NOW_S + 60, program="4CP")
    book.apply(timed, book.decide(timed, now_s=NOW_S, site_power_kw=11_000), NOW_S)
    assert book.expire(later_s) == ["cp"]
    recall = GridEvent(id="ers", kind="cancel")
    book.apply(recall, book.decide(recall, now_s=later_s, site_power_kw=None), later_s)
    assert book.active(later_s) == []


def test_the_plan_records_how_each_obligation_is_met_and_why() -> None:
    site = SiteSpec(
        interconnect_kw=13_000,
        safety_margin_kw=0,
        base_load_kw=0,
        groups=(GroupSpec("g1", rated_kw=1000, efficiency_j_per_th=20, priority=1, sleep_kw=20),),
        tenants=(),
    )
    book = _book()
    for event in (
        GridEvent(id="ers", kind="limit", kw=500, end=NOW_S + 60, program="ERS-30"),
        GridEvent(id="ffr", kind="limit", kw=13_000, program="FFR"),
    ):
        book.apply(event, book.decide(event, now_s=NOW_S, site_power_kw=1000), NOW_S)
    snapshot = SiteSnapshot(site_power_kw=1000, tenant_power_kw={}, group_power_kw={"g1": 1000})
    plan = compute_plan(site, snapshot, list(book.obligations.values()), NOW_S + 120)
    lines = [r for r in plan.reasons if r.startswith("'")]
    assert lines == [
        "'ers' (ERS-30): graceful, deadline 30 min >= firmware sleep 5 s: firmware sleep and partial power"
        " targets; past its scheduled end, held until recalled",
        "'ffr' (FFR): fast_path, deadline 0.25 s < firmware sleep 5 s: armed trip broadcast and PDU cuts,"
        " stage 1",
    ]
    assert plan.decisions[0].mode == "curtail"


def test_every_bad_event_is_refused_with_a_bounded_code() -> None:
    book = _book()
    accepted = GridEvent(id="taken", kind="limit", kw=9000)
    book.apply(accepted, book.decide(accepted, now_s=NOW_S, site_power_kw=11_000), NOW_S)
    cases = [
        (GridEvent(id="ufr-1", kind="limit", kw=9000), "reserved_id", 11_000.0),
        (GridEvent(id="s", kind="limit", kw=9000, trip_stage=9), "unknown_stage", 11_000.0),
        (GridEvent(id="m", kind="limit"), "kw_missing", 11_000.0),
        (GridEvent(id="n", kind="limit", kw=-5), "kw_negative", 11_000.0),
        (GridEvent(id="a", kind="limit", kw=1e9), "kw_absurd", 11_000.0),
        (GridEvent(id="p", kind="limit", kw=9000, end=NOW_S - 1), "end_in_past", 11_000.0),
        (
            GridEvent(id="o", kind="limit", kw=9000, start=NOW_S + 60, end=NOW_S + 30),
            "end_before_start",
            11_000.0,
        ),
        (
            GridEvent(id="d", kind="limit", kw=9000, end=NOW_S + 9 * 3600, program="ERS-10"),
            "duration_exceeds_program",
            11_000.0,
        ),
        (GridEvent(id="b", kind="reduce", kw=1000), "no_baseline", None),
        (GridEvent(id="u", kind="cancel"), "unknown_event", 11_000.0),
        (GridEvent(id="taken", kind="limit", kw=8000), "id_conflict", 11_000.0),
    ]
    for event, code, site_kw in cases:
        decision = book.decide(event, now_s=NOW_S, site_power_kw=site_kw)
        assert (decision.accepted, decision.code) == (False, code), event.id
        assert code in REJECTION_CODES
    assert book.decide(accepted, now_s=NOW_S, site_power_kw=None).code == "duplicate"


def test_sheddable_counts_only_what_telemetry_shows() -> None:
    site = SiteSpec(
        interconnect_kw=13_000,
        safety_margin_kw=100,
        base_load_kw=0,
        groups=(
            GroupSpec("g1", rated_kw=1000, efficiency_j_per_th=20, priority=1, sleep_kw=20),
            GroupSpec("g2", rated_kw=1000, efficiency_j_per_th=20, priority=1, sleep_kw=20),
        ),
        tenants=(),
    )
    snapshot = SiteSnapshot(site_power_kw=5000, tenant_power_kw={}, group_power_kw={"g1": 1000, "g2": None})
    assert sheddable_kw(site, snapshot) == 980  # g2 unknown: not promised
    assert required_reduction_kw(site, "limit", 4000, 5000) == 1100
    assert required_reduction_kw(site, "reduce", 500, None) == 600
    assert required_reduction_kw(site, "limit", 4000, None) is None
