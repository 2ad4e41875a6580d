"""``assist.llama.CanonRetriever``: Canon from llama-index, in process and over HTTP.

The real model, real Chroma and a real SQLite database hold a small synced, approved and
indexed KB. The HTTP path runs against the real FastAPI app served by uvicorn on 127.0.0.1
(one server: an embedded index has one server process), through the standard-library client
and through an injected ``httpx.Client``. No LLM anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_index.core import Settings as LlamaSettings
from llama_index.core.schema import (
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from sqlmodel import Session

from api.app import create_app
from assist import indexer
from assist.answer import Question
from assist.embedder import MiniLMEmbedder
from assist.llama import (
    CITATION_KEYS,
    LLM_METADATA_KEYS,
    CanonRetrieval,
    CanonRetriever,
)
from assist.runtime import make_assistant, make_index
from kb import db, governance
from kb.errors import InvalidInput, Unauthenticated
from kb.identity import add_user, create_token
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

pytestmark = pytest.mark.slow

_EMBEDDER = MiniLMEmbedder()

REFUND = "can I get a refund 20 days into an annual plan?"
ROUTER = "what does a flashing orange light on the hub 3 router mean?"
BONUS = "what is the staff bonus for router sales?"
OFF_TOPIC = "give me a recipe for banana bread"
CHARGEBACK = "how many days do we have to respond to a chargeback?"
VENDOR, STAFF = "acme-agent", "staff"

REFUND_BODY = """\
# Refund window
## Eligibility
Annual plan customers can ask for a refund in the first weeks.

