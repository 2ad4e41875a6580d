"""End-to-end: the real app, the real embedding model, real Chroma, on the demo KB.

The demo content is synced into a fresh database, the bootstrap import approved, the index
built, and every question goes through ``POST /v1/assist`` via TestClient.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli_app
from kb import governance
from kb.identity import add_user, create_token
from kb.models import ArticleVersion, Flag
from kb.settings import Settings

from .conftest import cli_env
from .kbs import build_kb

pytestmark = pytest.mark.slow

CONTENT = Path(__file__).resolve().parent.parent / "content"
# Callers: an Acme agent, a Globex agent, and company staff (internal audience).
VENDOR, GLOBEX, INTERNAL = "acme-agent", "globex-agent", "staff"
AUDIENCE = {VENDOR: "vendor:acme", GLOBEX: "vendor:globex", INTERNAL: "internal"}

# (question, expected article, expected section heading) — one per demo topic.
TOPIC_QUESTIONS = [
    ("Customer cancelled their annual plan after 20 days, do they get a refund?",
     "refunds-annual-plans", None),
    ("card payment failed, when will we retry the card?", "payments-failed-card-retries", None),
    ("customer is being charged more because of the annual price rise, what do I say?",
     "billing-price-rises", None),
    ("customer wants to cancel within the 14 day cooling-off period", "cancel-cooling-off", None),
    ("how much is the early termination charge if they leave mid contract?",
     "cancel-early-termination-charges", None),
    ("upgrade broadband from Fibre 150 to Fibre 500", "plans-broadband-upgrade", None),
    ("customer forgot their password and can't log in", "account-password-reset", None),
    ("is there an outage in the customer's area?", "outages-area-check", None),
    ("router delivery hasn't arrived, where is the Hub 3?", "delivery-hub3-router", None),
    ("engineer didn't turn up for the installation appointment",
     "field-missed-engineer-appointment", None),
    ("customer asks for a copy of all the personal data we hold on them",
     "privacy-subject-access-request", None),
    ("customer wants to make a formal complaint", "complaints-handling-procedure", None),
    ("TV keeps buffering on the streaming app", "tv-buffering-troubleshooting", None),
]
OFF_TOPIC = [
    "what's the weather going to be like in Manchester tomorrow?",
    "who won the football last night?",
    "give me a recipe for banana bread",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    built = build_kb(tmp_path_factory.mktemp("demo"), assist_rate_per_minute=0)
    engine, settings, content = built.engine, built.settings, built.content
    tokens = {}
    with Session(engine, expire_on_commit=False) as s:
        add_user(s, name=VENDOR, role="agent", audiences=["vendor:acme"], by="test")
        add_user(s, name=GLOBEX, role="agent", audiences=["vendor:globex"], by="test")
        add_user(s, name=INTERNAL, role="evaluator", by="test")
        for name in AUDIENCE:
            tokens[name] = {"Authorization": "Bearer " + create_token(
                s, user=name, expires_in=None, by="test", now=built.clock())[1]}
    app = create_app(settings, assistant=built.assistant)
    with TestClient(app) as client:
        yield {"client": client, "engine": engine, "settings": settings, "content": content,
               "assistant": built.assistant, "tokens": tokens, "clock": built.clock}
    engine.dispose()


def auth(demo: dict[str, Any], who: str) -> dict[str, str]:
    headers: dict[str, str] = demo["tokens"][who]
    return headers


def ask(demo: dict[str, Any], question: str, who: str = VENDOR,
        **body: Any) -> dict[str, Any]:
    r = demo["client"].post("/v1/assist", json={"question": question, **body},
                            headers=auth(demo, who))
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    check_invariants(demo, data, AUDIENCE[who])
    return data


def check_invariants(demo: dict[str, Any], data: dict[str, Any], audience: str) -> None:
    """Invariant 1 and 5 on every answer: byte-identical slices of the served version,
    hashes match, audience allowed, high-risk only through approved blocks."""
    with Session(demo["engine"]) as s:
        for p in data["passages"]:
            c = p["citation"]
            served = governance.served_version(s, article_id=c["article_id"])
            assert served is not None and served.number == c["version"]
            assert served.content_sha256 == c["content_sha256"]
            assert served.text[c["start"]:c["end"]] == p["text"]
            assert hashlib.sha256(p["text"].encode()).hexdigest() == c["passage_sha256"]
            aud = served.meta["audience"]
            if audience == "internal":
                assert "internal" in aud
            else:
                assert "vendors" in aud or audience in aud, (c["article_id"], aud)
            if served.meta["risk"] == "high":
                block = f"::: approved\n{p['text']}\n:::"
                assert block in served.text, "high-risk text served outside an approved block"
            assert c["section"][0] == served.meta["title"]


@pytest.mark.parametrize(("question", "article", "section"), TOPIC_QUESTIONS)
def test_topic_questions_get_the_right_article(demo: dict[str, Any], question: str,
                                               article: str, section: str | None) -> None:
    data = ask(demo, question, who=INTERNAL)
    found = [data["passages"][0]["citation"]["article_id"]] if data["passages"] else []
    found += [f["article_id"] for f in (data["escalation"] or {}).get("found", [])]
    assert article in found[:1], (data["status"], found)


def test_answer_shape_and_citation_fields(demo: dict[str, Any]) -> None:
    data = ask(demo, "how do I reset a customer's password?", top_k=2)
    assert data["status"] == "answered" and 1 <= len(data["passages"]) <= 2
    cit = data["passages"][0]["citation"]
    assert set(cit) >= {"article_id", "title", "version", "content_sha256", "section", "anchor",
                        "start", "end", "passage_sha256", "owner", "approved_at",
                        "last_reviewed", "risk"}
    r = demo["client"].get(f"/v1/articles/{cit['article_id']}", headers=auth(demo, VENDOR))
    assert r.status_code == 200 and r.json()["version"] == cit["version"]


def test_high_risk_serves_only_approved_blocks(demo: dict[str, Any]) -> None:
    data = ask(demo, "customer cancelled an annual plan 20 days in, can they get money back?")
    assert data["status"] == "answered"
    high = [p for p in data["passages"] if p["citation"]["risk"] == "high"]
    assert high, "expected the high-risk refunds article"
    # check_invariants asserted each is exactly an approved block


def test_stale_high_risk_escalates(demo: dict[str, Any]) -> None:
    # disputes-billing-dispute-process is high-risk and overdue for review in the demo.
    data = ask(demo, "customer says a charge on their bill is wrong and wants to dispute it")
    assert data["status"] == "escalate" and data["passages"] == []
    esc = data["escalation"]
    assert esc["reason"] == "stale" and esc["team"] == "billing-tier2"
    assert esc["found"][0]["article_id"] == "disputes-billing-dispute-process"


def test_stale_low_risk_is_served_with_a_warning(demo: dict[str, Any]) -> None:
    data = ask(demo, "how do I check if there is an outage in the customer's area?")
    assert data["status"] == "answered"
    assert data["passages"][0]["citation"]["article_id"] == "outages-area-check"
    assert any(w["code"] == "stale" for w in data["warnings"])


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_off_topic_is_no_answer_with_handoff(demo: dict[str, Any], question: str) -> None:
    data = ask(demo, question)
    assert data["status"] == "no_answer" and data["passages"] == []
    esc = data["escalation"]
    assert esc["team"] and esc["reason"] == "no_answer" and esc["question"] == question


def test_vendor_never_receives_internal_passages(demo: dict[str, Any]) -> None:
    """Property over many questions: ask every heading of every article as acme."""
    with Session(demo["engine"]) as s:
        versions = s.exec(select(ArticleVersion)).all()
        questions = set()
        for v in versions:
            questions.add(v.meta["title"])
            for line in v.text.splitlines():
                if line.startswith("## "):
                    questions.add(f"{line[3:]} {v.meta['title']}")
    assert len(questions) > 200
    for q in sorted(questions):
        data = ask(demo, q)  # check_invariants asserts the audience of every passage
        for f in (data["escalation"] or {}).get("found", []):
            with Session(demo["engine"]) as s:
                served = governance.served_version(s, article_id=f["article_id"])
                assert served is not None
                assert "vendors" in served.meta["audience"] or \
                    "vendor:acme" in served.meta["audience"]


def test_internal_only_article_is_hidden_from_vendor_article_endpoint(
        demo: dict[str, Any]) -> None:
    assert demo["client"].get("/v1/articles/fraud-detection-rules",
                              headers=auth(demo, VENDOR)).status_code == 404
    assert demo["client"].get("/v1/articles/fraud-detection-rules",
                              headers=auth(demo, INTERNAL)).status_code == 200
    assert demo["client"].get("/v1/articles/no-such-thing",
                              headers=auth(demo, INTERNAL)).status_code == 404


def test_feedback_creates_a_flag_for_the_owner(demo: dict[str, Any]) -> None:
    data = ask(demo, "how many devices can stream at once on Brightwave TV?")
    assert data["status"] == "answered"
    r = demo["client"].post(f"/v1/assist/{data['query_id']}/feedback",
                            json={"helpful": False, "reason": "outdated",
                                  "comment": "customer says the limit changed"},
                            headers=auth(demo, VENDOR))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "flagged"
    with Session(demo["engine"]) as s:
        flag = s.get(Flag, body["flag_id"])
        assert flag is not None
        cit = data["passages"][0]["citation"]
        assert (flag.article_id, flag.version_number, flag.start, flag.end) == (
            cit["article_id"], cit["version"], cit["start"], cit["end"])
        assert flag.owner == cit["owner"] and flag.reason == "outdated"
    bad = demo["client"].post(f"/v1/assist/{data['query_id']}/feedback",
                              json={"helpful": False}, headers=auth(demo, VENDOR))
    assert bad.status_code == 422 and "reason" in bad.json()["detail"]
    other = demo["client"].post(f"/v1/assist/{data['query_id']}/feedback",
                                json={"helpful": False, "reason": "wrong"},
                                headers=auth(demo, GLOBEX))
    missing = demo["client"].post("/v1/assist/nope/feedback", json={"helpful": True},
                                  headers=auth(demo, VENDOR))
    # Another audience's query is "not found", like an unknown id (issue 12): no oracle.
    assert other.status_code == missing.status_code == 404
    assert other.json()["error"] == missing.json()["error"] == "query_not_found"


def test_replay_returns_exactly_the_served_text(demo: dict[str, Any]) -> None:
    data = ask(demo, "customer wants to use card number 4111 1111 1111 1111 to pay the bill, "
                     "email jo@example.com — which payment methods do we accept?")
    assert data["status"] == "answered"
    settings: Settings = demo["settings"]
    env = cli_env(settings)
    result = CliRunner().invoke(cli_app, ["audit", "replay", data["query_id"], "--json"],
                                env=env)
    assert result.exit_code == 0, result.output
    import json

    replay = json.loads(result.stdout)
    assert [p["text"] for p in replay["passages"]] == [p["text"] for p in data["passages"]]
    assert all(p["verified"] for p in replay["passages"])
    assert "4111" not in replay["question"] and "jo@example.com" not in replay["question"]
    assert "[CARD]" in replay["question"] and "[EMAIL]" in replay["question"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [({"question": ""}, "question"),
     ({"question": "x" * 2001}, "question"),
     ({"question": "refund\x00please"}, "control character"),
     ({"question": "refund", "top_k": 11}, "top_k"),
     ({"question": "refund", "locale": "not a locale"}, "locale")],
)
def test_bad_questions_get_clear_422(demo: dict[str, Any], body: dict[str, Any],
                                     fragment: str) -> None:
    r = demo["client"].post("/v1/assist", json=body, headers=auth(demo, VENDOR))
    assert r.status_code == 422 and fragment in r.text


def test_missing_or_bad_token_is_401(demo: dict[str, Any]) -> None:
    r = demo["client"].post("/v1/assist", json={"question": "refund"})
    assert r.status_code == 401 and "Bearer" in r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    r = demo["client"].post("/v1/assist", json={"question": "refund"},
                            headers={"Authorization": "Bearer canon_not-a-token"})
    assert r.status_code == 401


def test_health_probes(demo: dict[str, Any]) -> None:
    assert demo["client"].get("/healthz").json() == {"status": "ok"}
    ready = demo["client"].get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    spec = demo["client"].get("/openapi.json").json()
    assert {"/v1/assist", "/v1/review-queue", "/v1/articles/{article_id}"} <= set(spec["paths"])
    citation = spec["components"]["schemas"]["Citation"]["properties"]
    assert {"passage_sha256", "content_sha256", "anchor", "section"} <= set(citation)


def test_metrics_report_the_index_and_outcomes(demo: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    demo["client"].post("/v1/assist", json={"question": "How long is the refund window?"},
                        headers=auth(demo, VENDOR))
    text = demo["client"].get("/metrics").text
    found = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if not s.labels}
    assert found["canon_index_chunks"] > 10
    assert found["canon_index_lag_seconds"] == 0 and found["canon_index_behind_articles"] == 0
    assert "canon_stale_articles" in found
    assert 'canon_assist_outcomes_total{audience="vendor:acme"' in text


def test_cross_tenant_isolation_over_1000_pairs(demo: dict[str, Any]) -> None:
    """Two vendors' agents ask the same generated questions; neither ever receives the other's
    vendor-only passages or any internal-only passage (nor sees them in a handoff)."""
    import random

    rng = random.Random(20261122)
    with Session(demo["engine"]) as s:
        topics = []
        for v in s.exec(select(ArticleVersion)).all():
            topics.append(v.meta["title"])
            topics += [line[3:] for line in v.text.splitlines() if line.startswith("## ")]
    templates = ["{}", "what does the policy say about {}?", "customer asking about {}",
                 "{} - what do I tell them", "how do we handle {} for a customer"]
    pairs = [(rng.choice(templates).format(rng.choice(topics).lower()), who)
             for who in (VENDOR, GLOBEX) for _ in range(500)]
    assert len(pairs) == 1000
    audience_of: dict[str, list[str]] = {}
    with Session(demo["engine"]) as s:
        for v in s.exec(select(ArticleVersion)).all():
            audience_of[v.article_id] = v.meta["audience"]
    leaks = []
    for question, who in pairs:
        data = ask(demo, question, who=who)  # invariants, audience included, per passage
        mine = AUDIENCE[who]
        cited = [p["citation"]["article_id"] for p in data["passages"]]
        cited += [f["article_id"] for f in (data["escalation"] or {}).get("found", [])]
        for article_id in cited:
            aud = audience_of[article_id]
            if not ("vendors" in aud or mine in aud):
                leaks.append((who, question, article_id))
    assert leaks == []


def test_concurrent_askers_get_their_own_answers_and_each_is_logged(
        demo: dict[str, Any]) -> None:
    """Under concurrency questions share forward passes, Chroma queries and audit commits;
    every caller must still get the answer it gets alone, and its own logged entry."""
    from concurrent.futures import ThreadPoolExecutor

    from kb import audit

    cases = [(q, who) for q, _, _ in TOPIC_QUESTIONS for who in (VENDOR, INTERNAL)]
    alone = {(q, who): ask(demo, q, who) for q, who in cases}
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda c: ask(demo, c[0], c[1]), cases * 2))
    for (q, who), data in zip(cases * 2, together, strict=True):
        expected = alone[(q, who)]
        assert data["status"] == expected["status"], q
        assert [p["citation"]["passage_sha256"] for p in data["passages"]] == [
            p["citation"]["passage_sha256"] for p in expected["passages"]], q
    ids = [d["query_id"] for d in together]
    assert len(set(ids)) == len(ids)
    with Session(demo["engine"]) as s:
        for (_, who), data in zip(cases * 2, together, strict=True):
            entry = audit.get_query(s, query_id=data["query_id"])
            assert entry.caller == who and entry.audience == AUDIENCE[who]
            assert [e["passage_sha256"] for e in entry.served] == [
                p["citation"]["passage_sha256"] for p in data["passages"]]


def test_dense_search_in_memory_matches_chroma_on_the_demo(demo: dict[str, Any]) -> None:
    """The demo index is searched in memory (index.memory_search_max_chunks): for every
    topic and off-topic question, in every view a caller reads, the same 40 candidates and
    cosines as Chroma's HNSW query (exact on an index this size)."""
    from kb.audience import caller_views

    index = demo["assistant"].index
    cat = index.catalog()
    assert cat.vectors is not None
    questions = [q for q, _, _ in TOPIC_QUESTIONS] + OFF_TOPIC
    vectors = index.embed_questions(questions)
    n = demo["settings"].retrieval.candidates
    for audience in ["internal", "vendor:acme", "vendor:globex", "vendors"]:
        views = caller_views(audience, cat.views)
        asks = [(views, "en", n) for _ in questions]
        memory = index._dense_many(vectors, asks)
        chroma = index.store.query(vectors, asks, sizes=cat.sizes)
        for q, m, c in zip(questions, memory, chroma, strict=True):
            assert m and len(m) == len(c), (audience, q)
            assert dict(m).keys() == dict(c).keys(), (audience, q)
            for cid, score in m:
                assert score == pytest.approx(dict(c)[cid], abs=1e-5)
