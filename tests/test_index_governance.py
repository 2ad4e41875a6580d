"""The index follows governance, and the answer path never trusts it blindly.

Real model, real Chroma (persistent, in tmp_path), real database (SQLite, and PostgreSQL when
KB_TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from api.cli import app as cli_app
from assist import indexer
from assist.answer import Assistant, Question, conflicting, quantities
from assist.embedder import MiniLMEmbedder
from assist.runtime import make_assistant, make_index
from kb import governance
from kb.clock import shifted_clock
from kb.models import ArticleVersion
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import article_text, cli_env, write_article

_EMBEDDER = MiniLMEmbedder()

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


@pytest.fixture
def kb(settings: Settings, engine: Engine, content_dir: Path) -> Iterator[dict[str, Any]]:
    write_article(
        content_dir,
        "refund-window",
        risk="high",
        title="Refund window",
        audience=["internal", "vendors"],
        escalate_to="billing-tier2",
        body=REFUND_BODY,
    )
    write_article(
        content_dir,
        "router-lights",
        title="Router lights",
        audience=["internal", "vendors"],
        owner="network-ops",
        body=ROUTER_BODY,
    )
    write_article(
        content_dir,
        "staff-bonus",
        title="Staff bonus",
        audience=["internal"],
        owner="hr",
        body="# Staff bonus\n## Rules\nThe staff bonus for router sales is £5 per router sold.\n",
    )
    index = make_index(settings, embedder=_EMBEDDER)
    assistant = make_assistant(settings, engine, index)
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
        governance.approve_all(s, approver="lead")
        indexer.refresh(s, index)
    yield {"assistant": assistant, "engine": engine, "content": content_dir, "settings": settings}


def _ask(a: Assistant, text: str, audience: str = "vendor:acme", **kw: Any) -> Any:
    return a.ask(Question(text=text, audience=audience, caller="test", **kw))


def _refresh(kb: dict[str, Any], ids: list[str] | None = None) -> indexer.RefreshReport:
    with Session(kb["engine"]) as s:
        return indexer.refresh(s, kb["assistant"].index, article_ids=ids)


def _sync(kb: dict[str, Any]) -> None:
    with Session(kb["engine"], expire_on_commit=False) as s:
        sync_folder(s, root=kb["content"], author="writer")


def _approve(kb: dict[str, Any], article_id: str) -> None:
    with Session(kb["engine"], expire_on_commit=False) as s:
        governance.approve(s, article_id=article_id, approver="lead")


@pytest.mark.slow
def test_edit_keeps_old_text_until_approved(kb: dict[str, Any]) -> None:
    a = kb["assistant"]
    (kb["content"] / "router-lights.md").write_text(
        article_text(
            "router-lights",
            title="Router lights",
            audience=["internal", "vendors"],
            owner="network-ops",
            body=ROUTER_BODY.replace("solid white", "solid blue"),
        )
    )
    _sync(kb)
    report = _refresh(kb)
    assert not report.changed  # a pending version is never indexed
    r = _ask(a, "what does the light on the hub 3 router mean?")
    assert r.status == "answered" and "solid white" in r.passages[0].text
    assert r.passages[0].citation.version == 1

    _approve(kb, "router-lights")
    # Approved, but this server's index has not caught up yet (another process approved, or
    # a crash): the previous approved text keeps serving — never another article instead...
    r = _ask(a, "what does the light on the hub 3 router mean?")
    assert r.status == "answered" and r.passages[0].citation.article_id == "router-lights"
    assert "solid white" in r.passages[0].text and r.passages[0].citation.version == 1
    # ...for at most max_lag_seconds; past that bound the article is hidden.
    wall = a.clock
    a.clock = shifted_clock(timedelta(seconds=a.max_lag_seconds + 1), wall)
    try:
        r = _ask(a, "what does the light on the hub 3 router mean?")
        assert all(p.citation.article_id != "router-lights" for p in r.passages)
    finally:
        a.clock = wall
    report = _refresh(kb)  # the next sync/refresh repairs it
    assert report.indexed == [("router-lights", 2)]
    r = _ask(a, "what does the light on the hub 3 router mean?")
    assert "solid blue" in r.passages[0].text and r.passages[0].citation.version == 2


@pytest.mark.slow
def test_retired_article_is_never_served(kb: dict[str, Any]) -> None:
    a = kb["assistant"]
    with Session(kb["engine"], expire_on_commit=False) as s:
        governance.retire(s, article_id="router-lights", by="lead")
    # index not refreshed yet: still never served
    r = _ask(a, "what does the light on the hub 3 router mean?")
    assert all(p.citation.article_id != "router-lights" for p in r.passages)
    assert _refresh(kb, ["router-lights"]).removed == ["router-lights"]
    assert "router-lights" not in a.index.manifest()
    r = _ask(a, "what does the light on the hub 3 router mean?")
    assert all(p.citation.article_id != "router-lights" for p in r.passages)


@pytest.mark.slow
def test_high_risk_serves_only_the_approved_block(kb: dict[str, Any]) -> None:
    r = _ask(kb["assistant"], "can an annual plan customer get a refund?")
    assert r.status == "answered"
    assert r.passages[0].text == (
        "Customers can get a full refund within 30 days of buying an annual plan."
    )
    assert all("first weeks" not in p.text for p in r.passages)


@pytest.mark.slow
def test_high_risk_plain_text_finds_the_article_but_is_never_served(
        kb: dict[str, Any]) -> None:
    """The plain text of a high-risk article is indexed (so a question in its words finds
    the article) and never served: the answer is the article's approved block."""
    a = kb["assistant"]
    plain = "Annual plan customers can ask for a refund in the first weeks."
    hits = a.index.dense(_EMBEDDER.embed_query(plain), views=("vendors",), locale="en", n=10)
    indexed = [c for cid, _ in hits if (c := a.index.chunk(cid)) is not None
               and c.article_id == "refund-window"]
    assert any(c.text == plain and not c.servable for c in indexed)
    r = _ask(a, plain)
    assert r.status == "answered", r.escalation
    assert r.passages[0].citation.article_id == "refund-window"
    assert r.passages[0].text == (
        "Customers can get a full refund within 30 days of buying an annual plan.")
    for who in ("vendor:acme", "internal"):
        r = _ask(a, plain, audience=who, top_k=10)
        assert all(plain not in p.text for p in r.passages)


