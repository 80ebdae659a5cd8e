"""Free TCP ports for tests and demos that need a port number before anything listens."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago. Racy by nature: prefer binding port 0 where you can
    (the Modbus simulators do, and report `.port`); use this for processes such as mosquitto that
    need the number up front."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
