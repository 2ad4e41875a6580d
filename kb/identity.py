"""Users, roles and API tokens. Tokens are shown once and stored only as SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from kb import audit
from kb.articles import AUDIENCE_RE, TEAM_RE
from kb.errors import Conflict, InvalidInput, Unauthenticated, UserNotFound
from kb.models import ApiToken, User, utcnow
from kb.permissions import ADMIN, ROLES

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,199}\Z")
ALIAS_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,320}\Z")
TOKEN_PREFIX = "canon_"
BAD_TOKEN = "invalid or expired token; ask an admin for a new one (kb tokens create)"
_TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _problems(name: str, role: str, teams: Sequence[str], audiences: Sequence[str]) -> list[str]:
    problems = []
    if not NAME_RE.match(name):
        problems.append(f"'{name}' is not a valid user name (use lowercase letters, digits, "
                        "'.', '_', '@' and '-', e.g. acme-agent-7)")
    if role not in ROLES:
        problems.append(f"unknown role '{role}' (use one of {', '.join(ROLES)})")
    bad_teams = [t for t in teams if not TEAM_RE.match(t)]
    if bad_teams:
        problems.append(f"invalid team ids {bad_teams} (use letters, digits, '.', '_', '@' "
                        "and '-', e.g. billing-knowledge)")
    bad_aud = [a for a in audiences if not AUDIENCE_RE.match(a)]
    if bad_aud:
        problems.append(f"unknown audiences {bad_aud} (use internal, vendors or "
                        "vendor:<name>, lowercase)")
    if role == "agent" and not audiences:
        problems.append("an agent needs at least one --audience (e.g. vendor:acme)")
    if role in ("owner", "approver") and not teams:
        problems.append(f"an {role} needs at least one --team (e.g. billing-knowledge)")
    return problems


def _alias_problems(session: Session, name: str, aliases: Sequence[str]) -> list[str]:
    problems = [f"'{a}' is not a valid alias (one word, e.g. a git author email)"
                for a in aliases if not ALIAS_RE.match(a)]
    for a in aliases:
        owner = user_for_author(session, author=a)
        if owner is not None and owner != name:
            problems.append(f"'{a}' already names user '{owner}'; one alias, one person")
    return problems


def add_user(
    session: Session, *, name: str, role: str, teams: Sequence[str] = (),
    audiences: Sequence[str] = (), aliases: Sequence[str] = (), by: str,
) -> User:
    """Create a user. Agents need an audience; owners and approvers need a team."""
    aliases = [a.strip().lower() for a in aliases]
    problems = _problems(name, role, teams, audiences)
    problems += _alias_problems(session, name, aliases)
    if problems:
        raise InvalidInput("; ".join(problems))
    if session.get(User, name) is not None:
        raise Conflict(f"user '{name}' already exists; pick another name or see "
                       "`kb users list`")
    user = User(name=name, role=role, teams=list(dict.fromkeys(teams)),
                audiences=list(dict.fromkeys(audiences)), aliases=list(dict.fromkeys(aliases)))
    session.add(user)
    audit.record(session, actor=by, action="user_added",
                 details={"user": name, "role": role, "teams": user.teams,
                          "audiences": user.audiences, "aliases": user.aliases})
    session.commit()
    return user


def bootstrap_admin(session: Session, *, name: str) -> User:
    """Create the first admin. Allowed once: only while the database has no user at all."""
    if session.exec(select(User.name).limit(1)).first() is not None:
        raise Conflict("users exist already, so there is nothing to bootstrap; an admin adds "
                       "users with `kb users add NAME --role ROLE --as ADMIN`")
    return add_user(session, name=name, role=ADMIN, by=f"bootstrap:{name}")


def _admins_left(session: Session, *, without: str) -> int:
    return len([u for u in session.exec(select(User).where(User.role == ADMIN)).all()
                if u.name != without and not u.disabled])


def set_disabled(session: Session, *, name: str, disabled: bool, by: str) -> User:
    """Disable a user (their tokens and ``--as`` stop working at once) or enable them again."""
    user = get_user(session, name=name)
    if user.disabled == disabled:
        raise Conflict(f"user '{name}' is already {'disabled' if disabled else 'enabled'}; "
                       "nothing to do")
    if disabled and user.role == ADMIN and not _admins_left(session, without=name):
        raise Conflict(f"'{name}' is the last active admin; make another admin first")
    user.disabled = disabled
    session.add(user)
    audit.record(session, actor=by, action="user_disabled" if disabled else "user_enabled",
                 details={"user": name})
    session.commit()
    return user


def set_role(
    session: Session, *, name: str, role: str, teams: Sequence[str] | None = None,
    audiences: Sequence[str] | None = None, by: str,
) -> User:
    """Change a user's role (and, when given, teams or audiences)."""
    user = get_user(session, name=name)
    new_teams = list(dict.fromkeys(teams)) if teams is not None else list(user.teams)
    new_aud = list(dict.fromkeys(audiences)) if audiences is not None else list(user.audiences)
    problems = _problems(name, role, new_teams, new_aud)
    if problems:
        raise InvalidInput("; ".join(problems))
    if user.role == ADMIN and role != ADMIN and not _admins_left(session, without=name):
        raise Conflict(f"'{name}' is the last active admin; make another admin first")
    before = {"role": user.role, "teams": list(user.teams), "audiences": list(user.audiences)}
    user.role, user.teams, user.audiences = role, new_teams, new_aud
    session.add(user)
    audit.record(session, actor=by, action="user_role_changed",
                 details={"user": name, "before": before,
                          "after": {"role": role, "teams": new_teams, "audiences": new_aud}})
    session.commit()
    return user


