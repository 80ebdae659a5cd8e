"""Free TCP ports for tests and demos that need a port number before anything listens."""

from __future__ import annotations

import random
import socket

# Below Linux's default ephemeral range (net.ipv4.ip_local_port_range = 32768-60999): a port handed
# out by bind(0) comes from that range, and so does the source port of every outgoing connection the
# tests open meanwhile (MQTT, Modbus), which could take it before the listener binds. A port from
# here is only taken by another free_port() caller, and the random pick makes that rare.
_LOW, _HIGH = 20000, 32767
_rng = random.SystemRandom()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago. Racy by nature: prefer binding port 0 where you can
    (the Modbus simulators do, and report `.port`); use this for processes such as mosquitto that
    need the number up front."""
    for _ in range(100):
        port = _rng.randint(_LOW, _HIGH)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: any free one
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something listens on host:port now (a TCP connect succeeds)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
