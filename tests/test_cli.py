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

from .conftest import article_text, write_article


@pytest.fixture
def kb(settings: Settings):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {
        "KB_DATA_DIR": str(settings.data_dir),
        "KB_DATABASE_URL": settings.resolved_database_url,
        "KB_CONTENT_DIR": str(settings.content_dir),
        "KB_ALLOW_SELF_APPROVAL": "0",
    }

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, (args, result.output, result.exception)
        return result.stdout if "--json" in args else result.output

    return run


def test_governance_flow_through_the_cli(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_article(content_dir, "refunds", body="# Refunds\n## Rule\nWithin 30 days.\n")
    assert "1 new" in kb("sync", "--as", "alice")
    assert "0 new, 0 changed, 1 unchanged" in kb("sync", "--as", "alice")
    assert "four-eyes" in kb("approve", "refunds", "--as", "alice", code=7)
    assert "approved refunds v1" in kb("approve", "refunds", "--as", "bob", "--note", "ok")
    path.write_text(article_text("refunds", body="# Refunds\n## Rule\nWithin 14 days.\n"))
    data = json.loads(kb("sync", "--as", "alice", "--json"))
    assert data["updated"] == [{"id": "refunds", "version": 2}]
    st = json.loads(kb("status", "refunds", "--json"))
    assert (st["state"], st["served_version"], st["pending_version"]) == ("approved+pending", 1, 2)
    assert "+Within 14 days." in kb("diff", "refunds", "1", "2")
    assert "no version 9" in kb("diff", "refunds", "1", "9", code=4)
    kb("approve", "refunds", "--as", "bob", "--version", "2")
    kb("review", "refunds", "--as", "carol")
    hist = json.loads(kb("history", "refunds", "--json"))
    assert [v["approval"]["approver"] for v in hist["versions"]] == ["bob", "bob"]
    assert hist["reviews"][0]["reviewer"] == "carol"
    assert "retired refunds" in kb("retire", "refunds", "--as", "bob")
    assert json.loads(kb("status", "refunds", "--json"))["state"] == "retired"
    assert "does not exist" in kb("approve", "ghost", "--as", "bob", code=4)


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
    write_article(content_dir, "good")
    write_article(content_dir, "bad", review_every="often")
    output = kb("sync", "--as", "alice", code=3)
    assert "1 new" in output
    assert json.loads(kb("status", "good", "--json"))["state"] == "pending"


def test_approve_all_and_stale_queue(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_article(content_dir, "old", review_every="30d", last_reviewed="2020-01-01")
    write_article(content_dir, "fresh", owner="support-ops")
    write_article(content_dir, "wip", draft=True)
    kb("sync", "--as", "alice")
    out = json.loads(kb("approve", "--all", "--as", "bob", "--json"))
    assert [a["id"] for a in out["approved"]] == ["fresh", "old"]
    assert [s["id"] for s in out["skipped"]] == ["wip"]
    assert [r["id"] for r in json.loads(kb("stale", "--json"))] == ["old"]
    assert json.loads(kb("stale", "--owner", "support-ops", "--json")) == []
    due = json.loads(kb("stale", "--due-within", "120d", "--json"))
    assert [r["id"] for r in due] == ["old", "fresh"]
    assert "not a duration" in kb("stale", "--due-within", "soon", code=2)


def test_demo_runs_twice(kb, content_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_article(content_dir, "a-doc", last_reviewed="2020-01-01")
    write_article(content_dir, "b-doc", draft=True)
    first = kb("demo")
    assert "approved 1 versions" in first and "a-doc" in first
    second = kb("demo")
    assert "sync: 0 new, 0 changed, 2 unchanged" in second


def test_db_upgrade_command(kb, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    first = kb("db", "upgrade")
    assert "upgraded schema from empty to 0005" in first
    assert "schema is up to date (revision 0005)" in kb("db", "upgrade")
    engine = db.make_engine(settings)
    assert db.current_revision(engine) == db.head_revision(engine) == "0005"
    tables = set(sa.inspect(engine).get_table_names())
    assert {"article", "article_version", "approval", "review", "retirement",
            "audit_event", "query_log", "flag", "governance_clock", "eval_run",
            "health_snapshot", "user", "api_token", "alembic_version"} <= tables
    engine.dispose()