@pytest.mark.slow
@pytest.mark.parametrize("stored", ["HIGH", None])
def test_a_stored_risk_that_is_no_known_level_is_served_as_high(
        kb: dict[str, Any], stored: str | None) -> None:
    """A version stored under an older, looser parser may hold a risk that is no known level
    (or none): chunking reads it as high, and so must serving, or its plain text (indexed
    to find the article) would be served."""
    a = kb["assistant"]
    with Session(kb["engine"]) as s:
        v = s.exec(select(ArticleVersion).where(
            ArticleVersion.article_id == "refund-window")).one()
        meta = {k: val for k, val in v.meta.items() if k != "risk"}
        if stored is not None:
            meta["risk"] = stored
        v.meta = meta
        s.add(v)
        s.commit()
    a._served, a._followed = {}, (None, a.policy)  # as after a governance change
    with Session(kb["engine"]) as s:
        indexer.rebuild(s, a.index)
    plain = "Annual plan customers can ask for a refund in the first weeks."
    for who in ("vendor:acme", "internal"):
        r = _ask(a, plain, audience=who, top_k=10)
        assert r.passages, r.escalation
        assert all(plain not in p.text for p in r.passages)
        assert r.passages[0].citation.risk == "high"


@pytest.mark.slow
def test_vendor_view_holds_no_internal_chunks(kb: dict[str, Any]) -> None:
    index = kb["assistant"].index
    assert index.views() == {"internal", "vendors"}
    r = _ask(kb["assistant"], "how much is the staff bonus for router sales?")
    assert all(p.citation.article_id != "staff-bonus" for p in r.passages)
    r = _ask(kb["assistant"], "how much is the staff bonus for router sales?", audience="internal")
    assert r.passages[0].citation.article_id == "staff-bonus"
    vendor_ids = {
        cid
        for cid, _ in index.dense(
            _EMBEDDER.embed_query("staff bonus"), views=("vendors",), locale="en", n=10
        )
    }
    assert vendor_ids and not any(c.startswith("staff-bonus|") for c in vendor_ids)


@pytest.mark.slow
def test_audience_is_rechecked_against_the_database(kb: dict[str, Any]) -> None:
    """The approved version narrows the audience but the index still has the old chunks."""
    (kb["content"] / "router-lights.md").write_text(
        article_text(
            "router-lights",
            title="Router lights",
            audience=["internal"],
            owner="network-ops",
            body=ROUTER_BODY,
        )
    )
    _sync(kb)
    _approve(kb, "router-lights")
    # Simulate a stale index that still lists version 2 as vendor-visible.
    with Session(kb["engine"]) as s:
        v2 = governance.get_version(s, article_id="router-lights", number=2)
    from assist.chunks import chunk_version

    stale_chunks = [
        c.__class__(**{**c.__dict__, "audience": ("internal", "vendors")})
        for c in chunk_version(
            article_id="router-lights", version=2, content_sha256=v2.content_sha256, text=v2.text
        )
    ]
    kb["assistant"].index.replace(["router-lights"], stale_chunks)
    r = _ask(kb["assistant"], "what does the light on the hub 3 router mean?")
    assert all(p.citation.article_id != "router-lights" for p in r.passages)
    _refresh(kb)


@pytest.mark.slow
def test_vendor_specific_article_gets_its_own_view(kb: dict[str, Any]) -> None:
    write_article(
        kb["content"],
        "acme-hours",
        audience=["internal", "vendor:acme"],
        body="# Acme hours\n## Opening hours\nThe Acme queue is open 8am to 10pm.\n",
    )
    _sync(kb)
    _approve(kb, "acme-hours")
    _refresh(kb)
    a = kb["assistant"]
    assert a.index.views() == {"internal", "vendors", "vendor:acme"}
    r = _ask(a, "what are the acme queue opening hours?")
    assert r.passages[0].citation.article_id == "acme-hours"
    # vendor:acme still sees what all vendors see (the shared view is queried too)
    r = _ask(a, "what does the light on the hub 3 router mean?")
    assert r.passages[0].citation.article_id == "router-lights"
    r = _ask(a, "what are the acme queue opening hours?", audience="vendor:globex")
    assert all(p.citation.article_id != "acme-hours" for p in r.passages)
    # Each chunk is stored once per audience label: the acme view holds only acme's own.
    acme_only = a.index.dense(_EMBEDDER.embed_query("router lights"), views=("vendor:acme",),
                              locale="en", n=10)
    assert {cid.split("|")[0] for cid, _ in acme_only} == {"acme-hours"}


@pytest.mark.slow
def test_conflicting_approved_policies_escalate_as_ambiguous(kb: dict[str, Any]) -> None:
    write_article(
        kb["content"],
        "refund-window-promo",
        risk="high",
        title="Refund window (promotions)",
        audience=["internal", "vendors"],
        escalate_to="billing-tier2",
        body=REFUND_BODY.replace("30 days", "14 days").replace(
            "# Refund window", "# Refund window (promotions)"
        ),
    )
    _sync(kb)
    _approve(kb, "refund-window-promo")
    _refresh(kb)
    r = _ask(
        kb["assistant"], "how many days does an annual plan customer have to get a full refund?"
    )
    assert r.status == "escalate" and r.passages == []
    assert r.escalation is not None and r.escalation.reason == "ambiguous"
    assert {f["article_id"] for f in r.escalation.found} == {"refund-window", "refund-window-promo"}


