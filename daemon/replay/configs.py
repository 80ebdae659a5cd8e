"""The configurations a replay compares: the site config, and each `--compare` file, which is either a
whole site config or an overlay of just the keys that change (`[economics] enabled = true`), merged
onto the site config. An overlay keeps a sweep of strike prices or deadbands to a few lines each."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from mullet.daemon.config import Config, ConfigError, parse_config


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` onto `base`: tables merge key by key, anything else (arrays included) replaces."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def load_configs(site_path: str | Path, compare: list[str | Path]) -> list[tuple[str, Config]]:
    """(label, config) for the site config and each comparison, in the order given; ConfigError naming
    the file and every bad key."""
    site_path = Path(site_path)
    base = _read(site_path)
    out = [(site_path.stem, _parse(site_path, base))]
    for other in map(Path, compare):
        data = _read(other)
        whole = "site" in data and "groups" in data
        out.append((other.stem, _parse(other, data if whole else merged(base, data))))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(
            [f"two configurations share the name {label!r}" for label in labels if labels.count(label) > 1][
                :1
            ]
        )
    return out


def _parse(path: Path, data: dict[str, Any]) -> Config:
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {problem}" for problem in exc.problems]) from None
