"""Shed verification: only telemetry below the threshold confirms; silence and lies escalate."""

from __future__ import annotations

from mullet.daemon.core.shed_verifier import ShedVerifier


def _verifier() -> ShedVerifier:
    return ShedVerifier(deadline_s=10.0, threshold_kw={"a": 80.0, "b": 80.0, "c": 80.0})


def test_a_group_that_sheds_is_confirmed_with_its_time() -> None:
    verifier = _verifier()
    verifier.expect("a", 100.0, "setpoint")
    confirmed, overdue = verifier.check(104.5, {"a": 12.0}.get)
    assert [(c.group_id, c.via, c.after_s, c.source) for c in confirmed] == [
        ("a", "setpoint", 4.5, "telemetry")
    ]
    assert overdue == []
    assert verifier.pending == {}


def test_ok_without_effect_and_unknown_telemetry_both_escalate_at_the_deadline() -> None:
    verifier = _verifier()
    verifier.expect("a", 100.0, "setpoint")  # firmware said OK, still at rated
    verifier.expect("b", 100.0, "trip")  # controller silent: unknown is not zero
    assert verifier.check(109.9, {"a": 700.0, "b": None}.get) == ([], [])
    _, overdue = verifier.check(110.0, {"a": 700.0, "b": None}.get)
    assert sorted((p.group_id, p.via) for p in overdue) == [("a", "setpoint"), ("b", "trip")]
    assert verifier.pending == {}


def test_a_repeated_command_does_not_restart_the_clock_and_a_restore_cancels_it() -> None:
    verifier = _verifier()
    verifier.expect("a", 100.0, "setpoint")
    verifier.expect("a", 105.0, "setpoint")
    verifier.expect("c", 100.0, "setpoint")
    verifier.forget("c")
    _, overdue = verifier.check(110.0, {"a": 500.0}.get)
    assert [p.group_id for p in overdue] == ["a"]


def test_a_silent_controller_is_confirmed_by_its_outlets_readback_taken_after_the_command() -> None:
    verifier = _verifier()
    verifier.expect("a", 100.0, "trip")  # controller gone quiet, its PDU still reports
    verifier.expect("b", 100.0, "trip")
    readback = {"a": (5.0, 101.0), "b": (5.0, 99.0)}  # kW, read at (monotonic s)

    def outlets_kw(group_id: str, since_s: float) -> float | None:
        kw, read_s = readback[group_id]
        return kw if read_s >= since_s else None  # as the daemon does: older says nothing

    confirmed, overdue = verifier.check(102.0, {}.get, outlets_kw)
    assert [(c.group_id, c.source, c.after_s) for c in confirmed] == [("a", "pdu", 2.0)]
    # b's low reading predates the trip: not a confirmation; at the deadline it escalates
    _, overdue = verifier.check(110.0, {}.get, outlets_kw)
    assert [p.group_id for p in overdue] == ["b"]


def test_outlets_still_drawing_do_not_confirm_whatever_the_telemetry_is_missing() -> None:
    verifier = _verifier()
    verifier.expect("a", 100.0, "setpoint")
    _, overdue = verifier.check(110.0, {"a": None}.get, lambda _g, _s: 650.0)
    assert [p.group_id for p in overdue] == ["a"]