def test_quantity_conflicts() -> None:
    assert quantities("within 30 days, fee £50 and 2 weeks") >= {
        ("day", "30"),
        ("£", "50"),
        ("week", "2"),
    }
    assert conflicting("refund within 30 days", "refund within 14 days")
    assert not conflicting("refund within 30 days", "refund within 30 days or 2 weeks")
    assert not conflicting("refund within 30 days", "a fee of £50")


@pytest.mark.slow
def test_locale_fallback(kb: dict[str, Any]) -> None:
    write_article(
        kb["content"],
        "router-lights-es",
        audience=["internal", "vendors"],
        owner="network-ops",
        locale="es",
        translation_of="router-lights",
        body="# Luces del router\n## Qué significan\nUna luz blanca fija en el "
        "router Hub 3 significa que la conexión funciona.\n",
    )
    _sync(kb)
    _approve(kb, "router-lights-es")
    _refresh(kb)
    a = kb["assistant"]
    r = _ask(a, "¿qué significa la luz blanca del router Hub 3?", locale="es")
    assert r.passages[0].citation.article_id == "router-lights-es"
    assert r.passages[0].citation.locale == "es"
    r = _ask(a, "what does the light on the hub 3 router mean?", locale="fr")
    assert r.passages[0].citation.article_id == "router-lights"
    assert any(w["code"] == "locale_fallback" for w in r.warnings)
    # kb eval tune's evidence falls back as the answer does
    ev = a.evidence(Question(text="what does the light on the hub 3 router mean?",
                             audience="vendor:acme", caller="test", locale="fr"))
    assert "router-lights" in {c.article_id for c in ev.chunks.values()}
    # Naming no locale: asked in the locale the question's words read as.
    spanish = "¿qué significa una luz blanca fija en el router?"
    r = _ask(a, spanish)
    assert r.passages[0].citation.article_id == "router-lights-es", r.passages
    assert not r.warnings
    r = _ask(a, "what does a solid white light on the router mean?")
    assert r.passages[0].citation.article_id == "router-lights"
    cfg = a.settings.answer
    a.settings.answer = cfg.model_copy(update={"detect_locale": False})
    try:
        r = _ask(a, spanish)  # read as English, as before detection
        asked_en = _ask(a, spanish, locale="en")
        assert (r.status, [p.citation for p in r.passages]) == (
            asked_en.status, [p.citation for p in asked_en.passages])
        assert all(p.citation.locale == "en" for p in r.passages)
    finally:
        a.settings.answer = cfg


@pytest.mark.slow
def test_a_question_in_a_script_without_spaces_finds_its_article(kb: dict[str, Any]) -> None:
    """Japanese (as Chinese) writes no spaces between words: its text is read as
    overlapping character pairs, so the lexical search, coverage and the question's locale
    work on it as on English words."""
    for art_id, title, heading, text in (
        ("router-lights-ja", "ルーターのランプ", "ランプの意味",
         "Hub 3 ルーターの白いランプが点灯している場合、インターネット接続は正常です。"),
        ("refunds-ja", "返金", "返金の申請期限",
         "年間プランの返金は、購入日から30日以内であれば申請できます。"),
    ):
        write_article(kb["content"], art_id, audience=["internal", "vendors"],
                      owner="network-ops", locale="ja",
                      body=f"# {title}\n## {heading}\n{text}\n")
        _sync(kb)
        _approve(kb, art_id)
    _refresh(kb)
    a = kb["assistant"]
    for question, expected in (("白いランプが点灯している意味は\uff1f", "router-lights-ja"),
                               ("返金は購入日から何日以内に申請できますか", "refunds-ja")):
        r = _ask(a, question)  # no locale named: read as Japanese
        assert r.status == "answered", (question, r.status, r.warnings)
        assert r.passages[0].citation.article_id == expected, (question, r.passages)
        assert r.passages[0].citation.locale == "ja"
        hits = a.index.lexical(question, views=["vendors"], locale="ja", n=2)
        assert hits and hits[0][0].startswith(expected + "|"), hits


@pytest.mark.slow
def test_index_rebuild_and_status_cli(kb: dict[str, Any]) -> None:
    settings: Settings = kb["settings"]
    env = cli_env(settings)
    runner = CliRunner()
    before = kb["assistant"].index.manifest()
    assert runner.invoke(cli_app, ["users", "bootstrap", "root"], env=env).exit_code == 0
    result = runner.invoke(cli_app, ["index", "rebuild", "--as", "root"], env=env)
    assert result.exit_code == 0, result.output
    assert "3 articles indexed" in result.output
    status = runner.invoke(cli_app, ["index", "status", "--json"], env=env)
    assert status.exit_code == 0 and '"out_of_date": []' in status.stdout
    kb["assistant"].index._checked_at = 0.0  # let this process notice the new generation
    assert kb["assistant"].index.manifest() == before


def test_collection_name_encodes_model_and_chunking(settings: Settings) -> None:
    index = make_index(settings, embedder=_EMBEDDER)
    assert index.prefix == "canon-all-minilm-l6-v2-c1200-k3-l2"
    other = make_index(
        settings.model_copy(
            update={"index": settings.index.model_copy(update={"chunk_max_chars": 600})}
        ),
        embedder=_EMBEDDER,
    )
    assert other.prefix != index.prefix


