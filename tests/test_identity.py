"""Users and API tokens: validation, hashing, expiry, revocation, audit, the CLI."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from api.cli import app
from kb.errors import Conflict, InvalidInput, Unauthenticated, UserNotFound
from kb.identity import (
    BAD_TOKEN,
    add_user,
    authenticate,
    create_token,
    get_user,
    list_users,
    revoke_token,
)
from kb.models import ApiToken, AuditEvent, User, utcnow
from kb.settings import Settings

from .conftest import cli_env


def _actions(session: Session) -> list[str]:
    return [e.action for e in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)))]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"role": "boss"}, r"unknown role 'boss' \(use one of agent, owner"),
    ({"role": "agent"}, "an agent needs at least one --audience"),
    ({"role": "owner"}, "an owner needs at least one --team"),
    ({"role": "approver"}, "an approver needs at least one --team"),
    ({"role": "agent", "audiences": ["acme"]}, r"unknown audiences \['acme'\]"),
    ({"role": "owner", "teams": ["bad team"]}, r"invalid team ids \['bad team'\]"),
    ({"role": "admin", "name": "Bad Name"}, "'Bad Name' is not a valid user name"),
    ({"role": "admin", "name": ""}, "is not a valid user name"),
])
def test_add_user_rejects_bad_input(session: Session, kwargs: dict[str, object],
                                    message: str) -> None:
    args: dict[str, object] = {"name": "x", "by": "t", **kwargs}
    with pytest.raises(InvalidInput, match=message):
        add_user(session, **args)  # type: ignore[arg-type]
    assert list_users(session) == [] and _actions(session) == []


def test_add_get_list_and_duplicate_users(session: Session) -> None:
    add_user(session, name="ann", role="owner", teams=["billing", "billing"], by="root")
    add_user(session, name="acme-agent-7", role="agent", audiences=["vendor:acme"], by="root")
    add_user(session, name="eve", role="evaluator", by="root")
    assert [u.name for u in list_users(session)] == ["acme-agent-7", "ann", "eve"]
    assert get_user(session, name="ann").teams == ["billing"]  # deduplicated
    with pytest.raises(Conflict, match="user 'ann' already exists"):
        add_user(session, name="ann", role="admin", by="root")
    with pytest.raises(UserNotFound, match="no user 'ghost'"):
        get_user(session, name="ghost")
    with pytest.raises(UserNotFound):
        create_token(session, user="ghost", expires_in=None, by="root")
    events = session.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
    assert [(e.action, e.actor, e.details["user"]) for e in events] == [
        ("user_added", "root", "ann"), ("user_added", "root", "acme-agent-7"),
        ("user_added", "root", "eve")]
    assert events[1].details["audiences"] == ["vendor:acme"]


def test_token_is_stored_only_as_its_hash(session: Session) -> None:
    add_user(session, name="agent-1", role="agent", audiences=["vendor:acme"], by="admin")
    row, token = create_token(session, user="agent-1", expires_in=timedelta(days=90),
                              by="admin", note="laptop")
    assert token.startswith("canon_") and len(token) == len("canon_") + 43
    assert row.id.startswith("tok_") and len(row.id) == 12
    raw = session.connection().execute(sa.text("SELECT * FROM api_token")).mappings().one()
    assert raw["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(v) and token[6:] not in str(v) for v in raw.values())
    event = session.exec(select(AuditEvent).where(AuditEvent.action == "token_created")).one()
    assert event.actor == "admin" and event.details["token_id"] == row.id
    assert token not in json.dumps(event.details)
    _, second = create_token(session, user="agent-1", expires_in=None, by="admin")
    assert second != token


def test_authenticate_round_trip_and_one_message_for_every_failure(session: Session) -> None:
    add_user(session, name="agent-1", role="agent", audiences=["vendor:acme"], by="admin")
    add_user(session, name="agent-2", role="agent", audiences=["vendor:globex"], by="admin")
    row, token = create_token(session, user="agent-1", expires_in=timedelta(days=1),
                              by="admin")
    _, other = create_token(session, user="agent-2", expires_in=None, by="admin")
    assert authenticate(session, token=token).name == "agent-1"
    assert authenticate(session, token=other).name == "agent-2"

    failures: list[Callable[[], object]] = [
        lambda: authenticate(session, token=token + "x"),
        lambda: authenticate(session, token=""),
        lambda: authenticate(session, token="not-a-canon-token"),
        lambda: authenticate(session, token=token, now=utcnow() + timedelta(days=1, seconds=1)),
    ]
    for attempt in failures:
        with pytest.raises(Unauthenticated) as info:
            attempt()
        assert str(info.value) == BAD_TOKEN

    revoke_token(session, token_id=row.id, by="admin")
    with pytest.raises(Unauthenticated, match=r"^invalid or expired token; ask an admin"):
        authenticate(session, token=token)
    with pytest.raises(Conflict, match="already revoked"):
        revoke_token(session, token_id=row.id, by="admin")
    with pytest.raises(InvalidInput, match="no token 'tok_nope'"):
        revoke_token(session, token_id="tok_nope", by="admin")

    user = session.get(User, "agent-2")
    assert user is not None
    user.disabled = True
    session.add(user)
    session.commit()
    with pytest.raises(Unauthenticated) as disabled:
        authenticate(session, token=other)
    assert str(disabled.value) == BAD_TOKEN
    assert _actions(session) == ["user_added", "user_added", "token_created", "token_created",
                                 "token_revoked"]
    revoked = session.exec(select(AuditEvent).where(AuditEvent.action == "token_revoked")).one()
    assert revoked.details == {"token_id": row.id, "user": "agent-1"}


def test_last_used_is_written_at_most_once_a_minute(session: Session) -> None:
    add_user(session, name="agent-1", role="agent", audiences=["vendors"], by="admin")
    row, token = create_token(session, user="agent-1", expires_in=None, by="admin")
    t0 = utcnow()

    def last_used() -> object:
        query = sa.text("SELECT last_used_at FROM api_token")
        return session.connection().execute(query).scalar_one()

    assert last_used() is None
    authenticate(session, token=token, now=t0)
    first = last_used()
    assert first is not None
    authenticate(session, token=token, now=t0 + timedelta(seconds=59))
    assert last_used() == first
    authenticate(session, token=token, now=t0 + timedelta(seconds=61))
    assert last_used() != first
    stored = session.get(ApiToken, row.id)
    assert stored is not None and stored.last_used_at == t0 + timedelta(seconds=61)
    assert "token_used" not in _actions(session)  # bookkeeping, not an audited change


def test_create_token_rejects_a_past_expiry(session: Session) -> None:
    add_user(session, name="eve", role="evaluator", by="admin")
    with pytest.raises(InvalidInput, match="must expire in the future"):
        create_token(session, user="eve", expires_in=timedelta(0), by="admin")


def test_users_and_tokens_cli(settings: Settings) -> None:
    env = cli_env(settings)
    runner = CliRunner()

    def kb(*args: str, code: int = 0) -> tuple[str, str]:
        r = runner.invoke(app, list(args), env=env)
        assert r.exit_code == code, (args, r.output, r.exception)
        return r.stdout, r.stderr

    kb("users", "bootstrap", "root")
    env["KB_USER"] = "root"  # the admin acting from here on (as `--as root` would)
    out, _ = kb("users", "add", "acme-7", "--role", "agent", "--audience", "vendor:acme")
    assert "added acme-7 (agent)" in out
    kb("users", "add", "lead", "--role", "owner", "--team", "billing", "--team", "retention",
       "--as", "root")
    _, err = kb("users", "add", "o", "--role", "owner", code=2)
    assert "needs at least one --team" in err
    _, err = kb("users", "add", "acme-7", "--role", "admin", code=6)
    assert "already exists" in err
    users = json.loads(kb("users", "list", "--json")[0])
    assert [(u["name"], u["teams"], u["audiences"]) for u in users] == [
        ("acme-7", [], ["vendor:acme"]), ("lead", ["billing", "retention"], []),
        ("root", [], [])]

    out, err = kb("tokens", "create", "--user", "acme-7", "--expires", "30d", "--note", "pc")
    token = out.strip()
    assert token.startswith("canon_") and "cannot be shown again" in err
    created = json.loads(kb("tokens", "create", "--user", "lead", "--expires", "never",
                            "--json")[0])
    assert created["token"].startswith("canon_") and created["expires_at"] is None

    listing = kb("tokens", "list", "--json")[0]
    text_listing = kb("tokens", "list")[0]
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in (token, created["token"])]
    for secret in (token, created["token"], *hashes):
        assert secret not in listing and secret not in text_listing
    rows = json.loads(listing)
    assert [r["user"] for r in rows] == ["acme-7", "lead"] and rows[0]["note"] == "pc"
    assert rows[0]["expires_at"] is not None
    assert [r["id"] for r in json.loads(kb("tokens", "list", "--user", "lead", "--json")[0])] \
        == [created["id"]]

    assert "revoked " + created["id"] in kb("tokens", "revoke", created["id"])[0]
    _, err = kb("tokens", "revoke", created["id"], code=6)
    assert "already revoked" in err
    lead = json.loads(kb("tokens", "list", "--user", "lead", "--json")[0])
    assert lead[0]["revoked_at"] is not None
    kb("tokens", "create", "--user", "ghost", code=4)
    kb("tokens", "create", "--user", "lead", "--expires", "soon", code=2)

    from kb import db

    engine = db.open_engine(settings)
    with Session(engine) as s:
        assert authenticate(s, token=token).name == "acme-7"
        with pytest.raises(Unauthenticated):
            authenticate(s, token=created["token"])
        events = s.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
        assert [(e.action, e.actor) for e in events] == [
            ("user_added", "bootstrap:root"), ("user_added", "root"), ("user_added", "root"),
            ("token_created", "root"), ("token_created", "root"), ("token_revoked", "root")]
    engine.dispose()
