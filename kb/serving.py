"""What is served: the newest approved version of an article above its latest retirement.

That rule is written once, as SQL (:func:`live_approval`); every question about served
versions — one article, a set, every article, what waits for approval, what the answer path
needs — asks it through :func:`served_map` or, on the answer path, :func:`served_info`.
The governance clock (:func:`governance_tick`) moves whenever what is served changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection
from sqlmodel import Session, col, func, select, update

from kb.audience import visible
from kb.freshness import Freshness, clock
from kb.models import Approval, Article, ArticleVersion, GovernanceClock, Retirement, Review, utcnow


def tick(session: Session) -> None:
    """Advance the governance clock inside the current transaction."""
    session.exec(update(GovernanceClock).where(col(GovernanceClock.id) == 1)
                 .values(tick=col(GovernanceClock.tick) + 1))


def governance_tick(conn: Connection) -> int:
    """The governance clock: changes whenever what is served (or its review state) changes.

    Read with a plain statement on a connection: it runs once per answer.
    """
    return int(conn.exec_driver_sql("SELECT tick FROM governance_clock WHERE id = 1").scalar_one())


def live_approval() -> ColumnElement[bool]:
    """The served-version rule, as a condition on :class:`Approval` rows: the approval is of
    a version above the article's latest retirement. The newest such approval is served."""
    retired = (
        select(func.coalesce(func.max(Retirement.up_to_version), 0))
        .where(Retirement.article_id == Approval.article_id)
        .scalar_subquery()
    )
    return col(Approval.version_number) > retired


def served_map(session: Session, *, article_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Article id -> served version number, for each of ``article_ids`` (default: every
    article) that has one. One query."""
    query = select(Approval.article_id, func.max(Approval.version_number)).where(live_approval())
    if article_ids is not None:
        query = query.where(col(Approval.article_id).in_(list(article_ids)))
    return {a: int(n) for a, n in session.exec(query.group_by(col(Approval.article_id)))}


def retired_map(session: Session, *, article_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Article id -> the last version retired, for each of ``article_ids`` (default: every
    article) that was ever retired. One query."""
    query = select(Retirement.article_id, func.max(Retirement.up_to_version))
    if article_ids is not None:
        query = query.where(col(Retirement.article_id).in_(list(article_ids)))
    return {a: int(n) for a, n in session.exec(query.group_by(col(Retirement.article_id)))}


def is_pending(*, latest: int, served: int, retired: int) -> bool:
    """The newest version waits for approval: it is neither served nor retired (``served``
    and ``retired`` are 0 when there is none)."""
    return latest > max(served, retired)


def served_version(session: Session, *, article_id: str) -> ArticleVersion | None:
    """The newest approved, non-retired version of the article (None if nothing is served)."""
    number = served_map(session, article_ids=[article_id]).get(article_id)
    if not number:
        return None
    return session.exec(
        select(ArticleVersion).where(
            ArticleVersion.article_id == article_id, ArticleVersion.number == number
        )
    ).one()


def served_numbers(session: Session) -> dict[str, int]:
    """Article id -> served version number, for every article that has one."""
    return served_map(session)


def pending_versions(session: Session) -> list[ArticleVersion]:
    """The newest version of every article that has not been approved (nor retired)."""
    served = served_map(session)
    retired = retired_map(session)
    rows = session.exec(
        select(ArticleVersion)
        .join(Article, col(Article.id) == col(ArticleVersion.article_id))
        .where(col(ArticleVersion.number) == col(Article.latest_version))
        .order_by(col(ArticleVersion.article_id))
    ).all()
    return [
        v for v in rows
        if is_pending(latest=v.number, served=served.get(v.article_id, 0),
                      retired=retired.get(v.article_id, 0))
    ]


@dataclass(frozen=True)
class ServedInfo:
    """What the answer path needs to know about an article's served version."""

    article_id: str
    version: int
    content_sha256: str
    meta: dict[str, Any]
    approved_at: datetime
    verified_at: tuple[datetime, ...]
    freshness: Freshness
    # The approved version served before this one (not retired since), if any: a server
    # whose index has not caught up with the newest approval yet keeps serving it.
    previous: ServedInfo | None = None

    def at(self, now: datetime) -> ServedInfo:
        """The same served version with its freshness as of ``now``."""
        if (now > self.freshness.due_at) == self.freshness.stale:
            return self  # the due date does not depend on ``now``; only staleness does
        fresh = clock(meta=self.meta, approved_at=self.approved_at,
                      verified_at=self.verified_at, now=now)
        previous = self.previous.at(now) if self.previous is not None else None
        return replace(self, freshness=fresh, previous=previous)


def served_info(
    session: Session, *, article_ids: Sequence[str], now: datetime | None = None,
    audience: str | None = None,
) -> dict[str, ServedInfo]:
    """The served version (number, hash, approved metadata, freshness) of each article.

    On the answer path: two plain-column queries, no ORM objects. With ``audience``, only the
    articles that audience may see: a hidden article is dropped right after the first query,
    so it leaves by the same path, with the same work, as one that does not exist.
    """
    if not article_ids:
        return {}
    now = now or utcnow()
    ids = list(set(article_ids))
    rows = session.exec(
        select(  # type: ignore[call-overload]
            Approval.article_id, Approval.version_number, Approval.content_sha256,
            Approval.at, ArticleVersion.meta)
        .join(ArticleVersion, (col(ArticleVersion.article_id) == col(Approval.article_id))
              & (col(ArticleVersion.number) == col(Approval.version_number)))
        .where(col(Approval.article_id).in_(ids), live_approval())
    ).all()
    approved: dict[str, list[tuple[int, str, datetime, dict[str, Any]]]] = {}
    for article_id, number, sha, at, meta in rows:
        approved.setdefault(article_id, []).append((number, sha, at, dict(meta)))
    for versions in approved.values():
        versions.sort(key=lambda v: -v[0])  # the newest is served, the next is its previous
    if audience is not None:  # the served (newest) version's audience decides
        approved = {a: vs for a, vs in approved.items()
                    if visible(vs[0][3].get("audience", []), audience)}
    verified: dict[tuple[str, int], list[datetime]] = {}
    if approved:
        for article_id, number, at in session.exec(
            select(Review.article_id, Review.version_number, Review.at).where(
                col(Review.article_id).in_(list(approved)), Review.outcome == "verified")
        ):
            verified.setdefault((article_id, number), []).append(at)

    def info(article_id: str, v: tuple[int, str, datetime, dict[str, Any]],
             previous: ServedInfo | None) -> ServedInfo:
        number, sha, at, meta = v
        return ServedInfo(
            article_id=article_id, version=number, content_sha256=sha, meta=meta,
            approved_at=at, verified_at=tuple(verified.get((article_id, number), [])),
            freshness=clock(meta=meta, approved_at=at,
                            verified_at=verified.get((article_id, number), []), now=now),
            previous=previous)

    return {
        article_id: info(article_id, versions[0],
                         info(article_id, versions[1], None) if len(versions) > 1 else None)
        for article_id, versions in approved.items()
    }
