"""What the daemon derives from its config sections: the policy's view of the site, the program
catalogue, the armed trip stages and their trigger settings, and each stage's worst time to trip
against its program's deadline (check-config and the start-up log print those lines).
`Config`'s methods of the same names call these."""

from __future__ import annotations

from collections.abc import Sequence

from mullet.daemon.config.sections import (
    ControlSection,
    EconomicsSection,
    GroupSection,
    MeterSection,
    ProgramSection,
    SiteSection,
    TenantSection,
)
from mullet.drivers.device_profiles import load_meter_profile
from mullet.policies.model import GroupSpec, PolicySettings, SiteSpec, TenantSpec, TripStage
from mullet.policies.programs import Program, catalogue_with
from mullet.policies.trigger import StageBudget, TriggerSettings, stage_budgets

MIN_POWER_FRACTION = 0.3  # of rated: a group's lowest power target when the config names none


def policy_site(
    site: SiteSection,
    groups: Sequence[GroupSection],
    tenants: Sequence[TenantSection],
    control: ControlSection,
    economics: EconomicsSection,
    *,
    sleep_fraction: float,
) -> SiteSpec:
    """The pure-policy view of the site (no I/O settings); `sleep_fraction` of rated is the sleep
    draw of a group that names none."""
    return SiteSpec(
        interconnect_kw=site.interconnect_kw,
        safety_margin_kw=site.safety_margin_kw,
        base_load_kw=site.base_load_kw,
        groups=tuple(
            GroupSpec(
                group_id=g.group_id,
                rated_kw=g.rated_kw,
                efficiency_j_per_th=g.efficiency_j_per_th,
                priority=g.priority,
                sleep_kw=g.sleep_kw if g.sleep_kw is not None else g.rated_kw * sleep_fraction,
                supports_power_target=g.supports_power_target,
                min_power_kw=(
                    g.min_power_kw if g.min_power_kw is not None else g.rated_kw * MIN_POWER_FRACTION
                ),
                min_on_s=g.min_on_s if g.min_on_s is not None else control.min_on_s,
                min_off_s=g.min_off_s if g.min_off_s is not None else control.min_off_s,
                break_even_usd_per_mwh=g.break_even_usd_per_mwh,
            )
            for g in groups
        ),
        tenants=tuple(
            TenantSpec(
                tenant_id=t.tenant_id,
                reserved_kw=t.reserved_kw,
                headroom_kw=t.headroom_kw,
                flexible_kw=t.flexible_kw,
            )
            for t in tenants
        ),
        settings=PolicySettings(
            deadband_kw=control.deadband_kw,
            restore_ramp_kw_per_min=control.restore_ramp_kw_per_min,
            restore_stagger_s=control.restore_stagger_s,
            import_ramp_kw_per_min=control.import_ramp_kw_per_min,
            import_ramp_kw_per_10s=control.import_ramp_kw_per_10s,
            swing_reserve_fraction=control.swing_reserve_fraction,
            economics_enabled=economics.enabled,
            hashprice_usd_per_th_day=economics.hashprice_usd_per_th_day,
            price_deadband_usd_per_mwh=economics.price_deadband_usd_per_mwh,
            trip_stages=trip_stages(control),
        ),
    )


def program_catalogue(programs: Sequence[ProgramSection]) -> dict[str, Program]:
    """The shipped programs with this site's `[[programs]]` added or replacing them by name."""
    return catalogue_with(
        Program(
            name=p.name,
            deadline_s=p.deadline_s,
            max_duration_s=p.max_duration_s,
            sustain_s=p.sustain_s,
            recall=p.recall,
            trigger_hz=p.trigger_hz,
            summary=p.summary,
        )
        for p in programs
    )


def meter_frequency_refresh_s(meter: MeterSection) -> float:
    """The meter's frequency refresh interval: measured on site (config) or the profile's."""
    if meter.frequency_refresh_s is not None:
        return meter.frequency_refresh_s
    return load_meter_profile(meter.profile).frequency_refresh_s


def trip_stages(control: ControlSection) -> tuple[TripStage, ...]:
    return tuple(
        TripStage(stage=s.stage, threshold_hz=s.threshold_hz, shed_kw=s.shed_kw, hard_cut=s.hard_cut)
        for s in sorted(control.trip_stages, key=lambda s: s.stage)
    )


def trigger_settings(control: ControlSection, meter: MeterSection) -> TriggerSettings:
    pickup_ms = control.trip_pickup_ms
    return TriggerSettings(
        confirm_samples=control.trip_confirm_samples,
        pickup_s=meter_frequency_refresh_s(meter) if pickup_ms is None else pickup_ms / 1000.0,
        confirm_on_change=control.trip_confirm_on_change,
        max_rocof_hz_per_s=control.max_rocof_hz_per_s,
        release_hz=control.release_hz,
        release_after_s=control.release_after_s,
    )


def trip_budgets(
    control: ControlSection, meter: MeterSection, programs: Sequence[ProgramSection]
) -> list[StageBudget]:
    """Each armed stage's worst time from a sustained crossing to its trip, against the deadline
    of the frequency-triggered program at its threshold (the meter's timeout bounds a read)."""
    deadlines = {
        p.trigger_hz: (p.name, p.deadline_s)
        for p in program_catalogue(programs).values()
        if p.trigger_hz is not None
    }
    return stage_budgets(
        trip_stages(control),
        deadlines,
        trigger_settings(control, meter),
        refresh_s=meter_frequency_refresh_s(meter),
        poll_period_s=1.0 / meter.poll_hz,
        round_trip_s=meter.timeout_s,
    )


def trip_budget_lines(
    control: ControlSection, meter: MeterSection, programs: Sequence[ProgramSection]
) -> list[tuple[bool, str]]:
    """(ok, line) per armed stage for check-config and the start-up log: a stage whose worst
    case misses its program's deadline is not ok."""
    out: list[tuple[bool, str]] = []
    settings = trigger_settings(control, meter)
    how = (
        f"meter refresh {meter_frequency_refresh_s(meter):g} s, poll {1.0 / meter.poll_hz:g} s,"
        f" read timeout {meter.timeout_s:g} s, {settings.confirm_samples} measurements,"
        f" pickup {settings.pickup_s:g} s"
    )
    for budget in trip_budgets(control, meter, programs):
        line = (
            f"trip stage {budget.stage} at {budget.threshold_hz:g} Hz fires within"
            f" {budget.worst_fire_s:.3f} s of a sustained crossing"
            f" ({budget.moving_fire_s:.3f} s if each refresh changes the value; {how})"
        )
        if budget.program is not None:
            verdict = "meets" if budget.meets_deadline else "MISSES"
            line += f": {verdict} {budget.program}'s {budget.deadline_s:g} s deadline before the devices act"
        out.append((budget.meets_deadline is not False, line))
    return out