def link_alias(session: Session, *, name: str, alias: str, by: str) -> User:
    """Link another name (e.g. a git author email) to a user, for the four-eyes rule."""
    user = get_user(session, name=name)
    alias = alias.strip().lower()
    problems = _alias_problems(session, name, [alias])
    if problems:
        raise InvalidInput("; ".join(problems))
    if alias in user.aliases or alias == user.name:
        raise Conflict(f"'{alias}' already names user '{name}'; nothing to do")
    user.aliases = [*user.aliases, alias]
    session.add(user)
    audit.record(session, actor=by, action="user_alias_linked",
                 details={"user": name, "alias": alias})
    session.commit()
    return user


def user_for_author(session: Session, *, author: str) -> str | None:
    """The user behind an author string (a user name or a linked alias such as a git email),
    or None when no user is linked to it. Case-insensitive."""
    key = author.strip().lower()
    if not key:
        return None
    if session.get(User, key) is not None:
        return key
    for name, aliases in session.exec(select(User.name, User.aliases)).all():
        if key in [str(a).lower() for a in (aliases or [])]:
            return str(name)
    return None


def get_user(session: Session, *, name: str) -> User:
    user = session.get(User, name)
    if user is None:
        raise UserNotFound(name)
    return user


def list_users(session: Session) -> Sequence[User]:
    return session.exec(select(User).order_by(col(User.name))).all()


def _new_token_id(session: Session) -> str:
    while True:  # 32 random bits: a clash is rare, but never an IntegrityError
        token_id = "tok_" + secrets.token_hex(4)
        if session.get(ApiToken, token_id) is None:
            return token_id


def create_token(
    session: Session, *, user: str, expires_in: timedelta | None, by: str, note: str = "",
    now: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token for ``user``: (row, plaintext). The plaintext is never stored."""
    get_user(session, name=user)
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidInput("a token must expire in the future; use e.g. --expires 90d")
    now = now or utcnow()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(id=_new_token_id(session), user_name=user, token_sha256=token_sha256(token),
                   created_at=now, expires_at=now + expires_in if expires_in else None,
                   note=note)
    session.add(row)
    audit.record(session, actor=by, action="token_created", at=now,
                 details={"token_id": row.id, "user": user, "note": note,
                          "expires_at": row.expires_at.isoformat() if row.expires_at else None})
    session.commit()
    return row, token


def revoke_token(session: Session, *, token_id: str, by: str,
                 now: datetime | None = None) -> ApiToken:
    """Revoke a token; it stops working at once."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise InvalidInput(f"no token '{token_id}'; list tokens with `kb tokens list`")
    if row.revoked_at is not None:
        when = f"{row.revoked_at:%Y-%m-%d %H:%M} UTC"
        raise Conflict(f"token '{token_id}' is already revoked (at {when}); create a new one "
                       "with `kb tokens create`")
    row.revoked_at = now or utcnow()
    session.add(row)
    audit.record(session, actor=by, action="token_revoked",
                 details={"token_id": token_id, "user": row.user_name})
    session.commit()
    return row


def list_tokens(session: Session, *, user: str | None = None) -> Sequence[ApiToken]:
    query = select(ApiToken).order_by(col(ApiToken.created_at), col(ApiToken.id))
    if user:
        query = query.where(ApiToken.user_name == user)
    return session.exec(query).all()


@dataclass(frozen=True)
class Identity:
    """Who a valid token belongs to (what a request needs; no ORM object)."""

    name: str
    role: str
    teams: tuple[str, ...]
    audiences: tuple[str, ...]
    token_id: str


_AUTH = (
    sa.select(ApiToken.id, ApiToken.expires_at, ApiToken.revoked_at,  # type: ignore[call-overload]
              ApiToken.last_used_at, User.name, User.role, User.teams, User.audiences,
              User.disabled)
    .join(User, col(ApiToken.user_name) == col(User.name))
    .where(col(ApiToken.token_sha256) == sa.bindparam("digest"))
)
_TOUCH = (sa.update(ApiToken).where(col(ApiToken.id) == sa.bindparam("token_id"))
          .values(last_used_at=sa.bindparam("now")))


def authenticate(session: Session, *, token: str, now: datetime | None = None) -> Identity:
    """The user behind a token, or :class:`Unauthenticated` (one message for every reason).

    It runs on every request: one indexed Core query (token hash joined to its user, no ORM
    objects: about 6x cheaper), and ``last_used_at`` is written at most once a minute, so a
    busy token does not cost a write per request. Revocation and expiry apply at once.
    """
    if not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated(BAD_TOKEN)
    now = now or utcnow()
    conn = session.connection()
    row = conn.execute(_AUTH, {"digest": token_sha256(token)}).first()
    if row is None:
        raise Unauthenticated(BAD_TOKEN)
    (token_id, expires_at, revoked_at, last_used_at, name, role, teams, audiences,
     disabled) = row
    if revoked_at is not None or disabled or (expires_at is not None and expires_at <= now):
        raise Unauthenticated(BAD_TOKEN)
    if last_used_at is None or now - last_used_at >= _TOUCH_EVERY:
        conn.execute(_TOUCH, {"token_id": token_id, "now": now})
        session.commit()
        for obj in list(session.identity_map.values()):  # a Core write bypasses the ORM
            if isinstance(obj, ApiToken) and obj.id == token_id:
                session.expire(obj)
    return Identity(name=name, role=role, teams=tuple(teams or ()),
                    audiences=tuple(audiences or ()), token_id=token_id)
