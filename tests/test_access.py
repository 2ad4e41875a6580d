"""Access control and the owners' workflow over HTTP (real app, model, Chroma, database)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli_app
from assist import indexer
from assist.embedder import MiniLMEmbedder
from assist.runtime import make_assistant, make_index
from kb import governance
from kb.identity import add_user, create_token, revoke_token
from kb.models import AuditEvent
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import article_text, cli_env, write_article

pytestmark = pytest.mark.slow

_EMBEDDER = MiniLMEmbedder()

USERS: dict[str, dict[str, Any]] = {
    "agent": {"role": "agent", "audiences": ["vendor:acme"]},
    "owner-a": {"role": "owner", "teams": ["team-a"]},
    "approver-a": {"role": "approver", "teams": ["team-a"]},
    "evaluator": {"role": "evaluator"},
    "admin": {"role": "admin"},
    "writer": {"role": "owner", "teams": ["team-a"]},  # the author of every version
}


def _body(topic: str) -> str:
    return f"# {topic.title()}\n## Rule\nThe {topic} rule for customers is explained here.\n"


def _setup(settings: Settings, engine: Engine, content: Path,
           articles: dict[str, tuple[str, list[str]]]) -> dict[str, Any]:
    for art_id, (team, audience) in articles.items():
        write_article(content, art_id, title=art_id.replace("-", " ").title(), owner=team,
                      audience=audience, body=_body(art_id.replace("-", " ")))
    index = make_index(settings, embedder=_EMBEDDER)
    assistant = make_assistant(settings, engine, index)
    tokens: dict[str, dict[str, str]] = {}
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content, author="writer")
        governance.approve_all(s, approver="lead")
        indexer.refresh(s, index)
        for name, spec in USERS.items():
            add_user(s, name=name, role=spec["role"], teams=spec.get("teams", ()),
                     audiences=spec.get("audiences", ()), by="test")
            tokens[name] = {"Authorization": "Bearer " + create_token(
                s, user=name, expires_in=None, by="test")[1]}
    return {"assistant": assistant, "tokens": tokens}


def _edit(content: Path, art_id: str, team: str, audience: list[str], extra: str) -> None:
    (content / f"{art_id}.md").write_text(article_text(
        art_id, title=art_id.replace("-", " ").title(), owner=team, audience=audience,
        body=_body(art_id.replace("-", " ")) + extra + "\n"))


@pytest.fixture
def env(settings: Settings, engine: Engine, content_dir: Path) -> Iterator[dict[str, Any]]:
    vend = ["internal", "vendors"]
    articles = {
        "a-read": ("team-a", vend), "a-approve-1": ("team-a", vend),
        "a-approve-2": ("team-a", vend), "a-retire-1": ("team-a", vend),
        "a-retire-2": ("team-a", vend), "a-review": ("team-a", vend),
        "b-secret": ("team-b", ["internal"]), "b-approve": ("team-b", vend),
        "b-retire": ("team-b", vend), "b-review": ("team-b", vend),
    }
    base = _setup(settings, engine, content_dir, articles)
    for art_id in ("a-approve-1", "a-approve-2", "b-approve"):
        team, aud = articles[art_id]
        _edit(content_dir, art_id, team, aud, "A new paragraph about the rule.")
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
    app = create_app(settings, assistant=base["assistant"])
    with TestClient(app) as client:
        yield {"client": client, "engine": engine, "content": content_dir,
               "settings": settings, **base}


def _flag(env: dict[str, Any], question: str) -> int:
    c, t = env["client"], env["tokens"]["agent"]
    q = c.post("/v1/assist", json={"question": question}, headers=t).json()
    assert q["status"] == "answered", q
    r = c.post(f"/v1/assist/{q['query_id']}/feedback",
               json={"helpful": False, "reason": "wrong"}, headers=t)
    flag_id: int = r.json()["flag_id"]
    return flag_id


def test_authorization_matrix(env: dict[str, Any]) -> None:
    """Every endpoint x role x (own team / other team) x (audience in / out)."""
    c, tok = env["client"], env["tokens"]
    flag_a1 = _flag(env, "what is the a read rule?")
    flag_a2 = _flag(env, "what is the a review rule?")
    flag_b = _flag(env, "what is the b review rule?")
    approve = "/v1/articles/{}/versions/2/approve"
    read_cases: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
        ("POST", "/v1/assist", {"question": "a read rule"},
         {"agent": 200, "owner-a": 200, "approver-a": 200, "evaluator": 200, "admin": 200}),
        ("GET", "/v1/articles/a-read", None,  # audience in
         {"agent": 200, "owner-a": 200, "approver-a": 200, "evaluator": 200, "admin": 200}),
        ("GET", "/v1/articles/b-secret", None,  # audience out for vendors
         {"agent": 404, "owner-a": 200, "approver-a": 200, "evaluator": 200, "admin": 200}),
        ("GET", "/v1/review-queue", None,
         {"agent": 403, "owner-a": 200, "approver-a": 200, "evaluator": 403, "admin": 200}),
        ("GET", "/v1/articles", None,
         {"agent": 403, "owner-a": 200, "approver-a": 200, "evaluator": 200, "admin": 200}),
        ("GET", "/v1/articles/a-read/versions", None,
         {"agent": 403, "owner-a": 200, "approver-a": 200, "evaluator": 200, "admin": 200}),
        ("GET", "/v1/articles/a-approve-1/diff?from=1&to=2", None,
         {"agent": 403, "owner-a": 200, "approver-a": 200, "evaluator": 200, "admin": 200}),
        ("GET", "/v1/health/knowledge", None,
         {"agent": 403, "owner-a": 200, "approver-a": 200, "evaluator": 200, "admin": 200}),
    ]
    # Denied writes first (they must change nothing), then each allowed write on its own target.
    write_cases: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
        ("POST", approve.format("a-approve-1"), {},
         {"agent": 403, "owner-a": 403, "evaluator": 403}),
        ("POST", approve.format("b-approve"), {}, {"approver-a": 403}),  # other team
        ("POST", "/v1/articles/b-review/review", {},
         {"agent": 403, "owner-a": 403, "approver-a": 403, "evaluator": 403}),
        ("POST", "/v1/articles/a-retire-1/retire", {},
         {"agent": 403, "approver-a": 403, "evaluator": 403}),
        ("POST", "/v1/articles/b-retire/retire", {}, {"owner-a": 403}),
        ("POST", f"/v1/flags/{flag_a1}/resolve", {"resolution": "fixed"},
         {"agent": 403, "approver-a": 403, "evaluator": 403}),
        ("POST", f"/v1/flags/{flag_b}/resolve", {"resolution": "fixed"}, {"owner-a": 403}),
        ("POST", approve.format("a-approve-1"), {}, {"approver-a": 200}),
        ("POST", approve.format("a-approve-2"), {}, {"admin": 200}),
        ("POST", "/v1/articles/a-review/review", {}, {"owner-a": 200, "approver-a": 200}),
        ("POST", "/v1/articles/b-review/review", {}, {"admin": 200}),
        ("POST", "/v1/articles/a-retire-1/retire", {}, {"owner-a": 200}),
        ("POST", "/v1/articles/a-retire-2/retire", {}, {"admin": 200}),
        ("POST", f"/v1/flags/{flag_a1}/resolve", {"resolution": "fixed"}, {"owner-a": 200}),
        ("POST", f"/v1/flags/{flag_a2}/resolve", {"resolution": "no_change"}, {"admin": 200}),
    ]
    mismatches = []
    for method, path, body, expected in [*read_cases, *write_cases]:
        for who, status in expected.items():
            r = c.request(method, path, json=body, headers=tok[who])
            if r.status_code != status:
                mismatches.append((method, path, who, status, r.status_code, r.text[:200]))
        for headers in ({}, {"Authorization": "Bearer canon_forged"}):
            r = c.request(method, path, json=body, headers=headers)
            if r.status_code != 401:
                mismatches.append((method, path, "no/invalid token", 401, r.status_code, ""))
    assert mismatches == []
    # denials changed nothing: b-approve still pending, b-retire still served
    with Session(env["engine"]) as s:
        [b] = governance.statuses(s, article_id="b-approve")
        assert (b.served_version, b.pending_version) == (1, 2)
        assert governance.served_version(s, article_id="b-retire") is not None
    # no detail leaks across audiences: hidden and absent look the same
    hidden = c.get("/v1/articles/b-secret", headers=tok["agent"]).json()
    absent = c.get("/v1/articles/no-such", headers=tok["agent"]).json()
    assert hidden["error"] == absent["error"] and "b-secret" not in str(absent)


def test_revoked_and_expired_tokens_are_401(env: dict[str, Any]) -> None:
    c = env["client"]
    with Session(env["engine"], expire_on_commit=False) as s:
        row, token = create_token(s, user="agent", expires_in=None, by="test")
        revoke_token(s, token_id=row.id, by="test")
    r = c.post("/v1/assist", json={"question": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_owners_flow_flag_edit_approve_resolve(env: dict[str, Any]) -> None:
    c, tok, content = env["client"], env["tokens"], env["content"]
    flag_id = _flag(env, "what is the a read rule?")
    queue = c.get("/v1/review-queue", headers=tok["owner-a"]).json()
    [item] = [i for i in queue["items"] if i["kind"] == "flag"]
    assert item["flag_id"] == flag_id and item["question"] == "what is the a read rule?"
    assert "a read rule" in item["span"]["text"] and item["reason"] == "wrong"
    # the owner edits the file and syncs; an approver approves over HTTP
    _edit(content, "a-read", "team-a", ["internal", "vendors"], "Corrected: 30 days.")
    with Session(env["engine"], expire_on_commit=False) as s:
        sync_folder(s, root=content, author="owner-a")
    kinds = {i["kind"] for i in c.get("/v1/review-queue", headers=tok["owner-a"]).json()["items"]}
    assert "pending" in kinds
    r = c.post("/v1/articles/a-read/versions/2/approve", json={"note": "fix"},
               headers=tok["owner-a"])
    assert r.status_code == 403  # owners do not approve
    r = c.post("/v1/articles/a-read/versions/2/approve", json={"note": "fix"},
               headers=tok["approver-a"])
    assert r.status_code == 200, r.text
    answer = c.post("/v1/assist", json={"question": "what is the a read rule?"},
                    headers=tok["agent"]).json()
    assert "Corrected: 30 days." in answer["passages"][0]["text"]
    r = c.post(f"/v1/flags/{flag_id}/resolve", json={"resolution": "fixed", "note": "v2"},
               headers=tok["owner-a"])
    assert r.status_code == 200
    queue = c.get("/v1/review-queue", headers=tok["owner-a"]).json()
    assert [i for i in queue["items"] if i["kind"] in ("flag", "pending") and
            i.get("article_id") == "a-read"] == []
    with Session(env["engine"]) as s:
        actions = [e.action for e in s.exec(select(AuditEvent).where(
            AuditEvent.article_id == "a-read").order_by(AuditEvent.id))]
    assert actions[-4:] == ["flag_created", "version_created", "version_approved",
                            "flag_resolved"]


def test_conflict_check_blocks_a_contradicting_approval(env: dict[str, Any]) -> None:
    c, tok, content = env["client"], env["tokens"], env["content"]
    policy = ("# Refund window\n## Eligibility\nAnnual plans.\n\n::: approved\nCustomers can "
              "get a full refund within {} days of buying an annual plan.\n:::\n")
    (content / "refund-window.md").write_text(article_text(
        "refund-window", title="Refund window", owner="team-b", risk="high",
        audience=["internal", "vendors"], body=policy.format(30)))
    (content / "refund-window-new.md").write_text(article_text(
        "refund-window-new", title="Refund window", owner="team-a", risk="high",
        audience=["internal", "vendors"], body=policy.format(14)))
    with Session(env["engine"], expire_on_commit=False) as s:
        sync_folder(s, root=content, author="writer")
        governance.approve(s, article_id="refund-window", approver="lead")
        indexer.refresh(s, env["assistant"].index)
    url = "/v1/articles/refund-window-new/versions/1/approve"
    r = c.post(url, json={}, headers=tok["approver-a"])
    assert r.status_code == 409, r.text
    findings = r.json()["findings"]
    assert any(f["kind"] == "conflict" and f["other_article"] == "refund-window"
               for f in findings)
    r = c.post(url, json={"force": True}, headers=tok["approver-a"])
    assert r.status_code == 422 and "note" in r.text
    # the CLI runs the same check
    settings: Settings = env["settings"]
    env_vars = cli_env(settings)
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["approve", "refund-window-new", "--as", "approver-a"],
                            env=env_vars)
    assert refused.exit_code == 6 and "conflict" in refused.output
    no_note = runner.invoke(cli_app, ["approve", "refund-window-new", "--as", "approver-a",
                                      "--force"], env=env_vars)
    assert no_note.exit_code == 2 and "--note" in no_note.output
    r = c.post(url, json={"force": True, "note": "promo policy agreed with legal"},
               headers=tok["approver-a"])
    assert r.status_code == 200 and r.json()["forced"] is True
    with Session(env["engine"]) as s:
        assert governance.history(s, article_id="refund-window-new")["versions"][0][
            "approval"]["forced"] is True


def test_rate_limit_returns_429_with_retry_after(settings: Settings, engine: Engine,
                                                 content_dir: Path) -> None:
    limited = settings.model_copy(update={"assist_rate_per_minute": 3})
    base = _setup(limited, engine, content_dir, {"a-read": ("team-a", ["internal", "vendors"])})
    with TestClient(create_app(limited, assistant=base["assistant"])) as client:
        codes = [client.post("/v1/assist", json={"question": "a read rule"},
                             headers=base["tokens"]["agent"]).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = client.post("/v1/assist", json={"question": "x"}, headers=base["tokens"]["agent"])
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        # another token has its own bucket
        r = client.post("/v1/assist", json={"question": "a read rule"},
                        headers=base["tokens"]["admin"])
        assert r.status_code == 200


def test_queue_and_flag_resolution_from_the_cli(env: dict[str, Any]) -> None:
    flag_id = _flag(env, "what is the a read rule?")
    settings: Settings = env["settings"]
    env_vars = cli_env(settings)
    runner = CliRunner()
    queue = runner.invoke(cli_app, ["queue", "--team", "team-a", "--json"], env=env_vars)
    assert queue.exit_code == 0
    flags = [i for i in json.loads(queue.stdout) if i["kind"] == "flag"]
    assert [f["flag_id"] for f in flags] == [flag_id]
    other = runner.invoke(cli_app, ["queue", "--team", "team-b", "--json"], env=env_vars)
    assert [i["kind"] for i in json.loads(other.stdout)] == ["pending"]  # b-approve v2 only
    done = runner.invoke(cli_app, ["flags", "resolve", str(flag_id), "--resolution", "fixed",
                                   "--as", "owner-a"], env=env_vars)
    assert done.exit_code == 0 and "resolved" in done.output
    again = runner.invoke(cli_app, ["flags", "resolve", str(flag_id), "--resolution", "fixed",
                                    "--as", "owner-a"], env=env_vars)
    assert again.exit_code == 6 and "already resolved" in again.output
    queue = runner.invoke(cli_app, ["queue", "--team", "team-a", "--json"], env=env_vars)
    assert all(i["kind"] != "flag" for i in json.loads(queue.stdout))


def test_ownership_change_is_decided_by_the_team_that_owns_the_served_article(
        env: dict[str, Any]) -> None:
    """Issue 9.7: someone rewrote `owner:` of team B's article to team A and injected text;
    team A's approver then approved it. The team that decides is the owner of the *served*
    version: an ownership change is approved by the current owners."""
    c, tok, content = env["client"], env["tokens"], env["content"]
    _edit(content, "b-retire", "team-a", ["internal", "vendors"], "Injected: refunds are 90 days.")
    with Session(env["engine"], expire_on_commit=False) as s:
        sync_folder(s, root=content, author="writer")
    r = c.post("/v1/articles/b-retire/versions/2/approve",
               json={"note": "mine now", "force": True}, headers=tok["approver-a"])
    assert r.status_code == 403, r.text
    assert "team 'team-b'" in r.json()["detail"]
    with Session(env["engine"]) as s:
        assert governance.served_version(s, article_id="b-retire").number == 1  # type: ignore[union-attr]
    # An admin (or team B's approver) may approve the hand-over; the audit says so.
    r = c.post("/v1/articles/b-retire/versions/2/approve", json={"note": "hand-over",
               "force": True}, headers=tok["admin"])
    assert r.status_code == 200, r.text
    with Session(env["engine"]) as s:
        event = s.exec(select(AuditEvent).where(AuditEvent.action == "version_approved",
                                                AuditEvent.article_id == "b-retire",
                                                AuditEvent.version_number == 2)).one()
        assert event.details["owner_change"] == {"from": "team-b", "to": "team-a"}


def test_git_author_email_counts_as_the_user_over_http(env: dict[str, Any]) -> None:
    """Issue 9.8: the author recorded from git (an email) approved their own edit as the
    HTTP user. Linked aliases make them one person; unlinked authors cannot approve."""
    from kb.identity import link_alias

    c, tok, content = env["client"], env["tokens"], env["content"]
    _edit(content, "a-read", "team-a", ["internal", "vendors"], "Edited by git author.")
    with Session(env["engine"], expire_on_commit=False) as s:
        sync_folder(s, root=content, author="Approver-A@corp.example")
    r = c.post("/v1/articles/a-read/versions/2/approve", json={}, headers=tok["approver-a"])
    assert r.status_code == 403 and "not linked to any user" in r.json()["detail"]
    with Session(env["engine"], expire_on_commit=False) as s:
        link_alias(s, name="approver-a", alias="approver-a@corp.example", by="admin")
    r = c.post("/v1/articles/a-read/versions/2/approve", json={}, headers=tok["approver-a"])
    assert r.status_code == 403 and "four-eyes" in r.json()["detail"]
    r = c.post("/v1/articles/a-read/versions/2/approve", json={}, headers=tok["admin"])
    assert r.status_code == 200, r.text
