"""The site config's building blocks: validated field types, the strict base model every section
derives from, and the site-size limits. Shared by the site, agent and fleet configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mullet.daemon.secrets import SecretError, check_secret_file

PositiveKw = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeKw = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=0, le=65535)]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


def _secret_file(path: str) -> str:
    try:
        check_secret_file(path)
    except SecretError as exc:
        raise ValueError(str(exc)) from None
    return path


def _public_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"no such file {path!r}")
    return path


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. America/Chicago)") from exc
    return name


# An IANA time zone name the machine's tz database (or the tzdata package) knows.
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_time_zone)]
# A file holding a secret: must exist and be unreadable by others (daemon/secrets.py).
SecretFile = Annotated[str, AfterValidator(_secret_file)]
PublicFile = Annotated[str, AfterValidator(_public_file)]
# The name of a systemd credential (a file in $CREDENTIALS_DIRECTORY); resolved at start-up.
CredentialName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.-]+$")]


class Strict(BaseModel):
    # Unknown keys are errors in config (unlike on the wire): a typo must not silently fall back.
    model_config = ConfigDict(extra="forbid", frozen=True)


# Site-size limits (docs/configuration.md): the largest site designed for is 600 groups (~57,000
# ASICs, 200 MW) with 30 tenants and 50 PDUs; bench/policy_bench.py plans 6,000 groups in ~12 ms p50.
# Beyond these a config is a mistake (a generator gone wrong), not a site: check-config says so rather
# than the daemon starting and never becoming ready.
MAX_GROUPS = 2_000
MAX_TENANTS = 200
MAX_PDUS = 256  # two connections each (daemon/fds.py)
MAX_OUTLETS_PER_GROUP = 64
MAX_TRIP_STAGES = 16
MAX_PROGRAMS = 64


def unique(section: str, key: str, values: list[str]) -> None:
    """ValueError naming the first repeated value as `section[index].key`."""
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}[{index}].{key}: duplicate {value!r}")
        seen.add(value)
