"""The governance acts, as storage primitives: approve, review, retire.

Every function is keyword-only and takes the session; every state change writes an audit
event, advances the governance clock and commits once, so a refused or failed action changes
nothing. The faces call :mod:`kb.workflows`, which checks the actor's role, team and identity
first and then calls these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from kb import audit
from kb.errors import Conflict, Forbidden, NotApproved, VersionNotFound
from kb.models import Approval, Article, ArticleVersion, Retirement, Review, utcnow
from kb.serving import pending_versions, retired_map, served_version, tick
from kb.status import approvals_of, get_article, get_version


def lock_article(session: Session, *, article_id: str) -> Article:
    """The article, its row locked until this transaction ends (``SELECT ... FOR UPDATE``;
    SQLite serialises writers anyway). Two processes acting on one article at once then take
    turns: the second sees what the first committed and is refused with :class:`Conflict`
    (e.g. "already approved by ..."), instead of both passing the checks and both writing."""
    get_article(session, article_id=article_id)  # ArticleNotFound, as everywhere
    return session.exec(
        select(Article).where(col(Article.id) == article_id).with_for_update()
        .execution_options(populate_existing=True)).one()


def check_approvable(session: Session, article: Article, version: ArticleVersion) -> None:
    """:class:`Conflict` unless the version can be approved at all (not yet approved, the
    newest, not a draft). Who may approve it is :mod:`kb.workflows`' business."""
    existing = approvals_of(session, article_id=article.id)
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
    article = lock_article(session, article_id=article_id)
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
    tick(session)
    session.commit()
    return approval


@dataclass
class BulkApproval:
    approved: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)


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
    return approve_each_pending(session, lambda v: approve(
        session, article_id=v.article_id, version=v.number, approver=approver, note=note,
        allow_self=allow_self, now=now))


def approve_each_pending(
    session: Session, approve_one: Callable[[ArticleVersion], object],
) -> BulkApproval:
    """Run ``approve_one`` on every pending version, each in its own transaction: a version
    a rule refuses (:class:`Conflict`, :class:`Forbidden`) is rolled back, skipped and
    reported, never half-approved."""
    result = BulkApproval()
    for v in pending_versions(session):
        try:
            approve_one(v)
        except (Conflict, Forbidden) as exc:
            session.rollback()
            result.skipped.append((v.article_id, v.number, str(exc)))
        else:
            result.approved.append((v.article_id, v.number))
    return result


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
    tick(session)
    session.commit()
    return row


def retire(
    session: Session, *, article_id: str, by: str, note: str = "", now: datetime | None = None
) -> Retirement:
    """Stop serving the article (every version so far). A later version can be approved again."""
    article = lock_article(session, article_id=article_id)
    retired = retired_map(session, article_ids=[article_id]).get(article_id, 0)
    if not article.latest_version or retired >= article.latest_version:
        raise Conflict(f"'{article_id}' is already retired; nothing to do")
    at = now or utcnow()
    row = Retirement(article_id=article_id, up_to_version=article.latest_version, by=by, at=at,
                     note=note)
    session.add(row)
    audit.record(session, actor=by, action="article_retired", article_id=article_id,
                 version=article.latest_version, details={"note": note}, at=at)
    tick(session)
    session.commit()
    return row
