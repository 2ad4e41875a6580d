"""Flags: agents' reports on served answers, routed to the owner of the cited article."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from kb import audit
from kb.errors import Conflict, FlagNotFound, InvalidInput
from kb.models import Article, Flag, QueryLog, utcnow
from kb.redact import redact

REASONS = ("wrong", "outdated", "unclear", "missing")
RESOLUTIONS = ("fixed", "no_change", "duplicate", "wont_fix")


def create_flag(
    session: Session,
    *,
    query: QueryLog,
    by: str,
    reason: str,
    comment: str = "",
    passage: int = 0,
    default_owner: str = "support-tier2",
    now: datetime | None = None,
) -> Flag:
    """Flag passage ``passage`` of an answered query (or the gap, for a query without one).

    The comment is stored redacted (:func:`kb.redact.redact`), as questions are."""
    if reason not in REASONS:
        raise InvalidInput(f"unknown reason '{reason}'; use one of {', '.join(REASONS)}")
    at = now or utcnow()
    served = query.served
    if served and not 0 <= passage < len(served):
        raise InvalidInput(f"the query served {len(served)} passages; passage must be "
                           f"between 0 and {len(served) - 1}")
    cited = served[passage] if served else None
    owner = query.escalate_to or default_owner
    if cited is not None:
        article = session.get(Article, cited["article_id"])
        owner = article.owner if article else owner
    row = Flag(
        query_id=query.id, article_id=cited["article_id"] if cited else None,
        version_number=cited["version"] if cited else None,
        start=cited["start"] if cited else None, end=cited["end"] if cited else None,
        owner=owner, reason=reason, comment=redact(comment), created_by=by, created_at=at,
    )
    session.add(row)
    session.flush()
    audit.record(session, actor=by, action="flag_created", article_id=row.article_id,
                 version=row.version_number,
                 details={"flag_id": row.id, "query_id": query.id, "reason": reason,
                          "owner": owner},
                 at=at)
    session.commit()
    return row


def resolve_flag(
    session: Session, *, flag_id: int, by: str, resolution: str, note: str = "",
    now: datetime | None = None,
) -> Flag:
    if resolution not in RESOLUTIONS:
        raise InvalidInput(f"unknown resolution '{resolution}'; use one of "
                           f"{', '.join(RESOLUTIONS)}")
    row = session.get(Flag, flag_id)
    if row is None:
        raise FlagNotFound(flag_id)
    if row.status != "open":
        raise Conflict(f"flag {flag_id} was already resolved by {row.resolved_by}")
    at = now or utcnow()
    row.status, row.resolved_by, row.resolved_at = "resolved", by, at
    row.resolution, row.resolution_note = resolution, note
    session.add(row)
    audit.record(session, actor=by, action="flag_resolved", article_id=row.article_id,
                 version=row.version_number,
                 details={"flag_id": flag_id, "resolution": resolution, "note": note}, at=at)
    session.commit()
    return row
