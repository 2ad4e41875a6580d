"""The arithmetic of the experimental fusions (issue 10) on hand-made scores, no model."""

from __future__ import annotations

import math
import random

import pytest

from assist.answer import lacks_approved_language, lead_language_first, serve_order
from assist.chunks import Chunk
from assist.retrieve import Candidate, fuse, lead_of, order
from kb.settings import AnswerSettings, RetrievalSettings

A, B, C = "a|1|0|10", "b|1|0|10", "c|1|0|10"
DENSE = [(A, 0.9), (B, 0.7), (C, 0.5)]
LEXICAL = [(C, 30.0), (B, 20.0)]  # A: not found by BM25


def _scores(result: list[tuple[str, float, float | None, float | None]]) -> dict[str, float]:
    return {cid: s for cid, s, _, _ in result}


def test_zscore_standardises_each_retriever_over_the_query() -> None:
    settings = RetrievalSettings(fusion="zscore", dense_weight=0.5)
    out = fuse(DENSE, LEXICAL, settings)
    z = 0.2 / math.sqrt(0.08 / 3)  # cosines 0.9 / 0.7 / 0.5: mean 0.7, std sqrt(0.08 / 3)
    # BM25 30 / 20: mean 25, std 5 -> +1 / -1; A, missed by BM25, gets the lowest (-1).
    assert _scores(out) == pytest.approx({A: 0.5 * z - 0.5, B: -0.5, C: -0.5 * z + 0.5})
    assert [cid for cid, *_ in out] == [A, C, B]
    # The raw scores travel with the fused one, for the guardrails downstream.
    assert {cid: (d, lx) for cid, _, d, lx in out} == {
        A: (0.9, None), B: (0.7, 20.0), C: (0.5, 30.0)}


def test_zscore_ignores_the_scale_of_bm25_where_weighted_does_not() -> None:
    settings = RetrievalSettings(fusion="zscore", dense_weight=0.5)
    scaled = [(cid, s * 100) for cid, s in LEXICAL]
    assert _scores(fuse(DENSE, scaled, settings)) == pytest.approx(
        _scores(fuse(DENSE, LEXICAL, settings)))
    # Same hits under today's `weighted`: BM25 / its best outweighs the cosine gap.
    weighted = fuse(DENSE, LEXICAL, RetrievalSettings(fusion="weighted", dense_weight=0.5))
    assert [cid for cid, *_ in weighted] == [C, B, A]


def test_zscore_of_equal_scores_is_zero_not_a_division_by_zero() -> None:
    settings = RetrievalSettings(fusion="zscore", dense_weight=0.8)
    out = fuse([(A, 0.6), (B, 0.6)], [(A, 5.0)], settings)
    assert _scores(out) == pytest.approx({A: 0.0, B: 0.0})


def test_article_adds_a_share_of_the_articles_second_best_chunk_to_each_chunk() -> None:
    x0, x9, y0, y5, z0 = "x|1|0|5", "x|1|9|12", "y|1|0|5", "y|1|5|9", "z|2|0|4"
    dense = [(x0, 0.80), (y0, 0.75), (z0, 0.74), (y5, 0.70), (x9, 0.20)]
    settings = RetrievalSettings(fusion="article", dense_weight=1.0, article_support=0.25)
    out = fuse(dense, [], settings)
    assert _scores(out) == pytest.approx({
        y0: 0.75 + 0.25 * 0.70, y5: 0.70 + 0.25 * 0.70, x0: 0.80 + 0.25 * 0.20,
        z0: 0.74,  # one chunk only: nothing to add
        x9: 0.20 + 0.25 * 0.20})
    # y's two good chunks outrank x's single lucky one; within an article the order stays.
    assert [cid for cid, *_ in out] == [y0, y5, x0, z0, x9]
    # Without support the order is the `weighted` one.
    plain = fuse(dense, [], settings.model_copy(update={"article_support": 0.0}))
    assert [cid for cid, *_ in plain] == [x0, y0, z0, y5, x9]
    weighted = RetrievalSettings(fusion="weighted", dense_weight=1.0)
    assert [cid for cid, *_ in fuse(dense, [], weighted)] == [x0, y0, z0, y5, x9]


def test_a_long_article_gains_no_more_than_its_second_best_chunk() -> None:
    """Support is the second-best chunk, not a sum: many weak sections add nothing more."""
    long = [(f"long|1|{i}|{i + 1}", 0.5) for i in range(1, 9)]
    dense = [("short|1|0|1", 0.82), ("short|1|1|2", 0.6), ("long|1|0|1", 0.8), *long]
    out = fuse(dense, [], RetrievalSettings(fusion="article", dense_weight=1.0,
                                            article_support=0.25))
    assert out[0][0] == "short|1|0|1"
    assert _scores(out)["long|1|0|1"] == pytest.approx(0.8 + 0.25 * 0.5)


