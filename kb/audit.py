"""The append-only audit log: every state change and every answer writes one event."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert
from sqlmodel import Session, col, select

from kb.console_models import CitationRollup, QueryRollup
from kb.errors import QueryNotFound
from kb.models import ArticleVersion, AuditEvent, QueryLog, utcnow


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


_QUERY_INSERT = insert(QueryLog.__table__)  # type: ignore[attr-defined]


def record_queries(conn: Connection, entries: list[dict[str, Any]]) -> None:
    """Store assist calls (questions already redacted) in one transaction and commit.

    A plain INSERT on a connection (no ORM objects), with the values bound as parameters so
    the compiled statement is cached: this runs on every answer. The daily roll-ups the
    health dashboard reads are kept in the same transaction.
    """
    conn.execute(_QUERY_INSERT, entries)
    add_to_rollups(conn, entries)
    conn.commit()


def _day(at: datetime) -> str:
    return (at.astimezone(UTC) if at.tzinfo else at).strftime("%Y-%m-%d")


_UPSERTS: dict[tuple[str, str], Any] = {}  # (dialect, table) -> statement, built once


def _upsert(conn: Connection, table: Any, keys: list[str], rows: list[dict[str, Any]]) -> None:
    """Add each row's ``n`` to its counter row (created at 0). The statement is built once per
    dialect and table: this runs on every answer."""
    if not rows:
        return
    statement = _UPSERTS.get((conn.dialect.name, table.name))
    if statement is None:
        from sqlalchemy.dialects import postgresql, sqlite

        dialect_insert = (postgresql.insert if conn.dialect.name == "postgresql"
                          else sqlite.insert)
        ins = dialect_insert(table)
        statement = ins.on_conflict_do_update(index_elements=keys,
                                              set_={"n": table.c.n + ins.excluded.n})
        _UPSERTS[(conn.dialect.name, table.name)] = statement
    conn.execute(statement, rows)


def add_to_rollups(conn: Connection, entries: list[dict[str, Any]]) -> None:
    """Count query-log rows into :class:`QueryRollup` and :class:`CitationRollup` (the
    caller commits). Sorted keys: concurrent writers take row locks in the same order."""
    outcomes: Counter[tuple[str, str, str]] = Counter()
    cited: Counter[tuple[str, str]] = Counter()
    for e in entries:
        day = _day(e["at"])
        outcomes[(day, e["audience"], e["status"])] += 1
        for s in e.get("served") or ():
            cited[(day, s["article_id"])] += 1
    _upsert(conn, QueryRollup.__table__, ["day", "audience", "status"],  # type: ignore[attr-defined]
            [{"day": d, "audience": a, "status": st, "n": n}
             for (d, a, st), n in sorted(outcomes.items())])
    _upsert(conn, CitationRollup.__table__, ["day", "article_id"],  # type: ignore[attr-defined]
            [{"day": d, "article_id": a, "n": n} for (d, a), n in sorted(cited.items())])


def get_query(session: Session, *, query_id: str, audience: str | None = None) -> QueryLog:
    """The logged query; with ``audience``, only one asked by that audience: another
    audience's query is :class:`QueryNotFound`, by the same query as an unknown id."""
    statement = select(QueryLog).where(QueryLog.id == query_id)
    if audience is not None:
        statement = statement.where(QueryLog.audience == audience)
    entry = session.exec(statement).first()
    if entry is None:
        raise QueryNotFound(query_id)
    return entry


def replay(session: Session, *, query_id: str) -> tuple[QueryLog, list[dict[str, Any]]]:
    """The query and exactly the text it served, each passage checked against its hash."""
    entry = get_query(session, query_id=query_id)
    passages = []
    for s in entry.served:
        version = session.exec(
            select(ArticleVersion).where(ArticleVersion.article_id == s["article_id"],
                                         ArticleVersion.number == s["version"])
        ).one()
        text = version.text[s["start"]:s["end"]]
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        passages.append({**s, "text": text, "verified": digest == s["passage_sha256"]})
    return entry, passages