@pytest.mark.slow
def test_unservable_text_never_holds_back_the_locale_fallback(
        settings: Settings, engine: Engine, content_dir: Path) -> None:
    """A high-risk article's plain text in the asked locale may match the question well
    while its approved block does not: the answer falls back to the default locale (as the
    approval simulation predicts) instead of saying nothing."""
    write_article(content_dir, "plan-fr", risk="high", title="Notes internes", locale="fr",
                  audience=["internal", "vendors"], body=(
                      "# Notes internes\n## Divers\nAnnual plan customers can ask for a "
                      "refund in the first weeks.\n\n::: approved\nPrinter toner is ordered "
                      "through facilities every Monday.\n:::\n"))
    write_article(content_dir, "refunds-en", title="Annual plan refunds",
                  audience=["internal", "vendors"], body=(
                      "# Annual plan refunds\n## Window\nAnnual plan customers can ask for a "
                      "refund within the first 30 days.\n"))
    assistant = make_assistant(settings, engine, make_index(settings, embedder=_EMBEDDER))
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
        governance.approve_all(s, approver="lead")
        indexer.refresh(s, assistant.index)
    r = _ask(assistant, "can annual plan customers ask for a refund in the first weeks?",
             locale="fr")
    assert r.status == "answered", r.escalation
    assert [w["code"] for w in r.warnings] == ["locale_fallback"]
    assert r.passages[0].citation.article_id == "refunds-en"


def test_retrieval_keeps_only_the_shortlisted_articles_in_order(kb: dict[str, Any]) -> None:
    """The answer path asks retrieval for the candidates of its shortlist only: the same
    candidates, in the same order, as the full ranking cut to its first articles."""
    from assist.retrieve import rank

    a = kb["assistant"]
    question = "refund for an annual plan, router lights and the staff bonus"
    vector = a.index.embed_questions([question])[0]
    args: dict[str, Any] = dict(question=question, vector=vector, views=("internal",),
                                locale="en", settings=a.settings.retrieval)
    full = rank(a.index, **args)[0]
    order = list(dict.fromkeys(c.chunk.article_id for c in full))
    assert len(order) == 3  # the cut below must drop something
    for n in (1, 2, 3):
        cut = rank(a.index, **args, articles=n)[0]
        assert [c.chunk.id for c in cut] == [c.chunk.id for c in full
                                             if c.chunk.article_id in order[:n]]


REVERSAL_PLAIN = ("When a customer's bank reverses a card payment the customer disputed with "
                  "the bank, the payment is taken back and the account goes into arrears.")


def _write_high_risk(kb: dict[str, Any], article_id: str, title: str, plain: str,
                     more: str = "") -> None:
    write_article(kb["content"], article_id, risk="high", title=title,
                  audience=["internal", "vendors"], escalate_to="disputes-team",
                  body=f"# {title}\n## What happens\n{plain}\n{more}")


CARD_PAYMENTS = ("We take a customer's card payment on the first of each month; the "
                 "customer can change the card in the app.")


def _add_reversals(kb: dict[str, Any], *, article_id: str, title: str, plain: str,
                   more: str = "", card: str = CARD_PAYMENTS) -> None:
    """A high-risk article (with no approved language unless ``more`` adds some), and a
    low-risk one about card payments next to it."""
    _write_high_risk(kb, article_id, title, plain, more)
    write_article(kb["content"], "card-payments", title="Card payments",
                  audience=["internal", "vendors"], owner="billing",
                  body=f"# Card payments\n## Taking card payments\n{card}\n")
    _sync(kb)
    with Session(kb["engine"], expire_on_commit=False) as s:
        governance.approve_all(s, approver="lead")
    _refresh(kb)


@pytest.mark.slow
def test_a_question_that_matches_high_risk_text_best_escalates_without_approved_language(
        kb: dict[str, Any]) -> None:
    """The best match is a high-risk article's plain text (never served) and the answer
    would come from another article: the answer path escalates to that article's team
    (``no_approved_language``) instead of answering from the neighbour. The handoff names
    the article and never quotes the plain text. `kb eval tune` scores it the same way."""
    from evals.suites import Case, Suite
    from evals.tune import observe, outcome

    _add_reversals(kb, article_id="bank-reversals", title="Bank reversals",
                   plain=REVERSAL_PLAIN)
    a = kb["assistant"]
    question = "the customer's bank reversed a card payment they disputed, what happens now?"
    for who in ("vendor:acme", "internal"):
        r = _ask(a, question, audience=who)
        assert r.status == "escalate" and r.escalation is not None, r.passages
        assert r.escalation.reason == "no_approved_language"
        assert r.escalation.team == "disputes-team"
        assert [f["article_id"] for f in r.escalation.found] == ["bank-reversals"]
        assert r.passages == [] and "arrears" not in repr(r.escalation)
    # Switched off, the neighbour answers.
    answer = a.settings.answer.model_copy(update={"escalate_without_approved_language": False})
    off = make_assistant(a.settings.model_copy(update={"answer": answer}), kb["engine"], a.index)
    r = _ask(off, question)
    assert r.status == "answered" and r.passages[0].citation.article_id == "card-payments"
    # The question lands on the article's team's desk as a gap in approved language.
    from kb.queue import review_queue

    with Session(kb["engine"]) as s:
        gaps = [i for i in review_queue(s, teams=["disputes-team"]) if i["kind"] == "gap"]
    assert [g["question"] for g in gaps] == [question]
    # A question the neighbour's own text answers is still answered from it.
    r = _ask(a, "can the customer change the card we take payments from in the app?")
    assert r.status == "answered" and r.passages[0].citation.article_id == "card-payments"

    case = Case(id="c1", question=question, articles=("card-payments",), section=None,
                contains=(), answerable=True, audience=None, group=None, locale=None)
    suite = Suite(name="s", path=Path("s.yaml"), cases=(case,), sha256="0" * 64)
    (seen,) = observe(a, suite, default_audience="internal")
    assert any(c.article_id == "bank-reversals" for c in seen.evidence.unservable.values())
    assert outcome(seen, a.policy).status != "answered"


