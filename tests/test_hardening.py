"""Issue 12, hardening: the body limit (token first), bounded integers, error bodies that
always build, control characters, declared statuses and constant-shape 404s.

The routes run through the real app and database (SQLite, and PostgreSQL when
``KB_TEST_DATABASE_URL`` is set) without the lifespan: none of these paths needs the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import jsonschema
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine
from sqlmodel import Session

from api.app import create_app
from api.deps import get_assistant
from api.schemas import AssistRequest, FeedbackRequest
from kb import governance
from kb.clock import fixed_clock
from kb.identity import add_user, create_token
from kb.models import Flag, QueryLog
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

T0 = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
LIMIT = 4096


class _Stub:
    """The assistant's place: these tests never reach the answer path."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def ask(self, *_: Any) -> Any:
        raise AssertionError("the request should have been refused before the answer path")


class _NoGaps:
    def __call__(self, questions: list[str]) -> list[int]:
        return list(range(len(questions)))

    def nearest(self, question: str) -> None:
        return None


@pytest.fixture
def api(settings: Settings, engine: Engine, content_dir: Path) -> Iterator[dict[str, Any]]:
    write_article(content_dir, "open-rule", owner="team-a", audience=["internal", "vendors"])
    write_article(content_dir, "secret-rule", owner="team-a", audience=["internal"])
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer", now=T0)
        governance.approve_all(s, approver="lead", now=T0)
        for qid, audience in [("q-acme", "vendor:acme"), ("q-globex", "vendor:globex")]:
            s.add(QueryLog(id=qid, at=T0, caller="someone", audience=audience, locale="en",
                           question="what is the open rule?", status="answered",
                           served=[{"article_id": "open-rule", "version": 1, "start": 0,
                                    "end": 10}]))
        tokens = {}
        for name, role, teams, audiences in [
                ("agent", "agent", [], ["vendor:acme"]), ("root", "admin", [], [])]:
            add_user(s, name=name, role=role, teams=teams, audiences=audiences, by="test")
            tokens[name] = {"Authorization": "Bearer " + create_token(
                s, user=name, expires_in=None, by="test", now=T0)[1]}
        s.commit()
    app = create_app(settings.model_copy(update={"max_body_bytes": LIMIT}),
                     clock=fixed_clock(T0))
    app.state.engine = engine
    stub = _Stub(settings)
    stub.gaps = _NoGaps()  # type: ignore[attr-defined]
    app.dependency_overrides[get_assistant] = lambda: stub
    yield {"app": app, "client": TestClient(app), "tokens": tokens, "engine": engine,
           "spec": app.openapi()}


