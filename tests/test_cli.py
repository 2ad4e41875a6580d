"""The real `kb` CLI through Typer's CliRunner, on a real database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from api.cli import app
from kb import db
from kb.settings import Settings

from .conftest import article_text, cli_env, write_article

NOW = "2026-06-01T09:00:00Z"  # the CLI's clock is pinned: nothing here depends on today


@pytest.fixture
def kb(settings: Settings):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = cli_env(settings, KB_ALLOW_SELF_APPROVAL="0", KB_NOW=NOW)

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.stdout if "--json" in args else result.output

    return run


def _team(kb, team: str = "billing-knowledge") -> None:  # type: ignore[no-untyped-def]
    """admin (bootstrap), alice and carol (owners), bob (approver)."""
    kb("users", "bootstrap", "admin")
    kb("users", "add", "alice", "--role", "owner", "--team", team, "--as", "admin")
    kb("users", "add", "carol", "--role", "owner", "--team", team, "--as", "admin")
    kb("users", "add", "bob", "--role", "approver", "--team", team, "--as", "admin")


@pytest.mark.slow
def test_governance_flow_through_the_cli(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _team(kb)
    path = write_article(content_dir, "refunds", body="# Refunds\n## Rule\nWithin 30 days.\n")
    assert "1 new" in kb("sync", "--as", "alice")
    assert "0 new, 0 changed, 1 unchanged" in kb("sync", "--as", "alice")
    assert "may not approve" in kb("approve", "refunds", "--as", "alice", code=7)  # an owner
    assert "approved refunds v1" in kb("approve", "refunds", "--as", "bob", "--note", "ok")
    path.write_text(article_text("refunds", body="# Refunds\n## Rule\nWithin 14 days.\n"))
    data = json.loads(kb("sync", "--as", "bob", "--json"))
    assert data["updated"] == [{"id": "refunds", "version": 2}]
    assert "four-eyes" in kb("approve", "refunds", "--as", "bob", code=7)  # bob wrote v2
    st = json.loads(kb("status", "refunds", "--json"))
    assert (st["state"], st["served_version"], st["pending_version"]) == ("approved+pending", 1, 2)
    assert "+Within 14 days." in kb("diff", "refunds", "1", "2")
    assert "no version 9" in kb("diff", "refunds", "1", "9", code=4)
    kb("approve", "refunds", "--as", "admin", "--version", "2", "--force", "--note", "ok")
    kb("review", "refunds", "--as", "carol")
    hist = json.loads(kb("history", "refunds", "--json"))
    assert [v["approval"]["approver"] for v in hist["versions"]] == ["bob", "admin"]
    assert [v["author"] for v in hist["versions"]] == ["alice", "bob"]
    assert hist["reviews"][0]["reviewer"] == "carol"
    assert hist["reviews"][0]["at"].startswith("2026-06-01T09:00")  # the pinned clock
    assert "may not retire" in kb("retire", "refunds", "--as", "bob", code=7)  # approvers
    assert "retired refunds" in kb("retire", "refunds", "--as", "carol")
    assert json.loads(kb("status", "refunds", "--json"))["state"] == "retired"
    assert "does not exist" in kb("approve", "ghost", "--as", "bob", code=4)


@pytest.mark.parametrize("command", [
    ["sync"], ["approve", "refunds"], ["approve", "--all"], ["review", "refunds"],
    ["retire", "refunds"], ["flags", "resolve", "1", "--resolution", "fixed"],
    ["users", "add", "mallory", "--role", "admin"], ["tokens", "create", "--user", "admin"],
    ["tokens", "revoke", "tok_00000000"], ["users", "disable", "alice"],
    ["index", "rebuild"],
])
def test_every_writing_command_needs_an_existing_active_user(kb, content_dir: Path,  # type: ignore[no-untyped-def]
                                                             command: list[str]) -> None:
    """Issue 9.1: `--as nobody-not-a-user` approved a version. Now every writing command
    refuses an unknown, missing or disabled user with exit 7 and says how to fix it."""
    _team(kb)
    write_article(content_dir, "refunds")
    kb("sync", "--as", "alice")
    out = kb(*command, "--as", "nobody-not-a-user", code=7)
    assert "no user 'nobody-not-a-user'" in out and "kb users" in out
    assert "say who is acting" in kb(*command, code=7)
    kb("users", "disable", "carol", "--as", "admin")
    assert "is disabled" in kb(*command, "--as", "carol", code=7)
    assert json.loads(kb("status", "refunds", "--json"))["state"] == "pending"


@pytest.mark.slow
def test_roles_and_teams_apply_on_the_cli_as_over_http(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _team(kb)
    kb("users", "add", "eve", "--role", "approver", "--team", "other-team", "--as", "admin")
    kb("users", "add", "agent7", "--role", "agent", "--audience", "vendor:acme", "--as", "admin")
    write_article(content_dir, "refunds")
    kb("sync", "--as", "alice")
    assert "of team 'billing-knowledge'" in kb("approve", "refunds", "--as", "eve", code=7)
    assert "may not sync" in kb("sync", "--as", "agent7", code=7)
    assert "may not manage users" in kb("users", "add", "x", "--role", "agent", "--audience",
                                        "vendors", "--as", "bob", code=7)
    kb("approve", "refunds", "--as", "bob")
    assert "may not review" in kb("review", "refunds", "--as", "eve", code=7)


@pytest.mark.slow
def test_four_eyes_compares_people_not_strings(kb, content_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Issue 9.8: a git author email is the same person as the user it is linked to, and
    an author linked to nobody cannot be checked, so the approval is refused."""
    _team(kb)
    write_article(content_dir, "refunds")
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(content_dir), *args], check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=billapprover@corp.example", "-c", "user.name=Bill", "add", ".")
    git("-c", "user.email=billapprover@corp.example", "-c", "user.name=Bill", "commit", "-qm",
        "edit")
    kb("sync", "--as", "alice")
    hist = json.loads(kb("history", "refunds", "--json"))
    assert hist["versions"][0]["author"] == "billapprover@corp.example"
    out = kb("approve", "refunds", "--as", "bob", code=7)
    assert "not linked to any user" in out and "kb users link" in out
    kb("users", "add", "billapprover", "--role", "approver", "--team", "billing-knowledge",
       "--alias", "BillApprover@corp.example", "--as", "admin")
    assert "four-eyes" in kb("approve", "refunds", "--as", "billapprover", code=7)
    assert "already names user" in kb("users", "link", "bob", "--alias",
                                      "billapprover@corp.example", "--as", "admin", code=2)
    kb("approve", "refunds", "--as", "bob")
    # An edit not yet committed is authored by whoever syncs it, not the last committer.
    (content_dir / "refunds.md").write_text(article_text("refunds", body="# R\n## A\nNew.\n"))
    kb("sync", "--as", "bob")
    assert json.loads(kb("history", "refunds", "--json"))["versions"][1]["author"] == "bob"
    assert "four-eyes" in kb("approve", "refunds", "--as", "bob", code=7)


