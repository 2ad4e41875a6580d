"""The in-memory dense search (assist.catalog.Catalog.dense) on its own: views, sizes and
broken vectors. Its agreement with Chroma on a real index is tested in
tests/test_index_governance.py and tests/test_assist_e2e.py."""

from __future__ import annotations

import numpy as np

from assist.catalog import Catalog, build_catalog
from assist.chunks import Chunk


def _chunk(i: int, audience: tuple[str, ...]) -> Chunk:
    text = f"passage {i}"
    return Chunk(article_id=f"a{i}", version=1, content_sha256="0" * 64, start=0,
                 end=len(text), heading_path=("S",), anchor="s", approved=False, title="T",
                 audience=audience, locale="en", risk="low", tags=(), text=text)


def _catalog(vectors: np.ndarray) -> tuple[list[Chunk], Catalog]:
    # a0-a2 internal only; a3-a5 in the vendors view too.
    chunks = [_chunk(i, ("internal",) if i < 3 else ("internal", "vendors")) for i in range(6)]
    membership = {("internal", "en"): list(range(6)), ("vendors", "en"): [3, 4, 5]}
    cat = build_catalog("g1", chunks=chunks, ids={c.id: i for i, c in enumerate(chunks)},
                        membership=membership, views={"internal", "vendors"}, empty={},
                        tokenize=str.split, vectors=np.ascontiguousarray(vectors.T))
    return chunks, cat


def test_exact_search_within_the_callers_views() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks, cat = _catalog(vectors)
    question = vectors[1] + 0.1 * vectors[4]
    (internal, vendors, both, nobody) = cat.dense(
        question[None, :].repeat(4, axis=0),
        [(("internal",), "en", 2), (("vendors",), "en", 10), (("internal", "vendors"), "en", 6),
         (("vendor:x",), "en", 3)])
    cosines = vectors @ (question / np.linalg.norm(question))
    best = np.argsort(-cosines)[:2]
    assert [cid for cid, _ in internal] == [chunks[i].id for i in best]
    assert np.allclose([s for _, s in internal], cosines[best], atol=1e-6)
    assert {cid for cid, _ in vendors} == {chunks[i].id for i in (3, 4, 5)}  # n > the view
    assert len(both) == 6 and len({cid for cid, _ in both}) == 6  # each chunk once
    assert nobody == []


def test_a_broken_vector_never_ranks_and_never_lets_others_in() -> None:
    rng = np.random.default_rng(6)
    vectors = rng.normal(size=(6, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[4] = np.nan
    chunks, cat = _catalog(vectors)
    (vendors,) = cat.dense(vectors[3][None, :], [(("vendors",), "en", 3)])
    assert vendors[0][0] == chunks[3].id
    assert {cid for cid, _ in vendors} == {chunks[3].id, chunks[5].id}  # not a4, no a0-a2
    assert all(np.isfinite(s) for _, s in vendors)
    (none,) = cat.dense(np.full((1, 8), np.nan, dtype=np.float32),
                        [(("vendors",), "en", 3)])
    assert none == []
