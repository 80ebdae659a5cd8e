"""Grid programs a site enrolls in, and how an obligation under each is actuated.

A program fixes how fast the site must respond (its deadline, counted from the deployment instruction
or the frequency excursion), how long a deployment may last, and how it ends: on its scheduled end
(a timer) or only when the operator recalls it. docs/programs.md gives the source of every figure.

The actuation rule: an obligation whose deadline is shorter than the mining firmware's sleep time
cannot be met by a sleep command; it needs the armed fast path (one trip broadcast, PDU cuts for the
hard-cut stages). A deadline of at least the sleep time is met gracefully: firmware sleep and partial
power targets through the supervisory plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

ActuationPath = Literal["fast_path", "graceful"]
Recall = Literal["timer", "explicit"]


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    # From deployment (or the frequency crossing) to the full response in place.
    deadline_s: float
    # Longest single deployment the program may ask for; a longer event is refused. None: no limit.
    max_duration_s: float | None = None
    # How long the response must be held once deployed (what enrolment promises); documentation.
    sustain_s: float | None = None
    # "explicit": the obligation holds past its scheduled end until the operator recalls (cancels) it.
    recall: Recall = "timer"
    # Under-frequency relay setting for frequency-triggered programs: the armed stage it deploys.
    trigger_hz: float | None = None
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Actuation:
    path: ActuationPath
    reason: str


_MIN = 60.0
_HOUR = 3600.0

# ERCOT programs for large flexible loads and a generic utility DR program (docs/programs.md).
CATALOGUE: Mapping[str, Program] = {
    p.name.casefold(): p
    for p in (
        Program(
            "FFR",
            deadline_s=0.25,  # 15 cycles at 60 Hz after 59.85 Hz (NPRR863)
            sustain_s=15 * _MIN,
            trigger_hz=59.85,
            summary="RRS Fast Frequency Response: full response within 15 cycles of 59.85 Hz",
        ),
        Program(
            "RRS-UFR",
            deadline_s=0.5,  # the relay opens within 30 cycles of 59.7 Hz (docs/programs.md)
            sustain_s=_HOUR,
            trigger_hz=59.7,
            summary="RRS load resource tripped by an under-frequency relay at 59.7 Hz",
        ),
        Program(
            "ECRS",
            deadline_s=10 * _MIN,
            sustain_s=2 * _HOUR,
            summary="ERCOT Contingency Reserve Service: full response within 10 minutes",
        ),
        Program(
            "Non-Spin",
            deadline_s=30 * _MIN,
            sustain_s=4 * _HOUR,
            summary="Non-Spinning Reserve: full response within 30 minutes",
        ),
        Program(
            "ERS-10",
            deadline_s=10 * _MIN,
            max_duration_s=8 * _HOUR,
            recall="explicit",
            summary="Emergency Response Service, 10-minute: held until ERCOT releases it",
        ),
        Program(
            "ERS-30",
            deadline_s=30 * _MIN,
            max_duration_s=8 * _HOUR,
            recall="explicit",
            summary="Emergency Response Service, 30-minute: held until ERCOT releases it",
        ),
        Program(
            "CLR",
            deadline_s=5 * _MIN,  # one SCED interval to reach the new base point
            summary="Controllable Load Resource following SCED base points",
        ),
        Program(
            "4CP",
            deadline_s=15 * _MIN,  # one 15-minute settlement interval: the window is self-scheduled
            max_duration_s=6 * _HOUR,
            summary="4CP avoidance: self-scheduled curtailment windows, June-September afternoons",
        ),
        Program(
            "generic",
            deadline_s=10 * _MIN,
            max_duration_s=12 * _HOUR,
            summary="Generic utility demand response event",
        ),
    )
}

GENERIC = "generic"


def catalogue_with(overrides: Iterable[Program]) -> dict[str, Program]:
    """The shipped catalogue with site-specific programs added or replacing those of the same name."""
    merged = dict(CATALOGUE)
    for program in overrides:
        merged[program.name.casefold()] = program
    return merged


def resolve(name: str, catalogue: Mapping[str, Program]) -> tuple[Program, str | None]:
    """The program called `name` (case-insensitive); an unknown name gets the generic rules and a note
    saying so, never a deadline of zero."""
    program = catalogue.get(name.casefold())
    if program is not None:
        return program, None
    return catalogue[GENERIC], f"program {name!r} is not in the catalogue: generic rules apply"


def choose_actuation(program: Program, firmware_sleep_s: float) -> Actuation:
    """Fast path when firmware sleep cannot make the deadline, graceful otherwise; says why."""
    deadline = _seconds(program.deadline_s)
    sleep = _seconds(firmware_sleep_s)
    if program.deadline_s < firmware_sleep_s:
        return Actuation(
            "fast_path",
            f"deadline {deadline} < firmware sleep {sleep}: armed trip broadcast and PDU cuts",
        )
    return Actuation(
        "graceful",
        f"deadline {deadline} >= firmware sleep {sleep}: firmware sleep and partial power targets",
    )


def fast_path_stage(program: Program, stages: Mapping[int, float]) -> int | None:
    """The armed stage (number -> threshold Hz) a fast-path program deploys: the one at its relay
    setting, else the first to fire (the highest threshold). None when the site arms no stage."""
    if not stages:
        return None
    if program.trigger_hz is not None:
        for stage, threshold_hz in sorted(stages.items()):
            if abs(threshold_hz - program.trigger_hz) < 1e-9:
                return stage
    return max(sorted(stages), key=lambda s: stages[s])


def duration_problem(program: Program, start_s: float, end_s: float | None) -> str | None:
    """Why an event window breaks the program's duration rule, or None."""
    if program.max_duration_s is None or end_s is None:
        return None
    duration_s = end_s - start_s
    if duration_s > program.max_duration_s:
        return (
            f"duration {duration_s:.0f} s exceeds {program.name}'s longest deployment"
            f" {program.max_duration_s:.0f} s"
        )
    return None


def _seconds(value_s: float) -> str:
    if value_s >= _MIN and value_s % _MIN == 0:
        return f"{value_s / _MIN:g} min"
    return f"{value_s:g} s"
