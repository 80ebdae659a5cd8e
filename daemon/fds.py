"""File descriptors: the HTTP listeners may use what is left after everything control needs.

At a 1,024-fd limit, 1,100 idle sockets on the API took every fd and the MQTT reconnect failed with
EMFILE. The daemon raises its soft RLIMIT_NOFILE to the hard limit at start-up (the systemd unit sets
both with LimitNOFILE=), keeps `reserved_fds()` for the broker, the meter, two connections per PDU, the
journal, etcd and OpenADR, and caps the two listeners' connections to fit in the rest.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

import structlog

from mullet.daemon.config import Config

log = structlog.get_logger("mullet.fds")

# stdio, the journal (SQLite: database, WAL, shm), the broker session and its reconnect, the meter,
# etcd, OpenADR, the loop's self-pipe and epoll, DNS lookups, threads' pipes: with room to spare.
BASE_RESERVED_FDS = 128
FDS_PER_PDU = 2  # the keep-alive connection and the cut connection (drivers/pdu/client.py)


def raise_nofile_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns (soft, hard) as they are afterwards. A sandbox
    that forbids setrlimit (the unit's SystemCallFilter) leaves the soft limit as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("could not raise the file descriptor limit", soft=soft, hard=hard, error=str(exc))
    return soft, hard


def soft_nofile_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def reserved_fds(config: Config) -> int:
    return BASE_RESERVED_FDS + FDS_PER_PDU * len(config.pdus)


@dataclass(frozen=True, slots=True)
class ListenerCaps:
    api: int  # 0 when the API is disabled
    metrics: int
    reduced: bool  # the configured maxima did not fit and were scaled down


def listener_caps(config: Config, soft_limit: int) -> ListenerCaps:
    """Each listener's connection cap: as configured when both fit under `soft_limit` less the
    reserve, else both scaled down in proportion (at least 1 each)."""
    api = config.http_api.max_connections if config.http_api.enabled else 0
    metrics = config.metrics.max_connections
    available = soft_limit - reserved_fds(config)
    if api + metrics <= available:
        return ListenerCaps(api, metrics, reduced=False)
    scale = max(available, 0) / (api + metrics)
    return ListenerCaps(
        api=max(1, int(api * scale)) if api else 0, metrics=max(1, int(metrics * scale)), reduced=True
    )


def log_budget(config: Config, soft: int, hard: int) -> ListenerCaps:
    caps = listener_caps(config, soft)
    fields = {
        "soft_limit": soft,
        "hard_limit": hard,
        "reserved": reserved_fds(config),
        "api_max_connections": caps.api,
        "metrics_max_connections": caps.metrics,
    }
    if caps.reduced:
        log.warning(
            "file descriptor limit too low for the configured HTTP connection limits: reduced them",
            hint="raise LimitNOFILE= in the unit or lower max_connections",
            **fields,
        )
    else:
        log.info("file descriptors", **fields)
    return caps