def test_article_support_never_mixes_two_versions_of_an_article() -> None:
    """While a new approval is indexed, the old and new version's chunks sit side by side:
    they must not lift each other."""
    old, new = "x|1|0|5", "x|2|0|5"
    settings = RetrievalSettings(fusion="article", dense_weight=1.0, article_support=0.25)
    assert _scores(fuse([(old, 0.8), (new, 0.7)], [], settings)) == pytest.approx(
        {old: 0.8, new: 0.7})
    assert RetrievalSettings().fusion == "article"  # the shipped default


def _chunk(article: str, start: int, *, risk: str = "low", approved: bool = False) -> Chunk:
    return Chunk(article_id=article, version=1, content_sha256="0" * 64, start=start,
                 end=start + 10, heading_path=(), anchor="", approved=approved, title=article,
                 audience=("internal",), locale="en", risk=risk, tags=(), text="x" * 10)


def test_one_order_sets_unservable_text_aside_and_cuts_the_shortlist() -> None:
    """`order` is the rule the answer path, `kb eval tune` and the approval check share."""
    hi_text = _chunk("hi", 0, risk="high")  # a high-risk article's plain text
    hi_block = _chunk("hi", 20, risk="high", approved=True)
    a1, a2, b1, c1 = _chunk("a", 0), _chunk("a", 20), _chunk("b", 0), _chunk("c", 0)
    chunks = {c.id: c for c in (hi_text, hi_block, a1, a2, b1, c1)}
    fused = [(c.id, 1.0 - i / 10, None, None)
             for i, c in enumerate((hi_text, a1, hi_block, b1, a2, c1))]
    fused.insert(1, ("gone|1|0|10", 0.95, None, None))  # unknown to the index: skipped
    valid, unservable = order(fused, chunks.get, articles=2)
    assert [c.chunk for c in valid] == [a1, hi_block, a2]  # 'b' and 'c' beyond 2 articles
    assert [(above, u.chunk) for above, u in unservable] == [(0, hi_text)]
    assert lead_of(unservable) is unservable[0][1]
    # Below a servable passage, unservable text is no lead.
    valid, unservable = order(fused[2:], chunks.get)
    assert lead_of(unservable) is None
    assert [c.chunk for c in valid] == [a1, hi_block, b1, a2, c1]
    # The caller's own rule of what may be served (kb eval tune: what the database allows).
    valid, unservable = order(fused, chunks.get,
                              servable=lambda c: c.servable and c.article_id != "a")
    assert [u.chunk for _, u in unservable] == [hi_text, a1, a2]
    assert [above for above, _ in unservable] == [0, 0, 2]


def _cand(article: str, start: int, score: float, dense: float | None = 0.6) -> Candidate:
    return Candidate(_chunk(article, start), dense, None, score)


def test_served_passages_make_room_for_another_article_scoring_nearly_as_well() -> None:
    """`answer.diversity`: a further section of an article already served gives way to
    another article within the penalty; the top passage and the order in which articles
    first appear never change."""
    a1, a2, a3 = _cand("a", 0, 0.90), _cand("a", 20, 0.89), _cand("a", 40, 0.84)
    b1, c1 = _cand("b", 0, 0.78), _cand("c", 0, 0.60)
    ranked = [a1, a2, a3, b1, c1]
    assert serve_order(ranked, top_k=3, min_score=0.3) == [a1, a2, a3]  # diversity 0
    # a2 (0.89 - 0.1) still beats b1 (0.78); then a3 (0.84 - 0.2) gives way to b1.
    assert serve_order(ranked, top_k=3, min_score=0.3, diversity=0.1) == [a1, a2, b1]
    assert serve_order(ranked, top_k=5, min_score=0.3, diversity=0.1) == [a1, a2, b1, a3, c1]
    # A larger penalty puts every article's best passage before any second one.
    assert serve_order(ranked, top_k=3, min_score=0.3, diversity=1.0) == [a1, b1, c1]
    # Far below, another article does not displace a close second section.
    far = [a1, a2, _cand("b", 0, 0.40)]
    assert serve_order(far, top_k=2, min_score=0.3, diversity=0.1) == [a1, a2]


def test_diversity_keeps_the_serving_rules() -> None:
    """The top passage as ranked (even below another's score: approved language moved
    first), the cosine floor for later passages, withheld and overlapping spans."""
    lead = _cand("h", 0, 0.50)  # moved first by `lead_language_first`
    a1, a2 = _cand("a", 0, 0.90), _cand("a", 20, 0.88)
    weak = _cand("b", 0, 0.89, dense=0.1)  # below min_score: only the top may be lexical-only
    assert serve_order([lead, a1, weak, a2], top_k=3, min_score=0.3,
                       diversity=0.1) == [lead, a1, a2]
    assert serve_order([lead, a1, weak, a2], top_k=3, min_score=0.3, diversity=0.1,
                       withheld=lambda c: c is a1) == [lead, a2]
    overlap = Candidate(_chunk("a", 5), 0.6, None, 0.89)  # "a" 5-15 overlaps "a" 0-10
    assert serve_order([a1, overlap, a2], top_k=3, min_score=0.3,
                       diversity=0.1) == [a1, a2]


