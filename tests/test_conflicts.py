"""Conflicts that really block (issue 9, items 4 and 5).

Statements (amounts, durations, percentages with what they are about) are compared
sentence by sentence: unit tests on sentences of the demo content, a scan of every pair of
demo articles, and end-to-end checks on a copy of the demo KB with the real model (slow):
the approval check (``conflict`` and ``expectation_broken`` findings) and the answer path
(two passages that disagree escalate as ``ambiguous``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, func, select

from api.approvals import approval_findings, cases_citing, expectation
from assist import indexer
from assist.answer import Assistant, Question
from assist.chunks import Chunk, chunk_version
from assist.conflicts import Expectation, Outcome, failure, statement_conflicts
from assist.runtime import make_assistant, make_index
from assist.statements import (
    Ledger,
    Statement,
    changes,
    chunk_statements,
    clashes,
    conflicting,
    drifts,
    extract,
    find_quantities,
    idf_of,
    listed_together,
    quantities,
)
from kb import db, governance
from kb.articles import iter_article_files, parse_article
from kb.models import ArticleVersion
from kb.settings import Settings
from kb.sync import sync_folder
from tests.kbs import build_kb, shared_embedder

CONTENT = Path(__file__).resolve().parent.parent / "content"

# Pairs of demo articles that really state different values for the same thing today
# (checked by hand; see test_demo_content_has_no_false_conflicts). None so far.
KNOWN_CONFLICTS: set[tuple[str, str]] = set()


# --- the demo content, chunked as the index holds it ---------------------------------------


def _servable(article_id: str, text: str, version: int = 1) -> list[Chunk]:
    art = parse_article(text, path=article_id)
    chunks = chunk_version(article_id=article_id, version=version, content_sha256="x",
                           text=text, parsed=art)
    return [c for c in chunks if c.approved] if art.risk == "high" else chunks


@pytest.fixture(scope="module")
def demo_chunks() -> dict[str, list[Chunk]]:
    """Served chunks of every non-draft demo article, by article."""
    out: dict[str, list[Chunk]] = {}
    for path in iter_article_files(CONTENT):
        text = path.read_text(encoding="utf-8")
        art = parse_article(text, path=str(path))
        if not art.draft:
            out[art.id] = _servable(art.id, text)
    return out


@pytest.fixture(scope="module")
def idf(demo_chunks: dict[str, list[Chunk]]) -> dict[str, float]:
    """The IDF table the index computes for the demo KB."""
    return idf_of(c.lexical_text() for chunks in demo_chunks.values() for c in chunks)


def _article_statements(demo_chunks: dict[str, list[Chunk]], article_id: str) -> list[Statement]:
    return [s for c in demo_chunks[article_id] for s in chunk_statements(c)]


def _edited(rel: str, old: str, new: str) -> str:
    text = (CONTENT / rel).read_text(encoding="utf-8")
    assert old in text, f"{rel} no longer contains {old!r}"
    return text.replace(old, new, 1)


# --- quantities --------------------------------------------------------------------------


def test_quantities_are_found_with_their_units() -> None:
    text = ("Pay £31.40 within 2 full working days, or £48,000 over 12 months; 5% off for "
            "3 business days, €70, $10 or 15\u201330 days; links last 30 minutes, a 30-day "
            "period, 24 hours, five minutes, 500 Mb/s, £1.50 per month.")
    assert quantities(text) == {
        ("£", "31.4"), ("working day", "2"), ("£", "48000"), ("month", "12"), ("%", "5"),
        ("working day", "3"), ("€", "70"), ("$", "10"), ("day", "15"), ("day", "30"),
        ("minute", "30"), ("hour", "24"), ("minute", "5"), ("mb/s", "500"), ("£/month", "1.5"),
    }
    assert [q.label for q in find_quantities("refund £25.00 or £31.40")] == ["£25.00", "£31.40"]
    assert quantities("Fibre 500, Hub 3, 0330 088 4400, 3 or more refunds") == set()


def test_moved_helpers_stay_importable_from_the_answer_module() -> None:
    from assist import answer

    assert answer.quantities is quantities and answer.conflicting is conflicting


# --- statements of the demo content ---------------------------------------------------------

OUTAGES_BLOCK = ("Because your engineer didn't arrive for the appointment, you'll receive "
                 "£31.40 in compensation, which will be added to your bill within 30 days.")
FIELD_BLOCK = ("I'm sorry our engineer didn't make your appointment. I've booked you into a "
               "priority slot, and £31.40 compensation will be added to your bill "
               "automatically within 30 days.")
OUTAGES_HEADING = ("Automatic compensation for outages, missed appointments and delayed "
                   "installs Checking a customer's compensation")
FIELD_HEADING = "Missed engineer appointments When Brightwave misses the appointment"


def test_a_changed_compensation_amount_clashes(idf: dict[str, float]) -> None:
    field = extract(FIELD_BLOCK, FIELD_HEADING)
    assert not clashes(extract(OUTAGES_BLOCK, OUTAGES_HEADING), field, idf=idf)
    for amount in ("£25.00", "£40.00"):
        changed = extract(OUTAGES_BLOCK.replace("£31.40", amount), OUTAGES_HEADING)
        found = clashes(changed, field, idf=idf)
        assert [(c.a.label, c.b.label) for c in found] == [(amount, "£31.40")]


def test_same_sentence_with_another_duration_clashes(idf: dict[str, float]) -> None:
    block = ("If you cancel an annual plan within 30 days of the start date, we refund every "
             "unused day in full with no fee.")
    found = clashes(extract(block), extract(block.replace("30 days", "21 days")), idf=idf)
    assert [(c.a.label, c.b.label) for c in found] == [("30 days", "21 days")]
    assert conflicting("refund within 30 days", "refund within 14 days")


def test_a_threshold_left_behind_drifts(demo_chunks: dict[str, list[Chunk]],
                                        idf: dict[str, float]) -> None:
    """A list item ("the amount is above £250") takes its subject from the sentence that
    introduces the list; another article still saying £250 for the same rule is drift."""
    rel = "refunds/refunds-manual-approval-workflow.md"
    aid = "refunds-manual-approval-workflow"
    new = [s for c in _servable(aid, _edited(rel, "above £250", "above £400"), 2)
           for s in chunk_statements(c)]
    changed = changes(_article_statements(demo_chunks, aid), new)
    assert [(was and was.label, now.label) for was, now in changed] == [("£250", "£400")]
    was, now = changed[0]
    assert was is not None
    timelines = _article_statements(demo_chunks, "refunds-timelines-by-method")
    found = drifts(was, now, timelines, idf)
    assert [c.b.sentence for c in found] == [
        "Refunds above £250 wait for finance approval (up to 2 working days)."]
    assert "still says £250" in found[0].describe()


@pytest.mark.parametrize(("a", "b"), [
    # two fees of one article family, different things
    ("If we haven't received it within 30 days, we'll have to charge a £60 non-return fee.",
     "After 30 days we refund the unused whole months, minus a £50 early exit fee."),
    # a sentence listing several prices agrees with one of them ...
    ("Standard monthly prices are £29 (Fibre 150), £39 (Fibre 500), £52 (Fibre 1000), "
     "£8 (TV Basic) and £16 (TV Premium).",
     "The standard monthly price of Fibre 500 is £39."),
    # ... and a rise per month is another unit than a price
    ("Standard monthly prices are £29 (Fibre 150), £39 (Fibre 500), £52 (Fibre 1000).",
     "£3.00 per month for every Brightwave Fibre broadband plan (150, 500 and 1000);"),
    # how long something lasts vs how soon it happens
    ("The link is valid for 30 minutes and can be used once.",
     "The new PIN works on all your devices within 5 minutes."),
    # rows of one table about different products
    ("| Plan | Win-back price | Standard price |\n|---|---|---|\n| Fibre 150 | £25 | £29 |",
     "| From | To | New monthly price |\n|---|---|---|\n| Fibre 150 (£29) | Fibre 500 | £39 |"),
    # a range includes the other value
    ("Wayleaves usually take 30 to 90 days.", "A wayleave takes 90 days."),
])
def test_near_misses_do_not_clash(a: str, b: str, idf: dict[str, float]) -> None:
    assert not clashes(extract(a), extract(b), idf=idf)
    assert not clashes(extract(b), extract(a), idf=idf)


def test_a_guide_listing_both_amounts_excuses_two_scripts(
        demo_chunks: dict[str, list[Chunk]], idf: dict[str, float]) -> None:
    """'I've added a £5 goodwill credit' and 'I've added a £10 credit as a goodwill gesture'
    are scripts for different cases: the goodwill article lists £5 and £10 as options."""
    def block(article_id: str, words: str) -> tuple[Statement, ...]:
        return next(chunk_statements(c) for c in demo_chunks[article_id] if words in c.text)

    five = block("refunds-goodwill-credits", "added a £5 goodwill credit")
    ten = block("acme-credit-authority", "added a £10 credit as a goodwill gesture")
    found = clashes(five, ten, idf=idf)
    assert found  # alone, the two passages disagree
    guide = _article_statements(demo_chunks, "refunds-goodwill-credits")
    assert listed_together(found[0], guide, idf)
    assert not clashes(five, ten, idf=idf, around=guide)


def test_demo_content_has_no_false_conflicts(demo_chunks: dict[str, list[Chunk]],
                                             idf: dict[str, float]) -> None:
    """Every pair of served passages of different demo articles (as the answer path
    compares them), and every pair of whole articles (as the approval check does)."""
    ledger = Ledger()
    every = [c for chunks in demo_chunks.values() for c in chunks]

    def of(article_id: str) -> tuple[Statement, ...]:
        return ledger.of(article_id, generation="demo", chunks=every)

    passages = [(c, chunk_statements(c)) for c in every]
    passages = [(c, s) for c, s in passages if s]
    found: set[tuple[str, str]] = set()
    for i, (ca, sa) in enumerate(passages):
        for cb, sb in passages[i + 1:]:
            if ca.article_id == cb.article_id or ca.locale != cb.locale:
                continue
            around = [*of(ca.article_id), *of(cb.article_id)]
            if [c for c in clashes(sa, sb, idf=idf) if not listed_together(c, around, idf)]:
                found.add((ca.article_id, cb.article_id))
    ids = sorted(demo_chunks)
    for i, x in enumerate(ids):
        for y in ids[i + 1:]:
            if demo_chunks[x] and demo_chunks[y] and (
                    demo_chunks[x][0].locale == demo_chunks[y][0].locale
                    and clashes(of(x), of(y), idf=idf)):
                found.add((x, y))
    assert found == KNOWN_CONFLICTS


def test_statement_conflicts_of_a_changed_block(demo_chunks: dict[str, list[Chunk]],
                                                idf: dict[str, float]) -> None:
    """The approval check's statement scan, against an index catalog stand-in."""
    every = [c for chunks in demo_chunks.values() for c in chunks]
    catalog = SimpleNamespace(chunks=every, idf=idf, generation="demo")
    assistant: Any = SimpleNamespace(index=SimpleNamespace(catalog=lambda: catalog))
    aid, rel = "outages-automatic-compensation", "outages/outages-automatic-compensation.md"
    new = _servable(aid, _edited(rel, "receive £31.40 in", "receive £25.00 in"), 2)
    findings = statement_conflicts(assistant, article_id=aid, old=demo_chunks[aid], new=new)
    assert [(f.kind, f.other_article) for f in findings] == [
        ("conflict", "field-missed-engineer-appointment")]
    assert "changes £31.40 to £25.00" in findings[0].message
    unchanged = statement_conflicts(assistant, article_id=aid, old=demo_chunks[aid],
                                    new=demo_chunks[aid])
    assert unchanged == []


