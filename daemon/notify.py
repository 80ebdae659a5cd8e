"""systemd readiness and watchdog notifications (sd_notify(3)) over `$NOTIFY_SOCKET`, no dependency.

The protocol is one datagram of newline-separated `KEY=value` lines to the AF_UNIX socket systemd
names in `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace). Outside systemd the variable is
unset and every call is a no-op. `$WATCHDOG_USEC` (with `$WATCHDOG_PID`, when it names another process,
meaning the watchdog is not ours) gives the watchdog period.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger("mullet.notify")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_usec / 1e6 if watchdog_usec else None
        self.sent = 0
        self.failed = 0
        self._last_watchdog_mono_s = -float("inf")
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)  # never stall the loop; a full queue loses one ping

    @classmethod
    def from_environment(cls) -> Notifier:
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        return cls(address, int(usec) if usec.isdigit() and mine else None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines; True if the datagram went out (False, and logged, if not)."""
        if self._sock is None or self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            self._sock.sendto(message, target)
        except OSError as exc:
            self.failed += 1
            log.warning("sd_notify failed", error=str(exc), keys=sorted(fields))
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to its end.
        return self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> bool:
        return self.notify(STOPPING=1, STATUS="stopping")

    def watchdog(self, now_mono_s: float) -> bool:
        """Ping the watchdog after a completed control cycle, at most every quarter period."""
        if self.watchdog_s is None or now_mono_s - self._last_watchdog_mono_s < self.watchdog_s / 4:
            return False
        if self.notify(WATCHDOG=1):
            self._last_watchdog_mono_s = now_mono_s
            return True
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
