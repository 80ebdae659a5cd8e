"""A fake NVML for tests and demos: the pynvml functions `drivers/nvml.py` calls, over simulated GPUs.

Each GPU draws `min(demand_w, limit_w)` at once (NVML caps act in ~0.1 s, well inside a control
period), and refuses limits outside its range with pynvml's own `NVMLError` (invalid argument), as
the driver does. Fault switches: `deny_set` (no permission, as for a non-root process),
`ignore_limit` (accepts a limit and keeps drawing its demand), `no_instant_power` (a driver without
the instant power field: only the averaged power usage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml  # type: ignore[import-untyped]


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3 (fake)"
    min_limit_w: float = 200.0
    max_limit_w: float = 700.0
    default_limit_w: float | None = None  # None: max_limit_w
    demand_w: float = 600.0
    deny_set: bool = False
    ignore_limit: bool = False
    no_instant_power: bool = False
    limit_w: float = field(init=False)
    limits_set: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.default_limit_w is None:
            self.default_limit_w = self.max_limit_w
        self.limit_w = self.default_limit_w

    @property
    def power_w(self) -> float:
        return self.demand_w if self.ignore_limit else min(self.demand_w, self.limit_w)


class FakeNvml:
    """Stands in for the `pynvml` module (pass it as `Nvml(lib=...)`)."""

    NVMLError = pynvml.NVMLError
    NVML_SUCCESS = pynvml.NVML_SUCCESS
    NVML_FI_DEV_POWER_INSTANT = pynvml.NVML_FI_DEV_POWER_INSTANT
    NVML_VALUE_TYPE_DOUBLE = pynvml.NVML_VALUE_TYPE_DOUBLE
    NVML_VALUE_TYPE_UNSIGNED_INT = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    NVML_VALUE_TYPE_UNSIGNED_LONG = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG

    def __init__(self, gpus: list[FakeGpu]) -> None:
        self.gpus = gpus
        self.initialised = False
        self.calls = 0

    def _gpu(self, handle: Any) -> FakeGpu:
        self.calls += 1
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return self.gpus[int(handle)]

    def nvmlInit(self) -> None:  # pynvml's names from here on
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu(handle).name

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        gpu = self._gpu(handle)
        return [round(gpu.min_limit_w * 1000), round(gpu.max_limit_w * 1000)]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        gpu = self._gpu(handle)
        assert gpu.default_limit_w is not None
        return round(gpu.default_limit_w * 1000)

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        return round(self._gpu(handle).limit_w * 1000)

    def nvmlDeviceSetPowerManagementLimit(self, handle: Any, limit_mw: int) -> None:
        gpu = self._gpu(handle)
        if gpu.deny_set:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        watts = limit_mw / 1000.0
        if not gpu.min_limit_w <= watts <= gpu.max_limit_w:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu.limit_w = watts
        gpu.limits_set.append(watts)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return round(self._gpu(handle).power_w * 1000)

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> list[Any]:
        gpu = self._gpu(handle)
        values = []
        for field_id in field_ids:
            supported = field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and not gpu.no_instant_power
            values.append(
                SimpleNamespace(
                    fieldId=field_id,
                    nvmlReturn=pynvml.NVML_SUCCESS if supported else pynvml.NVML_ERROR_NOT_SUPPORTED,
                    valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                    value=SimpleNamespace(uiVal=round(gpu.power_w * 1000) if supported else 0),
                )
            )
        return values
