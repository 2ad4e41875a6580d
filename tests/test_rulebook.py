"""The rulebook across processes and dates: a crash that hides articles is reported and
repaired without a manual sync, and the demo tells the same story on any date."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli_app
from assist.embedder import MiniLMEmbedder
from assist.follower import index_lag
from assist.runtime import make_assistant, make_index
from kb import governance
from kb.clock import fixed_clock
from kb.demo import DEMO_AS_OF
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import article_text, cli_env, write_article

_EMBEDDER = MiniLMEmbedder()
NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


def _body(topic: str) -> str:
    return f"# {topic.title()}\n## Rule\nThe {topic} rule for customers is explained here.\n"


@pytest.mark.slow
def test_a_crash_between_approval_and_indexing_is_reported_and_repaired(
        settings: Settings, engine: Engine, content_dir: Path) -> None:
    """Issue 9.10: approvals committed but never indexed (the process was killed) left
    articles unserved with no alarm, until a manual full sync."""
    for topic in ("router", "modem", "remote"):
        write_article(content_dir, topic, audience=["internal"], body=_body(topic))
    clock = fixed_clock(NOW)
    index = make_index(settings, embedder=_EMBEDDER)
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer", now=NOW - timedelta(minutes=5))
        # "approve --all" killed after its commits, before indexing anything:
        governance.approve_all(s, approver="lead", now=NOW - timedelta(minutes=2))
        lag = index_lag(s, index, now=NOW)
    assert lag.behind == ["modem", "remote", "router"] and lag.seconds == 120.0
    runner = CliRunner()
    status = runner.invoke(cli_app, ["index", "status", "--json"],
                           env=cli_env(settings, KB_NOW=NOW.isoformat()))
    data = json.loads(status.stdout)
    assert data["not_served_yet"] == ["modem", "remote", "router"]
    assert data["lag_seconds"] == 120.0

    # The next server start repairs it before it reports ready.
    assistant = make_assistant(settings, engine, index, clock=clock)
    with TestClient(create_app(settings, assistant=assistant)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["index_behind"] == []
        assert set(index.manifest()) == {"modem", "remote", "router"}
        # A change the follower has not picked up (it polls every follow_seconds) for longer
        # than max_lag_seconds: /readyz says not ready and names the article.
        client.app.state.follower.stop()  # type: ignore[attr-defined]
        (content_dir / "router.md").write_text(article_text(
            "router", audience=["internal"], body=_body("router") + "New line.\n"))
        with Session(engine, expire_on_commit=False) as s:
            sync_folder(s, root=content_dir, author="writer", now=NOW - timedelta(minutes=1))
            governance.approve(s, article_id="router", approver="lead",
                               now=NOW - timedelta(seconds=settings.index.max_lag_seconds + 5))
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        body = ready.json()
        assert body["index_behind"] == ["router"] and body["index_lag"].startswith("error")


@pytest.mark.slow
def test_the_next_cli_approval_repairs_every_hidden_article(
        settings: Settings, engine: Engine, content_dir: Path) -> None:
    for topic in ("router", "modem"):
        write_article(content_dir, topic, audience=["internal"], body=_body(topic))
    runner = CliRunner()
    env = cli_env(settings)
    for args in (["users", "bootstrap", "admin"],
                 ["users", "add", "writer", "--role", "owner", "--team", "billing-knowledge",
                  "--as", "admin"]):
        assert runner.invoke(cli_app, args, env=env).exit_code == 0
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
        governance.approve(s, article_id="router", approver="lead")  # crashed: not indexed
    result = runner.invoke(cli_app, ["approve", "modem", "--as", "admin"], env=env)
    assert result.exit_code == 0, result.output
    index = make_index(settings, embedder=_EMBEDDER)
    assert index.manifest() == {"modem": 1, "router": 1}


def _demo_story(tmp_path: Path, content: Path, now: datetime) -> dict[str, Any]:
    data = tmp_path / now.strftime("%Y%m%d")
    env = {"KB_DATA_DIR": str(data), "KB_DATABASE_URL": f"sqlite:///{data}/canon.db",
           "KB_CONTENT_DIR": str(content), "KB_NOW": now.isoformat()}
    runner = CliRunner()
    result = runner.invoke(cli_app, ["demo"], env=env)
    assert result.exit_code == 0, result.output
    rows = json.loads(runner.invoke(cli_app, ["status", "--json"], env=env).stdout)
    due = json.loads(runner.invoke(cli_app, ["stale", "--due-within", "14d", "--json"],
                                   env=env).stdout)
    return {"stale": sorted(r["id"] for r in rows if r["stale"]),
            "due_soon": sorted(r["id"] for r in due if not r["stale"]),
            "days_to_due": {r["id"]: (datetime.fromisoformat(r["due_at"]) - now).days
                            for r in rows if r["due_at"]}}


@pytest.mark.slow
def test_kb_demo_tells_the_same_story_on_any_date(tmp_path: Path) -> None:
    """Issue 9.3: the demo's fixed review dates turned more articles stale every month."""
    content = tmp_path / "content"
    content.mkdir()
    for art_id, days_ago, every in (("overdue", 100, "90d"), ("due-soon", 80, "90d"),
                                    ("fresh", 10, "90d"), ("undated", None, "30d")):
        extra = {} if days_ago is None else {
            "last_reviewed": (DEMO_AS_OF - timedelta(days=days_ago)).isoformat()}
        write_article(content, art_id, review_every=every, audience=["internal", "vendors"],
                      body=_body(art_id.replace("-", " ")), **extra)
    base = datetime.combine(DEMO_AS_OF, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
    stories = [_demo_story(tmp_path, content, base + shift)
               for shift in (timedelta(0), timedelta(days=365), timedelta(days=3 * 365 + 17))]
    assert stories[0]["stale"] == ["overdue"] and stories[0]["due_soon"] == ["due-soon"]
    assert stories[1] == stories[0] and stories[2] == stories[0]
