"""Fleet dispatcher configuration (`mulletd fleet --config FILE`), validated like the site file:
unknown keys are errors. docs/fleet.md describes every key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from mullet.daemon.config import Ident, MetricsSection, MqttSection, load_model, parse_model
from mullet.daemon.config.fields import Strict, unique


class FleetSection(Strict):
    fleet_id: Ident
    # Portfolio events arrive on `<topic_root>/grid/event`; status on `<topic_root>/status`.
    topic_root: str | None = None
    period_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    # A site whose last plan (its `ts`) is older than this is gone, as if its daemon were offline. Sites
    # republish their plan at least every 5 s; keep this above that plus the clock skew between hosts.
    stale_after_s: Annotated[float, Field(gt=5, le=3600)] = 15.0
    # A site that has not acknowledged its share this long after it was sent is dropped from the split.
    ack_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    # After the program's deadline plus this grace, a site delivering less than its share by more than
    # `short_tolerance_fraction` is held to what it delivers and the rest is re-split.
    short_grace_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    short_tolerance_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.05


class FleetSiteSection(Strict):
    site_id: Ident
    # The site daemon's topic root as seen on the fleet broker (the bridges keep site roots as they are).
    topic_root: str | None = None

    @property
    def root(self) -> str:
        return (self.topic_root or f"mullet/{self.site_id}").rstrip("/")


class FleetConfig(Strict):
    fleet: FleetSection
    mqtt: MqttSection = MqttSection()
    metrics: MetricsSection = MetricsSection(port=11583)
    sites: Annotated[list[FleetSiteSection], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_sites(self) -> FleetConfig:
        unique("sites", "site_id", [s.site_id for s in self.sites])
        unique("sites", "topic_root", [s.root for s in self.sites])
        return self

    @property
    def topic_root(self) -> str:
        return (self.fleet.topic_root or f"fleet/{self.fleet.fleet_id}").rstrip("/")


def parse_fleet_config(data: dict[str, Any]) -> FleetConfig:
    return parse_model(FleetConfig, data)


def load_fleet_config(path: str | Path) -> FleetConfig:
    return load_model(FleetConfig, path)
