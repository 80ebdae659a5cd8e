"""Operating mulletd as a service: systemd notifications, SIGHUP reloads, SIGTERM, the HTTP control API
with its bearer token, operator overrides, and secrets kept out of configs and logs.

The daemon runs as `mulletd run` against the simulated site over the session's real broker; systemd's
side of sd_notify is played by a Unix datagram socket of the test's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import sqlite3
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import tomli_w
from helpers import Metrics, Running, retained, running_site, site_config, start_daemon, until

from mullet.daemon.config import ConfigError, parse_config
from mullet.daemon.notify import Notifier
from mullet.daemon.secrets import SecretError, read_secret
from mullet.drivers.protocol import GridEvent, encode
from mullet.policies.model import GroupSpec, Override, SiteSnapshot, SiteSpec
from mullet.policies.plan import compute_plan
from mullet.simulators.ports import free_port

TOKEN = "op-token-" + "7" * 24


# ---- sd_notify ----------------------------------------------------------------------------------


def _datagrams(sock: socket.socket) -> list[dict[str, str]]:
    out = []
    while True:
        try:
            raw = sock.recv(4096)
        except BlockingIOError:
            return out
        out.append(dict(line.split("=", 1) for line in raw.decode().splitlines()))


def test_notifier_speaks_sd_notify_to_a_path_or_abstract_socket_and_rate_limits_the_watchdog(
    tmp_path: Path,
) -> None:
    for address in (str(tmp_path / "n.sock"), f"@mullet-test-{secrets.token_hex(4)}"):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind("\0" + address[1:] if address.startswith("@") else address)
        server.setblocking(False)
        notifier = Notifier(address, watchdog_usec=1_000_000)
        assert notifier.ready("controlling 2 groups")
        assert notifier.watchdog(100.0)
        assert not notifier.watchdog(100.2)  # within a quarter period: not again
        assert notifier.watchdog(100.3)
        assert notifier.stopping()
        got = _datagrams(server)
        assert got == [
            {"READY": "1", "STATUS": "controlling 2 groups"},
            {"WATCHDOG": "1"},
            {"WATCHDOG": "1"},
            {"STOPPING": "1", "STATUS": "stopping"},
        ]
        notifier.close()
        server.close()
    # Outside systemd: nothing to talk to, nothing sent, nothing raised.
    assert not Notifier(None).ready("x") and not Notifier(None).watchdog(0.0)


def test_notifier_reads_its_environment_and_ignores_a_watchdog_meant_for_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_environment().watchdog_s == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_environment().watchdog_s is None
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not Notifier.from_environment().enabled


def test_a_send_failure_is_counted_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"), watchdog_usec=1_000_000)
    assert not notifier.ready("x") and notifier.failed == 1


# ---- secrets in the config ----------------------------------------------------------------------

_BASE = {
    "site": {"site_id": "s", "interconnect_kw": 100},
    "groups": [{"group_id": "g", "rated_kw": 10, "efficiency_j_per_th": 20}],
}


def _problems(extra: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({**_BASE, **extra})
    return caught.value.problems


def test_secrets_come_from_private_files_or_credentials_never_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o644)
    assert _problems({"http_api": {"token_file": str(secret)}}) == [
        f"http_api.token_file: {str(secret)!r} is readable or writable by others (mode 0644); chmod o-rw"
    ]
    assert _problems({"mqtt": {"url": "mqtts://h:8883", "password_file": str(secret)}})[0].startswith(
        "mqtt.password_file: "
    )
    assert _problems({"http_api": {"token": TOKEN}}) == [
        "http_api.token: an inline token would sit in the config file; use token_file"
    ]
    problems = _problems({"mqtt": {"url": f"mqtts://mulletd:{TOKEN}@h:8883"}})
    assert problems == ["mqtt.url: a password in the url would sit in the config file; use password_file"]
    assert _problems({"mqtt": {"ca_file": str(secret)}}) == [
        "mqtt.ca_file: TLS settings need an mqtts:// url, got 'mqtt://127.0.0.1:1883'"
    ]
    secret.chmod(0o640)  # the owner's group may read it (a `mullet` group), others may not
    config = parse_config({**_BASE, "http_api": {"token_file": str(secret)}})
    assert read_secret(file=config.http_api.token_file) == TOKEN
    # A systemd credential is a file named after it in $CREDENTIALS_DIRECTORY.
    with pytest.raises(SecretError, match="CREDENTIALS_DIRECTORY"):
        read_secret(credential="api-token")
    (tmp_path / "api-token").write_text(TOKEN)
    (tmp_path / "api-token").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret(credential="api-token") == TOKEN
    for problem in _problems({"http_api": {"token": TOKEN}}) + problems:
        assert TOKEN not in problem


# ---- overrides in the policy --------------------------------------------------------------------


def test_an_override_holds_a_group_against_the_rules_and_says_so_until_it_expires() -> None:
    groups = tuple(GroupSpec(f"g{i}", 100.0, 20.0 + i, 100, sleep_kw=2.0) for i in range(3))
    site = SiteSpec(interconnect_kw=1000.0, safety_margin_kw=0.0, base_load_kw=0.0, groups=groups, tenants=())
    snapshot = SiteSnapshot(
        site_power_kw=300.0, tenant_power_kw={}, group_power_kw={g.group_id: 100.0 for g in groups}
    )
    now_s = 1_700_000_000.0
    hold = {"g0": Override("g0", "curtail", now_s + 600, "fan swap")}
    plan = compute_plan(site, snapshot, [], now_s, None, hold)
    decision = {d.group_id: d for d in plan.decisions}["g0"]
    assert decision.mode == "curtail"
    assert decision.reason == "curtail: operator override until 2023-11-14T22:23:20Z (fan swap)"
    assert "operator overrides: g0 curtail" in plan.reasons
    assert {d.group_id: d.mode for d in plan.decisions}["g1"] == "run"
    # Expired: the rules decide again (restore waits for min off time, as for any curtailed group).
    later = compute_plan(site, snapshot, [], now_s + 601, plan.memory, hold)
    assert "operator override" not in {d.group_id: d for d in later.decisions}["g0"].reason


# ---- the daemon as a service --------------------------------------------------------------------


def _log_events(running: Running) -> list[dict]:
    return [json.loads(line) for line in running.log_path.read_text().splitlines() if line.startswith("{")]


async def test_ready_comes_after_the_first_plan_watchdog_after_cycles_and_sigterm_leaves_setpoints(
    mqtt_broker, tmp_path: Path
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify.sock"
    notify.bind(str(notify_path))
    notify.setblocking(False)
    loop = asyncio.get_running_loop()
    env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}  # pings >= 0.1 s apart
    async with running_site(mqtt_broker, tmp_path, env=env) as running:
        received: list[dict[str, str]] = []
        while sum(1 for m in received if m.get("WATCHDOG") == "1") < 3:
            raw = await asyncio.wait_for(loop.sock_recv(notify, 4096), 30)
            received.append(dict(line.split("=", 1) for line in raw.decode().splitlines()))
        assert received[0]["READY"] == "1" and "controlling 12 groups" in received[0]["STATUS"]
        assert all(m == {"WATCHDOG": "1"} for m in received[1:])
        events = [e["event"] for e in _log_events(running)]
        # READY went out after the first plan was computed and published.
        assert events.index("plan") < events.index("ready")
        # How the loop is scheduled is said at start (SCHED_FIFO comes from the unit, not here).
        scheduling = next(e for e in _log_events(running) if e["event"] == "scheduling")
        assert scheduling["policy"] == "normal" and scheduling["switch_interval_ms"] == 0.5
        assert scheduling["cpus"] and events.index("scheduling") < events.index("ready")
        # Once set up, start-up's objects are frozen out of the collector's full passes.
        await until(lambda: "heap frozen" in [e["event"] for e in _log_events(running)], 30, "heap frozen")
        frozen = next(e for e in _log_events(running) if e["event"] == "heap frozen")
        assert frozen["objects"] > 10_000

        # SIGTERM: exit 0 within 5 s; online 0 retained; the setpoints left as they were; journal flushed.
        topics = running.observer.topics
        before = await retained(mqtt_broker, running.config.topic_root)
        sets_before = {t: p for t, p in before.items() if t.endswith("/set")}
        assert len(sets_before) == 12 + 2
        running.daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(running.daemon.wait(), 5) == 0
        after = await retained(mqtt_broker, running.config.topic_root)
        assert after[topics.daemon_online] == b"0"
        assert {t: p for t, p in after.items() if t.endswith("/set")} == sets_before
        stopping = _datagrams(notify)
        assert {"STOPPING": "1", "STATUS": "stopping"} in stopping
        assert _log_events(running)[-1]["event"] == "mulletd stopped"
        with sqlite3.connect(running.config.journal.path) as db:
            journaled = dict(
                db.execute(
                    "SELECT subject, json_extract(data, '$.seq') FROM journal WHERE id IN"
                    " (SELECT MAX(id) FROM journal WHERE kind = 'setpoint' GROUP BY subject)"
                ).fetchall()
            )
        retained_seqs = {
            t.split("/")[-2]: json.loads(p)["seq"] for t, p in sets_before.items() if "/mining/" in t
        }
        assert journaled == retained_seqs
    notify.close()


async def test_no_ready_and_no_watchdog_while_no_plan_can_be_made(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    _, path = site_config(f"mqtt://127.0.0.1:{free_port()}", tmp_path)  # nothing listens there
    log_path = tmp_path / "mulletd.log"
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    daemon = await start_daemon(path, log_path, env)
    try:
        await until(
            lambda: log_path.read_text().count('"mqtt disconnected"') >= 3, 15, "three failed connects"
        )
        assert _datagrams(notify) == []
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 5) == 0
        assert all("READY" not in m and "WATCHDOG" not in m for m in _datagrams(notify))
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        notify.close()


# ---- HTTP API and SIGHUP ------------------------------------------------------------------------


def _with_api(token_file: Path) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        data["http_api"] = {"enabled": True, "port": free_port(), "token_file": str(token_file)}

    return mutate


def _rewrite(running: Running, change: Callable[[dict], None]) -> None:
    data = tomllib.loads(running.config_path.read_text())
    change(data)
    running.config_path.write_text(tomli_w.dumps(data))


def _reloads(running: Running) -> dict[str, float]:
    prefix = 'mullet_config_reloads_total{result="'
    return {k[len(prefix) : -2]: v for k, v in running.metrics().items() if k.startswith(prefix)}


async def test_api_writes_need_the_token_and_a_refused_write_changes_nothing(
    mqtt_broker, tmp_path: Path
) -> None:
    async with (
        running_site(mqtt_broker, tmp_path, _with_api(tmp_path / "api-token")) as running,
        aiohttp.ClientSession() as http,
    ):
        base = f"http://127.0.0.1:{running.config.http_api.port}"
        observer, topics = running.observer, running.observer.topics
        override = {"group_id": "c10", "mode": "curtail", "duration_s": 60, "note": "fan swap"}
        event = GridEvent(id="sneaky", kind="limit", kw=1000)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}):
            async with http.post(f"{base}/v1/override", json=override, headers=headers) as response:
                assert response.status == 401 and (await response.json())["code"] == "unauthorized"
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.post(f"{base}/v1/events", data=encode(event), headers=headers) as response:
                assert response.status == 401
        # Nothing changed: no override, no obligation, and the refused event was never queued (events
        # are handled in order, so its ack would have come before this one's).
        auth = {"Authorization": f"Bearer {TOKEN}"}
        mark = len(observer.received)
        async with http.post(
            f"{base}/v1/events", data=encode(GridEvent(id="ok-1", kind="cancel")), headers=auth
        ) as r:
            assert r.status == 422  # cancel of an unknown event: processed, refused on its merits
        assert not any(m.topic == topics.grid_event_ack and b"sneaky" in m.payload for m in observer.received)
        async with http.get(f"{base}/v1/status") as response:
            status = await response.json()
        assert status["overrides"] == {} and status["obligations"] == [] and status["ready"] is True
        assert not any(m.topic == topics.group_set("c10") for m in observer.received[mark:])
        assert running.metric('mullet_http_api_refusals_total{reason="unauthorized"}') == 6.0

        # With the token: the plan holds c10 curtailed and says why; the simulated group obeys.
        async with http.post(f"{base}/v1/override", json=override, headers=auth) as response:
            assert response.status == 200
            until_s = (await response.json())["until"]
        assert time.time() < until_s <= time.time() + 60
        raw = await observer.wait_for(
            lambda m: m.topic == topics.daemon_plan and "override" in m.json()["groups"]["c10"]["reason"],
            30,
        )
        c10 = raw.json()["groups"]["c10"]
        assert (
            c10["mode"] == "curtail"
            and "operator override until" in c10["reason"]
            and "fan swap" in c10["reason"]
        )
        await until(lambda: running.site.groups["c10"].mode == "curtail", 30, "c10 curtailed")
        async with http.get(f"{base}/v1/plan") as response:
            assert (await response.json())["groups"]["c10"]["mode"] == "curtail"
        async with http.get(f"{base}/v1/status") as response:
            assert (await response.json())["overrides"]["c10"]["note"] == "fan swap"
        for bad, code in (({**override, "group_id": "zz"}, 404), ({**override, "duration_s": 1e9}, 400)):
            async with http.post(f"{base}/v1/override", json=bad, headers=auth) as response:
                assert response.status == code
        async with http.get(f"{base}/metrics") as response:  # the API serves the same registry
            served = Metrics(await response.text())
        assert served['mullet_http_api_refusals_total{reason="unauthorized"}'] == 6.0

        # SIGHUP with an invalid config: logged, counted, and control goes on under the old one.
        original = running.config_path.read_text()
        _rewrite(running, lambda d: d["control"].update(bogus=1))
        running.daemon.send_signal(signal.SIGHUP)
        await until(lambda: _reloads(running).get("invalid") == 1.0, 30, "invalid reload counted")
        refused = [
            e for e in _log_events(running) if e["event"] == "config reload refused, previous config kept"
        ]
        assert refused and refused[-1]["problems"] == ["control.bogus: unknown key"]
        assert running.daemon.returncode is None
        async with http.post(
            f"{base}/v1/override", json={"group_id": "c10", "mode": "auto"}, headers=auth
        ) as r:
            assert r.status == 200
        await observer.wait_for(
            lambda m: m.topic == topics.daemon_plan and "override" not in m.json()["groups"]["c10"]["reason"],
            30,
        )
        # A change that only a restart can make (the broker session) is refused too.
        running.config_path.write_text(original)
        _rewrite(running, lambda d: d["mqtt"].update(keepalive_s=30))
        running.daemon.send_signal(signal.SIGHUP)
        await until(lambda: _reloads(running).get("needs_restart") == 1.0, 30, "needs_restart counted")
        # A valid reload takes effect, a rotated token included: the old one is refused from then on.
        running.config_path.write_text(original)
        new_token = "rotated-" + "9" * 24
        (tmp_path / "api-token").write_text(new_token)
        _rewrite(running, lambda d: d["control"].update(deadband_kw=75.0))
        running.daemon.send_signal(signal.SIGHUP)
        await until(lambda: _reloads(running).get("ok") == 1.0, 30, "reload ok")
        async with http.post(f"{base}/v1/override", json=override, headers=auth) as response:
            assert response.status == 401
        new_auth = {"Authorization": f"Bearer {new_token}"}
        async with http.post(
            f"{base}/v1/override", json={**override, "mode": "run"}, headers=new_auth
        ) as response:
            assert response.status == 200
        async with http.get(f"{base}/v1/status") as response:
            assert (await response.json())["config_reload"] == "ok"

        # Secrets never reach the log.
        log_text = running.log_path.read_text()
        assert "api write refused" in log_text
        assert TOKEN not in log_text and new_token not in log_text


async def test_api_writes_are_refused_when_no_token_is_configured(mqtt_broker, tmp_path: Path) -> None:
    def mutate(data: dict) -> None:
        data["http_api"] = {"enabled": True, "port": free_port()}

    async with running_site(mqtt_broker, tmp_path, mutate) as running, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{running.config.http_api.port}"
        body = {"group_id": "c01", "mode": "run", "duration_s": 10}
        async with http.post(
            f"{base}/v1/override", json=body, headers={"Authorization": "Bearer "}
        ) as response:
            assert (response.status, (await response.json())["code"]) == (403, "writes_disabled")
        async with http.get(f"{base}/v1/plan") as response:
            assert response.status == 200 and "c01" in (await response.json())["groups"]
