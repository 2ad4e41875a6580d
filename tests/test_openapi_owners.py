"""Issue 9: every route declares its response model, and the owners' routes their errors.

The OpenAPI half needs only the app object. The byte-compatibility half drives the real
owners' routes through TestClient *without* a ``with`` block (no lifespan, no model: none
of these routes needs the assistant), with the test engine on ``app.state``, and compares
each body with what the route sent before it declared a model (its ``dict`` serialized by
FastAPI with pydantic). The approve route needs the assistant; tests/test_access.py covers
it, and :func:`test_approved_out_keeps_every_finding_key` its model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args, get_origin

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Engine
from sqlmodel import Session, select
from starlette.routing import BaseRoute, Mount, Route

from api import docs
from api.app import create_app
from api.deps import get_assistant
from api.schemas import ApprovedOut, ReviewQueueOut
from kb import flags, governance
from kb.clock import fixed_clock
from kb.identity import add_user, create_token
from kb.models import Flag, QueryLog
from kb.queue import gap_key, review_queue
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

# Not API routes: the schema itself, the docs pages and their assets (api/docs.py), and
# the Prometheus scrape (api/routes/metrics.py).
NOT_API = {"/openapi.json", docs.DOCS_URL, docs.REDOC_URL, docs.OAUTH2_REDIRECT_URL,
           docs.STATIC_URL, "/metrics"}

APPROVE = "/v1/articles/{article_id}/versions/{number}/approve"
# Route -> the statuses it declares: 401 always; 403 role (and team, four-eyes); 404 unknown
# article, version or flag; 409 superseded/draft/approved, nothing to review, already
# retired or resolved, approval_blocked; 422 validation.
OWNERS_RESPONSES: dict[tuple[str, str], set[str]] = {
    ("get", "/v1/review-queue"): {"200", "401", "403"},
    ("get", "/v1/articles"): {"200", "401", "403"},
    ("get", "/v1/articles/{article_id}/versions"): {"200", "401", "403", "404"},
    ("get", "/v1/articles/{article_id}/diff"): {"200", "401", "403", "404", "422"},
    ("post", APPROVE): {"200", "401", "403", "404", "409", "422"},
    ("post", "/v1/articles/{article_id}/review"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/v1/articles/{article_id}/retire"): {"200", "401", "403", "404", "409", "422"},
    ("post", "/v1/flags/{flag_id}/resolve"): {"200", "401", "403", "404", "409", "422"},
}

T0 = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)


def _app(tmp_path: Path) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path / ".canon", content_dir=tmp_path / "content"))


def _walk(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route with its full path, including those of included routers (which FastAPI
    may keep nested rather than copy into ``app.routes``)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _walk(inner.routes, prefix + getattr(context, "prefix", ""))
        else:
            yield prefix + str(getattr(route, "path", "")), route


def _is_model(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        (annotation,) = get_args(annotation)
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _ref(schema: dict[str, Any]) -> str:
    """The component a response schema names (directly or as the items of an array)."""
    if schema.get("type") == "array":
        schema = schema["items"]
    ref = schema.get("$ref", "")
    assert isinstance(ref, str)
    return ref.rsplit("/", 1)[-1]


def _refs(schema: dict[str, Any]) -> set[str]:
    return {_ref(s) for s in schema.get("anyOf", [schema])}


def test_every_route_declares_a_response_model(tmp_path: Path) -> None:
    app = _app(tmp_path)
    spec = app.openapi()
    # The web console's pages (/ui, api/console) are HTML, not part of the API's schema.
    routes = [(p, r) for p, r in _walk(app.routes) if p != "/ui" and not p.startswith("/ui/")]
    api = [(path, r) for path, r in routes if isinstance(r, APIRoute) and path not in NOT_API]
    others = {path for path, r in routes if (path, r) not in api}
    assert others <= NOT_API, f"routes neither in the API nor docs: {others - NOT_API}"
    assert all(isinstance(r, APIRoute | Mount | Route) for _, r in routes)
    assert len(api) >= 14
    assert set(OWNERS_RESPONSES) <= {(m.lower(), p) for p, r in api for m in r.methods or ()}
    for path, route in api:
        assert isinstance(route, APIRoute)
        assert route.include_in_schema, path
        # A model, not the ``dict[str, Any]`` FastAPI infers from a bare return annotation.
        assert _is_model(route.response_model), (path, route.response_model)
        for method in route.methods or ():
            ok = spec["paths"][path][method.lower()]["responses"][str(route.status_code or 200)]
            name = _ref(ok["content"]["application/json"]["schema"])
            assert name and name in spec["components"]["schemas"], (method, path)


@pytest.mark.parametrize(("method", "path"), sorted(OWNERS_RESPONSES))
def test_owners_routes_declare_their_error_responses(tmp_path: Path, method: str,
                                                     path: str) -> None:
    responses = _app(tmp_path).openapi()["paths"][path][method]["responses"]
    assert OWNERS_RESPONSES[method, path] <= set(responses), set(responses)
    errors = {code: _refs(r["content"]["application/json"]["schema"])
              for code, r in responses.items() if code != "200"}
    assert errors["401"] == {"AuthErrorOut"}  # api/auth.py: {"detail": ...}
    assert errors["403"] in ({"AuthErrorOut"}, {"AuthErrorOut", "ErrorOut"})
    for code in ("404", "409"):
        if code in errors:
            assert "ErrorOut" in errors[code]  # api/errors.py: {"error", "detail"}
    assert errors.get("422", set()) & {"HTTPValidationError", "RequestInvalidOut"} or \
        "422" not in OWNERS_RESPONSES[method, path]
    for code, r in responses.items():
        assert r["description"], (method, path, code)


def test_team_and_four_eyes_refusals_are_declared_in_the_domain_shape(tmp_path: Path) -> None:
    paths = _app(tmp_path).openapi()["paths"]
    for method, path in [("post", APPROVE), ("post", "/v1/articles/{article_id}/review"),
                         ("post", "/v1/articles/{article_id}/retire"),
                         ("post", "/v1/flags/{flag_id}/resolve")]:
        schema = paths[path][method]["responses"]["403"]["content"]["application/json"]
        assert _refs(schema["schema"]) == {"AuthErrorOut", "ErrorOut"}, path


def test_approve_declares_approval_blocked_with_findings(tmp_path: Path) -> None:
    spec = _app(tmp_path).openapi()
    responses = spec["paths"][APPROVE]["post"]["responses"]
    assert _refs(responses["409"]["content"]["application/json"]["schema"]) == {
        "ApprovalBlockedOut", "ErrorOut"}
    # force without a note is the domain's invalid_input, next to FastAPI's validation body
    assert _refs(responses["422"]["content"]["application/json"]["schema"]) == {
        "RequestInvalidOut", "ErrorOut"}
    schemas = spec["components"]["schemas"]
    blocked = schemas["ApprovalBlockedOut"]
    assert set(blocked["required"]) == {"error", "detail", "findings"}
    assert blocked["properties"]["error"]["const"] == "approval_blocked"
    assert blocked["properties"]["findings"]["items"]["$ref"].endswith("/FindingOut")
    finding = schemas["FindingOut"]
    assert finding.get("additionalProperties") is True  # extra keys are kept
    assert set(finding["required"]) == {"kind", "question", "other_article", "new_text",
                                        "other_text", "message"}
    assert "case_id" in finding["properties"]
    assert _ref(schemas["ApprovedOut"]["properties"]["findings"]["items"]) == "FindingOut"
    assert set(schemas["ErrorOut"]["required"]) == {"error", "detail"}
    assert schemas["AuthErrorOut"]["required"] == ["detail"]


def test_diff_keeps_its_from_key(tmp_path: Path) -> None:
    spec = _app(tmp_path).openapi()
    assert spec["components"]["schemas"]["DiffOut"]["required"] == ["article_id", "from", "to",
                                                                     "diff"]


def test_approved_out_keeps_every_finding_key() -> None:
    """What the approve route sent before: findings exactly as the checks gave them —
    unknown keys kept, a missing ``case_id`` not added (``response_model_exclude_unset``)."""
    body = {"article_id": "refunds", "version": 2, "approver": "ann",
            "at": "2025-06-02T09:30:00+00:00", "forced": True, "findings": [
                {"kind": "conflict", "question": "Refunds > Window", "other_article": "plans",
                 "new_text": "Refunds within 30 days.", "other_text": "Within 14 days.",
                 "message": "30 days vs 14 days", "case_id": None, "amounts": ["30", "14"]},
                {"kind": "expectation_broken", "question": "How long?", "other_article": None,
                 "new_text": None, "other_text": None, "message": "refund-window-1 breaks",
                 "case_id": "refund-window-1"},
                {"kind": "stops_answering", "question": "Can I get my money back?",
                 "other_article": None, "new_text": None, "other_text": None,
                 "message": "no longer answered"}]}
    out = ApprovedOut.model_validate(body)
    assert out.model_dump(mode="json", by_alias=True, exclude_unset=True) == body
    assert TypeAdapter(ApprovedOut).dump_json(out, exclude_unset=True) == _dumps(body)


# --- byte compatibility of the owners' routes (real database, no model) --------------------


def _dumps(data: Any) -> bytes:
    """What a route sent before it declared a model: FastAPI serialized its ``dict``/``list``
    return annotation with pydantic."""
    return TypeAdapter(Any).dump_json(data)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def owners(settings: Settings, engine: Engine, content_dir: Path) -> dict[str, Any]:
    """Stale (low and high risk), due-soon, pending and removed articles, an open flag and a
    content gap, as seen at T0."""
    def ago(days: int) -> datetime:
        return T0 - timedelta(days=days)

    write_article(content_dir, "a-stale", title="Refund window", owner="team-a")
    write_article(content_dir, "a-high", owner="team-a", risk="high", body=(
        "# Chargebacks\n## Rule\nBackground.\n\n::: approved\n"
        "Say: \u201cwe\u2019ll look into it\u201d.\n:::\n"))
    write_article(content_dir, "a-soon", owner="team-a")
    write_article(content_dir, "a-pending", owner="team-a")
    write_article(content_dir, "b-gone", owner="team-b")
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer", now=ago(200))
        for art_id, days in [("a-stale", 200), ("a-high", 150), ("a-soon", 80),
                             ("a-pending", 10), ("b-gone", 30)]:
            governance.approve(s, article_id=art_id, approver="lead", now=ago(days),
                               note=f"ok ({art_id})")
        write_article(content_dir, "a-pending", owner="team-a",
                      body="# A pending\n## Details\nThe rule is 45 days now.\n")
        (content_dir / "b-gone.md").unlink()
        sync_folder(s, root=content_dir, author="writer", now=ago(2))
        answered = QueryLog(id="q-1", at=ago(3), caller="agent", audience="internal",
                            locale="en", question="What is the refund window?",
                            status="answered",
                            served=[{"article_id": "a-stale", "version": 1, "start": 0,
                                     "end": 40}])
        s.add(answered)
        for qid, days, question in [("q-2", 6, "How do I export invoices?"),
                                    ("q-3", 1, "how do I export my invoices")]:
            s.add(QueryLog(id=qid, at=ago(days), caller="agent", audience="internal",
                           locale="en", question=question, status="no_answer",
                           escalate_to="team-a"))
        s.commit()
        flag = flags.create_flag(s, query=answered, by="agent", reason="outdated",
                                 comment="Politique changée — 14 jours", now=ago(3))
        tokens = {}
        for name, role, teams in [("owner-a", "owner", ["team-a"]), ("root", "admin", [])]:
            add_user(s, name=name, role=role, teams=teams, by="test")
            tokens[name] = _auth(create_token(s, user=name, expires_in=None, by="test",
                                              now=ago(1))[1])
        s.commit()
        flag_id = flag.id
    app = create_app(settings, clock=fixed_clock(T0))
    app.state.engine = engine
    app.dependency_overrides[get_assistant] = lambda: SimpleNamespace(gaps=_WORDING)
    return {"client": TestClient(app), "engine": engine, "tokens": tokens, "flag": flag_id}


class _WordingGaps:
    """The queue's gap grouper without the model (the route's contract: a group number per
    question, and the nearest article of a gap)."""

    def __call__(self, questions: list[str]) -> list[int]:
        keys: dict[str, int] = {}
        return [keys.setdefault(gap_key(q), len(keys)) for q in questions]

    def nearest(self, question: str) -> dict[str, Any] | None:
        return {"article_id": "a-stale", "title": "A stale", "section": ["Rule"], "score": 0.5}


_WORDING = _WordingGaps()


def test_review_queue_is_byte_compatible(owners: dict[str, Any]) -> None:
    c, engine = owners["client"], owners["engine"]
    for user, teams in [("owner-a", ["team-a"]), ("root", None)]:
        r = c.get("/v1/review-queue", headers=owners["tokens"][user])
        assert r.status_code == 200, r.text
        with Session(engine) as s:
            items = review_queue(s, teams=teams, now=T0, group_gaps=_WORDING,
                                 nearest=_WORDING.nearest)
        counts: dict[str, int] = {}
        for item in items:
            counts[item["kind"]] = counts.get(item["kind"], 0) + 1
        assert set(counts) == {"stale", "flag", "pending", "gap", "due_soon"}, counts
        assert r.content == _dumps({"teams": teams or "all", "counts": counts,
                                    "items": items})
        ReviewQueueOut.model_validate_json(r.content)


def test_articles_and_history_are_byte_compatible(owners: dict[str, Any]) -> None:
    c, engine, root = owners["client"], owners["engine"], owners["tokens"]["root"]
    r = c.get("/v1/articles", headers=root)
    assert r.status_code == 200, r.text
    with Session(engine) as s:
        statuses = [st.as_dict() for st in governance.statuses(s, now=T0)]
    assert {st["state"] for st in statuses} >= {"approved", "approved+pending"}
    assert any(st["removed_from_source"] for st in statuses)
    assert r.content == _dumps(statuses)

    assert c.post("/v1/articles/a-stale/review", json={"note": "still right"},
                  headers=root).status_code == 200
    assert c.post("/v1/articles/a-high/retire", json={}, headers=root).status_code == 200
    for art_id in ("a-stale", "a-high", "a-pending", "b-gone"):
        r = c.get(f"/v1/articles/{art_id}/versions", headers=root)
        assert r.status_code == 200, r.text
        with Session(engine) as s:
            history = governance.history(s, article_id=art_id)
        assert r.content == _dumps(history), art_id
    assert r.json()["removed_from_source"] is not None

    r = c.get("/v1/articles/a-pending/diff?from=1&to=2", headers=root)
    assert r.status_code == 200, r.text
    with Session(engine) as s:
        text = governance.diff(s, article_id="a-pending", a=1, b=2)
    assert "+The rule is 45 days now." in text
    assert r.content == _dumps({"article_id": "a-pending", "from": 1, "to": 2, "diff": text})


def test_owner_writes_are_byte_compatible(owners: dict[str, Any]) -> None:
    c, engine, tok = owners["client"], owners["engine"], owners["tokens"]["owner-a"]
    at = T0.isoformat()
    r = c.post("/v1/articles/a-stale/review", json={"outcome": "needs_update"}, headers=tok)
    assert r.status_code == 200, r.text
    assert r.content == _dumps({"article_id": "a-stale", "version": 1,
                                "outcome": "needs_update", "at": at})
    r = c.post("/v1/articles/a-soon/retire", json={"note": "merged"}, headers=tok)
    assert r.status_code == 200, r.text
    assert r.content == _dumps({"article_id": "a-soon", "up_to_version": 1, "at": at})
    flag_id = owners["flag"]
    r = c.post(f"/v1/flags/{flag_id}/resolve", json={"resolution": "fixed", "note": "v2"},
               headers=tok)
    assert r.status_code == 200, r.text
    assert r.content == _dumps({"flag_id": flag_id, "status": "resolved",
                                "resolution": "fixed", "resolved_by": "owner-a"})
    with Session(engine) as s:
        assert s.exec(select(Flag.status).where(Flag.id == flag_id)).one() == "resolved"


def test_refusals_keep_their_shapes(owners: dict[str, Any]) -> None:
    """The declared error bodies are the ones the routes send."""
    c, tok = owners["client"], owners["tokens"]
    r = c.get("/v1/review-queue")
    assert r.status_code == 401 and set(r.json()) == {"detail"}
    r = c.get("/v1/articles/nope/versions", headers=tok["root"])
    assert r.status_code == 404 and r.json()["error"] == "article_not_found"
    assert set(r.json()) == {"error", "detail"}
    r = c.get("/v1/articles/a-pending/diff?from=1&to=9", headers=tok["root"])
    assert r.status_code == 404 and r.json()["error"] == "version_not_found"
    r = c.get("/v1/articles/a-pending/diff?from=0&to=1", headers=tok["root"])
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    r = c.post("/v1/articles/b-gone/retire", json={}, headers=tok["owner-a"])
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = c.post("/v1/articles/a-high/retire", json={}, headers=tok["root"])
    assert r.status_code == 200
    r = c.post("/v1/articles/a-high/retire", json={}, headers=tok["root"])
    assert r.status_code == 409 and set(r.json()) == {"error", "detail"}
    r = c.post("/v1/flags/999/resolve", json={"resolution": "fixed"}, headers=tok["root"])
    assert r.status_code == 404 and r.json()["error"] == "flag_not_found"