@pytest.mark.slow
def test_a_high_risk_topic_with_nothing_servable_goes_to_its_team(kb: dict[str, Any]) -> None:
    """Nothing servable answers, and the best match is a high-risk article's plain text
    that would answer were it approved language: the question is that article's topic, so
    it escalates to that article's team (``no_approved_language``), not to the default
    team. An off-topic question still ends in ``no_answer``."""
    _write_high_risk(kb, "bank-reversals", "Bank reversals", REVERSAL_PLAIN)
    _sync(kb)
    with Session(kb["engine"], expire_on_commit=False) as s:
        governance.approve_all(s, approver="lead")
    _refresh(kb)
    a = kb["assistant"]
    question = "the customer's bank reversed a card payment they disputed, what happens now?"
    for who in ("vendor:acme", "internal"):
        r = _ask(a, question, audience=who)
        assert r.escalation is not None, r.passages
        assert (r.status, r.escalation.reason, r.escalation.team) == (
            "escalate", "no_approved_language", "disputes-team")
        assert [f["article_id"] for f in r.escalation.found] == ["bank-reversals"]
        assert "arrears" not in repr(r.escalation)
    default_team = a.settings.answer.default_escalation_team
    r = _ask(a, "what will the weather be like at the weekend?")
    assert r.escalation is not None
    assert (r.status, r.escalation.reason, r.escalation.team) == (
        "no_answer", "no_answer", default_team)
    # Switched off: no answer, and no team named.
    answer = a.settings.answer.model_copy(update={"escalate_without_approved_language": False})
    off = make_assistant(a.settings.model_copy(update={"answer": answer}), kb["engine"], a.index)
    r = _ask(off, question)
    assert r.escalation is not None and r.escalation.reason == "no_answer"
    # The approval check's simulation reads the case as the answer path does: escalated
    # to the article's team with the article in place, no answer without it.
    from assist.conflicts import Simulation, indexed_chunks

    with Session(kb["engine"]) as s:
        version = s.exec(select(ArticleVersion).where(
            ArticleVersion.article_id == "bank-reversals")).one()
        chunks = indexed_chunks(a, version)
    vector = a.index.embed_questions([question])[0]
    sim = Simulation(a)
    with_it = sim.ask(question, vector, audience="internal", locale=None,
                      article_id="bank-reversals", chunks=chunks)
    assert with_it.status == "escalate" and with_it.lead is not None
    assert with_it.lead.article_id == "bank-reversals"
    without = sim.ask(question, vector, audience="internal", locale=None,
                      article_id="bank-reversals", chunks=[])
    assert (without.status, without.lead) == ("no_answer", None)


@pytest.mark.slow
def test_the_approval_check_sees_a_case_escalate_for_want_of_approved_language(
        kb: dict[str, Any]) -> None:
    """Approving high-risk text that becomes a question's best match, with no approved
    language for it, stops that question being answered: the approval check says so."""
    from assist.conflicts import Expectation, broken_expectations, indexed_chunks

    _add_reversals(kb, article_id="disputes-desk", title="Disputes desk",
                   plain="The disputes desk works on weekdays from nine to five.")
    a = kb["assistant"]
    question = "the customer's bank reversed a card payment they disputed, what happens now?"
    today = _ask(a, question)
    assert today.status == "answered", today.escalation  # from card-payments
    assert today.passages[0].citation.article_id == "card-payments"
    _write_high_risk(kb, "disputes-desk", "Disputes desk", REVERSAL_PLAIN)
    _sync(kb)
    with Session(kb["engine"]) as s:
        versions = s.exec(select(ArticleVersion).where(
            ArticleVersion.article_id == "disputes-desk")
            .order_by(col(ArticleVersion.number))).all()
        old, new = (indexed_chunks(a, v) for v in versions)
    found = broken_expectations(
        a, article_id="disputes-desk", old=old, new=new,
        expectations=[Expectation(id="c1", question=question, articles=("card-payments",))])
    assert len(found) == 1 and "high-risk 'disputes-desk'" in found[0].message


