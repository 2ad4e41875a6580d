"""Who may do what: one rulebook for the CLI, the HTTP API and every other face.

An :class:`Actor` is an existing, active user (from an API token, or named with ``--as`` on
the CLI). Each action names the roles that may perform it; admins may do everything. Actions
on an article are also bound to the team that *governs* it: the owner named in its served
(newest approved) version, so that an edit which changes ``owner:`` is approved by the team
that owns the article today, never by the team it names itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from kb.errors import Forbidden, Unauthenticated
from kb.models import Approval, Article, ArticleVersion, User

AGENT, OWNER, APPROVER, EVALUATOR, ADMIN = "agent", "owner", "approver", "evaluator", "admin"
ROLES = (AGENT, OWNER, APPROVER, EVALUATOR, ADMIN)
STAFF = (OWNER, APPROVER, EVALUATOR, ADMIN)
EVERYONE = ROLES

# action -> roles that may perform it (admins always may). Team-bound actions also need the
# article's governing team among the actor's teams.
RULES: dict[str, tuple[str, ...]] = {
    "ask": EVERYONE,
    "flag": EVERYONE,
    "read_article": EVERYONE,
    "read_versions": STAFF,
    "list_articles": STAFF,
    "health": (EVALUATOR, OWNER, APPROVER),
    "queue": (OWNER, APPROVER),
    "sync": (OWNER, APPROVER),
    "approve": (APPROVER,),
    "review": (OWNER, APPROVER),
    "retire": (OWNER,),
    "resolve_flag": (OWNER,),
    "eval": (EVALUATOR, OWNER, APPROVER),
    # Storing or switching the tuning record changes every answer: evaluators fit it on
    # their suite, approvers may also roll it back.
    "tune": (EVALUATOR, APPROVER),
    "index": (),
    "manage_users": (),
    "manage_tokens": (),
}
_VERB = {"approve": "approve", "review": "review", "retire": "retire",
         "resolve_flag": "resolve flags on"}


@dataclass(frozen=True)
class Actor:
    """An authenticated, active user (what every permission check needs; no ORM object)."""

    id: str
    role: str
    teams: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    token_id: str | None = None

    @property
    def audience(self) -> str:
        """The audience answers are scoped to: an agent's own; the company's staff: internal."""
        if self.role == AGENT:
            return self.audiences[0] if self.audiences else "vendors"
        return "internal"

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def actor_for(session: Session, *, name: str | None) -> Actor:
    """The CLI's ``--as NAME``: an existing, active user, or :class:`Unauthenticated`."""
    if not name or not name.strip():
        raise Unauthenticated(
            "say who is acting: pass --as NAME (or set KB_USER) naming an existing user; "
            "list users with `kb users list`")
    user = session.get(User, name.strip())
    if user is None:
        raise Unauthenticated(
            f"no user '{name}': --as must name an existing user (see `kb users list`); an "
            "admin adds one with `kb users add NAME --role ROLE --as ADMIN`, and on an empty "
            "database `kb users bootstrap NAME` creates the first admin")
    if user.disabled:
        raise Unauthenticated(f"user '{name}' is disabled; an admin can re-enable it with "
                              f"`kb users enable {name} --as ADMIN`")
    return Actor(id=user.name, role=user.role, teams=tuple(user.teams or ()),
                 audiences=tuple(user.audiences or ()))


def may(actor: Actor, action: str) -> bool:
    """Whether the actor's role allows the action at all (before any team rule)."""
    return actor.is_admin or actor.role in RULES[action]


def require(actor: Actor, action: str) -> None:
    """:class:`Forbidden` unless the actor's role allows the action."""
    if not may(actor, action):
        allowed = ", ".join(RULES[action] + (ADMIN,))
        raise Forbidden(f"{actor.id} ({actor.role}) may not {action.replace('_', ' ')}; "
                        f"that needs the role {allowed}")


def require_team(actor: Actor, action: str, team: str) -> None:
    """:class:`Forbidden` unless the actor may perform ``action`` on ``team``'s articles."""
    require(actor, action)
    if actor.is_admin or team in actor.teams:
        return
    raise Forbidden(f"{actor.id} may not {_VERB.get(action, action)} articles of team "
                    f"'{team}' (their teams: {', '.join(actor.teams) or 'none'}); ask someone "
                    f"in {team}, or an admin")


def governing_team(session: Session, *, article_id: str) -> str:
    """The team whose members decide about the article: the owner named in its newest
    approved version (retired or not); for an article never approved, its latest version's
    owner."""
    number = session.exec(
        select(Approval.version_number).where(Approval.article_id == article_id)
        .order_by(col(Approval.version_number).desc()).limit(1)
    ).first()
    if number is not None:
        meta = session.exec(
            select(ArticleVersion.meta).where(ArticleVersion.article_id == article_id,
                                              ArticleVersion.number == number)
        ).first()
        if meta and meta.get("owner"):
            return str(meta["owner"])
    article = session.get(Article, article_id)
    return article.owner if article is not None else ""


def require_article(session: Session, actor: Actor, action: str, *, article_id: str) -> str:
    """Role and team rule for an action on an article; returns the governing team."""
    team = governing_team(session, article_id=article_id)
    require_team(actor, action, team)
    return team
