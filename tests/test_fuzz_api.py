"""Issue 12: schemathesis against the app's own OpenAPI, with a token of each role.

A reduced run for CI (a few examples per operation, role and mode, derandomised): zero 5xx,
and every response's status, content type and body as the OpenAPI declares.
``KB_FUZZ_EXAMPLES`` raises the examples per operation for a longer run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine
from sqlmodel import Session

from api.app import create_app
from assist import indexer
from assist.embedder import MiniLMEmbedder
from assist.runtime import make_assistant, make_index
from kb import governance
from kb.identity import add_user, create_token
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("KB_FUZZ_EXAMPLES", "6"))
ROLES = {"agent": {"role": "agent", "audiences": ["vendor:acme"]},
         "owner": {"role": "owner", "teams": ["team-a"]},
         "approver": {"role": "approver", "teams": ["team-a"]},
         "evaluator": {"role": "evaluator"}, "admin": {"role": "admin"}}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("fuzz")
    content = root / "content"
    content.mkdir()
    s = Settings(data_dir=root / ".canon", database_url=f"sqlite:///{root}/canon.db",
                 content_dir=content)
    from kb import db

    engine: Engine = db.open_engine(s)
    for art_id, audience in [("refund-window", ["internal", "vendors"]),
                             ("chargebacks", ["internal"])]:
        write_article(content, art_id, owner="team-a", audience=audience)
    index = make_index(s, embedder=MiniLMEmbedder())
    headers: dict[str, dict[str, str]] = {}
    with Session(engine, expire_on_commit=False) as session:
        sync_folder(session, root=content, author="writer")
        governance.approve_all(session, approver="lead")
        write_article(content, "refund-window", owner="team-a",
                      audience=["internal", "vendors"], body="# Refunds\n## Rule\nNew.\n")
        sync_folder(session, root=content, author="writer")
        indexer.refresh(session, index)
        for name, spec in ROLES.items():
            add_user(session, name=name, role=spec["role"], teams=spec.get("teams", ()),
                     audiences=spec.get("audiences", ()), by="test")
            headers[name] = {"Authorization": "Bearer " + create_token(
                session, user=name, expires_in=None, by="test")[1]}
        session.commit()
    app: FastAPI = create_app(s.model_copy(update={"assist_rate_per_minute": 0}),
                              assistant=make_assistant(s, engine, index))
    # A real server on loopback: schemathesis sends real HTTP requests (its ASGI transport
    # would start the app's lifespan for every call).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.1)
    try:
        yield {"app": app, "headers": headers, "base_url": f"http://127.0.0.1:{port}"}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()


def test_no_server_errors_and_no_schema_violations(fuzz_app: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(fuzz_app["app"].openapi())
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                for role, headers in fuzz_app["headers"].items():
                    try:
                        response = case.call_and_validate(
                            base_url=fuzz_app["base_url"], headers=headers, checks=CHECKS)
                        statuses[response.status_code] += 1
                    except Exception as exc:  # collected: every failure is reported below
                        failures.append(f"{role} {case.method} {case.formatted_path}: "
                                        f"{type(exc).__name__}: {exc}"[:600])

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, operation.label
    total = sum(statuses.values())
    print(f"schemathesis: {total} checked responses, statuses {dict(sorted(statuses.items()))}"
          f", {len(failures)} failures")
    assert not failures, "\n".join(failures[:20])
    assert total >= 100 and not any(code >= 500 for code in statuses)
