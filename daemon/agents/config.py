"""Edge-agent configuration (`mulletd agent asic|gpu --config FILE`): one TOML file per agent,
validated up front like the site file (unknown keys are errors, each problem is `path: reason`).

docs/agents.md documents every key; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mullet.daemon.config import Ident, MetricsSection, MqttSection, Port, load_model, parse_model

PositiveS = Annotated[float, Field(gt=0, le=86_400, allow_inf_nan=False)]
PositiveW = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
C = TypeVar("C", bound=BaseModel)
ASIC_RS_PORT = 4028  # the CGMiner-style API port asic-rs always uses (drivers/miners_asic_rs.py)
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _AgentCommon(_Strict):
    # The site's MQTT root is `mullet/<site_id>` unless [mqtt].topic_root says otherwise.
    site_id: Ident
    telemetry_period_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class MinerSection(_Strict):
    name: Ident
    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Port = 4028
    firmware: Literal["luxos", "auto"] = "luxos"
    rated_w: PositiveW


class AsicAgentSection(_AgentCommon):
    group_id: Ident
    state_path: str
    # The library that talks to the miners (docs/agents.md, "Backends"): pyasic or asic-rs.
    backend: Literal["pyasic", "asic-rs"] = "pyasic"
    supports_power_target: bool = False
    poll_period_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    confirm_poll_s: Annotated[float, Field(gt=0, le=10)] = 0.25
    command_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    confirm_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    resend_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    sleep_confirm_w: PositiveW = 100.0
    run_confirm_fraction: Fraction = 0.8
    target_tolerance_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    failsafe: Literal["hold", "curtail", "run"] = "hold"
    failsafe_after_s: PositiveS = 300.0


class AgentMetricsSection(MetricsSection):
    """`[metrics]`: served only when the table is present (daemon/agents/metrics.py). The default port
    has no entry in Prometheus' "Default port allocations" (docs/metrics.md, "Ports")."""

    port: Port = 11582


class AsicAgentConfig(_Strict):
    mqtt: MqttSection = MqttSection()
    metrics: AgentMetricsSection | None = None
    agent: AsicAgentSection
    miners: Annotated[list[MinerSection], Field(min_length=1, max_length=10_000)]

    @model_validator(mode="after")
    def _unique_names(self) -> AsicAgentConfig:
        seen: set[str] = set()
        for miner in self.miners:
            if miner.name in seen:
                raise ValueError(f"miners: duplicate name {miner.name!r}")
            seen.add(miner.name)
        return self

    @model_validator(mode="after")
    def _asic_rs_standard_port(self) -> AsicAgentConfig:
        if self.agent.backend == "asic-rs":
            for i, miner in enumerate(self.miners):
                if miner.port != ASIC_RS_PORT:
                    raise ValueError(
                        f"miners[{i}].port: backend 'asic-rs' takes no port (it finds the firmware on its"
                        f" standard ports); leave port out or set {ASIC_RS_PORT}"
                    )
        return self

    @property
    def topic_root(self) -> str:
        return self.mqtt.topic_root or f"mullet/{self.agent.site_id}"

    @property
    def rated_w(self) -> float:
        return sum(m.rated_w for m in self.miners)


class FakeGpuSection(_Strict):
    """A simulated GPU for `backend = "fake"` (demos and tests without NVIDIA hardware)."""

    min_limit_w: PositiveW = 200.0
    max_limit_w: PositiveW = 700.0
    demand_w: Annotated[float, Field(ge=0, le=1_000_000)] = 600.0


class NvmlSection(_Strict):
    backend: Literal["nvml", "fake"] = "nvml"
    gpus: list[Annotated[int, Field(ge=0, le=1024)]] | None = None  # None: every GPU NVML lists
    fake_gpus: list[FakeGpuSection] = []

    @model_validator(mode="after")
    def _fake_needs_gpus(self) -> NvmlSection:
        if self.backend == "fake" and not self.fake_gpus:
            raise ValueError("fake_gpus: backend 'fake' needs at least one [[nvml.fake_gpus]]")
        return self


class GpuAgentSection(_AgentCommon):
    tenant_id: Ident
    # Never cap below this: the tenant's firm power (reserved_kw - flexible_kw in the site config).
    firm_kw: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    # Draw of the node(s) besides the GPUs (CPUs, fans, NICs), counted in power and inside the cap.
    overhead_kw: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    verify_after_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    cap_tolerance_fraction: Annotated[float, Field(ge=0, le=0.5)] = 0.02


class GpuAgentConfig(_Strict):
    mqtt: MqttSection = MqttSection()
    metrics: AgentMetricsSection | None = None
    agent: GpuAgentSection
    nvml: NvmlSection = NvmlSection()

    @property
    def topic_root(self) -> str:
        return self.mqtt.topic_root or f"mullet/{self.agent.site_id}"


def parse_agent_config(model: type[C], data: dict[str, Any]) -> C:
    return parse_model(model, data)


def load_agent_config(model: type[C], path: str | Path) -> C:
    return load_model(model, path)
