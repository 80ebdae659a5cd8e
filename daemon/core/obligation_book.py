"""The site's obligation book as the daemon builds it: the rules are policies/obligations.py.

Validation happens before anything is journaled or acknowledged; the book changes only after the
journal has the event on disk (SiteController.decide, then commit). The old names stay importable here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mullet.drivers.protocol import GridEvent
from mullet.policies import obligations
from mullet.policies.obligations import (
    DEFAULT_MAX_OBLIGATIONS,
    HISTORY_MAX,
    HISTORY_S,
    REJECTION_CODES,
    Decision,
    rejected,
)

if TYPE_CHECKING:
    from mullet.daemon.config import Config

__all__ = [
    "DEFAULT_MAX_OBLIGATIONS",
    "HISTORY_MAX",
    "HISTORY_S",
    "REJECTION_CODES",
    "Decision",
    "ObligationBook",
    "book_from_config",
    "rejected",
]


class ObligationBook(obligations.ObligationBook[GridEvent]):
    """The book of wire events, built from the site's config."""

    @classmethod
    def from_config(cls, config: Config) -> ObligationBook:
        return book_from_config(config)


def book_from_config(config: Config) -> ObligationBook:
    """The book of a site as configured: its interconnect, armed stages and program catalogue."""
    return ObligationBook(
        interconnect_kw=config.site.interconnect_kw,
        max_event_kw_factor=config.control.max_event_kw_factor,
        stages={s.stage: s.threshold_hz for s in config.trip_stages()},
        programs=config.program_catalogue(),
        firmware_sleep_s=config.control.firmware_sleep_s,
        max_obligations=config.control.max_obligations,
    )
