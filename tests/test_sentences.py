"""Sentence vectors (assist.sentences): packing, scoring, and how fusion reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assist.chunks import Chunk
from assist.retrieve import fuse
from assist.sentences import SentenceVectors, pack, unpack
from assist.store import write_batches
from kb.settings import RetrievalSettings


def _unit(rng: np.random.Generator, k: int, dim: int = 16) -> np.ndarray:
    v = rng.normal(size=(k, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_packed_vectors_keep_their_cosines() -> None:
    rng = np.random.default_rng(7)
    vectors = _unit(rng, 5)
    q, scale = unpack(pack(vectors), 16)
    back = q.astype(np.float32) * scale[:, None]
    assert np.abs(back - vectors).max() < 0.01
    with pytest.raises(ValueError, match="not rows of 16"):
        unpack(pack(vectors)[:-8], 16)


def test_each_passage_scores_its_closest_sentence() -> None:
    rng = np.random.default_rng(3)
    a, c = _unit(rng, 3), _unit(rng, 2)
    question = a[1]  # the second sentence of passage 0
    store = SentenceVectors([pack(a), None, pack(c), "not base64!"], 16)
    assert len(store) == 5  # the unreadable value is skipped, not fatal
    best = store.best(question, [2, 0, 1, 3, 9])  # 9: beyond what was loaded
    assert best[1] == pytest.approx(1.0, abs=0.01)
    assert best[0] == pytest.approx(float((c @ question).max()), abs=0.01)
    assert np.isnan(best[2:]).all()
    assert store.best(question, []).shape == (0,)


def _chunk(text: str) -> Chunk:
    return Chunk(article_id="a", version=1, content_sha256="0" * 64, start=0, end=len(text),
                 heading_path=("Fees",), anchor="fees", approved=False, title="Prices",
                 audience=("internal",), locale="en", risk="low", tags=(), text=text)


def test_sentence_texts_split_sentences_lines_and_rows() -> None:
    text = ("The setup fee is waived for annual plans. Monthly plans pay it once!\n"
            "| Late payment | £12 per month |\n- ok\n* A bullet of several words")
    assert _chunk(text).sentence_texts() == [
        "Prices > Fees\nThe setup fee is waived for annual plans.",
        "Prices > Fees\nMonthly plans pay it once!",
        "Prices > Fees\nLate payment | £12 per month",
        "Prices > Fees\nA bullet of several words",
    ]
    # One sentence (fragments of fewer than three words aside): the passage's own vector.
    assert _chunk("The setup fee is waived for annual plans.\n- ok").sentence_texts() == []


def test_fusion_reads_the_better_of_passage_and_sentence() -> None:
    dense = [("a|1|0|1", 0.6), ("b|1|0|1", 0.5)]
    lexical = [("c|1|0|1", 10.0), ("b|1|0|1", 5.0)]
    sentences = {"b|1|0|1": 0.9, "c|1|0|1": 0.2}  # c: below the dense floor, stays at it
    weighted = RetrievalSettings(fusion="weighted", dense_weight=0.8)
    plain = fuse(dense, lexical, weighted)
    read = fuse(dense, lexical, weighted, sentences)
    assert [cid for cid, *_ in plain] == ["c|1|0|1", "b|1|0|1", "a|1|0|1"]
    assert [cid for cid, *_ in read] == ["b|1|0|1", "c|1|0|1", "a|1|0|1"]
    scores = {cid: s for cid, s, _, _ in read}
    assert scores["b|1|0|1"] == pytest.approx(0.8 * 0.9 + 0.2 * 0.5)
    assert scores["c|1|0|1"] == pytest.approx(0.8 * 0.5 + 0.2 * 1.0)
    # The dense value handed on is the passage's own cosine (abstention reads it).
    assert {cid: d for cid, _, d, _ in read} == {
        "a|1|0|1": 0.6, "b|1|0|1": 0.5, "c|1|0|1": None}
    # The baselines ignore sentences.
    for fusion in ("dense", "lexical", "rrf"):
        s = RetrievalSettings(fusion=fusion)
        assert fuse(dense, lexical, s, sentences) == fuse(dense, lexical, s)


def test_broken_input_never_hides_the_rest() -> None:
    rng = np.random.default_rng(5)
    a = _unit(rng, 3)
    broken = a.copy()
    broken[0, 0] = np.nan
    store = SentenceVectors([pack(broken), 12345, pack(a)], 16)  # type: ignore[list-item]
    assert list(store.count) == [2, 0, 3]  # the NaN row left out; a non-text value ignored
    assert store.best(a[1], [0])[0] == pytest.approx(1.0, abs=0.01)
    assert np.isnan(store.best(a[1], [-1, -3])).all()  # never wraps around
    assert pack(np.full((2, 16), np.nan, dtype=np.float32)) == ""


def test_fusion_without_a_lift_ranks_as_without_sentences() -> None:
    dense = [("a|1|0|1", 0.6), ("b|1|0|1", 0.5), ("d|1|0|1", 0.2)]
    lexical = [("c|1|0|1", 10.0), ("b|1|0|1", 5.0), ("e|1|0|1", 1.0)]
    no_lift = {"a|1|0|1": 0.1, "c|1|0|1": 0.15, "e|1|0|1": 0.19}  # all below what they had
    for fusion in ("weighted", "article", "zscore"):
        s = RetrievalSettings(fusion=fusion)
        assert fuse(dense, lexical, s, no_lift) == fuse(dense, lexical, s)
        # With no dense hits there is no floor to lift from: sentences change nothing.
        assert fuse([], lexical, s, {"e|1|0|1": 0.9}) == fuse([], lexical, s)


def test_writes_are_cut_by_size_as_well_as_rows() -> None:
    assert write_batches([1, 2, 3, 4, 5], [10] * 5, max_rows=2, max_bytes=100) == [
        [1, 2], [3, 4], [5]]
    assert write_batches([1, 2, 3, 4], [40, 40, 40, 200], max_rows=10, max_bytes=100) == [
        [1, 2], [3], [4]]  # a row heavier than the limit goes alone
    assert write_batches([], [], max_rows=2, max_bytes=10) == []


@pytest.mark.slow
def test_a_chroma_server_takes_passages_with_many_sentences(tmp_path: Path) -> None:
    """A Chroma server refuses requests over 40 MiB: 2,000 passages of short lines (a table
    of 35 rows each) used to make one request of about 36 MiB of metadata alone."""
    from assist.store import ChromaStore, make_chroma_client
    from kb.settings import IndexSettings

    from .servers import chroma_server

    rng = np.random.default_rng(0)
    n, rows = 2000, 35
    chunks = [Chunk(article_id=f"a{i}", version=1, content_sha256="0" * 64, start=0, end=1200,
                    heading_path=("H",), anchor="h", approved=False, title="T",
                    audience=("internal",), locale="en", risk="low", tags=(), text="x" * 1200)
              for i in range(n)]
    blob = pack(rng.normal(size=(rows, 384)).astype(np.float32))
    with chroma_server(tmp_path / "chroma") as url:
        store = ChromaStore(client=make_chroma_client(tmp_path, url), settings=IndexSettings(),
                            prefix="canon-many")
        store.upsert(chunks, rng.normal(size=(n, 384)).astype(np.float32), [blob] * n)
        held = store.contents()
    assert len(held.chunks) == n and held.sentences == [blob] * n
