"""Reading governance state: articles and versions, each article's status, what is due for
review, an article's history and the diff between two of its versions."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from kb.errors import ArticleNotFound, VersionNotFound
from kb.freshness import Freshness, freshness
from kb.models import Approval, Article, ArticleVersion, Retirement, Review, utcnow
from kb.serving import is_pending, retired_map, served_map, served_version


def get_article(session: Session, *, article_id: str) -> Article:
    article = session.get(Article, article_id)
    if article is None:
        raise ArticleNotFound(article_id)
    return article


def get_version(session: Session, *, article_id: str, number: int) -> ArticleVersion:
    article = get_article(session, article_id=article_id)
    version = session.exec(
        select(ArticleVersion).where(
            ArticleVersion.article_id == article_id, ArticleVersion.number == number
        )
    ).first()
    if version is None:
        raise VersionNotFound(article_id, number, article.latest_version or None)
    return version


def approvals_of(session: Session, *, article_id: str) -> dict[int, Approval]:
    """Version number -> its approval, for every approved version of the article."""
    rows = session.exec(select(Approval).where(Approval.article_id == article_id)).all()
    return {a.version_number: a for a in rows}


@dataclass(frozen=True)
class ArticleStatus:
    id: str
    title: str
    owner: str
    risk: str
    locale: str
    state: str  # draft | pending | approved | approved+pending | retired
    latest_version: int
    served_version: int | None
    pending_version: int | None
    removed_from_source: bool
    freshness: Freshness | None
    source_path: str | None

    def as_dict(self) -> dict[str, Any]:
        f = self.freshness
        return {
            "id": self.id, "title": self.title, "owner": self.owner, "risk": self.risk,
            "locale": self.locale, "state": self.state, "latest_version": self.latest_version,
            "served_version": self.served_version, "pending_version": self.pending_version,
            "removed_from_source": self.removed_from_source, "source_path": self.source_path,
            "last_verified": f.anchor.isoformat() if f else None,
            "due_at": f.due_at.isoformat() if f else None,
            "stale": f.stale if f else False,
        }


def statuses(
    session: Session, *, article_id: str | None = None, now: datetime | None = None
) -> list[ArticleStatus]:
    """The governance state of one article or of all (sorted by id)."""
    now = now or utcnow()
    scope: list[str] | None = None  # every article
    if article_id is not None:
        articles: Sequence[Article] = [get_article(session, article_id=article_id)]
        scope = [article_id]
    else:
        articles = session.exec(select(Article).order_by(col(Article.id))).all()
    served_num = served_map(session, article_ids=scope)
    retired = retired_map(session, article_ids=scope)
    approval_query = select(Approval)
    review_query = select(Review)
    if scope is not None:
        approval_query = approval_query.where(col(Approval.article_id).in_(scope))
        review_query = review_query.where(col(Review.article_id).in_(scope))
    approvals: dict[tuple[str, int], Approval] = {
        (a.article_id, a.version_number): a for a in session.exec(approval_query)
    }
    reviews: dict[str, list[Review]] = {}
    for r in session.exec(review_query):
        reviews.setdefault(r.article_id, []).append(r)
    served_rows = {
        v.article_id: v
        for v in session.exec(select(ArticleVersion).where(
            col(ArticleVersion.article_id).in_(list(served_num))))
        if served_num.get(v.article_id) == v.number
    }
    out = []
    for a in articles:
        served = served_rows.get(a.id)
        pending = (
            a.latest_version
            if is_pending(latest=a.latest_version, served=served_num.get(a.id, 0),
                          retired=retired.get(a.id, 0))
            else None
        )
        if served is not None:
            state = "approved+pending" if pending else "approved"
            fresh = freshness(served, approvals[(a.id, served.number)], reviews.get(a.id, []),
                              now)
        else:
            fresh = None
            if retired.get(a.id, 0) >= a.latest_version:
                state = "retired"
            elif a.meta.get("draft"):
                state = "draft"
            else:
                state = "pending"
        out.append(ArticleStatus(
            id=a.id, title=a.title, owner=a.owner, risk=a.risk, locale=a.locale, state=state,
            latest_version=a.latest_version, served_version=served.number if served else None,
            pending_version=pending, removed_from_source=a.removed_at is not None,
            freshness=fresh, source_path=a.source_path,
        ))
    return out


def stale_articles(
    session: Session,
    *,
    owner: str | None = None,
    due_within: timedelta | None = None,
    now: datetime | None = None,
) -> list[ArticleStatus]:
    """Served articles past their review date (or due within ``due_within``), most overdue
    first."""
    now = now or utcnow()
    horizon = now + (due_within or timedelta(0))
    rows = [
        s for s in statuses(session, now=now)
        if s.freshness is not None and s.freshness.due_at < horizon
        and (owner is None or s.owner == owner)
    ]
    return sorted(rows, key=lambda s: s.freshness.due_at if s.freshness else now)


def history(session: Session, *, article_id: str) -> dict[str, Any]:
    """Every version with its author, dates, approval, reviews and retirements."""
    article = get_article(session, article_id=article_id)
    versions = session.exec(
        select(ArticleVersion)
        .where(ArticleVersion.article_id == article_id)
        .order_by(col(ArticleVersion.number))
    ).all()
    approvals = approvals_of(session, article_id=article_id)
    reviews = session.exec(
        select(Review).where(Review.article_id == article_id).order_by(col(Review.at))
    ).all()
    retirements = session.exec(
        select(Retirement).where(Retirement.article_id == article_id).order_by(col(Retirement.at))
    ).all()
    served = served_version(session, article_id=article_id)
    return {
        "id": article.id,
        "title": article.title,
        "owner": article.owner,
        "served_version": served.number if served else None,
        "removed_from_source": article.removed_at.isoformat() if article.removed_at else None,
        "versions": [
            {
                "number": v.number,
                "content_sha256": v.content_sha256,
                "author": v.author,
                "created_at": v.created_at.isoformat(),
                "draft": bool(v.meta.get("draft")),
                "approval": (
                    {
                        "approver": approvals[v.number].approver,
                        "at": approvals[v.number].at.isoformat(),
                        "note": approvals[v.number].note,
                        "forced": approvals[v.number].forced,
                    }
                    if v.number in approvals else None
                ),
            }
            for v in versions
        ],
        "reviews": [
            {"version": r.version_number, "reviewer": r.reviewer, "at": r.at.isoformat(),
             "outcome": r.outcome, "note": r.note}
            for r in reviews
        ],
        "retirements": [
            {"up_to_version": r.up_to_version, "by": r.by, "at": r.at.isoformat(),
             "note": r.note}
            for r in retirements
        ],
    }


def diff(session: Session, *, article_id: str, a: int, b: int) -> str:
    """Unified diff between two versions of an article."""
    va = get_version(session, article_id=article_id, number=a)
    vb = get_version(session, article_id=article_id, number=b)
    lines = difflib.unified_diff(
        va.text.splitlines(keepends=True),
        vb.text.splitlines(keepends=True),
        fromfile=f"{article_id}@v{a}",
        tofile=f"{article_id}@v{b}",
    )
    return "".join(lines)
