"""What every Mullet process exports beside its own series: prometheus_client's standard process,
platform and GC collectors and `mullet_build_info{version,revision}`, on the process's own registry.

Operators' dashboards and alerts for any Python exporter (RSS, CPU, open fds, restarts via
`process_start_time_seconds`) then work on the site daemon, the agents and the fleet dispatcher
unchanged, and a scrape says which build is running. The revision is looked up once per process (git
may be run once, at start-up, never on a scrape) and is "unknown" when it cannot be known.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

from prometheus_client import CollectorRegistry, Gauge, GCCollector, PlatformCollector, ProcessCollector

DISTRIBUTION = "mullet"
UNKNOWN = "unknown"
_GIT_TIMEOUT_S = 2.0
_COMMIT_HEX_LENS = (40, 64)  # SHA-1 and SHA-256 object names


@functools.cache
def build_version() -> str:
    """The installed distribution's version (its metadata), or "unknown" when run from a bare tree."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN


@functools.cache
def build_revision() -> str:
    """The commit the running code was installed from (`revision_from` on this install's metadata)."""
    return revision_from(_direct_urls())


def revision_from(direct_urls: list[dict[str, object]]) -> str:
    """A commit from PEP 610 direct_url.json contents: `vcs_info.commit_id` for an install from git; for
    a local or editable install (`dir_info`, a file:// url) the HEAD of that source directory; otherwise
    (a wheel from an index, no git, not a work tree) "unknown"."""
    for direct_url in direct_urls:
        vcs = direct_url.get("vcs_info")
        if isinstance(vcs, dict) and _is_commit(vcs.get("commit_id")):
            return str(vcs["commit_id"])
        url = direct_url.get("url")
        if "dir_info" in direct_url and isinstance(url, str) and url.startswith("file://"):
            return _git_head(Path(unquote(urlparse(url).path)))
    return UNKNOWN


def _direct_urls() -> list[dict[str, object]]:
    """direct_url.json of every installed `mullet` (a stray egg-info on sys.path may shadow the real one)."""
    found: list[dict[str, object]] = []
    for dist in importlib.metadata.distributions(name=DISTRIBUTION):
        try:
            text = dist.read_text("direct_url.json")
            data = json.loads(text) if text else None
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append(data)
    return found


def _git_head(source: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    head = done.stdout.strip()
    return head if done.returncode == 0 and _is_commit(head) else UNKNOWN


def _is_commit(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) in _COMMIT_HEX_LENS
        and all(c in "0123456789abcdef" for c in value.lower())
    )


def register_process_metrics(registry: CollectorRegistry) -> None:
    """The standard collectors (process_*, python_info, python_gc_*) and mullet_build_info on `registry`."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    info = Gauge(
        "mullet_build_info",
        'Always 1; labels: the installed version and the source revision ("unknown" when not known).',
        ["version", "revision"],
        registry=registry,
    )
    info.labels(version=build_version(), revision=build_revision()).set(1)