@pytest.mark.slow
def test_facts_read_before_a_retirement_never_outlive_it(
        kb: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A question reads what the database serves while another process retires the
    article: what it read before the retirement must not be cached for later questions."""
    import threading

    import assist.answer as answer_module

    a = kb["assistant"]
    question = "what does the light on the hub 3 router mean?"
    assert _ask(a, question).passages[0].citation.article_id == "router-lights"
    real = answer_module.served_info
    reading, resume = threading.Event(), threading.Event()

    def slow(session: Session, **kw: Any) -> Any:
        out = real(session, **kw)
        if threading.current_thread().name == "slow-question":
            reading.set()
            resume.wait(10)
        return out

    monkeypatch.setattr(answer_module, "served_info", slow)
    a._served.pop("router-lights", None)  # not cached: this question asks the database
    t = threading.Thread(target=lambda: _ask(a, question), name="slow-question")
    t.start()
    assert reading.wait(10)
    with Session(kb["engine"], expire_on_commit=False) as s:
        governance.retire(s, article_id="router-lights", by="lead")
    a._follow_now()  # the next question sees the clock move
    resume.set()
    t.join()
    for _ in range(3):
        r = _ask(a, question)
        assert all(p.citation.article_id != "router-lights" for p in r.passages), r.passages


@pytest.mark.slow
def test_the_lead_is_read_as_tune_reads_it_when_the_index_lags(kb: dict[str, Any]) -> None:
    """A chunk the index still holds but the database no longer serves (retired, index not
    refreshed) ranks above the high-risk text: the answer path skips it, as kb eval tune
    does, and still escalates."""
    from evals.suites import Case, Suite
    from evals.tune import observe, outcome

    _add_reversals(kb, article_id="bank-reversals", title="Bank reversals",
                   plain=REVERSAL_PLAIN)
    a = kb["assistant"]
    question = "the customer's bank reversed a card payment they disputed, what happens now?"
    write_article(kb["content"], "old-faq", title="Old FAQ", audience=["internal", "vendors"],
                  owner="billing", body="# Old FAQ\n## Reversed card payments\nWhen the "
                  "customer's bank reversed a card payment they disputed, what happens now: "
                  + REVERSAL_PLAIN + "\n")
    _sync(kb)
    _approve(kb, "old-faq")
    _refresh(kb)
    assert _ask(a, question, audience="internal").passages[0].citation.article_id == "old-faq"
    with Session(kb["engine"], expire_on_commit=False) as s:
        governance.retire(s, article_id="old-faq", by="lead")  # the index still holds it
    r = _ask(a, question, audience="internal")
    case = Case(id="c1", question=question, articles=("card-payments",), section=None,
                contains=(), answerable=True, audience="internal", group=None, locale=None)
    suite = Suite(name="s", path=Path("s.yaml"), cases=(case,), sha256="0" * 64)
    (seen,) = observe(a, suite, default_audience="internal")
    assert r.escalation is not None and r.escalation.reason == "no_approved_language"
    assert outcome(seen, a.policy).status != "answered"


@pytest.mark.slow
def test_the_lead_holds_while_the_index_catches_up_with_its_new_version(
        kb: dict[str, Any]) -> None:
    """Within max_lag_seconds of approving a new version of the high-risk article, the
    indexed previous version still counts (as for servable text): no neighbour answers."""
    _add_reversals(kb, article_id="bank-reversals", title="Bank reversals",
                   plain=REVERSAL_PLAIN)
    a = kb["assistant"]
    question = "the customer's bank reversed a card payment they disputed, what happens now?"
    _write_high_risk(kb, "bank-reversals", "Bank reversals", REVERSAL_PLAIN + " Tell them.")
    _sync(kb)
    _approve(kb, "bank-reversals")  # not indexed yet
    r = _ask(a, question)
    assert r.escalation is not None and r.escalation.reason == "no_approved_language"


def test_passages_keep_a_vector_per_sentence_through_the_index(kb: dict[str, Any]) -> None:
    """Indexing stores each multi-sentence passage's sentence vectors with it; the catalog
    loads them back (another process reads them the same way) and the answer path's
    ranking reads the closest sentence, while answers keep the passage's own cosine."""
    from assist.retrieve import rank

    a = kb["assistant"]
    index = a.index
    index._catalog = None  # load back from the store, as a fresh process would
    cat = index.catalog()
    router = next(c for c in cat.chunks if c.article_id == "router-lights")
    assert len(router.sentence_texts()) == 2
    assert cat.sentences.count[cat.ids[router.id]] == 2
    question = "what does a flashing orange light on the router mean"
    vector = index.embed_questions([question])[0]
    dense = dict(index.dense(vector, views=("internal",), locale="en", n=10))
    sentence = index.sentence_scores(vector, [router.id])[router.id]
    assert sentence > dense[router.id] + 0.05  # the second sentence says exactly that
    valid, _ = rank(index, question=question, vector=vector, views=("internal",),
                    locale="en", settings=a.settings.retrieval)
    assert valid[0].chunk.id == router.id
    assert valid[0].dense == pytest.approx(dense[router.id])  # the passage's own cosine
    ev = a.evidence(Question(text=question, audience="internal", caller="test"))
    assert ev.sentences[router.id] == pytest.approx(sentence)


def _same_hits(memory: list[tuple[str, float]], chroma: list[tuple[str, float]]) -> None:
    assert dict(memory).keys() == dict(chroma).keys()
    for cid, score in memory:
        assert score == pytest.approx(dict(chroma)[cid], abs=1e-5)
    assert [s for _, s in memory] == sorted((s for _, s in memory), reverse=True)


def test_dense_search_in_memory_finds_what_chroma_finds(kb: dict[str, Any]) -> None:
    """Within index.memory_search_max_chunks the catalog holds every chunk's vector and
    answers the dense query itself: the same chunks and cosines as a Chroma query, within
    each caller's views only. Above the cap (another process's catalog, loaded fresh),
    Chroma answers it, and the answers do not change."""
    a = kb["assistant"]
    index = a.index
    index._catalog = None  # load back from the store, as a fresh process would
    cat = index.catalog()
    assert cat.vectors is not None
    assert cat.vectors.shape == (index.embedder.dim, len(cat.chunks))
    questions = ["what does a flashing orange light on the router mean",
                 "how much is the staff bonus", "refund for an annual plan"]
    vectors = index.embed_questions(questions)
    for views in [("internal",), ("vendors",), ("internal", "vendors")]:
        asks = [(views, "en", 3) for _ in questions]
        memory = index._dense_many(vectors, asks)
        chroma = index.store.query(vectors, asks, sizes=cat.sizes)
        for m, c in zip(memory, chroma, strict=True):
            assert m, views
            _same_hits(m, c)
            if views == ("vendors",):  # the internal-only article is not in this view
                assert not any(cid.startswith("staff-bonus|") for cid, _ in m)
    asks = [(("internal",), "en", 50)]
    everything = index._dense_many(vectors[:1], asks)[0]
    assert len(everything) == cat.sizes[("internal", "en")]  # n beyond the view's size
    assert index._dense_many(vectors[:1], [(("nobody",), "en", 5)]) == [[]]

    def answers() -> list[tuple[str, list[tuple[str, int, int]]]]:
        out = []
        for q in questions:
            r = a.ask(Question(text=q, audience="internal", caller="test"))
            out.append((r.status, [(p.citation.article_id, p.citation.start, p.citation.end)
                                   for p in r.passages]))
        return out

    in_memory = answers()
    original = index.settings
    index.settings = original.model_copy(
        update={"memory_search_max_chunks": len(cat.chunks) - 1})
    index._catalog = None
    try:
        assert index.catalog().vectors is None  # over the cap: Chroma answers
        _same_hits(index._dense_many(vectors[:1], asks)[0], everything)
        assert answers() == in_memory
    finally:
        index.settings = original
        index._catalog = None


def test_a_question_never_waits_for_the_catalog_to_reload(kb: dict[str, Any]) -> None:
    """When another process changes the index, the answer path keeps its catalog while a
    new one loads on another thread; writers (``check``) wait for the new one. A reload
    that fails leaves the old catalog serving, and the next look tries again."""
    import threading

    from kb.errors import Unavailable

    a = kb["assistant"]
    index = a.index
    old = index.catalog(check=True)
    question = "what does a flashing orange light on the router mean"
    before = _ask(a, question)
    release, loading = threading.Event(), threading.Event()
    real_load = index._load
    failures = [Unavailable("the index server is away")]

    def slow_load(generation: str) -> Any:
        loading.set()
        assert release.wait(30)
        if failures:
            raise failures.pop()
        return real_load(generation)

    index._load = slow_load  # type: ignore[method-assign]
    try:
        index.store.bump()  # what another process's write does
        index._checked_at = 0.0
        assert index.catalog() is old  # not waiting...
        assert loading.wait(30)  # ...while the new catalog loads on another thread
        assert index._reloading
        r = _ask(a, question)  # answered meanwhile, from the catalog it holds
        assert r.status == before.status and r.passages == before.passages
        release.set()  # the first reload fails: the old catalog keeps serving
        for _ in range(300):
            if not index._reloading:
                break
            threading.Event().wait(0.01)
        assert not index._reloading and index.catalog() is old
        index._checked_at = 0.0
        assert index.catalog() is old  # the next look starts another reload...
        waiter = threading.Thread(target=lambda: index.catalog(check=True))
        waiter.start()
        waiter.join(30)
        new = index.catalog()
        assert new is not old and new.generation == index.store.generation()  # ...which lands
        assert new.manifest() == old.manifest()
    finally:
        release.set()
        index._load = real_load  # type: ignore[method-assign]


@pytest.mark.slow
def test_over_the_memory_cap_a_chunk_newer_than_the_questions_catalog_is_read_in_the_newer(
        kb: dict[str, Any]) -> None:
    """Above the memory cap Chroma answers the dense query, and can return a chunk that was
    indexed after the question took its catalog. That chunk is read, whole, in the newest
    catalog (coverage, sentences, statements), not scored as unknown: the question answers
    from the newly approved article as it would a moment later."""
    a = kb["assistant"]
    index = a.index
    index.settings = index.settings.model_copy(update={"memory_search_max_chunks": 0})
    index._catalog = None
    old = index.catalog(check=True)
    assert old.vectors is None  # Chroma answers the dense queries
    write_article(kb["content"], "modem-reset", title="Modem reset", owner="network-ops",
                  audience=["internal", "vendors"],
                  body="# Modem reset\n## How to reset the modem\nHold the pinhole reset "
                       "button on the back of the Hub 3 modem for thirty seconds.\n")
    _sync(kb)
    _approve(kb, "modem-reset")
    _refresh(kb)  # another process would do this; here it is this index, put back below
    assert "modem-reset" in index.catalog(check=True).manifest()
    index._catalog = old  # the question takes the catalog from before the approval
    index._checked_at = time.monotonic() - 0.3
    r = _ask(a, "how do I reset the Hub 3 modem with the pinhole button")
    assert r.status == "answered", r.escalation
    assert r.passages[0].citation.article_id == "modem-reset"


@pytest.mark.slow
def test_a_write_of_this_process_is_not_hidden_by_a_reload_it_overtook(
        kb: dict[str, Any]) -> None:
    """A catalog reload (on its own thread, after another process's write) that was still
    reading when this process wrote again loads once more: the write is seen at once, not
    a refresh interval later behind the older catalog."""
    import threading

    index = kb["assistant"].index
    index.catalog(check=True)
    release, loading = threading.Event(), threading.Event()
    real_load = index._load

    def slow_load(generation: str) -> Any:
        loading.set()
        assert release.wait(30)
        return real_load(generation)

    index._load = slow_load  # type: ignore[method-assign]
    try:
        index.store.bump()  # another process wrote
        index._checked_at = 0.0
        index.catalog()  # starts the reload on its own thread
        assert loading.wait(30)
        index.bump()  # this process writes while that reload reads the older state
        release.set()
        for _ in range(500):
            if not index._reloading:
                break
            time.sleep(0.01)
        assert not index._reloading
    finally:
        release.set()
        index._load = real_load  # type: ignore[method-assign]
    # the older catalog was not installed: the next question reads the write
    assert index._catalog is None or index._catalog.generation == index.store.generation()
    assert index.catalog().generation == index.store.generation()


@pytest.mark.slow
def test_a_question_reads_one_catalog_while_a_new_one_lands(kb: dict[str, Any]) -> None:
    """A catalog loaded on another thread can land while a question is half answered. The
    question keeps reading the catalog it started with: the ids its search found are the
    ids its ranking looks up. (Reading the newer one there lost every hit of the previous
    version, and the question escalated while the previous approved text was still due.)"""
    a = kb["assistant"]
    index = a.index
    question = "what does a flashing orange light on the router mean"
    old = index.catalog(check=True)
    (kb["content"] / "router-lights.md").write_text(article_text(
        "router-lights", title="Router lights", audience=["internal", "vendors"],
        owner="network-ops", body=ROUTER_BODY.replace("five minutes", "ten minutes")))
    _sync(kb)
    _approve(kb, "router-lights")
    _refresh(kb)  # another process would do this; here it is this index, put back below
    new = index.catalog(check=True)
    assert new.manifest()["router-lights"] == 2 and old.manifest()["router-lights"] == 1
    real = index._dense_many

    def then_the_new_catalog_lands(*args: Any, **kw: Any) -> Any:
        hits = real(*args, **kw)
        index._catalog = new  # the background reload finishes right after the search
        return hits

    index._catalog = old  # this process has not loaded the new version yet
    index._checked_at = time.monotonic()
    index._dense_many = then_the_new_catalog_lands  # type: ignore[method-assign]
    try:
        r = _ask(a, question)
    finally:
        index._dense_many = real  # type: ignore[method-assign]
    assert index._catalog is new
    assert r.status == "answered", r.escalation
    top = r.passages[0].citation
    assert (top.article_id, top.version) == ("router-lights", 1)  # the previous approved text
    assert "five minutes" in r.passages[0].text
    r = _ask(a, question)  # the next question reads the new catalog
    assert (r.passages[0].citation.version, "ten minutes" in r.passages[0].text) == (2, True)


def test_the_best_matching_high_risk_article_answers_in_its_approved_language(
        kb: dict[str, Any]) -> None:
    """The best match is a high-risk article's plain text and a neighbour's passage ranks
    first among what may be served, but the article's approved block is among the
    passages an answer shows (``answer.default_top_k``): the block leads the answer rather
    than the neighbour (or an escalation). The plain text is never served. Ranked outside
    that window, the question still escalates (``no_approved_language``). `kb eval tune`
    orders it the same way."""
    from evals.suites import Case, Suite
    from evals.tune import observe, outcome

    block = ("We'll review the reversed payment with you and agree how the arrears are "
             "repaid.")
    _add_reversals(kb, article_id="bank-reversals", title="Bank reversals",
                   plain=REVERSAL_PLAIN,
                   more=f"\n## What to tell the customer\n::: approved\n{block}\n:::\n",
                   card="If a customer's bank reversed a card payment they disputed, we take "
                        "the card payment again on the first of the month.")
    a = kb["assistant"]
    question = "the customer's bank reversed a card payment they disputed, what happens now?"
    for who in ("vendor:acme", "internal"):
        r = _ask(a, question, audience=who)
        assert r.status == "answered", r.escalation
        assert [p.citation.article_id for p in r.passages[:2]] == [
            "bank-reversals", "card-payments"]
        assert r.passages[0].text.strip() == block
        assert not any(REVERSAL_PLAIN in p.text for p in r.passages)
    # The same lead whatever length of answer a request asks for.
    r = _ask(a, question, top_k=1)
    assert [p.citation.article_id for p in r.passages] == ["bank-reversals"]

    case = Case(id="c1", question=question, articles=("bank-reversals",), section=None,
                contains=(), answerable=True, audience=None, group=None, locale=None)
    suite = Suite(name="s", path=Path("s.yaml"), cases=(case,), sha256="0" * 64)
    (seen,) = observe(a, suite, default_audience="internal")
    scored = outcome(seen, a.policy)
    assert scored.status == "answered" and scored.top_article == "bank-reversals"

    # An answer of one passage shows the neighbour only: the block is outside the window.
    answer = a.settings.answer.model_copy(update={"default_top_k": 1})
    narrow = make_assistant(a.settings.model_copy(update={"answer": answer}), kb["engine"],
                            a.index)
    r = _ask(narrow, question)
    assert r.escalation is not None and r.escalation.reason == "no_approved_language"


def test_a_catalog_whose_vectors_cannot_be_read_searches_through_chroma(
        kb: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Embedded Chroma opened by a second process (a CLI command while the server writes)
    can list ids whose vectors it has not loaded ("Error finding id"): that catalog loads
    without vectors, Chroma answers its dense queries, and nothing else is lost."""
    from chromadb.api.models.Collection import Collection
    from chromadb.errors import InternalError

    a = kb["assistant"]
    index = a.index
    question = "what does a flashing orange light on the router mean"
    before = _ask(a, question)
    real_get = Collection.get

    def get(self: Any, *args: Any, **kw: Any) -> Any:
        if "embeddings" in (kw.get("include") or []):
            raise InternalError("Error executing plan: Internal error: Error finding id")
        return real_get(self, *args, **kw)

    monkeypatch.setattr(Collection, "get", get)
    index._catalog = None
    cat = index.catalog()
    assert cat.vectors is None and len(cat.chunks) > 0
    after = _ask(a, question)
    assert after.status == before.status
    assert [(p.citation.article_id, p.citation.start) for p in after.passages] == [
        (p.citation.article_id, p.citation.start) for p in before.passages]
    monkeypatch.setattr(Collection, "get", real_get)
    index._catalog = None
    assert index.catalog().vectors is not None


def test_an_index_server_outage_leaves_a_catalog_with_vectors_answering(
        kb: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """While the index server is away, a catalog that holds the vectors keeps answering
    (re-checked against the database as always); one without them (over the memory cap)
    cannot search, and the question fails as unavailable (503)."""
    import dataclasses

    from kb.errors import Unavailable

    a = kb["assistant"]
    index = a.index
    question = "what does a flashing orange light on the router mean"
    before = _ask(a, question)

    def away() -> str:
        raise Unavailable("Chroma is not reachable")

    monkeypatch.setattr(index.store, "generation", away)
    index._checked_at = 0.0
    r = _ask(a, question)
    assert r.status == before.status
    assert [p.citation.article_id for p in r.passages] == [
        p.citation.article_id for p in before.passages]
    cat = index.catalog()
    index._catalog = dataclasses.replace(cat, vectors=None)
    index._checked_at = 0.0
    with pytest.raises(Unavailable):
        index.catalog()


def test_after_its_own_write_a_process_answers_through_an_index_server_outage(
        kb: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A write of this process drops its catalog (the next question loads the new one). If
    the index server goes away before that load, questions are answered from the last
    catalog loaded, as when a catalog with vectors is held: not 503 until it comes back."""
    from kb.errors import Unavailable

    a = kb["assistant"]
    index = a.index
    question = "what does a flashing orange light on the router mean"
    before = _ask(a, question)
    index.bump()  # as after this process indexed an approval

    def away() -> str:
        raise Unavailable("Chroma is not reachable")

    monkeypatch.setattr(index.store, "generation", away)
    r = _ask(a, question)
    assert r.status == before.status
    assert [p.citation.article_id for p in r.passages] == [
        p.citation.article_id for p in before.passages]
    with pytest.raises(Unavailable):  # a writer, or anyone comparing, still waits for it
        index.catalog(check=True)
