"""NVIDIA GPUs through NVML (nvidia-ml-py's `pynvml`): power-limit range, power limit, instant power.

Synchronous, as NVML is (each call is a short ioctl); the agent runs them in a worker thread. The
library object is injectable so tests can use `simulators/fake_nvml.py`, which mimics the pynvml
functions used here and raises pynvml's own `NVMLError` codes.

Instant power: `nvmlDeviceGetPowerUsage` is, on recent data-center GPUs (Hopper and later drivers), a
1 s average, too slow to verify a cap that NVML applies in ~0.1 s; the field
`NVML_FI_DEV_POWER_INSTANT` is the instant reading where the driver has it, so it is preferred and the
average is the fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any


class NvmlError(RuntimeError):
    """An NVML call failed; `code` is NVML's return code (e.g. 4 = no permission), or None."""

    def __init__(self, what: str, code: int | None, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.code = code


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    min_limit_w: float
    max_limit_w: float
    default_limit_w: float


def _load_pynvml() -> ModuleType:
    import pynvml  # type: ignore[import-untyped]

    module: ModuleType = pynvml
    return module


class Nvml:
    """The GPUs of one node. `open()` before anything else; `close()` at the end."""

    def __init__(self, lib: Any = None) -> None:
        self._lib = lib if lib is not None else _load_pynvml()
        self._handles: dict[int, Any] = {}
        self._instant: dict[int, bool] = {}
        self.gpus: list[GpuInfo] = []

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._lib.NVMLError as exc:
            raise NvmlError(what, getattr(exc, "value", None), str(exc)) from None

    def open(self, indices: list[int] | None = None) -> list[GpuInfo]:
        lib = self._lib
        self._call("init", lib.nvmlInit)
        count = int(self._call("device count", lib.nvmlDeviceGetCount))
        wanted = list(range(count)) if indices is None else indices
        gpus = []
        for index in wanted:
            if index >= count:
                raise NvmlError("open", None, f"GPU {index} not present (NVML lists {count})")
            handle = self._call(f"gpu {index} handle", lib.nvmlDeviceGetHandleByIndex, index)
            self._handles[index] = handle
            name = self._call(f"gpu {index} name", lib.nvmlDeviceGetName, handle)
            low_mw, high_mw = self._call(
                f"gpu {index} limit constraints", lib.nvmlDeviceGetPowerManagementLimitConstraints, handle
            )
            default_mw = self._call(
                f"gpu {index} default limit", lib.nvmlDeviceGetPowerManagementDefaultLimit, handle
            )
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    min_limit_w=low_mw / 1000.0,
                    max_limit_w=high_mw / 1000.0,
                    default_limit_w=default_mw / 1000.0,
                )
            )
        self.gpus = gpus
        return gpus

    def close(self) -> None:
        if self._handles:
            self._handles.clear()
            try:
                self._lib.nvmlShutdown()
            except self._lib.NVMLError:
                pass

    def limit_w(self, index: int) -> float:
        mw = self._call(
            f"gpu {index} limit", self._lib.nvmlDeviceGetPowerManagementLimit, self._handles[index]
        )
        return float(mw) / 1000.0

    def set_limit_w(self, index: int, watts: float) -> None:
        """Set the power limit (rounded down to whole mW); needs root or the admin capability."""
        mw = math.floor(watts * 1000.0)
        self._call(
            f"gpu {index} set limit", self._lib.nvmlDeviceSetPowerManagementLimit, self._handles[index], mw
        )

    def power_w(self, index: int) -> float:
        """Instant power where the driver has the field, else NVML's power usage."""
        lib, handle = self._lib, self._handles[index]
        if self._instant.get(index, True):
            try:
                value = lib.nvmlDeviceGetFieldValues(handle, [lib.NVML_FI_DEV_POWER_INSTANT])[0]
            except lib.NVMLError:
                value = None
            if value is not None and value.nvmlReturn == lib.NVML_SUCCESS:
                self._instant[index] = True
                return _field_number(lib, value) / 1000.0
            self._instant[index] = False
        return float(self._call(f"gpu {index} power", lib.nvmlDeviceGetPowerUsage, handle)) / 1000.0

    def uses_instant_power(self, index: int) -> bool:
        return self._instant.get(index, False)


def _field_number(lib: Any, value: Any) -> float:
    kind = value.valueType
    if kind == lib.NVML_VALUE_TYPE_DOUBLE:
        return float(value.value.dVal)
    if kind == lib.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG:
        return float(value.value.ullVal)
    if kind == lib.NVML_VALUE_TYPE_UNSIGNED_LONG:
        return float(value.value.ulVal)
    return float(value.value.uiVal)
