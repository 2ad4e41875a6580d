"""The review clock: when a served version was last verified and when it falls due."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from kb.articles import safe_review_days
from kb.models import Approval, ArticleVersion, Review


@dataclass(frozen=True)
class Freshness:
    anchor: datetime  # last approval or verified review that counts
    due_at: datetime
    stale: bool


def _as_datetime(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=UTC)


def clock(
    *, meta: dict[str, Any], approved_at: datetime, verified_at: Sequence[datetime],
    now: datetime,
) -> Freshness:
    """When a served version was last verified and when it falls due.

    The clock starts at the approval of the served version, or at the `last_reviewed` date in
    its front matter if that is earlier (an import does not make old content fresh), and
    restarts at every `verified` review of that version.
    """
    anchor = approved_at
    declared = meta.get("last_reviewed")
    if isinstance(declared, str):
        with contextlib.suppress(ValueError):  # a bad stored date does not move the clock
            anchor = min(anchor, _as_datetime(date.fromisoformat(declared)))
    for at in verified_at:
        anchor = max(anchor, at)
    # Clamped: no value stored by an older parser can overflow a later read.
    due = anchor + timedelta(days=safe_review_days(meta.get("review_every_days")))
    return Freshness(anchor=anchor, due_at=due, stale=now > due)


def freshness(
    served: ArticleVersion, approval: Approval, reviews: Sequence[Review], now: datetime
) -> Freshness:
    """:func:`clock` for a served version, its approval and the article's reviews."""
    verified = [r.at for r in reviews
                if r.version_number == served.number and r.outcome == "verified"]
    return clock(meta=served.meta, approved_at=approval.at, verified_at=verified, now=now)
