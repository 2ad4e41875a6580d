"""Web-console sessions (kb/console.py): opened with a token, ended by expiry, sign-out,
token revocation or a disabled user; only hashes are stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from kb import console
from kb.console_models import ConsoleSession
from kb.errors import Unauthenticated
from kb.identity import add_user, create_token, revoke_token, set_disabled
from kb.models import AuditEvent

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TTL = timedelta(hours=8)


@pytest.fixture
def token(session: Session) -> str:
    add_user(session, name="admin", role="admin", by="test")
    add_user(session, name="acme", role="agent", audiences=["vendor:acme"], by="admin")
    return create_token(session, user="acme", expires_in=timedelta(days=30), by="admin",
                        now=NOW)[1]


def test_open_and_look_up(session: Session, token: str) -> None:
    me, secret = console.open_session(session, token=token, ttl=TTL, now=NOW)
    assert me.identity.name == "acme" and me.expires_at == NOW + TTL
    again = console.lookup(session, secret=secret, now=NOW + TTL - timedelta(seconds=1))
    assert again.identity.audiences == ("vendor:acme",) and again.csrf == me.csrf
    row = session.exec(select(ConsoleSession)).one()
    assert secret not in (row.id, row.csrf) and len(row.id) == 64  # only the hash is kept
    actions = session.exec(select(AuditEvent.action)).all()
    assert "console_signed_in" in actions


def test_expires(session: Session, token: str) -> None:
    _, secret = console.open_session(session, token=token, ttl=TTL, now=NOW)
    with pytest.raises(Unauthenticated, match="expired"):
        console.lookup(session, secret=secret, now=NOW + TTL)


def test_never_outlives_its_token(session: Session) -> None:
    add_user(session, name="ev", role="evaluator", by="test")
    short = create_token(session, user="ev", expires_in=timedelta(hours=1), by="test",
                         now=NOW)[1]
    me, secret = console.open_session(session, token=short, ttl=TTL, now=NOW)
    assert me.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(Unauthenticated, match="expired"):
        console.lookup(session, secret=secret, now=NOW + timedelta(hours=1, seconds=1))


def test_sign_out_revocation_and_disabling_end_it(session: Session, token: str) -> None:
    _, first = console.open_session(session, token=token, ttl=TTL, now=NOW)
    assert console.close_session(session, secret=first, now=NOW)
    assert not console.close_session(session, secret=first, now=NOW)
    with pytest.raises(Unauthenticated, match="signed out"):
        console.lookup(session, secret=first, now=NOW)
    _, second = console.open_session(session, token=token, ttl=TTL, now=NOW)
    set_disabled(session, name="acme", disabled=True, by="admin")
    with pytest.raises(Unauthenticated, match="revoked"):
        console.lookup(session, secret=second, now=NOW)
    set_disabled(session, name="acme", disabled=False, by="admin")
    console.lookup(session, secret=second, now=NOW)
    token_id = session.exec(select(ConsoleSession.token_id)).first()
    assert token_id is not None
    revoke_token(session, token_id=token_id, by="admin", now=NOW)
    with pytest.raises(Unauthenticated, match="revoked"):
        console.lookup(session, secret=second, now=NOW)


def test_bad_tokens_and_secrets(session: Session, token: str) -> None:
    with pytest.raises(Unauthenticated, match="invalid or expired token"):
        console.open_session(session, token="canon_nope", ttl=TTL, now=NOW)
    with pytest.raises(Unauthenticated, match="signed out"):
        console.lookup(session, secret="made-up", now=NOW)
