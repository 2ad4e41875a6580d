"""The demo knowledge base tells the same story on any date.

The demo articles carry fixed ``last_reviewed`` dates, written as of :data:`DEMO_AS_OF`.
Measured from a later day, more and more of them would turn stale. ``kb demo`` therefore
replays each article's last review *relative to the day it runs*: an article last reviewed
40 days before ``DEMO_AS_OF`` gets a recorded review 40 days before today. The same articles
are then stale, due soon or fresh whatever the date. The replayed reviews are ordinary,
audited review records by the demo's admin, with a note that says what they are.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlmodel import Session

from kb import governance
from kb.sync import sync_folder

DEMO_AS_OF = date(2026, 12, 1)  # the day the demo content's review dates describe
REPLAY_NOTE = "demo: last review replayed relative to today (content dated as of {as_of})"


def replay_review_dates(session: Session, *, reviewer: str, now: datetime,
                        as_of: date = DEMO_AS_OF,
                        article_ids: Collection[str] | None = None) -> list[str]:
    """Record, for every served article (of ``article_ids``, default all) with a
    ``last_reviewed`` date, a verified review at the same distance before ``now`` as that
    date was before ``as_of``. Returns the ids."""
    shift = now.date() - as_of
    if shift <= timedelta(0):
        return []  # on or before the content's own date its review dates are already right
    done = []
    for s in governance.statuses(session, now=now):
        if s.served_version is None or (article_ids is not None and s.id not in article_ids):
            continue
        served = governance.get_version(session, article_id=s.id, number=s.served_version)
        declared = served.meta.get("last_reviewed")
        if not declared:
            continue
        at = datetime.combine(date.fromisoformat(declared) + shift, time.min, tzinfo=UTC)
        governance.review(session, article_id=s.id, reviewer=reviewer, outcome="verified",
                          note=REPLAY_NOTE.format(as_of=as_of.isoformat()), now=at)
        done.append(s.id)
    return done


def bootstrap(session: Session, *, root: Path, now: datetime, author: str = "import",
              approver: str = "bootstrap", as_of: date = DEMO_AS_OF) -> list[str]:
    """Sync a folder, approve the import and replay its review dates relative to ``now``:
    the knowledge base an eval workspace, a benchmark or a test starts from, the same on
    any date. Returns the approved article ids."""
    sync_folder(session, root=root, author=author, now=now)
    bulk = governance.approve_all(session, approver=approver, allow_self=True, now=now)
    approved = [a for a, _ in bulk.approved]
    replay_review_dates(session, reviewer=approver, now=now, as_of=as_of,
                        article_ids=set(approved))
    return approved
