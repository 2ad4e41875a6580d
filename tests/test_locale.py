"""A question that names no locale is asked in the locale its words read as, among the
knowledge base's own texts (`answer.detect_locale`): one rule, in `assist/catalog.py`."""

from __future__ import annotations

from assist.catalog import LOCALE_MARGIN, Catalog, LexicalTokenizer, build_catalog
from assist.chunks import Chunk

TOKENIZE = LexicalTokenizer()


def _chunk(article: str, locale: str, text: str) -> Chunk:
    return Chunk(article_id=article, version=1, content_sha256="0" * 64, start=0,
                 end=len(text), heading_path=(), anchor="", approved=False, title=article,
                 audience=("internal",), locale=locale, risk="low", tags=(), text=text)


def _catalog(chunks: list[Chunk], views: dict[tuple[str, str], list[int]]) -> Catalog:
    return build_catalog("g", chunks=chunks, ids={c.id: i for i, c in enumerate(chunks)},
                         membership=views, views={v for v, _ in views}, empty={},
                         tokenize=TOKENIZE)


CHUNKS = [
    _chunk("cooling-off", "en", "Customers can cancel within 14 days of the contract start "
           "without paying a cancellation charge."),
    _chunk("router", "en", "A white light on the router means the connection works."),
    _chunk("cooling-off-es", "es", "Un cliente puede cancelar en los primeros 14 días sin "
           "pagar ningún cargo por cancelación."),
    _chunk("cooling-off-de", "de", "Kunden können innerhalb von 14 Tagen ohne Gebühren "
           "widerrufen."),
]
ALL = {("internal", "en"): [0, 1], ("internal", "es"): [2], ("internal", "de"): [3]}


def _locale(cat: Catalog, question: str, views: tuple[str, ...] = ("internal",)) -> str:
    return cat.question_locale(frozenset(TOKENIZE(question)), views, "en")


def test_a_question_reads_as_the_locale_whose_texts_use_its_words() -> None:
    cat = _catalog(CHUNKS, ALL)
    assert _locale(cat, "¿Puede un cliente cancelar en los primeros 14 días sin pagar?") == "es"
    assert _locale(cat, "Kunden widerrufen innerhalb von 14 Tagen, Gebühren?") == "de"
    assert _locale(cat, "can a customer cancel within 14 days without a charge?") == "en"
    # words no text uses, or shared by every locale, keep the default
    assert _locale(cat, "quantum chromodynamics lattice") == "en"
    assert _locale(cat, "14") == "en"
    assert _locale(cat, "") == "en"


def test_only_a_clear_lead_over_the_default_locale_switches() -> None:
    cat = _catalog(CHUNKS, ALL)
    # half the terms are Spanish-only, half English-only: no clear lead
    assert _locale(cat, "cliente puede customers router") == "en"
    terms = frozenset(TOKENIZE("cliente puede pagar router"))
    es, en = cat.locale_terms["es"], cat.locale_terms["en"]
    assert len(terms & es) / len(terms) - len(terms & en) / len(terms) >= LOCALE_MARGIN
    assert cat.question_locale(terms, ("internal",), "en") == "es"


def test_a_locale_the_caller_cannot_see_is_never_chosen() -> None:
    views = {("internal", "en"): [0, 1], ("internal", "es"): [2], ("hr", "de"): [3]}
    cat = _catalog(CHUNKS, views)
    assert _locale(cat, "Kunden widerrufen innerhalb von 14 Tagen, Gebühren?") == "en"
    assert _locale(cat, "Kunden widerrufen innerhalb von 14 Tagen, Gebühren?",
                   ("internal", "hr")) == "de"


def test_a_knowledge_base_of_one_locale_keeps_the_default() -> None:
    cat = _catalog(CHUNKS[2:3], {("internal", "es"): [0]})
    assert _locale(cat, "¿Puede un cliente cancelar en los primeros 14 días?") == "en"
