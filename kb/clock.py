"""Time is an input: every rule that depends on "now" takes a clock.

A clock is a zero-argument callable returning an aware UTC ``datetime``. The system clock is
the default; tests, demos and replays pass a fixed or shifted one, so governance, the answer
path and health tell the same story on any date.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def fixed_clock(at: datetime) -> Clock:
    """A clock that always reads ``at`` (naive values are taken as UTC)."""
    pinned = at if at.tzinfo else at.replace(tzinfo=UTC)

    def now() -> datetime:
        return pinned

    return now


def shifted_clock(offset: timedelta, base: Clock = system_clock) -> Clock:
    """``base`` moved by ``offset`` (e.g. a year ahead) and still ticking."""

    def now() -> datetime:
        return base() + offset

    return now


def clock_for(pinned: datetime | None) -> Clock:
    """The clock a process uses: pinned when the settings say so, else the wall clock."""
    return fixed_clock(pinned) if pinned is not None else system_clock
