"""The metrics contract, read as Prometheus and Grafana read it: a live `mulletd run`, `mulletd fleet`
and `mulletd agent gpu` are scraped over HTTP and parsed with prometheus_client's own text parser;
their metric families are the ones docs/metrics.md lists (nothing missing, nothing undocumented), the
standard process collectors and `mullet_build_info` are there with sane values, and every query of the
Grafana dashboard and the alert rules names only exported metrics. The Grafana provisioning files are
checked against the dashboard they provision.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
import tomli_w
import yaml
from helpers import MULLETD, ROOT, running_site, until
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mullet.daemon.agents.config import AgentMetricsSection, GpuAgentConfig, parse_agent_config
from mullet.daemon.config import HttpApiSection, MetricsSection
from mullet.daemon.fleet.config import FleetConfig, parse_fleet_config
from mullet.daemon.pair.role import HaMetrics
from mullet.daemon.process_metrics import revision_from
from mullet.simulators.ports import free_port

DOC = ROOT / "docs" / "metrics.md"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mullet" / "mullet.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# What Prometheus adds to every target's series itself (not exported by the target).
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}


# Scrapes.


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def parse(exposition: str) -> list[Metric]:
    return list(text_string_to_metric_families(exposition))


def families(scraped: Iterable[Metric]) -> dict[str, str]:
    """Family name (as docs/metrics.md writes it: counters with `_total`) to type. The text format's
    `<name>_created` gauges belong to their counter or histogram and are left out."""
    metrics = list(scraped)
    with_created = {m.name for m in metrics if m.type in ("counter", "histogram", "summary")}
    named: dict[str, str] = {}
    for m in metrics:
        if m.type == "gauge" and m.name.endswith("_created") and m.name[: -len("_created")] in with_created:
            continue
        named[f"{m.name}_total" if m.type == "counter" else m.name] = m.type
    return named


def series_names(named: dict[str, str]) -> set[str]:
    """Every name a query may use for these families: a histogram's _bucket, _sum and _count."""
    names: set[str] = set()
    for name, kind in named.items():
        names.add(name)
        if kind in ("histogram", "summary"):
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def documented() -> dict[str, str]:
    doc = DOC.read_text()
    return dict(re.findall(r"^\| `(mullet_[a-z0-9_]+)` \| (gauge|counter|histogram) \|", doc, re.M))


def sample(scraped: Iterable[Metric], name: str) -> float:
    for family in scraped:
        for s in family.samples:
            if s.name == name:
                return s.value
    raise AssertionError(f"{name} not exported")


def fleet_config(mqtt_broker, tmp_path: Path, port: int) -> list[str]:
    """`mulletd fleet` with one site, `/metrics` on `port`."""
    data = {
        "fleet": {"fleet_id": "pf-contract"},
        "mqtt": {"url": mqtt_broker.url},
        "metrics": {"port": port},
        "sites": [{"site_id": "s1"}],
    }
    parse_fleet_config(data)
    path = tmp_path / "fleet.toml"
    path.write_text(tomli_w.dumps(data))
    return [str(MULLETD), "fleet", "--config", str(path)]


def gpu_agent_config(mqtt_broker, tmp_path: Path, port: int) -> list[str]:
    """`mulletd agent gpu` on a simulated GPU, with a `[metrics]` table on `port`."""
    data = {
        "mqtt": {"url": mqtt_broker.url},
        "metrics": {"port": port},
        "agent": {"site_id": "contract", "tenant_id": "ai"},
        "nvml": {"backend": "fake", "fake_gpus": [{}]},
    }
    parse_agent_config(GpuAgentConfig, data)
    path = tmp_path / "agent.toml"
    path.write_text(tomli_w.dumps(data))
    return [str(MULLETD), "agent", "gpu", "--config", str(path)]


def _answers(port: int) -> bool:
    try:
        return bool(parse(scrape(port)))
    except OSError:
        return False


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, mqtt_broker) -> dict[str, str]:
    """One scrape each of a running site daemon, fleet dispatcher and GPU agent, started together once
    for the module (the ASIC agent serves /metrics the same way, daemon/agents/metrics.py)."""
    tmp_path = tmp_path_factory.mktemp("contract")
    ports = {"fleet": free_port(), "agent": free_port()}
    commands = {
        "fleet": fleet_config(mqtt_broker, tmp_path, ports["fleet"]),
        "agent": gpu_agent_config(mqtt_broker, tmp_path, ports["agent"]),
    }

    async def scrape_each() -> dict[str, str]:
        processes = []
        try:
            for name, argv in commands.items():
                with (tmp_path / f"{name}.log").open("ab") as log_file:
                    processes.append(
                        await asyncio.create_subprocess_exec(*argv, stdout=log_file, stderr=log_file)
                    )
            async with running_site(mqtt_broker, tmp_path) as running:
                scraped = {"site": await asyncio.to_thread(scrape, running.config.metrics.port)}
            for name, port in ports.items():
                await until(lambda port=port: _answers(port), 30, f"/metrics of {name}")
                scraped[name] = await asyncio.to_thread(scrape, port)
            return scraped
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await asyncio.wait_for(process.wait(), 10)

    return asyncio.run(scrape_each())


