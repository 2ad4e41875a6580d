"""Misspelt questions: retrieval reads a mended question (assist/catalog.py Catalog.mend,
assist/index.py ChunkIndex.mend); answers, logs and audits keep the question as asked."""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session, col, select

from assist.answer import AssistResult, Question
from assist.catalog import Catalog, LexicalTokenizer, _one_edit, build_catalog
from assist.chunks import Chunk
from assist.embedder import MiniLMEmbedder
from kb.models import QueryLog
from tests.kbs import BuiltKB, build_kb, shared_embedder

# --- the mending rule (fast) --------------------------------------------------------------


def _chunk(article_id: str, start: int, text: str) -> Chunk:
    return Chunk(article_id=article_id, version=1, content_sha256="0" * 64, start=start,
                 end=start + len(text), heading_path=(), anchor="", approved=True,
                 title=article_id, audience=("internal",), locale="en", risk="low", tags=(),
                 text=text)


def _catalog(*texts: str) -> Catalog:
    chunks = [_chunk(f"a{i}", 0, t) for i, t in enumerate(texts)]
    return build_catalog("g", chunks=chunks, ids={c.id: i for i, c in enumerate(chunks)},
                         membership={("internal", "en"): list(range(len(chunks)))},
                         views={"internal"}, empty={}, tokenize=LexicalTokenizer())


def test_one_edit() -> None:
    assert _one_edit("refnud", "refund")  # two neighbours swapped
    assert _one_edit("refnd", "refund") and _one_edit("refundd", "refund")
    assert _one_edit("rafund", "refund")
    assert not _one_edit("rfenud", "refund") and not _one_edit("refund", "refund")
    assert not _one_edit("refunds", "refun")  # two edits


def test_misspelt_words_become_the_knowledge_bases_words() -> None:
    cat = _catalog("Refunds for annual plans are paid within 30 days.",
                   "A refund goes back to the original payment method.",
                   "Cancellation of an annual plan ends the contract.")
    assert cat.mend("Can I get a refnud on my anual plan?") == (
        "Can I get a refund on my annual plan?")
    assert cat.mend("Cancelation of the contract") == "cancellation of the contract"


def test_what_is_never_mended() -> None:
    cat = _catalog("Invoices for 2025 list the router and the modem.", "Router firmware.")
    # numbers and words with digits: "2024" must never become "2025"
    assert cat.mend("invoices for 2024") == "invoices for 2024"
    assert cat.mend("invoices 2O25x") == "invoices 2O25x"
    # short words have too many neighbours
    assert cat.mend("modm") == "modm"
    # a real word the knowledge base lacks stays, so coverage still sees it missing
    assert cat.mend("routes", dictionary=frozenset({"routes"})) == "routes"
    assert cat.mend("routes") == "router"
    # nothing one edit away: unchanged
    assert cat.mend("Globex broadband") == "Globex broadband"


def test_the_most_used_neighbour_wins() -> None:
    cat = _catalog("The modem light.", "Modem reset.", "Modem cables.", "A model number.")
    # "moden" is one edit from "modem" (3 chunks) and "model" (1 chunk)
    assert cat.mend("moden") == "modem"


def test_the_model_vocabulary_holds_real_words() -> None:
    words = MiniLMEmbedder().words()
    assert {"payment", "weather", "contract"} <= words
    assert "refnud" not in words and "##ing" not in words and "[PAD]" not in words


# --- the answer path (real KB, real model) -------------------------------------------------

MISSPELT = "custmer wants a refnud on an anual plan after 20 dyas"
CLEAN = "customer wants a refund on an annual plan after 20 days"


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, BuiltKB]:
    embedder = shared_embedder()
    return {on: build_kb(tmp_path_factory.mktemp(f"typos-{on}"), embedder=embedder,
                         index={"typo_tolerance": on})
            for on in (True, False)}


def _ask(kb: BuiltKB, text: str) -> AssistResult:
    return kb.assistant.ask(Question(text=text, audience="internal", caller="agent-7"))


@pytest.mark.slow
def test_a_misspelt_question_finds_what_the_clean_one_finds(kbs: dict[bool, BuiltKB]) -> None:
    on, off = kbs[True], kbs[False]
    clean = _ask(on, CLEAN)
    assert clean.status == "answered"
    want = clean.passages[0].citation.article_id
    mended = _ask(on, MISSPELT)
    assert mended.status == "answered"
    assert mended.passages[0].citation.article_id == want
    assert mended.passages[0].text == clean.passages[0].text
    # without the mending, the same index serves something else or nothing: the test
    # would prove nothing if the misspellings did not matter
    raw = _ask(off, MISSPELT)
    assert raw.status != "answered" or (
        [p.citation.passage_sha256 for p in raw.passages]
        != [p.citation.passage_sha256 for p in mended.passages])