def test_failure_names_what_broke() -> None:
    chunk = Chunk(article_id="a", version=1, content_sha256="x", start=0, end=5,
                  heading_path=("A", "Eligibility"), anchor="eligibility", approved=True,
                  title="A", audience=("internal",), locale="en", risk="low", tags=(),
                  text="Refund within 21 days.")
    case = Expectation(id="c1", question="q", articles=("a",), sections=("Eligibility",),
                       contains=("within 30 days",))
    assert failure(case, Outcome("answered", (chunk,))) == (
        "the served text would no longer contain 'within 30 days'")
    assert failure(case, Outcome("no_answer", ())) == (
        "it would not be answered (no approved answer)")
    assert failure(Expectation(id="c2", question="q", articles=("b",)),
                   Outcome("answered", (chunk,))) == "'a' would answer it instead of b"
    assert failure(Expectation(id="c3", question="q", articles=("a",), answerable=False),
                   Outcome("escalate", ())) is None


def test_suite_cases_become_expectations() -> None:
    cases = cases_citing("refunds-annual-plans")
    e = expectation(next(c for c in cases if c.id == "refund-annual-window-1"))
    assert e.sections == ("Eligibility",) and e.contains == ("within 30 days of the start date",)
    assert e.audience == "vendor:acme" and e.articles == ("refunds-annual-plans",)


