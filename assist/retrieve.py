"""Hybrid retrieval: dense (Chroma) + lexical (BM25) candidates, fused into one ranking."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from assist.catalog import Catalog
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
    sentences: Mapping[str, float] | None = None,
) -> list[tuple[str, float, float | None, float | None]]:
    """(chunk id, fused score, dense, lexical), best first.

    ``sentences``: chunk id -> cosine of the question to the chunk's closest sentence
    (:mod:`assist.sentences`). Canon's fusions (``weighted``, ``article``, ``zscore``) read
    a chunk's dense score as the better of its own cosine and that one; the baselines
    (``dense``, ``lexical``, ``rrf``) ignore it. The dense value returned is always the
    chunk's own cosine (what abstention and answers read).

    ``weighted``: w * cosine + (1 - w) * BM25 / max BM25 of this query (a chunk the dense
    retriever did not return gets the lowest returned cosine). ``rrf``: reciprocal rank
    fusion. ``zscore``: the weighted sum of each retriever's scores standardised over this
    query's hits (z-scores; a chunk one retriever missed gets that retriever's lowest).
    ``article`` (the default): ``weighted``, plus ``article_support`` x the second-best chunk
    of the same article version (:func:`_article_support`). ``dense`` / ``lexical``: one
    retriever alone (baselines).
    """
    own = d = dict(dense)
    lx = dict(lexical)
    if settings.fusion == "dense":
        return [(cid, s, s, lx.get(cid)) for cid, s in dense]
    if settings.fusion == "lexical":
        return [(cid, s, d.get(cid), s) for cid, s in lexical]
    ids = list(dict.fromkeys([cid for cid, _ in dense] + [cid for cid, _ in lexical]))
    if sentences and own and settings.fusion != "rrf":
        # A chunk the dense retriever did not return is below its lowest cosine: a sentence
        # counts only where it lifts a chunk above what it had (the population of scores,
        # and so `zscore`'s statistics, stays the dense hits' plus those lifted).
        lowest = min(own.values())
        d = {**own, **{cid: v for cid, v in sentences.items()
                       if (cid in own or cid in lx) and v > own.get(cid, lowest)}}
    if settings.fusion == "rrf":
        k = settings.rrf_k
        d_rank = {cid: r for r, (cid, _) in enumerate(dense)}
        l_rank = {cid: r for r, (cid, _) in enumerate(lexical)}
        scored = [
            (cid, (1 / (k + d_rank[cid]) if cid in d_rank else 0.0)
             + (1 / (k + l_rank[cid]) if cid in l_rank else 0.0))
            for cid in ids
        ]
    elif settings.fusion == "zscore":
        w = settings.dense_weight
        zd, zl = _zscores(d), _zscores(lx)
        d_floor = min(zd.values()) if zd else 0.0
        l_floor = min(zl.values()) if zl else 0.0
        scored = [(cid, w * zd.get(cid, d_floor) + (1 - w) * zl.get(cid, l_floor))
                  for cid in ids]
    else:
        w = settings.dense_weight
        floor = min(own.values()) if own else 0.0
        top_lex = max(lx.values()) if lx else 0.0
        scored = [
            (cid, w * d.get(cid, floor)
             + (1 - w) * (lx.get(cid, 0.0) / top_lex if top_lex else 0.0))
            for cid in ids
        ]
        if settings.fusion == "article":
            scored = _article_support(scored, share=settings.article_support)
    scored.sort(key=lambda t: -t[1])
    return [(cid, s, own.get(cid), lx.get(cid)) for cid, s in scored]


def _zscores(scores: dict[str, float]) -> dict[str, float]:
    """Each score as (score - mean) / std over this query's hits; all 0 when they are equal."""
    if not scores:
        return {}
    values = np.fromiter(scores.values(), dtype=np.float64)
    mean, std = float(values.mean()), float(values.std())
    if std == 0.0:
        return dict.fromkeys(scores, 0.0)
    return {cid: (v - mean) / std for cid, v in scores.items()}


def article_of(chunk_id: str) -> str:
    """The article version a chunk id belongs to (``article|version``; see
    :func:`assist.chunks.chunk_id`): while a new approval is being indexed, the old and the
    new version's chunks never support each other."""
    return chunk_id.rsplit("|", 2)[0]


