"""Users and API tokens: validation, hashing, expiry, revocation, the CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.cli import app
from kb.errors import Conflict, InvalidInput, Unauthenticated, UserNotFound
from kb.identity import add_user, authenticate, create_token, revoke_token
from kb.models import ApiToken, AuditEvent, User, utcnow
from kb.settings import Settings


def test_user_validation(session: Session) -> None:
    with pytest.raises(InvalidInput, match="unknown role 'boss'"):
        add_user(session, name="x", role="boss", by="t")
    with pytest.raises(InvalidInput, match="agent needs at least one --audience"):
        add_user(session, name="x", role="agent", by="t")
    with pytest.raises(InvalidInput, match="owner needs at least one --team"):
        add_user(session, name="x", role="owner", by="t")
    with pytest.raises(InvalidInput, match="unknown audiences"):
        add_user(session, name="x", role="agent", audiences=["acme"], by="t")
    with pytest.raises(InvalidInput, match="not a valid user name"):
        add_user(session, name="Bad Name", role="admin", by="t")
    add_user(session, name="ann", role="owner", teams=["billing"], by="t")
    with pytest.raises(Conflict, match="already exists"):
        add_user(session, name="ann", role="admin", by="t")
    with pytest.raises(UserNotFound):
        create_token(session, user="nobody", expires_in=None, by="t")


def test_token_round_trip_expiry_revocation(session: Session) -> None:
    add_user(session, name="agent-1", role="agent", audiences=["vendor:acme"], by="admin")
    row, token = create_token(session, user="agent-1", expires_in=timedelta(days=1), by="admin")
    assert token.startswith("canon_") and len(token) > 40
    stored = session.exec(select(ApiToken)).one()
    assert stored.token_sha256 != token and token not in stored.model_dump_json()
    assert authenticate(session, token=token).name == "agent-1"
    with pytest.raises(Unauthenticated) as wrong:
        authenticate(session, token=token + "x")
    with pytest.raises(Unauthenticated) as expired:
        authenticate(session, token=token, now=utcnow() + timedelta(days=2))
    assert str(wrong.value) == str(expired.value)  # one message for every reason
    revoke_token(session, token_id=row.id, by="admin")
    with pytest.raises(Unauthenticated):
        authenticate(session, token=token)
    with pytest.raises(Conflict, match="already revoked"):
        revoke_token(session, token_id=row.id, by="admin")
    _, other = create_token(session, user="agent-1", expires_in=None, by="admin")
    user = session.get(User, "agent-1")
    assert user is not None
    user.disabled = True
    session.add(user)
    session.commit()
    with pytest.raises(Unauthenticated):
        authenticate(session, token=other)
    actions = [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions == ["user_added", "token_created", "token_revoked", "token_created"]


def test_users_and_tokens_cli(settings: Settings) -> None:
    env = {"KB_DATA_DIR": str(settings.data_dir),
           "KB_DATABASE_URL": settings.resolved_database_url}
    runner = CliRunner()

    def kb(*args: str, code: int = 0) -> str:
        r = runner.invoke(app, list(args), env=env)
        assert r.exit_code == code, (args, r.output)
        return r.stdout

    kb("users", "add", "acme-7", "--role", "agent", "--audience", "vendor:acme")
    assert "needs at least one --team" in runner.invoke(
        app, ["users", "add", "o", "--role", "owner"], env=env).output
    users = json.loads(kb("users", "list", "--json"))
    assert users[0]["audiences"] == ["vendor:acme"]
    created = json.loads(kb("tokens", "create", "--user", "acme-7", "--expires", "30d",
                            "--json"))
    assert created["token"].startswith("canon_")
    listing = kb("tokens", "list", "--json")
    assert created["token"] not in listing and json.loads(listing)[0]["id"] == created["id"]
    kb("tokens", "revoke", created["id"])
    assert json.loads(kb("tokens", "list", "--json"))[0]["revoked_at"] is not None
    kb("tokens", "create", "--user", "ghost", code=4)