def _reference(valid: list[Candidate], top_k: int, min_score: float,
               withheld: set[int], diversity: float) -> list[Candidate]:
    """Greedy maximal marginal relevance written plainly: the first eligible candidate,
    then at each step the best (score - diversity x best score x passages of its article
    chosen), ties as ranked, skipping overlaps; diversity 0: in the order given."""
    eligible = [c for i, c in enumerate(valid)
                if not (i and (c.dense is None or c.dense < min_score)) and id(c) not in withheld]
    unit = max((c.score for c in eligible), default=0.0)
    chosen: list[Candidate] = []
    left = list(range(len(eligible)))
    while len(chosen) < top_k:
        free = [j for j in left if not any(
            o.chunk.article_id == eligible[j].chunk.article_id
            and o.chunk.start < eligible[j].chunk.end and eligible[j].chunk.start < o.chunk.end
            for o in chosen)]
        if not free:
            break
        j = free[0] if not chosen or not diversity else max(free, key=lambda j: (
            eligible[j].score - diversity * unit * sum(
                o.chunk.article_id == eligible[j].chunk.article_id for o in chosen), -j))
        left.remove(j)
        chosen.append(eligible[j])
    return chosen


def test_serve_order_matches_a_plain_greedy_reference_on_random_lists() -> None:
    """Sorted or not (approved language moved first, or any order), with ties, overlapping
    spans, withheld and lexical-only passages; diversity 0 is the plain rule."""
    rng = random.Random(7)
    for trial in range(3000):
        cands = []
        for _ in range(rng.randint(0, 9)):
            c = _chunk(rng.choice("abcd"), rng.choice([0, 5, 10, 20, 30]))
            cands.append(Candidate(c, rng.choice([None, 0.1, 0.35, 0.5, 0.8]), None,
                                   rng.choice([0.5, 0.6, 0.7, 0.8, 0.9, rng.random()])))
        if trial % 2:
            cands.sort(key=lambda c: -c.score)
        withheld = {id(c) for c in cands if rng.random() < 0.15}
        top_k, diversity = rng.randint(1, 6), rng.choice([0.0, 0.05, 0.1, 0.3, 1.0])
        got = serve_order(cands, top_k=top_k, min_score=0.3, diversity=diversity,
                          withheld=lambda c, w=withheld: id(c) in w)  # type: ignore[misc]
        want = _reference(cands, top_k, 0.3, withheld, diversity)
        assert [id(c) for c in got] == [id(c) for c in want], (trial, cands, top_k, diversity)


def test_diversity_means_the_same_on_every_fusions_scale() -> None:
    """A share of the best score: RRF's scores (about 1/60) and raw BM25 (tens) serve as
    the cosine-scale ones do."""
    ranked = [_cand("a", 0, 0.90), _cand("a", 20, 0.89), _cand("a", 40, 0.84),
              _cand("b", 0, 0.78), _cand("c", 0, 0.60)]
    want = [c.chunk for c in serve_order(ranked, top_k=5, min_score=0.3, diversity=0.1)]
    for scale in (1 / 60, 40.0):
        scaled = [Candidate(c.chunk, c.dense, c.lexical, c.score * scale) for c in ranked]
        got = serve_order(scaled, top_k=5, min_score=0.3, diversity=0.1)
        assert [c.chunk for c in got] == want
    assert serve_order(ranked, top_k=0, min_score=0.3, diversity=0.1) == []
    assert serve_order(ranked, top_k=0, min_score=0.3) == []


def test_diversity_never_decides_which_passage_leads() -> None:
    """A high-risk article's approved language leads only when it is among the first
    `default_top_k` passages by score: making room for other articles in the answer does
    not loosen the `no_approved_language` escalation."""
    lead = Candidate(_chunk("hi", 0, risk="high"), 0.9, None, 0.95)  # plain text, unservable
    block = Candidate(_chunk("hi", 20, risk="high", approved=True), 0.6, None, 0.72)
    valid = [_cand("a", 0, 0.80), _cand("a", 20, 0.78), _cand("a", 40, 0.77), block]
    answer = AnswerSettings(default_top_k=3, diversity=1.0)
    # With diversity the block would be among three passages served; by score it is 4th.
    assert block in serve_order(valid, top_k=3, min_score=0.3, diversity=1.0)
    assert lead_language_first(lead, valid, answer) == valid
    assert lacks_approved_language(lead, valid, answer)
