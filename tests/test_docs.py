"""The API docs work offline, and every route declares the model of what it returns.

The real app through TestClient *without* a ``with`` block: the lifespan (database, index,
embedding model) does not run, so these tests need no model; routes that read the database
get the test engine on ``app.state``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from sqlalchemy import Engine
from sqlmodel import Session

from api.app import create_app
from api.routes import articles, assist, health, health_knowledge
from evals.health import knowledge_health
from kb import governance
from kb.identity import add_user, create_token
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# Where an asset URL can hide in FastAPI's Swagger UI / ReDoc pages.
_URL = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'|\+ '([^']+)'""")


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    client = TestClient(app)  # no `with`: the lifespan (and the model) stays unloaded
    yield client
    assert not hasattr(app.state, "assistant")


def _urls(html: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in _URL.finditer(html)]


@pytest.mark.parametrize(("page", "assets"), [
    ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
    ("/redoc", {"redoc.standalone.js", "favicon.png"}),
])
def test_docs_pages_load_everything_from_this_server(app_client: TestClient, page: str,
                                                     assets: set[str]) -> None:
    r = app_client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text), "the page names another host"
    assert "fonts.googleapis" not in r.text
    urls = _urls(r.text)
    assert "/openapi.json" in urls
    assert {Path(u).name for u in urls if u.startswith("/docs/assets/")} == assets
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        got = app_client.get(url)
        assert got.status_code == 200, url
        suffix = Path(url).suffix
        if suffix in CONTENT_TYPES:
            assert got.headers["content-type"].startswith(CONTENT_TYPES[suffix]), url
            assert len(got.content) > (100_000 if suffix in (".js", ".css") else 1000), url


def test_swagger_ui_does_not_call_the_online_validator(app_client: TestClient) -> None:
    assert '"validatorUrl": null' in app_client.get("/docs").text


def test_swagger_bundle_is_the_real_thing(app_client: TestClient) -> None:
    js = app_client.get("/docs/assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in js
    assert "Redoc" in app_client.get("/docs/assets/redoc.standalone.js").text


def test_oauth2_redirect_page_is_served(app_client: TestClient) -> None:
    r = app_client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "oauth2" in r.text.lower() and not re.search(r"https?://", r.text)


def test_docs_behind_a_path_prefix(settings: Settings) -> None:
    client = TestClient(create_app(settings), root_path="/canon")
    html = client.get("/docs").text
    assert "/canon/docs/assets/swagger-ui-bundle.js" in html
    assert "url: '/canon/openapi.json'" in html
    assert "/canon/docs/oauth2-redirect" in html


def test_docs_pages_stay_out_of_the_openapi_schema(app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


# --- response models ----------------------------------------------------------------------


def test_every_route_declares_its_response_model(app_client: TestClient) -> None:
    routes = [r for module in (assist, articles, health, health_knowledge)
              for r in module.router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 6
    untyped = [r.path for r in routes if r.response_model is None]
    assert untyped == []
    spec = app_client.get("/openapi.json").json()
    for route in routes:
        for method in route.methods or ():
            content = spec["paths"][route.path][method.lower()]["responses"]["200"]["content"]
            assert "$ref" in content["application/json"]["schema"], (method, route.path)


def test_readyz_declares_its_503(app_client: TestClient) -> None:
    readyz = app_client.get("/openapi.json").json()["paths"]["/readyz"]["get"]["responses"]
    assert readyz["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReadyOut")


def test_healthz_bytes(app_client: TestClient) -> None:
    assert app_client.get("/healthz").content == b'{"status":"ok"}'


def test_readyz_reports_what_is_missing(app_client: TestClient, engine: Engine) -> None:
    app_client.app.state.engine = engine  # type: ignore[attr-defined]
    r = app_client.get("/readyz")  # no assistant: the lifespan did not run
    assert r.status_code == 503
    assert r.json() == {"status": "not ready", "database": "ok",
                        "index": "error: AttributeError", "rate_limits": "ok (per process)",
                        "index_lag": "error: AttributeError",
                        "missing": ["index", "index_lag"]}


def _dumps(data: dict[str, Any]) -> bytes:
    """What the route sent before it declared a model: FastAPI serialized its
    ``dict[str, Any]`` return annotation with pydantic (whose floats differ from ``json``'s:
    ``0.000017`` vs ``1.7e-05``)."""
    return TypeAdapter(dict[str, Any]).dump_json(data)


def test_knowledge_health_is_byte_compatible(app_client: TestClient, engine: Engine,
                                             content_dir: Path) -> None:
    """The response model changes nothing in the JSON the domain function produces."""
    shared = "The refund rule for annual plans is thirty days from the purchase date, " \
             "with no exceptions for partial months or unused seats on the account."
    write_article(content_dir, "refunds", body=f"# Refunds\n## Rule\n{shared}\n")
    write_article(content_dir, "refunds-copy", body=f"# Refunds copy\n## Rule\n{shared}\n")
    write_article(content_dir, "orphan", owner="tbd", review_every="1d")
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
        governance.approve_all(s, approver="lead")
        add_user(s, name="eve", role="evaluator", by="test")
        token = create_token(s, user="eve", expires_in=None, by="test")[1]
        s.commit()
    app_client.app.state.engine = engine  # type: ignore[attr-defined]
    r = app_client.get("/v1/health/knowledge", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    with Session(engine) as s:
        expected = knowledge_health(s)
    assert expected["duplicates"] and expected["ownership"]["unowned"] == ["orphan"]
    expected["at"] = r.json()["at"]
    assert r.content == _dumps(expected)
