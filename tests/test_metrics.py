"""Issue 12: /metrics in the Prometheus format (api/metrics.py), one process and several."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlmodel import Session

from api.app import create_app
from api.deps import get_assistant
from assist.answer import AssistResult, Escalation
from kb import governance
from kb.clock import fixed_clock
from kb.identity import add_user, create_token
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

T0 = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


class _Answers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.next: list[AssistResult] = []

    def ask(self, q: Any) -> AssistResult:
        return self.next.pop(0)


@pytest.fixture
def served(settings: Settings, engine: Engine, content_dir: Path) -> dict[str, Any]:
    write_article(content_dir, "fresh-rule", review_every="90d", audience=["vendors"])
    write_article(content_dir, "old-rule", review_every="30d")
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer", now=T0 - timedelta(days=60))
        governance.approve(s, article_id="old-rule", approver="lead",
                           now=T0 - timedelta(days=60))
        governance.approve(s, article_id="fresh-rule", approver="lead", now=T0)
        add_user(s, name="agent", role="agent", audiences=["vendor:acme"], by="test")
        token = create_token(s, user="agent", expires_in=None, by="test", now=T0)[1]
        s.commit()
    app = create_app(settings.model_copy(update={"max_body_bytes": 2048}),
                     clock=fixed_clock(T0))
    app.state.engine = engine
    answers = _Answers(settings)
    app.dependency_overrides[get_assistant] = lambda: answers
    return {"client": TestClient(app), "auth": {"Authorization": f"Bearer {token}"},
            "answers": answers}


def test_requests_outcomes_and_staleness_are_exported(served: dict[str, Any]) -> None:
    c, auth, answers = served["client"], served["auth"], served["answers"]
    assert c.get("/healthz").status_code == 200
    assert c.get("/v1/articles/fresh-rule", headers=auth).status_code == 200
    assert c.get("/v1/articles/fresh-rule").status_code == 401
    assert c.post("/v1/assist", headers=auth, json={"question": "x" * 5000}).status_code == 413
    assert c.post("/v1/assist", headers=auth, json={"question": ""}).status_code == 422
    answers.next = [
        AssistResult(query_id=uuid.uuid4().hex, status="answered"),
        AssistResult(query_id=uuid.uuid4().hex, status="escalate", escalation=Escalation(
            team="t2", reason="stale", question="q", found=[], message="m")),
        AssistResult(query_id=uuid.uuid4().hex, status="escalate", escalation=Escalation(
            team="t2", reason="stale", question="q", found=[], message="m")),
    ]
    for _ in range(3):
        assert c.post("/v1/assist", headers=auth, json={"question": "refund"}).status_code == 200
    r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    found = samples(r.text)
    article = "/v1/articles/{article_id}"
    assert value(found, "canon_http_requests_total", route=article, method="GET",
                 status="200") == 1
    assert value(found, "canon_http_requests_total", route=article, method="GET",
                 status="401") == 1
    assert value(found, "canon_http_requests_total", route="/healthz", method="GET",
                 status="200") == 1
    # refused by the body limit before routing: counted, with no route to name
    assert value(found, "canon_http_requests_total", route="unmatched", method="POST",
                 status="413") == 1
    assert value(found, "canon_http_requests_total", route="/v1/assist", method="POST",
                 status="422") == 1
    assert value(found, "canon_http_request_duration_seconds_count", route=article,
                 method="GET") == 2
    assert value(found, "canon_http_request_duration_seconds_bucket", route=article,
                 method="GET", le="+Inf") == 2
    assert value(found, "canon_assist_outcomes_total", status="answered", reason="none",
                 audience="vendor:acme") == 1
    assert value(found, "canon_assist_outcomes_total", status="escalate", reason="stale",
                 audience="vendor:acme") == 2
    assert value(found, "canon_stale_articles") == 1  # old-rule: 60 days on a 30-day cadence
    assert not any("fresh-rule" in str(labels) for _, labels in found)  # ids never labels


_WORKER = textwrap.dedent("""
    import sys
    from api.metrics import Metrics
    m = Metrics()
    assert m.multiprocess
    for _ in range(int(sys.argv[1])):
        m.requests.labels(route="/v1/assist", method="POST", status="200").inc()
        m.latency.labels(route="/v1/assist", method="POST").observe(0.02)
    m.assist_outcome(status="answered", reason=None, audience="internal")
""")

_SCRAPE = "from api.metrics import Metrics\nprint(Metrics().render()[0].decode())"


def test_workers_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", _WORKER, str(n)], env=env, cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "-c", _SCRAPE], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    found = samples(out)
    assert value(found, "canon_http_requests_total", route="/v1/assist", method="POST",
                 status="200") == 7
    assert value(found, "canon_http_request_duration_seconds_count", route="/v1/assist",
                 method="POST") == 7
    assert value(found, "canon_assist_outcomes_total", status="answered", reason="none",
                 audience="internal") == 2
