"""Which optional parts (pyproject extras) are installed, without importing them.

A site installs only what it runs (`pip install mullet` has no OpenADR, NVML, etcd, miner or DNP3
library). A configured part whose extra is missing is refused when the config is read, naming the
`pip install` that fixes it, rather than failing with a bare ModuleNotFoundError mid start-up.
`importlib.util.find_spec` looks the module up on sys.path without running it (openleadr's import
alone costs ~0.2 s).
"""

from __future__ import annotations

import importlib.util
from typing import Final

# extra -> {module it provides: distribution that provides it}; mirrors [project.optional-dependencies].
EXTRAS: Final[dict[str, dict[str, str]]] = {
    "openadr": {"openleadr": "openleadr"},
    "gpu": {"pynvml": "nvidia-ml-py"},
    "etcd": {"aetcd": "aetcd"},
    "asic": {"pyasic": "pyasic", "pyasic_rs": "pyasic-rs"},
    "dnp3": {"py1815": "py1815"},
}
_EXTRA_OF_MODULE: Final[dict[str, str]] = {
    module: extra for extra, modules in EXTRAS.items() for module in modules
}


class MissingExtra(ModuleNotFoundError):
    """A configured part needs an extra that is not installed; its message says what to install."""


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def hint(extra: str, part: str) -> str:
    modules = EXTRAS[extra]
    libraries = ", ".join(modules.values())
    return f"{part} needs the {extra} extra: pip install 'mullet[{extra}]' ({libraries})"


def missing(module: str, part: str) -> str | None:
    """What to install when `module` (one an extra provides) is not importable, else None."""
    return None if installed(module) else hint(_EXTRA_OF_MODULE[module], part)


def require(module: str, part: str) -> None:
    """MissingExtra naming the extra unless `module` is importable."""
    problem = missing(module, part)
    if problem is not None:
        raise MissingExtra(problem)


def explain(exc: ModuleNotFoundError) -> str | None:
    """The install hint when `exc` is an extra's module that is missing, else None (a real bug)."""
    top = (exc.name or "").partition(".")[0]
    extra = _EXTRA_OF_MODULE.get(top)
    if extra is None:
        return None
    return f"{top} is not installed; it comes with the {extra} extra: pip install 'mullet[{extra}]'"