# The process collectors and build info.


@pytest.mark.parametrize("process", ["site", "fleet", "agent"])
def test_standard_collectors_and_build_info(live: dict[str, str], process: str) -> None:
    scraped = parse(live[process])
    named = families(scraped)
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
    ):
        assert name in named, f"{process}: {name} not exported"
    assert sample(scraped, "process_resident_memory_bytes") > 1e6
    assert sample(scraped, "process_open_fds") > 0
    started = sample(scraped, "process_start_time_seconds")
    assert time.time() - 3600 < started < time.time()
    assert sample(scraped, "process_cpu_seconds_total") > 0

    (info,) = [s for f in scraped if f.name == "mullet_build_info" for s in f.samples]
    assert info.value == 1
    assert info.labels["version"] == importlib.metadata.version("mullet")
    revision = info.labels["revision"]
    assert revision == "unknown" or re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", revision), revision
    if _editable_from(ROOT):
        # This checkout is the install: the revision is one of its commits (HEAD may have moved on).
        known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{revision}^{{commit}}"])
        assert known.returncode == 0, f"{revision} is not a commit of {ROOT}"


def _editable_from(source: Path) -> bool:
    for dist in importlib.metadata.distributions(name="mullet"):
        text = dist.read_text("direct_url.json")
        if text and json.loads(text).get("url") == source.as_uri():
            return True
    return False


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian `prometheus`)")
@pytest.mark.parametrize("process", ["fleet", "agent"])  # the site's: tests/test_observability.py
def test_scrape_passes_promtool_lint(live: dict[str, str], process: str) -> None:
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=live[process], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# The catalogue.


def test_exported_families_are_the_documented_ones(live: dict[str, str]) -> None:
    """docs/metrics.md lists every mullet_ family the site daemon and the fleet dispatcher export (with
    its type) and nothing else; the active/standby series exist only with [ha] and are taken from the
    code. The standard process_ and python_ families are documented by name as a group."""
    exported = families(parse(live["site"])) | families(parse(live["fleet"])) | families(parse(live["agent"]))
    ha_registry = CollectorRegistry()
    HaMetrics(ha_registry)  # registered only with [ha]
    ha = families(ha_registry.collect())
    own = {name: kind for name, kind in (exported | ha).items() if name.startswith("mullet_")}
    assert own == documented()

    standard = {name for name in exported if not name.startswith("mullet_")}
    assert standard and all(name.startswith(("process_", "python_")) for name in standard), standard
    doc = DOC.read_text()
    assert not [name for name in standard if f"`{name}`" not in doc]


# PromQL: the metric names a query reads.

_TOKENS = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)"""
    r"|(?P<range>\[[^\]]*\])"  # a range or subquery: durations, $__rate_interval
    r"|(?P<variable>\$\{[^}]*\}|\$\w+)"  # a Grafana variable
    r"|(?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?:[smhdwy]|ms)*)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<open>[({])|(?P<close>[)}])"
    r"|(?P<other>\S)",
)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: not functions or aggregations (a name before `(`),
    keywords, label names (inside `{}` and in by/without/on/ignoring/group_* lists), strings, numbers,
    durations or Grafana variables. `__name__="x"` matchers name x (a `__name__=~` regex names none)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKENS.finditer(expr)]
    found: set[str] = set()
    stack: list[str] = []  # what each open bracket is: "labels", "grouping" or "call"
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "open":
            previous = tokens[i - 1][1] if i else ""
            if text == "{":
                stack.append("labels")
            elif previous in _GROUPING:
                stack.append("grouping")
            else:
                stack.append("call")
        elif kind == "close":
            if stack:
                stack.pop()
        elif kind == "string" and stack and stack[-1] == "labels":
            back = [t for _, t in tokens[max(0, i - 2) : i]]
            if back == ["__name__", "="]:
                found.add(text[1:-1])
        elif kind == "name":
            if stack and stack[-1] in ("labels", "grouping"):
                continue
            if following == "(" or following in ("by", "without"):  # a call, `sum by (x) (...)`
                continue
            if text in _KEYWORDS or text in _GROUPING:
                continue
            found.add(text)
    return found


def test_promql_parser_finds_metrics_not_functions_labels_or_durations() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, class) (rate(mullet_command_ack_seconds_bucket{class="pdu",'
        ' instance=~"$site"}[$__rate_interval]))) > bool on(instance) group_left(job)'
        " max without (mode) (mullet_group_mode offset 5m) or vector(0) unless"
        ' {__name__="mullet_trips_total"} * 1e3 - count(up{job="mullet"}) / 2.5'
        ' + label_replace(mullet_site_power_watts, "a", "$1", "b", "(.*)")'
    )
    assert promql_metrics(expr) == {
        "mullet_command_ack_seconds_bucket",
        "mullet_group_mode",
        "mullet_trips_total",
        "up",
        "mullet_site_power_watts",
    }
    assert promql_metrics("sum(rate(a_total[1m:10s] @ start())) by (le) / ignoring(x) b") == {"a_total", "b"}
    assert promql_metrics('topk(3, c) and on() {__name__=~"mullet_.*"} offset -5m') == {"c"}


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL query of the dashboard: panel targets (rows' nested panels too), annotations and
    template variables (label_values(metric, label) reads `metric`)."""
    queries: list[str] = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        queries += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
    queries += [a["expr"] for a in dashboard.get("annotations", {}).get("list", []) if a.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        label_values = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text)
        queries.append(label_values.group(1) if label_values else text)
    return queries


