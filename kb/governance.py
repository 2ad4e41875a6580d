"""Governance rules: approve, review, retire, what is served, what is stale, history, diff.

Every function is keyword-only and takes the session; every state change writes an audit
event and commits once, so a refused or failed action changes nothing.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlmodel import Session, col, func, select, update

from kb import audit
from kb.articles import safe_review_days
from kb.errors import ArticleNotFound, Conflict, Forbidden, NotApproved, VersionNotFound
from kb.models import (
    Approval,
    Article,
    ArticleVersion,
    GovernanceClock,
    Retirement,
    Review,
    utcnow,
)


def _tick(session: Session) -> None:
    """Advance the governance clock inside the current transaction."""
    session.exec(update(GovernanceClock).where(col(GovernanceClock.id) == 1)
                 .values(tick=col(GovernanceClock.tick) + 1))


def governance_tick(conn: Connection) -> int:
    """The governance clock: changes whenever what is served (or its review state) changes.

    Read with a plain statement on a connection: it runs once per answer.
    """
    return int(conn.exec_driver_sql("SELECT tick FROM governance_clock WHERE id = 1").scalar_one())


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


def _retired_up_to(session: Session, article_id: str) -> int:
    value = session.exec(
        select(func.max(Retirement.up_to_version)).where(Retirement.article_id == article_id)
    ).one()
    return int(value or 0)


def _approvals(session: Session, article_id: str) -> dict[int, Approval]:
    rows = session.exec(select(Approval).where(Approval.article_id == article_id)).all()
    return {a.version_number: a for a in rows}


def served_version(session: Session, *, article_id: str) -> ArticleVersion | None:
    """The newest approved, non-retired version of the article (None if nothing is served)."""
    retired = _retired_up_to(session, article_id)
    number = session.exec(
        select(func.max(Approval.version_number)).where(
            Approval.article_id == article_id, Approval.version_number > retired
        )
    ).one()
    if not number:
        return None
    return session.exec(
        select(ArticleVersion).where(
            ArticleVersion.article_id == article_id, ArticleVersion.number == number
        )
    ).one()


def served_numbers(session: Session) -> dict[str, int]:
    """Article id -> served version number, for every article that has one (one query each)."""
    retired = dict(
        session.exec(
            select(Retirement.article_id, func.max(Retirement.up_to_version)).group_by(
                col(Retirement.article_id)
            )
        ).all()
    )
    served: dict[str, int] = {}
    for article_id, number in session.exec(select(Approval.article_id, Approval.version_number)):
        if number > retired.get(article_id, 0) and number > served.get(article_id, 0):
            served[article_id] = number
    return served


# --- approvals ---------------------------------------------------------------------------


def check_approvable(session: Session, article: Article, version: ArticleVersion) -> None:
    """:class:`Conflict` unless the version can be approved at all (not yet approved, the
    newest, not a draft). Who may approve it is :mod:`kb.workflows`' business."""
    existing = _approvals(session, article.id)
    if version.number in existing:
        a = existing[version.number]
        raise Conflict(
            f"version {version.number} of '{article.id}' was already approved by {a.approver} "
            f"on {a.at:%Y-%m-%d %H:%M}Z; nothing to do"
        )
    if version.number < article.latest_version:
        raise Conflict(
            f"version {version.number} of '{article.id}' is superseded by version "
            f"{article.latest_version}; review and approve version {article.latest_version} "
            "instead"
        )
    if version.meta.get("draft"):
        raise Conflict(
            f"version {version.number} of '{article.id}' is marked `draft: true`; remove the "
            "draft flag from the file, run `kb sync`, then approve the new version"
        )


def _check_approvable(
    session: Session, article: Article, version: ArticleVersion, approver: str,
    allow_self: bool,
) -> None:
    check_approvable(session, article, version)
    if not allow_self and version.author.strip().lower() == approver.strip().lower():
        raise Forbidden(
            f"{approver} authored version {version.number} of '{article.id}' and may not "
            "approve it (four-eyes rule); ask another approver, or set "
            "KB_ALLOW_SELF_APPROVAL=1 for a single-person team"
        )


def approve(
    session: Session,
    *,
    article_id: str,
    approver: str,
    version: int | None = None,
    note: str = "",
    allow_self: bool = False,
    forced: bool = False,
    now: datetime | None = None,
    details: dict[str, Any] | None = None,
) -> Approval:
    """Approve a pending version (default: the newest). It is served from now on.

    The storage primitive: the faces call :func:`kb.workflows.approve`, which checks the
    actor's role, team and identity first."""
    article = get_article(session, article_id=article_id)
    if not article.latest_version:
        raise VersionNotFound(article_id, version or 1, None)
    number = version if version is not None else article.latest_version
    target = get_version(session, article_id=article_id, number=number)
    _check_approvable(session, article, target, approver, allow_self)
    at = now or utcnow()
    approval = Approval(
        article_id=article_id,
        version_number=number,
        content_sha256=target.content_sha256,
        approver=approver,
        at=at,
        note=note,
        forced=forced,
    )
    session.add(approval)
    audit.record(
        session, actor=approver, action="version_approved", article_id=article_id,
        version=number,
        details={"content_sha256": target.content_sha256, "note": note, "forced": forced,
                 "author": target.author, **(details or {})},
        at=at,
    )
    _tick(session)
    session.commit()
    return approval


@dataclass
class BulkApproval:
    approved: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)