@pytest.mark.slow
def test_the_query_log_keeps_the_question_as_asked(kbs: dict[bool, BuiltKB]) -> None:
    result = _ask(kbs[True], MISSPELT)
    with Session(kbs[True].engine) as s:
        row = s.exec(select(QueryLog).where(col(QueryLog.id) == result.query_id)).one()
    assert "refnud" in row.question and "refund" not in row.question


@pytest.mark.slow
def test_switching_tolerance_on_a_running_index_takes_effect(kbs: dict[bool, BuiltKB]) -> None:
    """The question's terms are cached per index generation: the cache must not hand the
    terms read with tolerance off to a question read with it on (``evals.typos`` switches
    the setting on one index)."""
    index = kbs[True].assistant.index
    settings = index.settings
    try:
        index.settings = settings.model_copy(update={"typo_tolerance": False})
        off = index.query_terms(MISSPELT)
        index.settings = settings
        on = index.query_terms(MISSPELT)
    finally:
        index.settings = settings
    assert "refnud" in off and "refnud" not in on and "refund" in on


@pytest.mark.slow
def test_numbers_in_a_question_are_never_mended(kbs: dict[bool, BuiltKB]) -> None:
    index = kbs[True].assistant.index
    question = "is the 2024 price rise 3.9% or 4.9%"
    assert index.mend(question) == question


# --- the synthetic misspellings of `python -m evals.typos` ---------------------------------


def test_misspellings_are_deterministic_and_leave_numbers_alone() -> None:
    from evals.typos import misspell

    q = "Can a customer cancel the annual contract after 2024 renewal for £39.50?"
    assert misspell(q, 7) == misspell(q, 7)
    assert misspell(q, 7) != q
    for seed in range(200):
        out = misspell(q, seed)
        assert out != q and "2024" in out and "£39.50" in out
        assert abs(len(out) - len(q)) <= 3  # one edit per misspelt word
    assert misspell("is it on 12 May?", 3) == "is it on 12 May?"  # no long word: unchanged


# --- abbreviations the knowledge base defines (assist/acronyms.py) ---------------------------


@pytest.mark.slow
def test_an_abbreviation_reads_as_the_long_form_the_knowledge_base_defines(
        kbs: dict[bool, BuiltKB]) -> None:
    """The demo defines "early termination charge (ETC)" once; an agent asking about "the
    ETC" also finds the passages that only spell it out, and only while
    ``index.expand_acronyms`` is on."""
    index = kbs[True].assistant.index
    settings = index.settings
    tokenize = LexicalTokenizer()
    long_form = set(tokenize("early termination charge"))
    question = "is the ETC waived?"

    def spelt_out_only(hits: list[tuple[str, float]]) -> set[str]:
        found = set()
        for cid, _ in hits:
            chunk = index.chunk(cid)
            assert chunk is not None
            if not re.search(r"\bETC\b", chunk.lexical_text()) and long_form <= set(
                    tokenize(chunk.lexical_text())):
                found.add(chunk.article_id)
        return found

    try:
        index.settings = settings.model_copy(update={"expand_acronyms": False})
        assert index.mend(question) == question
        off_terms = index.query_terms(question)
        off_hits = index.lexical(question, views=["internal"], locale="en", n=40)
        off = spelt_out_only(off_hits)
        off_coverage = {cid: index.coverage(question, cid) for cid, _ in off_hits}
        index.settings = settings
        on_coverage = {cid: index.coverage(question, cid) for cid, _ in off_hits}
        assert index.mend(question) == "is the ETC (early termination charge) waived?"
        on_terms = index.query_terms(question)
        on = spelt_out_only(index.lexical(question, views=["internal"], locale="en", n=40))
    finally:
        index.settings = settings
    assert not long_form & set(off_terms) and long_form <= set(on_terms)
    assert off == set() and on, (off, on)
    # the long form helps find passages; it never lowers the coverage of one that uses
    # the abbreviation (coverage weighs the question as asked)
    assert off_coverage and all(on_coverage[c] >= off_coverage[c] for c in off_coverage)


@pytest.mark.slow
def test_the_query_log_keeps_the_abbreviation_as_asked(kbs: dict[bool, BuiltKB]) -> None:
    result = _ask(kbs[True], "ETC for a customer moving home")
    with Session(kbs[True].engine) as s:
        row = s.exec(select(QueryLog).where(col(QueryLog.id) == result.query_id)).one()
    assert row.question == "ETC for a customer moving home"