def _article_support(scored: list[tuple[str, float]], *,
                     share: float) -> list[tuple[str, float]]:
    """Every chunk's score plus ``share`` x the second-best score of its article version.

    An article's best chunk so scores max + share x second best, and an article that two
    candidates support outranks one with a single lucky chunk. The bonus is the article's,
    the same for each of its chunks: the order of passages within an article never changes,
    and only the second-best chunk counts (not a sum), so a long article with many loosely
    related sections gains no more than a short one with two good ones."""
    articles = [article_of(cid) for cid, _ in scored]
    first: dict[str, float] = {}
    second: dict[str, float] = {}
    for a, (_, s) in zip(articles, scored, strict=True):
        if a not in first:
            first[a] = s
        elif s > first[a]:
            second[a], first[a] = first[a], s
        elif s > second.get(a, -math.inf):
            second[a] = s
    return [(cid, s + share * second[a]) if a in second else (cid, s)
            for a, (cid, s) in zip(articles, scored, strict=True)]


def candidate_count(settings: RetrievalSettings, tags: frozenset[str]) -> int:
    """How many hits each retriever returns (more when tags will filter some out)."""
    return settings.candidates * (4 if tags else 1)


def rank(
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
    articles: int | None = None,
    catalog: Catalog | None = None,
) -> tuple[list[Candidate], list[tuple[int, Candidate]]]:
    """(servable candidates from the caller's views in one locale, best first; the
    unservable ones ranked among them).

    Unservable candidates (the plain text of ``risk: high`` articles) are never served: each
    comes as (how many servable candidates rank above it, candidate), so the answer path can
    tell when the best match is high-risk text with no approved language (see
    :func:`assist.answer.lacks_approved_language`; :meth:`assist.answer.Assistant.ask`
    re-checks both against the database). ``dense`` / ``lexical``: hits already found
    (:meth:`ChunkIndex.search`, :meth:`ChunkIndex.lexical`), else queried here.
    ``articles``: only the candidates of the best that many articles (the answer path's
    shortlist). ``catalog``: the one the question has read so far (the hits' ids are its
    ids), else the index's current one."""
    cat = catalog or index.catalog()
    n = candidate_count(settings, tags)
    if settings.fusion == "dense":
        lexical = []
    elif lexical is None:
        lexical = index.lexical(question, views=views, locale=locale, n=n, catalog=cat)
    if settings.fusion == "lexical":
        dense = []
    elif dense is None:
        dense = index.dense(vector, views=views, locale=locale, n=n, catalog=cat)

    def chunk_of(cid: str) -> Chunk | None:
        chunk = index.chunk(cid, cat)
        return None if chunk is None or (tags and not tags & set(chunk.tags)) else chunk

    sentences = None
    if uses_sentences(settings):
        sentences = index.sentence_scores(
            vector, dict.fromkeys([cid for cid, _ in dense] + [cid for cid, _ in lexical]),
            cat)
    return order(fuse(dense, lexical, settings, sentences), chunk_of, articles=articles)


def uses_sentences(settings: RetrievalSettings) -> bool:
    """Does this ranking read sentence vectors (:func:`fuse`)?"""
    return settings.sentence_match and settings.fusion in ("weighted", "article", "zscore")


def order(fused: list[tuple[str, float, float | None, float | None]],
          chunk_of: Callable[[str], Chunk | None], *, articles: int | None = None,
          servable: Callable[[Chunk], bool] = lambda c: c.servable,
          ) -> tuple[list[Candidate], list[tuple[int, Candidate]]]:
    """Fused hits (:func:`fuse`) as (servable candidates, best first; the unservable ones,
    each with how many servable candidates rank above it). One rule for the answer path
    (:func:`rank`), ``kb eval tune`` (:func:`evals.tune.ranked_with_lead`) and the approval
    check (:class:`assist.conflicts.Simulation`).

    ``chunk_of``: the chunk a hit may be ranked as, or None to skip it (unknown, filtered
    out, or not what the caller may see); ``servable``: whether it may be served (by
    default the index's own rule, :attr:`assist.chunks.Chunk.servable`). Unservable text (a
    high-risk article's plain text) has lifted its article's blocks in the fusion; it goes
    aside here, before confidence, shortlist or decision. ``articles``: only the candidates
    of the best that many articles (the answer path's shortlist)."""
    out: list[Candidate] = []
    unservable: list[tuple[int, Candidate]] = []
    seen: set[str] = set()
    for cid, score, d, lx in fused:
        chunk = chunk_of(cid)
        if chunk is None:
            continue
        if not servable(chunk):
            unservable.append((len(out), Candidate(chunk, d, lx, score)))
            continue
        if articles is not None and chunk.article_id not in seen:
            if len(seen) >= articles:
                continue
            seen.add(chunk.article_id)
        out.append(Candidate(chunk, d, lx, score))
    return out, unservable


def lead_of(unservable: list[tuple[int, Candidate]]) -> Candidate | None:
    """The unservable candidate ranked above every servable one, if any (from
    :func:`order`)."""
    return next((u for above, u in unservable if above == 0), None)
