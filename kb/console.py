"""Web-console sessions: sign in with an API token, get a server-side session.

The browser holds only a random secret in an HttpOnly cookie; the database holds its SHA-256,
the user, the token it was opened with, a CSRF secret and the expiry. Every request looks the
session up with one indexed query that also re-checks the token and the user, so revoking the
token, disabling the user or signing out ends the session at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col

from kb import audit
from kb.console_models import ConsoleSession
from kb.errors import Unauthenticated
from kb.identity import Identity, authenticate
from kb.models import ApiToken, User, utcnow

SIGNED_OUT = "you are signed out; sign in again with your API token"
EXPIRED = "your session has expired; sign in again with your API token"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ConsoleIdentity:
    """Who a live console session belongs to, and the session's CSRF secret."""

    identity: Identity
    session_id: str
    csrf: str
    expires_at: datetime


def open_session(session: Session, *, token: str, ttl: timedelta,
                 now: datetime | None = None) -> tuple[ConsoleIdentity, str]:
    """Sign in with an API token: (the session, the cookie secret, shown once).

    The session expires after ``ttl`` or when the token does, whichever is first; a bad,
    expired or revoked token is :class:`Unauthenticated` (the API's one message)."""
    now = now or utcnow()
    who = authenticate(session, token=token.strip(), now=now)
    expires = now + ttl
    token_expiry = session.get(ApiToken, who.token_id)
    if token_expiry is not None and token_expiry.expires_at is not None:
        expires = min(expires, token_expiry.expires_at)
    secret = secrets.token_urlsafe(32)
    row = ConsoleSession(id=_digest(secret), user_name=who.name, token_id=who.token_id,
                         csrf=secrets.token_urlsafe(32), created_at=now, expires_at=expires)
    session.add(row)
    audit.record(session, actor=who.name, action="console_signed_in", at=now,
                 details={"token_id": who.token_id, "expires_at": expires.isoformat()})
    session.commit()
    return ConsoleIdentity(identity=who, session_id=row.id, csrf=row.csrf,
                           expires_at=expires), secret


_LOOKUP = (
    sa.select(ConsoleSession.id, ConsoleSession.csrf,  # type: ignore[call-overload]
              ConsoleSession.expires_at, ConsoleSession.ended_at, ApiToken.id,
              ApiToken.expires_at, ApiToken.revoked_at, User.name, User.role, User.teams,
              User.audiences, User.disabled)
    .join(ApiToken, col(ApiToken.id) == col(ConsoleSession.token_id))
    .join(User, col(User.name) == col(ConsoleSession.user_name))
    .where(col(ConsoleSession.id) == sa.bindparam("sid"))
)


def lookup(session: Session, *, secret: str, now: datetime | None = None) -> ConsoleIdentity:
    """The live session behind a cookie secret, or :class:`Unauthenticated` saying why."""
    now = now or utcnow()
    row = session.connection().execute(_LOOKUP, {"sid": _digest(secret)}).first()
    if row is None:
        raise Unauthenticated(SIGNED_OUT)
    (sid, csrf, expires_at, ended_at, token_id, token_expires, revoked_at, name, role, teams,
     audiences, disabled) = row
    if ended_at is not None:
        raise Unauthenticated(SIGNED_OUT)
    if expires_at <= now or (token_expires is not None and token_expires <= now):
        raise Unauthenticated(EXPIRED)
    if revoked_at is not None or disabled:
        raise Unauthenticated("your access was revoked; ask an admin for a new token")
    who = Identity(name=name, role=role, teams=tuple(teams or ()),
                   audiences=tuple(audiences or ()), token_id=token_id)
    return ConsoleIdentity(identity=who, session_id=sid, csrf=csrf, expires_at=expires_at)


def close_session(session: Session, *, secret: str, now: datetime | None = None) -> bool:
    """Sign out: the session ends at once. False when there was no live session."""
    now = now or utcnow()
    row = session.get(ConsoleSession, _digest(secret))
    if row is None or row.ended_at is not None:
        return False
    row.ended_at = now
    session.add(row)
    audit.record(session, actor=row.user_name, action="console_signed_out", at=now,
                 details={"token_id": row.token_id})
    session.commit()
    return True