def test_users_disable_enable_and_set_role_are_audited(kb, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    _team(kb)
    assert "users exist already" in kb("users", "bootstrap", "eve", code=6)
    kb("users", "disable", "alice", "--as", "admin")
    assert json.loads(kb("users", "list", "--json"))[1]["disabled"] is True
    kb("users", "enable", "alice", "--as", "admin")
    data = json.loads(kb("users", "set-role", "alice", "approver", "--as", "admin", "--json"))
    assert (data["role"], data["teams"]) == ("approver", ["billing-knowledge"])
    assert "last active admin" in kb("users", "disable", "admin", "--as", "admin", code=6)
    assert "last active admin" in kb("users", "set-role", "admin", "evaluator", "--as",
                                     "admin", code=6)
    engine = db.make_engine(settings)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT actor, action FROM audit_event WHERE action LIKE "
                                    "'user_%' ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows][-3:] == [("admin", "user_disabled"), ("admin", "user_enabled"),
                                            ("admin", "user_role_changed")]


def test_check_reports_every_problem_and_exits_nonzero(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_article(content_dir, "fine")
    write_article(content_dir, "risky", risk="extreme")
    (content_dir / "latin1.md").write_bytes(article_text("latin").encode() + b"caf\xe9\n")
    output = kb("check", code=3)
    assert "risky.md:6: risk: unknown risk 'extreme'" in output
    assert "latin1.md" in output and "UTF-8" in output
    assert "3 files checked: 2 errors" in output
    report = json.loads(kb("check", "--json", code=3))
    assert report["errors"] == 2
    (content_dir / "risky.md").unlink()
    (content_dir / "latin1.md").unlink()
    assert "1 files checked: 0 errors" in kb("check")


def test_sync_exits_nonzero_on_errors_but_stores_good_files(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _team(kb)
    write_article(content_dir, "good")
    write_article(content_dir, "bad", review_every="often")
    output = kb("sync", "--as", "alice", code=3)
    assert "1 new" in output
    assert json.loads(kb("status", "good", "--json"))["state"] == "pending"


@pytest.mark.slow
def test_approve_all_and_stale_queue(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_article(content_dir, "old", review_every="30d", last_reviewed="2020-01-01")
    write_article(content_dir, "fresh", owner="support-ops")
    write_article(content_dir, "wip", draft=True)
    _team(kb)
    kb("users", "set-role", "bob", "approver", "--team", "billing-knowledge", "--team",
       "support-ops", "--as", "admin")
    kb("sync", "--as", "alice")
    out = json.loads(kb("approve", "--all", "--as", "bob", "--json"))
    assert [a["id"] for a in out["approved"]] == ["fresh", "old"]
    assert [s["id"] for s in out["skipped"]] == ["wip"]
    assert [r["id"] for r in json.loads(kb("stale", "--json"))] == ["old"]
    assert json.loads(kb("stale", "--owner", "support-ops", "--json")) == []
    due = json.loads(kb("stale", "--due-within", "120d", "--json"))
    assert [r["id"] for r in due] == ["old", "fresh"]
    assert "not a duration" in kb("stale", "--due-within", "soon", code=2)


@pytest.mark.slow
def test_demo_runs_twice(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_article(content_dir, "a-doc", last_reviewed="2020-01-01")
    write_article(content_dir, "b-doc", draft=True)
    first = kb("demo")
    assert "approved 1 versions" in first and "a-doc" in first
    second = kb("demo")
    assert "sync: 0 new, 0 changed, 2 unchanged" in second


def test_db_upgrade_command(kb, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    first = kb("db", "upgrade")
    assert "upgraded schema from empty to 0008" in first
    assert "schema is up to date (revision 0008)" in kb("db", "upgrade")
    engine = db.make_engine(settings)
    assert db.current_revision(engine) == db.head_revision(engine) == "0008"
    tables = set(sa.inspect(engine).get_table_names())
    assert {"article", "article_version", "approval", "review", "retirement",
            "audit_event", "query_log", "flag", "governance_clock", "eval_run",
            "health_snapshot", "user", "api_token", "alembic_version"} <= tables
    engine.dispose()


def test_ask_is_logged_as_an_existing_user_within_their_audience(kb) -> None:  # type: ignore[no-untyped-def]
    _team(kb)
    kb("users", "add", "agent7", "--role", "agent", "--audience", "vendor:acme", "--as", "admin")
    assert "no user 'ghost'" in kb("ask", "refund?", "--as", "ghost", code=7)
    assert "may not ask as internal" in kb("ask", "refund?", "--as", "agent7", "--audience",
                                           "internal", code=7)