::: approved
Customers can get a full refund within 30 days of buying an annual plan.
:::
"""
ROUTER_BODY = """\
# Router lights
## What the lights mean
A solid white light on the Hub 3 router means the connection is working. A flashing
orange light means the router is still starting up; wait five minutes.
"""


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("llama")
    content = root / "content"
    write_article(content, "refund-window", title="Refund window", risk="high",
                  audience=["internal", "vendors"], escalate_to="billing-tier2",
                  body=REFUND_BODY)
    write_article(content, "router-lights", title="Router lights", owner="network-ops",
                  audience=["internal", "vendors"], body=ROUTER_BODY)
    write_article(content, "staff-bonus", title="Staff bonus", owner="hr", audience=["internal"],
                  body="# Staff bonus\n## Rules\n"
                       "The staff bonus for router sales is £5 per router sold.\n")
    write_article(content, "chargeback-deadlines", title="Chargeback deadlines", risk="high",
                  review_every="30d", last_reviewed="2020-01-01",  # overdue on any date
                  audience=["internal", "vendors"], escalate_to="disputes-team",
                  body="# Chargeback deadlines\n## Deadlines\n::: approved\n"
                       "We respond to a chargeback within 7 days of the bank's notice.\n"
                       ":::\n")
    settings = Settings(data_dir=root / ".canon", database_url=f"sqlite:///{root}/canon.db",
                        content_dir=content, assist_rate_per_minute=0)
    engine = db.open_engine(settings)
    assistant = make_assistant(settings, engine, make_index(settings, embedder=_EMBEDDER))
    tokens = {}
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content, author="writer")
        governance.approve_all(s, approver="lead")
        indexer.refresh(s, assistant.index)
        add_user(s, name=VENDOR, role="agent", audiences=["vendor:acme"], by="test")
        add_user(s, name=STAFF, role="evaluator", by="test")
        for name in (VENDOR, STAFF):
            tokens[name] = create_token(s, user=name, expires_in=None, by="test")[1]
    yield {"settings": settings, "engine": engine, "assistant": assistant, "tokens": tokens}
    engine.dispose()


@pytest.fixture(scope="module")
def server_url(kb: dict[str, Any]) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, sharing the fixture's assistant."""
    import uvicorn

    app = create_app(kb["settings"], assistant=kb["assistant"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", loop="asyncio",
                                           http="h11", ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture(scope="module")
def http(kb: dict[str, Any], server_url: str) -> Iterator[dict[str, Any]]:
    """The server's URL, an httpx client for it and the KB, for the HTTP-path tests."""
    with httpx.Client(base_url=server_url, trust_env=False, timeout=60) as client:
        yield {**kb, "url": server_url, "client": client}


def _http(http: dict[str, Any], who: str = VENDOR, **kw: Any) -> CanonRetriever:
    """A retriever over the server through an injected httpx client."""
    return CanonRetriever.from_url(http["url"], token=http["tokens"][who],
                                   client=http["client"], **kw)


def _local(kb: dict[str, Any], audience: str = "vendor:acme") -> CanonRetriever:
    return CanonRetriever.from_assistant(kb["assistant"], audience=audience)


def _check_served(kb: dict[str, Any], nodes: list[NodeWithScore], *, query_id: str) -> None:
    """Every node is a byte-identical slice of the served version, with its full citation."""
    assert nodes
    with Session(kb["engine"]) as s:
        for n in nodes:
            meta = n.node.metadata
            assert set(CITATION_KEYS) | {"query_id", "status", "warnings"} == set(meta)
            assert all(meta[k] not in (None, "", []) for k in CITATION_KEYS), meta
            assert meta["query_id"] == query_id and meta["status"] == "answered"
            served = governance.served_version(s, article_id=meta["article_id"])
            assert served is not None
            assert (served.number, served.content_sha256) == (meta["version"],
                                                               meta["content_sha256"])
            text = n.node.get_content(MetadataMode.NONE)
            assert text == served.text[meta["start"]:meta["end"]]
            assert text.encode() == served.text.encode()[
                len(served.text[:meta["start"]].encode()):len(served.text[:meta["end"]].encode())]
            assert hashlib.sha256(text.encode()).hexdigest() == meta["passage_sha256"]
            assert isinstance(n.node, TextNode)
            assert (n.node.start_char_idx, n.node.end_char_idx) == (meta["start"], meta["end"])
            assert meta["title"] == served.meta["title"] and meta["section"][0] == meta["title"]
            assert meta["owner"] == served.meta["owner"]
            assert meta["risk"] == served.meta["risk"]
            assert n.node.ref_doc_id == f"canon:{meta['article_id']}@{meta['version']}"
            source = n.node.relationships[NodeRelationship.SOURCE]
            assert isinstance(source, RelatedNodeInfo) and source.hash == served.content_sha256


@pytest.fixture(params=["in_process", "http"])
def vendor(request: pytest.FixtureRequest, kb: dict[str, Any]) -> CanonRetriever:
    """An Acme agent's retriever: in process, or over HTTP with the agent's token."""
    if request.param == "in_process":
        return _local(kb)
    return _http(request.getfixturevalue("http"))


def test_in_process_nodes_are_the_assistants_passages_verbatim(kb: dict[str, Any]) -> None:
    retriever = _local(kb)
    nodes = retriever.retrieve(REFUND)
    last = retriever.last_result
    assert last is not None and last.status == "answered" and last.escalation is None
    assert retriever.last_escalation is None and last.nodes == nodes
    _check_served(kb, nodes, query_id=last.query_id)
    top = nodes[0].node.metadata
    assert top["article_id"] == "refund-window" and top["risk"] == "high"
    assert nodes[0].node.get_content() == (
        "Customers can get a full refund within 30 days of buying an annual plan.")
    direct = kb["assistant"].ask(Question(text=REFUND, audience="vendor:acme"))
    assert [n.node.get_content() for n in nodes] == [p.text for p in direct.passages]
    assert [n.score for n in nodes] == [p.score for p in direct.passages]


def test_http_nodes_equal_the_served_response_byte_for_byte(http: dict[str, Any]) -> None:
    retriever = _http(http)
    nodes = retriever.retrieve(ROUTER)
    last = retriever.last_result
    assert last is not None
    _check_served(http, nodes, query_id=last.query_id)
    assert nodes[0].node.metadata["article_id"] == "router-lights"
    raw = http["client"].post("/v1/assist", json={"question": ROUTER},
                              headers={"Authorization": f"Bearer {http['tokens'][VENDOR]}"})
    assert raw.status_code == 200
    passages = raw.json()["passages"]
    assert [n.node.get_content().encode() for n in nodes] == [
        p["text"].encode() for p in passages]
    for n, p in zip(nodes, passages, strict=True):
        assert {k: n.node.metadata[k] for k in CITATION_KEYS} == p["citation"]
        assert n.score == p["score"]


def test_stdlib_http_client_matches_the_in_process_path(http: dict[str, Any]) -> None:
    remote = CanonRetriever.from_url(http["url"], token=http["tokens"][VENDOR])  # urllib
    over_http, in_process = remote.assist(REFUND), _local(http).assist(REFUND)
    assert over_http.status == in_process.status == "answered"
    assert over_http.query_id != in_process.query_id
    _check_served(http, over_http.nodes, query_id=over_http.query_id)

    def comparable(r: CanonRetrieval) -> list[tuple[str, dict[str, Any], float | None]]:
        return [(n.node.get_content(), {k: n.node.metadata[k] for k in CITATION_KEYS},
                 n.score) for n in r.nodes]

    assert comparable(over_http) == comparable(in_process)
    assert [n.node.node_id for n in over_http.nodes] == [n.node.node_id for n in in_process.nodes]
    with pytest.raises(Unauthenticated, match="401"):
        CanonRetriever.from_url(http["url"], token="canon_not-a-token").retrieve(REFUND)
    with pytest.raises(InvalidInput, match="top_k"):
        CanonRetriever.from_url(http["url"], token=http["tokens"][VENDOR],
                                top_k=50).retrieve(REFUND)


def test_off_topic_question_gives_no_nodes_and_the_handoff(kb: dict[str, Any],
                                                          vendor: CanonRetriever) -> None:
    assert vendor.retrieve(ROUTER)  # an answer first: the handoff must not be stale
    assert vendor.retrieve(OFF_TOPIC) == []
    handoff = vendor.last_escalation
    assert handoff is not None
    assert handoff.reason == "no_answer" and handoff.question == OFF_TOPIC
    assert handoff.team == kb["settings"].answer.default_escalation_team
    assert handoff.message
    result = vendor.assist(OFF_TOPIC)
    assert result.status == "no_answer" and result.nodes == [] and not result.answered
    assert result.escalation is not None and result.escalation.team == handoff.team
    assert vendor.retrieve(ROUTER) and vendor.last_escalation is None


def test_withheld_answer_escalates_to_the_owning_team(vendor: CanonRetriever) -> None:
    """Stale high-risk text is withheld: no nodes, and the article's escalate_to team."""
    assert vendor.retrieve(CHARGEBACK) == []
    handoff = vendor.last_escalation
    assert handoff is not None and handoff.reason == "stale"
    assert handoff.team == "disputes-team" and handoff.question == CHARGEBACK
    assert handoff.found[0]["article_id"] == "chargeback-deadlines"
    assert vendor.last_result is not None and vendor.last_result.status == "escalate"


def test_audience_scoping_holds_on_both_paths(http: dict[str, Any]) -> None:
    for vendor in (_http(http, VENDOR), _local(http)):
        for question in (BONUS, "staff bonus", "£5 per router sold", ROUTER):
            result = vendor.assist(question)
            cited = [n.node.metadata["article_id"] for n in result.nodes]
            cited += [f["article_id"] for f in (result.escalation.found
                                                 if result.escalation else [])]
            assert "staff-bonus" not in cited, (question, cited)
    for staff in (_http(http, STAFF), _local(http, "internal")):
        nodes = staff.retrieve(BONUS)
        assert nodes and nodes[0].node.metadata["article_id"] == "staff-bonus"


def test_last_escalation_belongs_to_the_calling_thread_and_task(kb: dict[str, Any]) -> None:
    retriever = _local(kb)
    barrier = threading.Barrier(2, timeout=120)
    seen: dict[str, Any] = {}

    def ask(question: str) -> None:
        nodes = retriever.retrieve(question)
        barrier.wait()  # both questions answered before either looks at its handoff
        seen[question] = (bool(nodes), retriever.last_escalation)

    threads = [threading.Thread(target=ask, args=(q,)) for q in (ROUTER, OFF_TOPIC)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[ROUTER] == (True, None)
    assert seen[OFF_TOPIC][0] is False and seen[OFF_TOPIC][1].reason == "no_answer"
    assert retriever.last_result is None  # this thread asked nothing

    async def task(question: str, done: asyncio.Event, other: asyncio.Event
                   ) -> tuple[int, str | None]:
        nodes = await retriever.aretrieve(question)
        done.set()
        await other.wait()  # both questions answered before either looks at its handoff
        handoff = retriever.last_escalation
        return len(nodes), handoff.reason if handoff else None

    async def both() -> list[tuple[int, str | None]]:
        a, b = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(task(ROUTER, a, b), task(OFF_TOPIC, b, a)))

    (answered, none), (zero, reason) = asyncio.run(both())
    assert answered > 0 and none is None and (zero, reason) == (0, "no_answer")


def test_llama_index_usage_without_an_llm(http: dict[str, Any]) -> None:
    """Node postprocessors, a retriever tool for agents, async and QueryBundle input — and
    llama-index never resolves a default LLM or embedding model."""
    from llama_index.core.postprocessor import SimilarityPostprocessor
    from llama_index.core.tools import RetrieverTool

    retriever = _http(http)
    nodes = retriever.retrieve(QueryBundle(REFUND))
    kept = SimilarityPostprocessor(similarity_cutoff=0.0).postprocess_nodes(nodes)
    assert [n.node.node_id for n in kept] == [n.node.node_id for n in nodes]
    passage = nodes[0].node.get_content()

    tool = RetrieverTool.from_defaults(retriever=retriever, name="canon",
                                       description="Approved support answers, verbatim.")
    out = tool.call(REFUND)
    assert passage in out.content
    llm_view = nodes[0].node.get_content(MetadataMode.LLM)
    assert llm_view.endswith(passage) and llm_view in out.content
    meta = nodes[0].node.metadata
    for key in LLM_METADATA_KEYS:
        assert f"{key}: " in llm_view
    for key in ("content_sha256", "passage_sha256", "query_id", "approved_at", "owner"):
        assert f"{key}: " not in llm_view and str(meta[key]) not in llm_view
    embed_view = nodes[0].node.get_content(MetadataMode.EMBED)
    assert embed_view.endswith(passage) and "article_id: " not in embed_view

    async_nodes = asyncio.run(retriever.aretrieve(REFUND))
    assert [n.node.get_content() for n in async_nodes] == [n.node.get_content() for n in nodes]
    assert asyncio.run(tool.acall(OFF_TOPIC)).content == ""
    assert LlamaSettings._llm is None and LlamaSettings._embed_model is None


def test_bad_input_is_refused_with_a_clear_error(kb: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="blank"):
        _local(kb, "internal").retrieve("  ")
    with pytest.raises(InvalidInput, match="audience"):
        CanonRetriever.from_assistant(kb["assistant"], audience="")
    with pytest.raises(Unauthenticated, match="token"):
        CanonRetriever.from_url("http://127.0.0.1:9", token="")


def test_llama_index_baseline_uses_the_adapter_and_leaves_settings_alone(
        kb: dict[str, Any]) -> None:
    from evals.baselines import llama_index_results
    from evals.suites import Case, Suite
    from evals.workspace import Workspace

    case = Case(id="refund", question=REFUND, articles=("refund-window",), section=None,
                contains=("30 days",), answerable=True, audience=None, group=None, locale=None)
    suite = Suite(name="tiny", path=Path("tiny.yaml"), cases=(case,), sha256="0" * 64)
    ws = Workspace(kb["settings"], kb["engine"], kb["assistant"])
    [result] = llama_index_results(ws, suite, "vendor:acme")
    assert result.ranked_articles[0] == "refund-window" and result.verbatim_ok
    assert "staff-bonus" not in result.ranked_articles
    assert LlamaSettings._llm is None and LlamaSettings._embed_model is None
