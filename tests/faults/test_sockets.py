"""Socket floods (issue 17, finding 3): idle and slowloris connections against the API and /metrics of
a running `mulletd` held to a 1,024-fd limit.

Before: 1,100 idle sockets took every fd, so status and metrics stopped answering, the MQTT reconnect
failed with EMFILE and asyncio logged "socket.accept() out of system resource" thousands of times a
second; a slowloris connection was never timed out. Now each listener holds at most max_connections
(one more is closed at accept and counted), a request's headers have header_timeout_s, and the fds
control needs stay free: an under-frequency trip still fires during the flood and /metrics answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import time

import pytest
from faultkit import Faulty, faulty_site
from helpers import until

from mullet.simulators.ports import free_port

FD_LIMIT = 1024
IDLE_SOCKETS = 1_100
SLOWLORIS_SOCKETS = 500
API_MAX_CONNECTIONS = 400
HEADER_TIMEOUT_S = 2.0


@pytest.fixture(autouse=True)
def _room_for_the_flood() -> None:
    """The test process holds ~1,800 sockets of its own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * (IDLE_SOCKETS + SLOWLORIS_SOCKETS)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"needs a hard RLIMIT_NOFILE of {wanted}, have {hard}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _mutate(data: dict) -> None:
    data["http_api"] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": free_port(),
        "max_connections": API_MAX_CONNECTIONS,
        "header_timeout_s": HEADER_TIMEOUT_S,
        "idle_timeout_s": 5.0,
    }
    data["metrics"].update(header_timeout_s=HEADER_TIMEOUT_S)
    data["control"].update(release_after_s=1.0)


def _open(port: int, count: int) -> list[socket.socket]:
    """`count` connections (those the kernel completes); non-blocking once open."""
    opened = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            continue
        sock.setblocking(False)
        opened.append(sock)
    return opened


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _http_get(port: int, path: str, timeout_s: float = 5.0) -> int:
    """Status code of a plain GET; raises OSError when refused, reset or timed out."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = sock.recv(64)
    if not head.startswith(b"HTTP/1.1 "):
        raise OSError(f"no HTTP answer: {head!r}")
    return int(head.split()[1])


async def _answers(port: int, path: str, timeout_s: float) -> None:
    """Until a GET of `path` is answered 200 (a refused or dropped try is retried)."""
    deadline_s = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline_s:
        try:
            if await asyncio.to_thread(_http_get, port, path) == 200:
                return
        except OSError as exc:
            last = exc
        await asyncio.sleep(0.2)  # polling another process's listener
    raise AssertionError(f"{path} on {port} not answered in {timeout_s} s (last: {last!r})")


async def _armed_stage_1(run: Faulty) -> set[str]:
    item = await run.observer.wait_for(
        lambda m: (
            m.topic == run.topics.daemon_plan
            and any(d["trip_stage"] == 1 for d in json.loads(m.payload)["groups"].values())
        ),
        10,
        what="stage 1 armed",
    )
    armed = {g for g, d in json.loads(item.payload)["groups"].items() if d["trip_stage"] == 1}
    await until(lambda: all(run.site.groups[g].trip_stage == 1 for g in armed), 5, "controllers armed")
    return armed


async def test_idle_and_slowloris_floods_leave_the_trip_and_metrics_working_at_a_1024_fd_limit(
    mqtt_broker, tmp_path
) -> None:
    from mullet.simulators.meter import FrequencyScript

    async with faulty_site(mqtt_broker, tmp_path, _mutate) as run:
        pid = run.daemon.pid
        api_port, metrics_port = run.config.http_api.port, run.config.metrics.port
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
        await _answers(api_port, "/v1/status", 10)
        armed = await _armed_stage_1(run)
        log_lines_before = len(run.log_path.read_text().splitlines())
        fds_before = _fds(pid)

        # 500 slowloris connections first (they get in), then 1,100 that never send a byte.
        slow = await asyncio.to_thread(_open, api_port, SLOWLORIS_SOCKETS)
        request = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200

        async def drip() -> None:
            for index in range(len(request)):
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(request[index : index + 1])
                await asyncio.sleep(0.5)  # the attacker's pace, one byte a socket every 0.5 s

        dripping = asyncio.create_task(drip())
        idle = await asyncio.to_thread(_open, api_port, IDLE_SOCKETS)
        peak_fds = max(fds_before, _fds(pid))
        try:
            # The trip fires during the flood, and /metrics answers.
            seen = len(run.observer.received)
            run.site.frequency = FrequencyScript(59.8)
            await run.observer.wait_for(lambda m: m.topic == run.topics.trip, 10, seen, what="the trip")
            await until(
                lambda: all(run.site.groups[g].commanded == "curtail" for g in armed), 5, "armed groups shed"
            )
            await _answers(metrics_port, "/metrics", 10)
            peak_fds = max(peak_fds, _fds(pid))

            # Every slowloris and idle connection is closed by the daemon, none kept past the timeout.
            everyone = slow + idle
            await until(
                lambda: all(_closed_by_peer(s) for s in everyone),
                10 * HEADER_TIMEOUT_S + 20,
                "every flood connection closed by the daemon",
            )
            peak_fds = max(peak_fds, _fds(pid))
            await _answers(api_port, "/v1/status", 10)
            samples = await run.metrics()
        finally:
            dripping.cancel()
            for sock in slow + idle:
                sock.close()
            run.site.frequency = FrequencyScript(60.0)

        refused = samples.get('mullet_http_connections_closed_total{listener="api",reason="limit"}', 0.0)
        timed_out = samples.get(
            'mullet_http_connections_closed_total{listener="api",reason="header_timeout"}', 0.0
        )
        assert refused + timed_out >= len(slow) + len(idle), samples
        assert timed_out >= API_MAX_CONNECTIONS - 10  # the slowloris ones that got in
        assert peak_fds < FD_LIMIT - 100, peak_fds

        # The log says it in a few lines, not one per connection or per failed accept.
        lines = run.log_path.read_text().splitlines()[log_lines_before:]
        accept_errors = [line for line in lines if "out of system resource" in line]
        assert len(accept_errors) <= 5, accept_errors[:3]
        assert len(lines) <= 60, "\n".join(lines[:80])
        print(
            f"\nflood: {len(slow)} slowloris + {len(idle)} idle on the API at a {FD_LIMIT}-fd limit:"
            f" {refused:.0f} refused at accept, {timed_out:.0f} header timeouts; daemon fds {fds_before}"
            f" before, peak {peak_fds}; {len(lines)} log lines; trip fired and /metrics answered"
        )


async def test_an_idle_flood_on_metrics_is_timed_out_and_scrapes_answer_again(mqtt_broker, tmp_path) -> None:
    async with faulty_site(mqtt_broker, tmp_path, _mutate) as run:
        pid = run.daemon.pid
        metrics_port = run.config.metrics.port
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
        idle = await asyncio.to_thread(_open, metrics_port, 300)
        try:
            await until(lambda: all(_closed_by_peer(s) for s in idle), 30, "idle scrapers closed")
            await _answers(metrics_port, "/metrics", 10)
        finally:
            for sock in idle:
                sock.close()
        samples = await run.metrics()
        cap = run.config.metrics.max_connections
        closed = {
            reason: samples.get(
                f'mullet_http_connections_closed_total{{listener="metrics",reason="{reason}"}}', 0.0
            )
            for reason in ("limit", "header_timeout")
        }
        assert closed["header_timeout"] >= cap, closed
        assert closed["limit"] + closed["header_timeout"] >= len(idle), closed
        assert _fds(pid) < 200
