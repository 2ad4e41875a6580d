"""The append-only audit log: every state change and every answer writes one event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from kb.models import AuditEvent, utcnow


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    article_id: str | None = None,
    version: int | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Add an audit event to the session (committed with the change it describes)."""
    event = AuditEvent(
        actor=actor,
        action=action,
        article_id=article_id,
        version_number=version,
        details=details or {},
        at=at or utcnow(),
    )
    session.add(event)
    return event


def events(
    session: Session,
    *,
    article_id: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> Sequence[AuditEvent]:
    """Newest events first, optionally for one article or one action."""
    query = select(AuditEvent)
    if article_id is not None:
        query = query.where(AuditEvent.article_id == article_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    query = query.order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc()).limit(limit)
    return session.exec(query).all()
