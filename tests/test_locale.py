"""A question that names no locale is asked in the locale its words read as, among the
texts its caller may see (`answer.detect_locale`): one rule, in `assist/catalog.py`."""

from __future__ import annotations

from assist.catalog import LOCALE_MARGIN, LOCALE_OWN_TERMS, Catalog, LexicalTokenizer, build_catalog
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
           "pagar ningún cargo por cancelación con su router Movistar."),
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


def test_only_a_clear_lead_with_words_of_its_own_switches() -> None:
    en = _chunk("a", "en", "alpha beta gamma")
    es = _chunk("b", "es", "uno dos alpha beta")
    cat = _catalog([en, es], {("internal", "en"): [0], ("internal", "es"): [1]})
    # 4 of 6 terms in Spanish texts, 2 of 6 in English ones: a lead of 0.33, two own terms
    assert _locale(cat, "uno dos alpha beta qqa qqb") == "es"
    # one more unknown term: 4/7 against 2/7, a lead of 0.29
    assert 4 / 7 - 2 / 7 < LOCALE_MARGIN <= 4 / 6 - 2 / 6
    assert _locale(cat, "uno dos alpha beta qqa qqb qqc") == "en"
    # a lead of 0.5 resting on one word of the other locale's own (a brand name) is not one
    assert LOCALE_OWN_TERMS == 2
    assert _locale(cat, "uno alpha") == "en"
    assert _locale(cat, "uno dos alpha") == "es"


def test_a_brand_name_in_a_spanish_text_does_not_make_a_question_spanish() -> None:
    cat = _catalog(CHUNKS, ALL)
    assert _locale(cat, "Movistar router") == "en"
    assert _locale(cat, "movistar router lights?") == "en"


def test_texts_the_caller_cannot_see_never_count() -> None:
    views = {("internal", "en"): [0, 1], ("internal", "es"): [2], ("hr", "de"): [3]}
    cat = _catalog(CHUNKS, views)
    german = "Kunden widerrufen innerhalb von 14 Tagen, Gebühren?"
    assert _locale(cat, german) == "en"
    assert _locale(cat, german, ("internal", "hr")) == "de"
    # a Spanish word only an hr text uses tells an internal caller nothing
    hidden = _catalog([*CHUNKS, _chunk("secret-es", "es", "zafiro esmeralda rubí")],
                      {**views, ("hr", "es"): [4]})
    assert _locale(hidden, "zafiro esmeralda rubí") == "en"
    assert _locale(hidden, "zafiro esmeralda rubí", ("internal", "hr")) == "es"


def test_a_caller_who_sees_one_locale_is_asked_in_it() -> None:
    cat = _catalog(CHUNKS[2:3], {("internal", "es"): [0]})
    assert _locale(cat, "¿Puede un cliente cancelar en los primeros 14 días?", ("hr",)) == "en"
    # a knowledge base of Spanish texts alone answers in Spanish, whatever the default
    assert _locale(cat, "¿Puede un cliente cancelar en los primeros 14 días?") == "es"
    assert _locale(cat, "cancel") == "es"
    # a collection whose texts have all gone counts for nothing
    emptied = _catalog(CHUNKS[2:3], {("internal", "es"): [0], ("internal", "en"): []})
    assert _locale(emptied, "cancel") == "es"
    cat = _catalog(CHUNKS[:2], {("internal", "en"): [0, 1]})
    assert _locale(cat, "¿Puede un cliente cancelar en los primeros 14 días?") == "en"


def test_text_written_without_spaces_is_read_as_character_pairs() -> None:
    assert TOKENIZE("返金の申請") == ["返金", "金の", "の申", "申請"]
    assert TOKENIZE("猫") == ["猫"]
    assert TOKENIZE("Hub ルーター") == ["hub", "ルー", "ータ", "ター"]
    assert TOKENIZE("비밀번호") == ["비밀", "밀번", "번호"]
    japanese = _chunk("refunds-ja", "ja", "年間プランの返金は30日以内に申請できます。")
    cat = _catalog([*CHUNKS, japanese], {**ALL, ("internal", "ja"): [4]})
    assert _locale(cat, "返金はいつまで申請できますか") == "ja"
    assert _locale(cat, "can a customer cancel within 14 days without a charge?") == "en"
    # terms stay in text order (the words next to a number are read from it)
    assert TOKENIZE("返金期限 Fibre plan refunds within 30 days.") == [
        "返金", "金期", "期限", "fiber", "plan", "refund", "within", "30", "day"]
    assert TOKENIZE("人々") == ["人々"]  # the iteration mark belongs to the run
    assert TOKENIZE("ロード・ラン") == ["ロー", "ード", "ラン"]  # the middle dot splits words
    assert TOKENIZE("\uff99\uff70\uff80\uff70") == TOKENIZE("ルーター")  # halfwidth kana
    assert TOKENIZE("\uff52\uff4f\uff55\uff54\uff45\uff52") == ["router"]  # fullwidth
    # never "mended" into another word of the knowledge base: one edit from a text's run
    known = _chunk("refunds-ja", "ja", "返金の申請について説明します。")
    mending = _catalog([*CHUNKS, known], {**ALL, ("internal", "ja"): [4]})
    assert mending.mend("返金の申請についての説明します") == "返金の申請についての説明します"