# --- end to end: a copy of the demo KB, the real model -----------------------------------

_EMBEDDER = shared_embedder()


def _open(root: Path) -> tuple[Settings, Engine, Assistant]:
    settings = Settings(data_dir=root / ".canon", database_url=f"sqlite:///{root}/canon.db",
                        content_dir=root / "content", assist_rate_per_minute=0)
    engine = db.open_engine(settings)
    return settings, engine, make_assistant(settings, engine,
                                            make_index(settings, embedder=_EMBEDDER))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo KB synced, approved and indexed once, its review dates replayed relative to
    today (so no article is stale whatever the date: a live answer is not escalated for
    staleness, which the approval simulation leaves out); each test works on a copy."""
    root = tmp_path_factory.mktemp("demo-kb")
    build_kb(root, content=CONTENT, embedder=_EMBEDDER).engine.dispose()
    return root


@pytest.fixture
def kb(built: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path / "kb"
    shutil.copytree(built, root)
    settings, engine, assistant = _open(root)
    yield {"root": root, "settings": settings, "engine": engine, "assistant": assistant}
    engine.dispose()


def _edit_and_sync(kb: dict[str, Any], rel: str, old: str, new: str, article_id: str) -> int:
    path = kb["root"] / "content" / rel
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with Session(kb["engine"], expire_on_commit=False) as s:
        sync_folder(s, root=kb["root"] / "content", author="writer")
        number = s.exec(select(func.max(ArticleVersion.number))
                        .where(ArticleVersion.article_id == article_id)).one()
    assert number == 2
    return int(number)


def _findings(kb: dict[str, Any], article_id: str, number: int) -> list[Any]:
    with Session(kb["engine"], expire_on_commit=False) as s:
        return approval_findings(s, kb["assistant"], article_id=article_id, number=number)


@pytest.mark.slow
def test_changed_block_amount_is_a_conflict(kb: dict[str, Any]) -> None:
    aid = "outages-automatic-compensation"
    n = _edit_and_sync(kb, "outages/outages-automatic-compensation.md", "receive £31.40 in",
                       "receive £25.00 in", aid)
    findings = _findings(kb, aid, n)
    assert [(f.kind, f.other_article) for f in findings][:1] == [
        ("conflict", "field-missed-engineer-appointment")]
    # The conflict also breaks a suite case the two articles now answer with different
    # amounts: the answer path would escalate it as ambiguous.
    assert [f.message for f in findings[1:]] == [
        "suite case 'comp-when-paid' passes today but would fail with this version: it "
        "would be escalated as ambiguous (£25.00 vs £31.40)"]
    f = findings[0]
    assert "£25.00" in (f.new_text or "") and "£31.40" in (f.other_text or "")
    assert "changes £31.40 to £25.00" in f.message


@pytest.mark.slow
def test_changed_plain_text_threshold_is_a_conflict(kb: dict[str, Any]) -> None:
    aid = "refunds-manual-approval-workflow"
    n = _edit_and_sync(kb, "refunds/refunds-manual-approval-workflow.md", "above £250",
                       "above £400", aid)
    findings = _findings(kb, aid, n)
    # Two articles would still state £250: the plain text of the high-risk annual-plans
    # article counts too (it is indexed to find the article, though only its approved
    # blocks are ever served).
    assert sorted((f.kind, f.other_article) for f in findings) == [
        ("conflict", "refunds-annual-plans"), ("conflict", "refunds-timelines-by-method")]
    other = {f.other_article: f.other_text for f in findings}
    assert other["refunds-timelines-by-method"] == (
        "Refunds above £250 wait for finance approval (up to 2 working days).")
    assert "Refunds above £250 need finance approval" in (other["refunds-annual-plans"] or "")


@pytest.mark.slow
def test_changed_plain_text_of_a_high_risk_article_is_a_conflict(kb: dict[str, Any]) -> None:
    """High-risk plain text is never served, but staff read it and the index holds it: a
    threshold changed there while other articles keep the old one is drift too."""
    aid = "refunds-annual-plans"
    n = _edit_and_sync(kb, "refunds/refunds-annual-plans.md",
                       "Refunds above £250 need finance approval",
                       "Refunds above £400 need finance approval", aid)
    findings = _findings(kb, aid, n)
    conflicts = {f.other_article for f in findings if f.kind == "conflict"}
    assert conflicts == {"refunds-timelines-by-method", "refunds-manual-approval-workflow"}
    assert all("£400" in (f.new_text or "") for f in findings if f.kind == "conflict")


@pytest.mark.slow
def test_broken_suite_expectation_blocks(kb: dict[str, Any]) -> None:
    aid = "refunds-annual-plans"
    n = _edit_and_sync(kb, "refunds/refunds-annual-plans.md",
                       "within 30 days of the start date", "within 21 days of the start date",
                       aid)
    findings = _findings(kb, aid, n)
    assert {f.kind for f in findings} == {"expectation_broken"}
    # The simulation must agree with the live answer path: exactly the suite cases that
    # quote the edited sentence and pass today, asked through Assistant.ask (the version
    # indexed and served now is still the old one), are reported.
    quoting = [expectation(c) for c in cases_citing(aid)
               if "within 30 days of the start date" in expectation(c).contains]
    passing_live = sorted(e.id for e in quoting if _passes_live(kb["assistant"], e))
    assert len(passing_live) >= 2, passing_live  # the test would prove nothing otherwise
    assert sorted(f.case_id for f in findings) == passing_live
    assert all(f.message.startswith(f"suite case '{f.case_id}' passes today but would fail")
               for f in findings), [f.message for f in findings]
    assert any("no longer contain 'within 30 days of the start date'" in f.message
               for f in findings), [f.message for f in findings]


@pytest.mark.slow
def test_simulation_embeds_questions_as_the_answer_path_does(
        kb: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Questions go through embed_queries (int8 by default), as live questions do; the
    float32 embed() is for passages only. Otherwise a borderline case could pass in the
    approval simulation and fail live, or the other way round."""
    aid = "refunds-annual-plans"
    n = _edit_and_sync(kb, "refunds/refunds-annual-plans.md",
                       "within 30 days of the start date", "within 21 days of the start date",
                       aid)
    embedder = kb["assistant"].index.embedder
    as_passages: list[str] = []
    real_embed = embedder.embed

    def spy(texts: Any, **kwargs: Any) -> Any:
        if not kwargs.get("_query"):  # embed_queries' own call is at query precision
            as_passages.extend(texts)
        return real_embed(texts, **kwargs)

    monkeypatch.setattr(embedder, "embed", spy)
    assert _findings(kb, aid, n)
    questions = {expectation(c).question for c in cases_citing(aid)}
    assert questions and not questions & set(as_passages)