def pending_versions(session: Session) -> list[ArticleVersion]:
    """The newest version of every article that has not been approved (nor retired)."""
    approved = set(session.exec(select(Approval.article_id, Approval.version_number)).all())
    retired = dict(
        session.exec(
            select(Retirement.article_id, func.max(Retirement.up_to_version)).group_by(
                col(Retirement.article_id)
            )
        ).all()
    )
    rows = session.exec(
        select(ArticleVersion)
        .join(Article, col(Article.id) == col(ArticleVersion.article_id))
        .where(col(ArticleVersion.number) == col(Article.latest_version))
        .order_by(col(ArticleVersion.article_id))
    ).all()
    return [
        v for v in rows
        if (v.article_id, v.number) not in approved and v.number > retired.get(v.article_id, 0)
    ]


def approve_all(
    session: Session,
    *,
    approver: str,
    note: str = "bulk approval",
    allow_self: bool = False,
    now: datetime | None = None,
) -> BulkApproval:
    """Approve every pending version (bootstrapping an import). Drafts and versions the
    approver wrote (unless self-approval is allowed) are skipped and reported."""
    result = BulkApproval()
    for v in pending_versions(session):
        try:
            approve(session, article_id=v.article_id, version=v.number, approver=approver,
                    note=note, allow_self=allow_self, now=now)
        except (Conflict, Forbidden) as exc:
            session.rollback()
            result.skipped.append((v.article_id, v.number, str(exc)))
        else:
            result.approved.append((v.article_id, v.number))
    return result


# --- reviews and retirement --------------------------------------------------------------


def review(
    session: Session,
    *,
    article_id: str,
    reviewer: str,
    outcome: str = "verified",
    note: str = "",
    now: datetime | None = None,
) -> Review:
    """Record a re-verification of the served version; ``verified`` restarts the review clock."""
    if outcome not in ("verified", "needs_update"):
        raise Conflict(f"unknown review outcome '{outcome}'; use verified or needs_update")
    served = served_version(session, article_id=article_id)
    if served is None:
        raise NotApproved(
            f"'{article_id}' has no approved version to review; approve a version first "
            f"(`kb approve {article_id} --as USER`)"
        )
    at = now or utcnow()
    row = Review(article_id=article_id, version_number=served.number, reviewer=reviewer,
                 at=at, outcome=outcome, note=note)
    session.add(row)
    audit.record(session, actor=reviewer, action="article_reviewed", article_id=article_id,
                 version=served.number, details={"outcome": outcome, "note": note}, at=at)
    _tick(session)
    session.commit()
    return row


def retire(
    session: Session, *, article_id: str, by: str, note: str = "", now: datetime | None = None
) -> Retirement:
    """Stop serving the article (every version so far). A later version can be approved again."""
    article = get_article(session, article_id=article_id)
    if not article.latest_version or _retired_up_to(session, article_id) >= article.latest_version:
        raise Conflict(f"'{article_id}' is already retired; nothing to do")
    at = now or utcnow()
    row = Retirement(article_id=article_id, up_to_version=article.latest_version, by=by, at=at,
                     note=note)
    session.add(row)
    audit.record(session, actor=by, action="article_retired", article_id=article_id,
                 version=article.latest_version, details={"note": note}, at=at)
    _tick(session)
    session.commit()
    return row


# --- status, staleness, history, diff ----------------------------------------------------


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
    if article_id is not None:
        articles: Sequence[Article] = [get_article(session, article_id=article_id)]
    else:
        articles = session.exec(select(Article).order_by(col(Article.id))).all()
    ids = [a.id for a in articles]
    approvals: dict[tuple[str, int], Approval] = {
        (a.article_id, a.version_number): a
        for a in session.exec(select(Approval).where(col(Approval.article_id).in_(ids)))
    }
    reviews: dict[str, list[Review]] = {}
    for r in session.exec(select(Review).where(col(Review.article_id).in_(ids))):
        reviews.setdefault(r.article_id, []).append(r)
    retired = dict(
        session.exec(
            select(Retirement.article_id, func.max(Retirement.up_to_version))
            .where(col(Retirement.article_id).in_(ids))
            .group_by(col(Retirement.article_id))
        ).all()
    )
    served_num: dict[str, int] = {}
    for (aid, n) in approvals:
        if n > retired.get(aid, 0) and n > served_num.get(aid, 0):
            served_num[aid] = n
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
            if a.latest_version > max(served_num.get(a.id, 0), retired.get(a.id, 0))
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
    approvals = _approvals(session, article_id)
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
    session: Session, *, article_ids: Sequence[str], now: datetime | None = None
) -> dict[str, ServedInfo]:
    """The served version (number, hash, approved metadata, freshness) of each article.

    On the answer path: two plain-column queries, no ORM objects.
    """
    if not article_ids:
        return {}
    now = now or utcnow()
    ids = list(set(article_ids))
    retired = (
        select(func.coalesce(func.max(Retirement.up_to_version), 0))
        .where(Retirement.article_id == Approval.article_id)
        .scalar_subquery()
    )
    rows = session.exec(
        select(  # type: ignore[call-overload]
            Approval.article_id, Approval.version_number, Approval.content_sha256,
            Approval.at, ArticleVersion.meta)
        .join(ArticleVersion, (col(ArticleVersion.article_id) == col(Approval.article_id))
              & (col(ArticleVersion.number) == col(Approval.version_number)))
        .where(col(Approval.article_id).in_(ids), col(Approval.version_number) > retired)
    ).all()
    approved: dict[str, list[tuple[int, str, datetime, dict[str, Any]]]] = {}
    for article_id, number, sha, at, meta in rows:
        approved.setdefault(article_id, []).append((number, sha, at, dict(meta)))
    for versions in approved.values():
        versions.sort(key=lambda v: -v[0])
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
