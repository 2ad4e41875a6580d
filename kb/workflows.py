"""The owners' workflow: approve, review, retire and resolve a flag — each one function,
used by the CLI and the HTTP API alike, so every face applies the same rules.

Each function takes the acting :class:`~kb.permissions.Actor` (an existing, active user) and
checks the role and the team that governs the article before anything is written. Approval
also runs the four-eyes rule on identities (a git author email linked to a user is that user)
and the pre-approval checks (conflicting statements, suite expectations that would break,
questions the article would stop answering), which live in the answer layer and are passed in
as ``checks``: ``kb`` imports nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlmodel import Session

from kb import flags, governance
from kb.approvals import BulkApproval, approve_each_pending
from kb.clock import Clock
from kb.errors import ApprovalBlocked, Forbidden, InvalidInput
from kb.identity import user_for_author
from kb.models import Approval, Flag, Retirement, Review
from kb.permissions import Actor, require, require_article, require_team


class FindingLike(Protocol):
    @property
    def kind(self) -> str: ...

    def as_dict(self) -> dict[str, Any]: ...


# (session, article_id, version number) -> what approving would change in served answers
ApprovalChecks = Callable[[Session, str, int], Sequence[FindingLike]]


@dataclass
class ApprovalOutcome:
    approval: Approval
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def forced(self) -> bool:
        return self.approval.forced


def check_four_eyes(session: Session, *, actor: Actor, author: str, article_id: str,
                    number: int, allow_self: bool) -> None:
    """The approver may not be the author: compared as people, not strings. An author that
    is not linked to any user cannot be checked, so the approval is refused."""
    if allow_self:
        return
    author_user = user_for_author(session, author=author)
    if author_user is None:
        raise Forbidden(
            f"version {number} of '{article_id}' was written by '{author}', who is not linked "
            "to any user, so the four-eyes rule cannot be checked; an admin links them with "
            f"`kb users link USER --alias '{author}' --as ADMIN` (or sync as a user with "
            "`kb sync --as USER`)")
    if author_user == actor.id:
        raise Forbidden(
            f"{actor.id} authored version {number} of '{article_id}'"
            + (f" (as '{author}')" if author.strip().lower() != actor.id else "")
            + " and may not approve it (four-eyes rule); ask another approver, or set "
            "KB_ALLOW_SELF_APPROVAL=1 for a single-person team")


def approve(
    session: Session, *, actor: Actor, article_id: str, version: int | None = None,
    note: str = "", force: bool = False, allow_self: bool = False,
    checks: ApprovalChecks | None = None, now: datetime | None = None,
    clock: Clock | None = None,
) -> ApprovalOutcome:
    """Approve a pending version (default: the newest) after every rule and check.

    Refused with :class:`Forbidden` (wrong role or team, four-eyes), :class:`Conflict`
    (superseded, draft, already approved) or :class:`ApprovalBlocked` (findings, unless
    ``force`` with a note: an audited override). The approval is stamped with ``now``, or
    with ``clock()`` read after the checks, when it commits."""
    article = governance.get_article(session, article_id=article_id)
    team = require_article(session, actor, "approve", article_id=article_id)
    number = version if version is not None else article.latest_version
    target = governance.get_version(session, article_id=article_id, number=number)
    governance.check_approvable(session, article, target)
    check_four_eyes(session, actor=actor, author=target.author, article_id=article_id,
                    number=number, allow_self=allow_self)
    findings = [f.as_dict() for f in (checks(session, article_id, number) if checks else [])]
    if findings and not force:
        raise ApprovalBlocked(findings=findings)
    if findings and not note.strip():
        raise InvalidInput("forcing an approval over findings needs a note saying why "
                           "(--note / note)")
    new_owner = str(target.meta.get("owner", ""))
    approval = governance.approve(
        session, article_id=article_id, version=number, approver=actor.id, note=note,
        allow_self=True, forced=bool(findings), now=now or (clock() if clock else None),
        details={"findings": findings, "governing_team": team,
                 **({"owner_change": {"from": team, "to": new_owner}}
                    if new_owner and new_owner != team else {})})
    return ApprovalOutcome(approval=approval, findings=findings)


def approve_all(
    session: Session, *, actor: Actor, note: str = "bulk approval", allow_self: bool = False,
    now: datetime | None = None,
) -> BulkApproval:
    """Approve every pending version the actor may approve (bootstrapping an import).

    Each version goes through the same rules as :func:`approve` (role, team, four-eyes,
    draft); a version a rule refuses is skipped and reported, never half-approved. The
    answer checks are not run: they compare against served text, which a bootstrap lacks."""
    require(actor, "approve")
    return approve_each_pending(session, lambda v: approve(
        session, actor=actor, article_id=v.article_id, version=v.number, note=note,
        allow_self=allow_self, now=now))


def review(
    session: Session, *, actor: Actor, article_id: str, outcome: str = "verified",
    note: str = "", now: datetime | None = None,
) -> Review:
    """Record a re-verification of the served version (restarts the review clock)."""
    governance.get_article(session, article_id=article_id)
    require_article(session, actor, "review", article_id=article_id)
    return governance.review(session, article_id=article_id, reviewer=actor.id,
                             outcome=outcome, note=note, now=now)


def retire(
    session: Session, *, actor: Actor, article_id: str, note: str = "",
    now: datetime | None = None,
) -> Retirement:
    """Stop serving the article."""
    governance.get_article(session, article_id=article_id)
    require_article(session, actor, "retire", article_id=article_id)
    return governance.retire(session, article_id=article_id, by=actor.id, note=note, now=now)


def resolve_flag(
    session: Session, *, actor: Actor, flag_id: int, resolution: str, note: str = "",
    now: datetime | None = None,
) -> Flag:
    """Close an agent's flag; only the team the flag landed on (or an admin) may."""
    require(actor, "resolve_flag")
    row = session.get(Flag, flag_id)
    if row is not None:
        require_team(actor, "resolve_flag", row.owner)
    return flags.resolve_flag(session, flag_id=flag_id, by=actor.id, resolution=resolution,
                              note=note, now=now)