def _passes_live(assistant: Assistant, e: Expectation) -> bool:
    """Whether a live answer passes the case, scored as failure() scores a simulation."""
    result = assistant.ask(Question(text=e.question, audience=e.audience or "internal",
                                    locale=e.locale))
    if result.status != "answered":
        return False
    top = result.passages[0].citation
    section = top.section[-1] if top.section else top.title
    served = "\n".join(p.text for p in result.passages).casefold()
    return (top.article_id in e.articles
            and section.strip().casefold() in {x.strip().casefold() for x in e.sections}
            and all(x.casefold() in served for x in e.contains))


@pytest.mark.slow
def test_rewording_without_new_values_has_no_findings(kb: dict[str, Any]) -> None:
    aid = "outages-automatic-compensation"
    n = _edit_and_sync(kb, "outages/outages-automatic-compensation.md",
                       "Do not promise compensation", "Never promise compensation", aid)
    assert _findings(kb, aid, n) == []


@pytest.mark.slow
def test_two_amounts_for_one_thing_are_never_served_together(kb: dict[str, Any]) -> None:
    assistant: Assistant = kb["assistant"]
    question = Question(text="how much compensation does a customer get for a missed "
                             "engineer appointment?", audience="internal", caller="test")
    before = assistant.ask(question)
    assert before.status == "answered"
    # Both articles state the amount, and both are close to the question.
    assert {p.citation.article_id for p in before.passages} & {
        "outages-automatic-compensation", "field-missed-engineer-appointment"}

    aid = "field-missed-engineer-appointment"
    path = kb["root"] / "content" / "field-ops" / "field-missed-engineer-appointment.md"
    path.write_text(path.read_text(encoding="utf-8").replace("£31.40", "£40.00"),
                    encoding="utf-8")
    n = _edit_and_sync(kb, "field-ops/field-missed-engineer-appointment.md",
                       "Do not add goodwill", "Never add goodwill", aid)
    findings = _findings(kb, aid, n)
    assert ("conflict", "outages-automatic-compensation") in {
        (f.kind, f.other_article) for f in findings}
    with Session(kb["engine"], expire_on_commit=False) as s:  # forced over the findings
        governance.approve(s, article_id=aid, approver="lead", note="forced", forced=True)
        indexer.refresh(s, assistant.index)

    after = assistant.ask(question)
    assert after.status == "escalate" and after.passages == []
    assert after.escalation is not None and after.escalation.reason == "ambiguous"
    assert {f["article_id"] for f in after.escalation.found} == {
        "outages-automatic-compensation", aid}
    assert "£31.40" in after.escalation.message and "£40.00" in after.escalation.message