def unknown_metrics(queries: Iterable[str], exported: set[str]) -> dict[str, set[str]]:
    unknown = {q: promql_metrics(q) - exported - SCRAPE_SERIES for q in queries}
    return {q: names for q, names in unknown.items() if names}


def test_every_dashboard_and_alert_query_names_an_exported_metric(live: dict[str, str]) -> None:
    exported = series_names(families(parse(live["site"])))
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) > 20
    used = set().union(*(promql_metrics(q) for q in queries))
    assert len(used - SCRAPE_SERIES) > 15
    assert unknown_metrics(queries, exported) == {}

    rules = [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 10
    assert unknown_metrics(rules, exported) == {}

    # The check bites: one bogus metric in a panel is found.
    dashboard["panels"][0]["targets"][0]["expr"] = 'rate(mullet_no_such_total{instance=~"$site"}[5m])'
    assert unknown_metrics(dashboard_queries(dashboard), exported) == {
        'rate(mullet_no_such_total{instance=~"$site"}[5m])': {"mullet_no_such_total"}
    }
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


# Grafana provisioning.


def test_grafana_provisioning_points_at_the_dashboard_and_its_datasource() -> None:
    """deploy/grafana/ copied into /etc/grafana/provisioning/: the file provider's path is where the
    dashboard JSON lands, and every datasource the dashboard names is the provisioned one."""
    datasources = yaml.safe_load((GRAFANA / "datasources" / "mullet.yaml").read_text())
    providers = yaml.safe_load((GRAFANA / "dashboards" / "mullet.yaml").read_text())
    assert datasources["apiVersion"] == 1 and providers["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://localhost:9090"
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    provisioning = Path("/etc/grafana/provisioning")
    installed = provisioning / DASHBOARD.relative_to(GRAFANA)
    assert Path(provider["options"]["path"]) == installed.parent
    assert [p.name for p in DASHBOARD.parent.iterdir()] == [DASHBOARD.name]  # the provider loads *.json there

    dashboard = json.loads(DASHBOARD.read_text())
    referenced = _datasources(dashboard)
    assert referenced and referenced == {(source["type"], source["uid"])}


def _datasources(node: object) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                found.add((value["type"], value["uid"]))
            else:
                found |= _datasources(value)
    elif isinstance(node, list):
        for value in node:
            found |= _datasources(value)
    return found


# Where the revision comes from (PEP 610 direct_url.json).


def test_build_revision_from_each_kind_of_install(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert (
        revision_from(
            [{"url": "https://github.com/x/mullet", "vcs_info": {"vcs": "git", "commit_id": commit}}]
        )
        == commit
    )
    assert revision_from([{"url": "https://example.net/mullet.tar.gz", "archive_info": {}}]) == "unknown"
    assert revision_from([]) == "unknown"

    source = tmp_path / "my src"  # a space: the url is percent-encoded
    source.mkdir()
    assert revision_from([{"url": source.as_uri(), "dir_info": {}}]) == "unknown"  # not a work tree
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@example.net"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert revision_from([{"url": source.as_uri(), "dir_info": {"editable": True}}]) == head
    bogus = {"url": "https://x", "vcs_info": {"vcs": "git", "commit_id": "not-a-commit"}}
    assert revision_from([bogus, {"url": source.as_uri(), "dir_info": {}}]) == head


# Default ports.


def test_default_ports_are_the_documented_ones_and_off_the_exporter_allocations() -> None:
    """docs/metrics.md's Ports table is the code's defaults; they are distinct and outside what
    Prometheus' "Default port allocations" hands out: 9090-9999 (the server, its components, the
    exporter block) and the entries given one by one upward from 10001 since that block filled."""
    defaults = {
        "mulletd run [metrics]": MetricsSection().port,
        "mulletd run [http_api]": HttpApiSection().port,
        "mulletd agent [metrics]": AgentMetricsSection().port,
        "mulletd fleet [metrics]": FleetConfig.model_fields["metrics"].default.port,
    }
    assert len(set(defaults.values())) == len(defaults)
    assert all(not 9090 <= port <= 10999 for port in defaults.values()), defaults
    section = DOC.read_text().split("## Ports", 1)[1].split("\n## ", 1)[0]
    documented_ports = {int(p) for p in re.findall(r"`127\.0\.0\.1:(\d+)`", section)}
    assert documented_ports == set(defaults.values())
