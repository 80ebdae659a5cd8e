"""The site config's `[fourcp]` section: ERCOT 4CP avoidance from the published system-load forecast
(policies/fourcp.py holds the rule; docs/programs.md, "4CP", the figures it is judged by)."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal

from pydantic import Field, model_validator

from mullet.daemon.config.fields import NonNegativeKw, PositiveKw, Strict, TimeZoneName
from mullet.policies.fourcp import SUMMER_MONTHS, FourCpRule

Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class FourCpSection(Strict):
    enabled: bool = False
    # The site's transmission rate ($/kW-year): what one kW in the four intervals costs for a year.
    usd_per_kw_year: NonNegativeKw = 0.0
    months: Annotated[list[Annotated[int, Field(ge=1, le=12)]], Field(min_length=1, max_length=12)] = sorted(
        SUMMER_MONTHS
    )
    forecast_error_fraction: Annotated[float, Field(gt=0, le=0.5, allow_inf_nan=False)] = 0.03
    window_fraction: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)] = 0.02
    guard_s: Annotated[float, Field(ge=0, le=6 * 3600)] = 3600.0
    max_window_s: Annotated[float, Field(gt=0, le=6 * 3600)] = 6 * 3600.0
    hold_kw: NonNegativeKw = 0.0
    min_probability: Fraction = 0.01
    # Each month's expected system peak (MW), e.g. last year's; keys are month numbers.
    reference_peak_mw: dict[Annotated[int, Field(ge=1, le=12)], PositiveKw] = Field(
        default_factory=dict, max_length=12
    )
    bias_intervals: Annotated[int, Field(ge=0, le=96)] = 3
    history_days: Annotated[int, Field(ge=0, le=60)] = 14
    spell_days: Annotated[float, Field(ge=1, le=31, allow_inf_nan=False)] = 3.0
    # Where the rule cuts days and reads `decide_at` (ERCOT settles in Central Prevailing Time).
    timezone: TimeZoneName = "America/Chicago"
    # Local times the rule runs each day; each run may add a window, never removes one.
    decide_at: Annotated[list[time], Field(min_length=1, max_length=24)] = Field(
        default_factory=lambda: [time(6, 0), time(13, 0)]
    )

    # Live daemon only (`mulletd replay` takes the scenario's files): the system-load files an operator's
    # cron refreshes from ERCOT's MIS (docs/programs.md, "4CP"); Mullet itself makes no network call.
    forecast_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    actual_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    # "canonical" (interval_start,actual_mw,forecast_mw) or "ercot" (NP3-565-CD / NP6-345-CD CSVs).
    file_format: Literal["canonical", "ercot"] = "canonical"
    # How often the files' mtime and size are checked, and the decide times looked at.
    poll_s: Annotated[float, Field(ge=0.5, le=3600, allow_inf_nan=False)] = 60.0
    # A forecast file older than this (by its mtime) is stale: no decision until a fresh one arrives.
    max_forecast_age_s: Annotated[float, Field(ge=60, le=7 * 86_400, allow_inf_nan=False)] = 36 * 3600.0

    @model_validator(mode="after")
    def _priced(self) -> FourCpSection:
        if self.enabled and self.usd_per_kw_year <= 0:
            raise ValueError("fourcp.usd_per_kw_year: required when 4CP avoidance is enabled")
        return self

    def rule(self) -> FourCpRule:
        return FourCpRule(
            usd_per_kw_year=self.usd_per_kw_year,
            months=frozenset(self.months),
            forecast_error_fraction=self.forecast_error_fraction,
            window_fraction=self.window_fraction,
            guard_s=self.guard_s,
            max_window_s=self.max_window_s,
            hold_kw=self.hold_kw,
            min_probability=self.min_probability,
            reference_peak_mw=dict(self.reference_peak_mw),
            bias_intervals=self.bias_intervals,
            history_days=self.history_days,
            spell_days=self.spell_days,
        )