@pytest.mark.slow
def test_an_abbreviation_defined_two_ways_is_a_conflict(kb: dict[str, Any]) -> None:
    """Questions read an abbreviation with the knowledge base's one definition of it
    (assist/acronyms.py): a version that gives it a second meaning is held for a decision,
    and one that repeats the same meaning is not."""
    aid = "outages-automatic-compensation"
    n = _edit_and_sync(kb, "outages/outages-automatic-compensation.md", "receive £31.40 in",
                       "receive (less any extra traffic cost (ETC)) £31.40 in", aid)
    found = [f for f in _findings(kb, aid, n) if f.question == "ETC"]
    assert [(f.kind, f.other_article) for f in found] == [
        ("conflict", "cancel-early-termination-charges")]
    assert found[0].new_text == "extra traffic cost (ETC)"
    assert found[0].other_text == "early termination charge (ETC)"
    assert "defines ETC as 'extra traffic cost'" in found[0].message


@pytest.mark.slow
def test_an_abbreviation_defined_the_same_way_again_is_no_conflict(kb: dict[str, Any]) -> None:
    aid = "outages-automatic-compensation"
    n = _edit_and_sync(kb, "outages/outages-automatic-compensation.md", "receive £31.40 in",
                       "receive (less any early termination charge (ETC)) £31.40 in", aid)
    assert [f for f in _findings(kb, aid, n) if f.question == "ETC"] == []
