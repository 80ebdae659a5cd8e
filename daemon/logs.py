"""structlog set-up: JSON lines for journald/Loki when stdout is not a TTY, readable output on a TTY.

pymodbus and paho log through stdlib logging. Their own lines are kept out of the daemon's log unless
asked for (`mulletd run --library-log-level`): a meter answering garbage made pymodbus write a hex dump
per poll (150-340 lines a minute at 50 Hz), while the driver logs the meter's state once per change.
What is let through goes through the same renderer, so an operator reads one format.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

# Off unless asked for: their state changes are logged once by our drivers (drivers/meter.py, pdu.py).
LIBRARY_LOGGERS = ("pymodbus", "paho")
# Other third-party chatter (reconnect attempts, per-packet traces) stays at warning or above; aiomqtt
# logs as "mqtt".
_NOISY = ("mqtt", "aiomqtt", "amqtt", "transitions")
# asyncio's "socket.accept() out of system resource" came ~2,240 times a second with the fds gone.
ASYNCIO_REPEAT_S = 10.0


def configure_logging(
    level: str = "info", *, json_output: bool | None = None, library_level: str = "off"
) -> None:
    """`library_level`: "off", or the level from which pymodbus' and paho's own lines are let through."""
    if json_output is None:
        json_output = not sys.stdout.isatty()
    level_no = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info if json_output else structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)
    library_no = library_level_number(library_level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_no)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(max(level_no, logging.WARNING))
    asyncio_logger = logging.getLogger("asyncio")
    for old in [f for f in asyncio_logger.filters if isinstance(f, RepeatFilter)]:
        asyncio_logger.removeFilter(old)
    asyncio_logger.addFilter(RepeatFilter(ASYNCIO_REPEAT_S))


def library_level_number(name: str) -> int:
    """The stdlib level for a `--library-log-level` value; "off" is above every level."""
    if name.lower() == "off":
        return logging.CRITICAL + 1
    try:
        return logging.getLevelNamesMapping()[name.upper()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r} (off, debug, info, warning, error)") from None


class RateLimiter:
    """At most one line per key every `every_s`; the line that goes out says how many were held back.

    `allow(key)` returns None to drop the line, else the count suppressed since the last one (0 the
    first time)."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last_s: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        now_s = self._clock()
        last_s = self._last_s.get(key)
        if last_s is not None and now_s - last_s < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last_s[key] = now_s
        return self._held.pop(key, 0)

    def knows(self, key: str) -> bool:
        return key in self._last_s

    @property
    def keys(self) -> int:
        return len(self._last_s)


class RepeatFilter(logging.Filter):
    """Lets a stdlib record through once per `every_s` per message (its first line, which for asyncio's
    loop errors carries no per-socket detail); the next one says how many were dropped."""

    def __init__(self, every_s: float, max_keys: int = 256) -> None:
        super().__init__()
        self.limiter = RateLimiter(every_s)
        self.max_keys = max_keys

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg).split("\n", 1)[0][:120]
        if self.limiter.keys >= self.max_keys and not self.limiter.knows(key):
            key = "(other)"  # bounded: distinct messages beyond max_keys share one slot
        held = self.limiter.allow(key)
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg}\n({held} more like it since the last one not logged)"
        return True
