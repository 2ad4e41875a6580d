"""Hybrid retrieval: dense (Chroma) + lexical (BM25) candidates, fused into one ranking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from assist.chunks import Chunk
from assist.index import ChunkIndex
from kb.settings import RetrievalSettings


@dataclass(frozen=True)
class Candidate:
    chunk: Chunk
    dense: float | None  # cosine similarity, when the dense retriever returned it
    lexical: float | None  # BM25 score, when the lexical retriever returned it
    score: float  # fused score used for ranking


def fuse(
    dense: list[tuple[str, float]],
    lexical: list[tuple[str, float]],
    settings: RetrievalSettings,
) -> list[tuple[str, float, float | None, float | None]]:
    """(chunk id, fused score, dense, lexical), best first.

    ``weighted``: w * cosine + (1 - w) * BM25 / max BM25 of this query (a chunk the dense
    retriever did not return gets the lowest returned cosine). ``rrf``: reciprocal rank
    fusion. ``dense`` / ``lexical``: one retriever alone (baselines).
    """
    d = dict(dense)
    lx = dict(lexical)
    if settings.fusion == "dense":
        return [(cid, s, s, lx.get(cid)) for cid, s in dense]
    if settings.fusion == "lexical":
        return [(cid, s, d.get(cid), s) for cid, s in lexical]
    ids = list(dict.fromkeys([cid for cid, _ in dense] + [cid for cid, _ in lexical]))
    if settings.fusion == "rrf":
        k = settings.rrf_k
        d_rank = {cid: r for r, (cid, _) in enumerate(dense)}
        l_rank = {cid: r for r, (cid, _) in enumerate(lexical)}
        scored = [
            (cid, (1 / (k + d_rank[cid]) if cid in d_rank else 0.0)
             + (1 / (k + l_rank[cid]) if cid in l_rank else 0.0))
            for cid in ids
        ]
    else:
        w = settings.dense_weight
        floor = min(d.values()) if d else 0.0
        top_lex = max(lx.values()) if lx else 0.0
        scored = [
            (cid, w * d.get(cid, floor)
             + (1 - w) * (lx.get(cid, 0.0) / top_lex if top_lex else 0.0))
            for cid in ids
        ]
    scored.sort(key=lambda t: -t[1])
    return [(cid, s, d.get(cid), lx.get(cid)) for cid, s in scored]


def candidate_count(settings: RetrievalSettings, tags: frozenset[str]) -> int:
    """How many hits each retriever returns (more when tags will filter some out)."""
    return settings.candidates * (4 if tags else 1)


def retrieve(
    index: ChunkIndex,
    *,
    question: str,
    vector: NDArray[np.float32],
    views: tuple[str, ...],
    locale: str,
    settings: RetrievalSettings,
    tags: frozenset[str] = frozenset(),
    dense: list[tuple[str, float]] | None = None,
    lexical: list[tuple[str, float]] | None = None,
) -> list[Candidate]:
    """Candidates from the caller's views in one locale, best first. ``dense`` / ``lexical``:
    hits already found (:meth:`ChunkIndex.search`, :meth:`ChunkIndex.lexical`), else
    queried here."""
    n = candidate_count(settings, tags)
    if settings.fusion == "dense":
        lexical = []
    elif lexical is None:
        lexical = index.lexical(question, views=views, locale=locale, n=n)
    if settings.fusion == "lexical":
        dense = []
    elif dense is None:
        dense = index.dense(vector, views=views, locale=locale, n=n)
    out = []
    for cid, score, d, lx in fuse(dense, lexical, settings):
        chunk = index.chunk(cid)
        if chunk is None or (tags and not tags & set(chunk.tags)):
            continue
        out.append(Candidate(chunk, d, lx, score))
    return out
