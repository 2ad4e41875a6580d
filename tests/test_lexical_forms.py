"""Word forms the stemmer leaves apart read alike in the lexical index (assist/catalog.py
normal_word): irregular plurals, and British and American spellings."""

from __future__ import annotations

from assist.catalog import Catalog, LexicalTokenizer, build_catalog, normal_word
from assist.chunks import Chunk


def _catalog(*texts: str) -> Catalog:
    chunks = [Chunk(article_id=f"a{i}", version=1, content_sha256="0" * 64, start=0,
                    end=len(t), heading_path=(), anchor="", approved=True, title=f"a{i}",
                    audience=("internal",), locale="en", risk="low", tags=(), text=t)
              for i, t in enumerate(texts)]
    return build_catalog("g", chunks=chunks, ids={c.id: i for i, c in enumerate(chunks)},
                         membership={("internal", "en"): list(range(len(chunks)))},
                         views={"internal"}, empty={}, tokenize=LexicalTokenizer())


def test_irregular_plurals_and_spellings_read_as_one_word() -> None:
    tok = LexicalTokenizer()
    pairs = [("children", "child"), ("women", "woman"), ("teeth", "tooth"),
             ("colour", "color"), ("favourite", "favorite"), ("behaviours", "behaviors"),
             ("organise", "organize"), ("organisation", "organization"),
             ("analysed", "analyzed"), ("licence", "license"), ("defence", "defense"),
             ("centre", "center"), ("centred", "centered"), ("catalogue", "catalog"),
             ("programme", "program")]
    for uk, us in pairs:
        assert tok(uk) == tok(us), (uk, us)


def test_short_and_unrelated_words_are_left_alone() -> None:
    for word in ("hour", "four", "your", "flour", "size", "prize", "noise", "crisis",
                 "basis", "always", "people", "personal", "metre"):
        assert normal_word(word) == word, word
    tok = LexicalTokenizer()
    assert tok("people") != tok("personal")  # never joined through a shared stem


def test_word_families_stay_whole() -> None:
    """A rule rewrites a whole word family or none of it: American English also writes
    "revise" and "supervise", and "lives" is also a verb."""
    tok = LexicalTokenizer()
    for a, b in [("revised", "revision"), ("supervised", "supervision"),
                 ("precise", "precision"), ("advertised", "advertisement"),
                 ("recognisable", "recognizable"), ("customisable", "customizable"),
                 ("lives", "living"), ("programmed", "program"), ("cataloguing", "cataloging"),
                 ("behavioural", "behavioral"), ("licenced", "licensed"),
                 ("analyses", "analyzes")]:
        assert tok(a) == tok(b), (a, b)
    for a, b in [("expertise", "expert"), ("paradise", "parade")]:
        assert tok(a) != tok(b), (a, b)


def test_a_question_in_other_forms_finds_and_covers_the_passage() -> None:
    cat = _catalog("How to keep a child at a healthy weight: colour-coded meal plans.",
                   "Router lights and what they mean.")
    terms = LexicalTokenizer()("children healthy weight color")
    hits = cat.lexical(terms, views=("internal",), locale="en", n=5)
    assert hits and hits[0][0].startswith("a0|")
    assert cat.coverage(set(terms), hits[0][0]) == 1.0
