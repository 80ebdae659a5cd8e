"""Reading a TOML file and validating it as a config model, with every problem named as
`path: reason` (`ConfigError`): the site's, an agent's or the fleet dispatcher's config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError


class ConfigError(Exception):
    """A config that cannot be used; each line is `path: reason`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_BOUND_WORDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_BOUND_KEYS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def _format_error(err: Any) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind in _BOUND_WORDS:
        bound = err["ctx"][_BOUND_KEYS[kind]]
        reason = f"must be {_BOUND_WORDS[kind]} {bound:g}, got {got!r}"
    elif kind == "missing":
        reason = "required key is missing"
    elif kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "too_long" and "max_length" in err.get("ctx", {}):
        # Never echo the input: it is the whole (huge) list.
        ctx = err["ctx"]
        actual = ctx.get("actual_length")
        reason = f"at most {ctx['max_length']:,} entries (a site-size limit, docs/configuration.md)"
        reason += f", got {actual:,}" if isinstance(actual, int) else ""
    elif kind == "finite_number":
        reason = f"must be a finite number, got {got!r}"
    elif kind == "value_error":
        message = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        path = _format_loc(tuple(err["loc"]))
        head = message.split(": ", 1)[0]
        # Cross-checks already say `path: reason` from the top; field checks say `field: reason`.
        if re.match(r"^(groups|tenants|pdus|simulator|economics|control|programs)\b", head):
            return message
        if re.fullmatch(r"[a-z_]+", head) and ": " in message:
            return f"{path}.{message}" if path else message
        reason = message
    else:
        reason = f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {got!r}"
    path = _format_loc(tuple(err["loc"]))
    return f"{path}: {reason}" if path else reason


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data` as `model`; ConfigError listing every problem as `path: reason`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_format_error(e) for e in exc.errors()]) from None


def load_model(model: type[M], path: str | Path) -> M:
    """Read and validate a TOML file as `model` (the site, an agent or the fleet dispatcher)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_model(model, data)