def conforms(spec: dict[str, Any], method: str, path: str, r: Response) -> None:
    """The response's status is declared for the route, and its body matches the schema."""
    declared = spec["paths"][path][method]["responses"]
    assert str(r.status_code) in declared, (method, path, r.status_code, sorted(declared))
    schema = declared[str(r.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(r.json(), {**schema, "components": spec["components"]})


# --- body limit, token first --------------------------------------------------------------


def _raw(app: FastAPI, *, headers: list[tuple[bytes, bytes]], chunks: list[bytes],
         path: str = "/v1/assist") -> tuple[int, dict[str, Any], int]:
    """Drive the ASGI app directly: (status, body, how many body chunks it read)."""
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= len(chunks):
            return {"type": "http.disconnect"}
        read += 1
        return {"type": "http.request", "body": chunks[read - 1],
                "more_body": read < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def run() -> None:
        await app(scope, receive, send)

    anyio.run(run)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), read


def _bearer(api: dict[str, Any], user: str) -> tuple[bytes, bytes]:
    return (b"authorization", api["tokens"][user]["Authorization"].encode())


HUGE = 312 * 1024 * 1024


def test_an_unauthenticated_huge_body_is_401_without_reading_it(api: dict[str, Any]) -> None:
    for headers in ([], [(b"authorization", b"Bearer not-a-token")]):
        status, body, read = _raw(api["app"], chunks=[b"{" * 1024] * 10, headers=[
            (b"content-type", b"application/json"),
            (b"content-length", str(HUGE).encode()), *headers])
        assert (status, read) == (401, 0), body
        assert "API token" in body["detail"] or "token" in body["detail"]


def test_an_authenticated_body_over_the_limit_is_413_without_reading_it(
        api: dict[str, Any]) -> None:
    status, body, read = _raw(api["app"], chunks=[b"{" * 1024] * 10, headers=[
        (b"content-type", b"application/json"), (b"content-length", str(HUGE).encode()),
        _bearer(api, "agent")])
    assert (status, read) == (413, 0)
    assert "KB_MAX_BODY_BYTES" in body["detail"]


def test_a_chunked_body_stops_being_read_at_the_limit(api: dict[str, Any]) -> None:
    chunks = [b" " * 1024] * 1000  # 1 MB, no Content-Length
    status, body, read = _raw(api["app"], chunks=chunks, headers=[
        (b"content-type", b"application/json"), _bearer(api, "agent")])
    assert status == 413, body
    assert read == LIMIT // 1024 + 1  # the chunk that crossed the limit was the last read
    status, body, read = _raw(api["app"], chunks=chunks, headers=[
        (b"content-type", b"application/json")])
    assert status == 401 and read == LIMIT // 1024 + 1


def test_bodies_within_the_limit_pass_and_a_bad_length_is_400(api: dict[str, Any]) -> None:
    c, agent = api["client"], api["tokens"]["agent"]
    r = c.post("/v1/assist", headers=agent, json={"question": "x" * 2001})
    assert r.status_code == 422  # the route read and validated it (max_length 2000)
    conforms(api["spec"], "post", "/v1/assist", r)
    r = c.post("/v1/assist", headers=agent, json={"question": "é" * (LIMIT // 2)})
    assert r.status_code == 413  # UTF-8 bytes count, not characters
    conforms(api["spec"], "post", "/v1/assist", r)
    status, _, read = _raw(api["app"], chunks=[b"{}"], headers=[
        (b"content-length", b"-5"), _bearer(api, "agent")])
    assert (status, read) == (400, 0)


def test_the_limit_is_a_setting() -> None:
    assert Settings().max_body_bytes == 1024 * 1024
    with pytest.raises(ValueError):
        Settings(max_body_bytes=10)


# --- integers bounded to the storage range ------------------------------------------------


@pytest.mark.parametrize("number", [2**31, 2**31 + 1, 2**63, 10**30])
def test_integers_beyond_storage_are_422(api: dict[str, Any], number: int) -> None:
    c, root, spec = api["client"], api["tokens"]["root"], api["spec"]
    cases = [
        ("post", "/v1/articles/{article_id}/versions/{number}/approve",
         f"/v1/articles/open-rule/versions/{number}/approve", {"note": "ok"}),
        ("get", "/v1/articles/{article_id}/diff",
         f"/v1/articles/open-rule/diff?from=1&to={number}", None),
        ("get", "/v1/articles/{article_id}/diff",
         f"/v1/articles/open-rule/diff?from={number}&to=1", None),
        ("post", "/v1/flags/{flag_id}/resolve", f"/v1/flags/{number}/resolve",
         {"resolution": "fixed"}),
    ]
    for method, template, url, body in cases:
        r = c.request(method.upper(), url, headers=root, json=body)
        assert r.status_code == 422, (url, r.text)
        assert "less than or equal to 2147483647" in r.text
        conforms(spec, method, template, r)


def test_the_largest_storable_integer_is_an_ordinary_404(api: dict[str, Any]) -> None:
    c, root, spec = api["client"], api["tokens"]["root"], api["spec"]
    top = 2**31 - 1
    r = c.post(f"/v1/articles/open-rule/versions/{top}/approve", headers=root,
               json={"note": "ok"})
    assert (r.status_code, r.json()["error"]) == (404, "version_not_found")
    conforms(spec, "post", "/v1/articles/{article_id}/versions/{number}/approve", r)
    r = c.post(f"/v1/flags/{top}/resolve", headers=root, json={"resolution": "fixed"})
    assert (r.status_code, r.json()["error"]) == (404, "flag_not_found")
    r = c.get(f"/v1/articles/open-rule/diff?from=1&to={top}", headers=root)
    assert r.status_code == 404


@pytest.mark.parametrize("article_id", ["a%00b", "UPPER", "x" * 101, "-dash", "a--b"])
def test_ids_no_article_can_have_are_422(api: dict[str, Any], article_id: str) -> None:
    r = api["client"].get(f"/v1/articles/{article_id}", headers=api["tokens"]["root"])
    assert r.status_code == 422, r.text
    conforms(api["spec"], "get", "/v1/articles/{article_id}", r)


# --- error bodies always build -------------------------------------------------------------


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("raw", [
    '{"question": "\\ud800"}', '{"question": "refund \\udfff window"}',
    '{"question": "refund window", "top_k": NaN}',
    '{"question": "refund window", "top_k": Infinity}',
    '{"question": "refund window", "top_k": -Infinity}',
    '{"question": "refund", "tags": ["\\ud83d"]}', '{"question": "\\ud800", "top_k": NaN}',
    '{"\\ud800": 1}',
])
def test_unencodable_input_is_a_clean_422(api: dict[str, Any], raw: str) -> None:
    r = api["client"].post("/v1/assist", content=raw.encode(), headers={
        **api["tokens"]["agent"], "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    body = _strict(r.text)  # valid, strict JSON: no NaN, no lone surrogate
    assert body["detail"]
    conforms(api["spec"], "post", "/v1/assist", r)


def test_a_lone_surrogate_is_named_in_the_message(api: dict[str, Any]) -> None:
    r = api["client"].post("/v1/assist", content=b'{"question": "abc\\ud800"}', headers={
        **api["tokens"]["agent"], "Content-Type": "application/json"})
    (issue,) = r.json()["detail"]
    assert "U+D800" in issue["msg"] and "position 3" in issue["msg"]
    assert issue["input"] == "abc\\ud800"


def test_invalid_utf8_is_a_declared_400(api: dict[str, Any]) -> None:
    r = api["client"].post("/v1/assist", content=b'{"question": "\xff\xfe"}', headers={
        **api["tokens"]["agent"], "Content-Type": "application/json"})
    assert r.status_code in {400, 422}, r.text
    conforms(api["spec"], "post", "/v1/assist", r)


# --- control characters ----------------------------------------------------------------------


@pytest.mark.parametrize(("char", "named"), [
    ("\x00", "U+0000"), ("\x1b", "U+001B"), ("\x85", "U+0085 "), ("\x9b", "U+009B"),
    ("\u202e", "RIGHT-TO-LEFT OVERRIDE"), ("\u202a", "LEFT-TO-RIGHT EMBEDDING"),
    ("\u2066", "LEFT-TO-RIGHT ISOLATE"), ("\u200f", "RIGHT-TO-LEFT MARK"),
    ("\u061c", "ARABIC LETTER MARK"), ("\ufffe", "U+FFFE"),
])
def test_control_characters_in_a_question_are_a_clear_422(api: dict[str, Any], char: str,
                                                           named: str) -> None:
    r = api["client"].post("/v1/assist", headers=api["tokens"]["agent"],
                           json={"question": f"refund{char} window"})
    assert r.status_code == 422, r.text
    (issue,) = r.json()["detail"]
    assert issue["loc"] == ["body", "question"]
    assert named.strip() in issue["msg"] and "position 6" in issue["msg"]
    assert "send plain text" in issue["msg"]
    conforms(api["spec"], "post", "/v1/assist", r)


def test_zero_width_characters_are_stripped_and_plain_text_kept() -> None:
    assert AssistRequest(question="re\u200bfund\u200d win\ufeffdow\u2060").question == \
        "refund window"
    kept = "Rückerstattung für 30 Tage?\tJa — 返金 🙂 \u0645\u0631\u062d\u0628\u0627"
    assert AssistRequest(question=kept).question == kept


def test_flag_comments_refuse_control_characters(api: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RIGHT-TO-LEFT OVERRIDE"):
        FeedbackRequest(helpful=False, reason="wrong", comment="see \u202eevil")
    r = api["client"].post("/v1/assist/q-acme/feedback", headers=api["tokens"]["agent"],
                           json={"helpful": False, "reason": "wrong", "comment": "x\x9by"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "comment"]


# --- constant-shape 404s ---------------------------------------------------------------------


class _Statements:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.seen = engine, []  # type: ignore[var-annotated]

    def __enter__(self) -> list[str]:
        sa.event.listen(self.engine, "before_cursor_execute", self._on)
        return self.seen

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on)

    def _on(self, _c: Any, _cur: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement)


def _same_shape(a: Response, b: Response, *, a_id: str, b_id: str) -> None:
    assert a.status_code == b.status_code == 404
    assert a.json()["error"] == b.json()["error"]
    assert a.json()["detail"].replace(a_id, "ID") == b.json()["detail"].replace(b_id, "ID")
    assert sorted(a.headers) == sorted(b.headers)


def test_a_hidden_article_and_a_missing_one_take_the_same_path(api: dict[str, Any]) -> None:
    c, agent, engine = api["client"], api["tokens"]["agent"], api["engine"]
    assert c.get("/v1/articles/open-rule", headers=agent).status_code == 200
    assert c.get("/v1/articles/secret-rule", headers=api["tokens"]["root"]).status_code == 200
    c.get("/v1/articles/nothing-here", headers=agent)  # warm both paths
    with _Statements(engine) as hidden_sql:
        hidden = c.get("/v1/articles/secret-rule", headers=agent)
    with _Statements(engine) as missing_sql:
        missing = c.get("/v1/articles/nothing-here", headers=agent)
    _same_shape(hidden, missing, a_id="secret-rule", b_id="nothing-here")
    assert hidden_sql == missing_sql  # the same statements: one lookup, scoped
    conforms(api["spec"], "get", "/v1/articles/{article_id}", hidden)


def test_feedback_on_another_tenants_query_is_the_unknown_id_404(api: dict[str, Any]) -> None:
    c, agent, engine = api["client"], api["tokens"]["agent"], api["engine"]
    body = {"helpful": False, "reason": "wrong"}
    c.post("/v1/assist/q-unknown/feedback", headers=agent, json=body)  # warm
    with _Statements(engine) as other_sql:
        other = c.post("/v1/assist/q-globex/feedback", headers=agent, json=body)
    with _Statements(engine) as unknown_sql:
        unknown = c.post("/v1/assist/q-unknown/feedback", headers=agent, json=body)
    _same_shape(other, unknown, a_id="q-globex", b_id="q-unknown")
    assert other.json()["error"] == "query_not_found"
    assert other_sql == unknown_sql
    conforms(api["spec"], "post", "/v1/assist/{query_id}/feedback", other)
    own = c.post("/v1/assist/q-acme/feedback", headers=agent, json={"helpful": True})
    assert own.status_code == 200, own.text


def test_a_domain_422_matches_its_declared_schema(api: dict[str, Any]) -> None:
    r = api["client"].post("/v1/assist/q-acme/feedback", headers=api["tokens"]["agent"],
                           json={"helpful": False})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_input")
    conforms(api["spec"], "post", "/v1/assist/{query_id}/feedback", r)


# --- every status declared -------------------------------------------------------------------


def test_every_route_declares_the_statuses_it_can_return(api: dict[str, Any]) -> None:
    spec = api["spec"]
    public = {("get", "/healthz"), ("get", "/readyz")}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            declared = set(op["responses"])
            if (method, path) in public:
                continue
            expected = {"401", "503"}
            if op.get("parameters"):
                expected |= {"422"}
            if "requestBody" in op:
                expected |= {"400", "413", "422"}
            if any(p["in"] == "path" for p in op.get("parameters", [])):
                expected |= {"404"}
            assert expected <= declared, (method, path, expected - declared)
            for code, response in op["responses"].items():
                assert response["description"], (method, path, code)
                assert "application/json" in response["content"], (method, path, code)
    assert "429" in spec["paths"]["/v1/assist"]["post"]["responses"]
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    for path, method in [("/v1/review-queue", "get"), ("/v1/health/knowledge", "get"),
                         ("/v1/articles/{article_id}/versions/{number}/approve", "post")]:
        assert "403" in spec["paths"][path][method]["responses"]


def test_a_403_and_401_match_their_declared_schemas(api: dict[str, Any]) -> None:
    c, spec = api["client"], api["spec"]
    r = c.get("/v1/review-queue", headers=api["tokens"]["agent"])
    assert r.status_code == 403
    conforms(spec, "get", "/v1/review-queue", r)
    r = c.get("/v1/health/knowledge")
    assert r.status_code == 401
    conforms(spec, "get", "/v1/health/knowledge", r)


def test_an_unreachable_database_is_a_declared_503(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / ".canon", content_dir=tmp_path / "content",
                        database_url="postgresql+psycopg://postgres@127.0.0.1:9/none"
                                     "?connect_timeout=2")
    app = create_app(settings, clock=fixed_clock(T0))
    app.state.engine = sa.create_engine(settings.database_url or "")
    app.dependency_overrides[get_assistant] = lambda: SimpleNamespace()
    r = TestClient(app).get("/v1/articles/open-rule", headers={"Authorization": "Bearer canon_x"})
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable" and r.headers["Retry-After"]
    conforms(app.openapi(), "get", "/v1/articles/{article_id}", r)
    app.state.engine.dispose()


# --- flag comments: stored redacted, shown redacted ------------------------------------------


def test_flag_comments_are_stored_and_queued_redacted(api: dict[str, Any]) -> None:
    c, engine = api["client"], api["engine"]
    comment = ("customer jane.doe(at)example.com says refund to DE89 3704 0044 0532 0130 00, "
               "call 030/1234567")
    r = c.post("/v1/assist/q-acme/feedback", headers=api["tokens"]["agent"],
               json={"helpful": False, "reason": "wrong", "comment": comment})
    assert r.status_code == 200, r.text
    expected = "customer [EMAIL] says refund to [IBAN], call [PHONE]"
    with Session(engine) as s:
        flag = s.get(Flag, r.json()["flag_id"])
        assert flag is not None and flag.comment == expected
        # a row stored before the redactor improved is redacted on the way out too
        flag.comment = "old row: card 4111.1111.1111.1111"
        s.add(flag)
        s.commit()
    queue = c.get("/v1/review-queue", headers=api["tokens"]["root"])
    assert queue.status_code == 200, queue.text
    (item,) = [i for i in queue.json()["items"] if i["kind"] == "flag"]
    assert item["comment"] == "old row: card [CARD]"
    assert "4111" not in queue.text and "example.com" not in queue.text
