"""SIGHUP: re-read the config file and take on only what can change while running (docs/operations.md)."""

from __future__ import annotations

from typing import Any

from mullet.daemon.config import Config, ConfigError, load_config
from mullet.daemon.secrets import SecretError, read_secret

# What a running daemon takes on at SIGHUP; every other key changes only on restart (its connections,
# listeners, topic root, trip stages and the identities of its groups and tenants are fixed).
_LIVE_CONTROL = (
    "period_s",
    "deadband_kw",
    "restore_ramp_kw_per_min",
    "restore_stagger_s",
    "min_on_s",
    "min_off_s",
    "max_event_kw_factor",
    "firmware_sleep_s",
    "max_obligations",
)


class Reloaded:
    """A config a running daemon may take on, with its API token and what changed."""

    def __init__(self, config: Config, token: str | None, changed: list[str]) -> None:
        self.config = config
        self.token = token
        self.changed = changed


class ReloadRefused(Exception):
    def __init__(self, outcome: str, summary: str, problems: list[str]) -> None:
        super().__init__(summary)
        self.outcome = outcome  # "invalid" or "needs_restart": the metric label
        self.summary = summary  # for /v1/status
        self.problems = problems


def reread(path: str | None, current: Config) -> Reloaded:
    """The config at `path` if only live keys changed; raises ReloadRefused saying why not."""
    if path is None:
        raise ReloadRefused("invalid", "no config file", ["daemon was not started from a config file"])
    try:
        new = load_config(path)
        token = read_secret(file=new.http_api.token_file, credential=new.http_api.token_credential)
    except ConfigError as exc:
        raise ReloadRefused("invalid", "invalid, previous config kept", exc.problems) from None
    except SecretError as exc:
        raise ReloadRefused("invalid", "invalid, previous config kept", [f"http_api: {exc}"]) from None
    fixed_before, fixed_after = _restart_only(current), _restart_only(new)
    if fixed_before != fixed_after:
        changed = sorted(k for k in fixed_after if fixed_before.get(k) != fixed_after.get(k))
        raise ReloadRefused(
            "needs_restart",
            "needs a restart, previous config kept",
            [f"{key}: changes only on restart" for key in changed],
        )
    changed = sorted(k for k, v in new.model_dump().items() if current.model_dump()[k] != v)
    return Reloaded(new, token, changed)


def _restart_only(config: Config) -> dict[str, Any]:
    data = config.model_dump()
    for key in ("economics", "programs", "simulator"):
        data.pop(key)
    data["economics.price_stale_after_s"] = config.economics.price_stale_after_s
    data["site"] = config.site.site_id
    for key in _LIVE_CONTROL:
        data["control"].pop(key)
    for key in ("token_file", "token_credential"):
        data["http_api"].pop(key)
    data["groups"] = [(g.group_id, g.model_dump()["outlets"]) for g in config.groups]
    data["tenants"] = [t.tenant_id for t in config.tenants]
    return data
