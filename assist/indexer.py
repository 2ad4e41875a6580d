"""Keep the index in step with governance: only served versions are indexed.

``refresh`` compares what the database serves with what the index holds and re-indexes only
the articles that differ (new approval, retirement, crash mid-update); ``rebuild`` indexes
every served version again, either from scratch (the collections dropped first) or in place
(each article's new chunks written before its old ones go, so readers never find it empty).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlmodel import Session, col, select

from assist.chunks import Chunk, chunk_version
from assist.index import ChunkIndex
from kb.governance import served_numbers
from kb.models import ArticleVersion

Progress = Callable[[int, int], None]


@dataclass
class RefreshReport:
    indexed: list[tuple[str, int]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    chunks: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.indexed or self.removed)


def _chunks_for(session: Session, wanted: dict[str, int], max_chars: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    ids = list(wanted)
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        rows = session.exec(
            select(ArticleVersion).where(col(ArticleVersion.article_id).in_(part))
        ).all()
        for v in rows:
            if wanted.get(v.article_id) == v.number:
                chunks.extend(chunk_version(article_id=v.article_id, version=v.number,
                                            content_sha256=v.content_sha256, text=v.text,
                                            max_chars=max_chars, meta=v.meta))
    return chunks


def _embed_and_write(
    index: ChunkIndex, chunks: Sequence[Chunk], article_ids: Sequence[str],
    batch: int, progress: Progress | None, indexed: set[str],
    empty: dict[str, int | None] | None = None,
) -> None:
    """Embed and write group by group. Old chunks are deleted only for articles the index
    holds (``indexed``): a full rebuild deletes nothing.

    The two steps alternate instead of overlapping: both are CPU-bound, and a Chroma writer
    running beside ONNX Runtime's parallel kernels stalls them (on 2 cores an overlapped
    ingest took 1.33x the pure embedding time; alternating takes less, see the README)."""
    if not chunks:
        index.write(sorted(set(article_ids)), [],
                    np.zeros((0, index.embedder.dim), dtype=np.float32))
        index.bump(empty)
        return
    by_article: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_article.setdefault(c.article_id, []).append(c)
    done = 0
    ids: list[str] = []
    group: list[Chunk] = []
    try:
        for n, art_id in enumerate(article_ids, 1):
            ids.append(art_id)
            group.extend(by_article.get(art_id, []))
            if len(group) < batch and n < len(article_ids):
                continue
            vecs = index.embedder.embed([c.embedding_text() for c in group], batch_size=64)
            index.write(sorted(set(ids) & indexed), group, vecs)
            done += len(group)
            if progress:
                progress(done, len(chunks))
            ids, group = [], []
    finally:
        index.bump(empty)  # every worker reloads what was written, even after a failure


def refresh(
    session: Session, index: ChunkIndex, *, article_ids: Sequence[str] | None = None,
    max_chars: int = 1200, progress: Progress | None = None,
) -> RefreshReport:
    """Bring the index in line with the database (all articles, or just ``article_ids``)."""
    served = served_numbers(session)
    indexed = index.manifest()
    scope = set(article_ids) if article_ids is not None else set(served) | set(indexed)
    stale = sorted(a for a in scope if served.get(a) != indexed.get(a))
    return _reindex(session, index, stale, served=served, indexed=indexed,
                    max_chars=max_chars, progress=progress)


def _reindex(session: Session, index: ChunkIndex, stale: Sequence[str], *,
             served: dict[str, int], indexed: dict[str, int], max_chars: int,
             progress: Progress | None) -> RefreshReport:
    """Index the served version of each of ``stale`` (removing the articles not served)."""
    report = RefreshReport()
    if not stale:
        return report
    wanted = {a: served[a] for a in stale if a in served}
    chunks = _chunks_for(session, wanted, max_chars)
    with_chunks = {c.article_id for c in chunks}
    empty: dict[str, int | None] = {
        a: (wanted[a] if a in wanted and a not in with_chunks else None) for a in stale}
    _embed_and_write(index, chunks, stale, batch=1024, progress=progress,
                     indexed=set(indexed), empty=empty)
    report.indexed = sorted(wanted.items())
    report.removed = [a for a in stale if a not in served]
    report.chunks = len(chunks)
    return report


def rebuild(
    session: Session, index: ChunkIndex, *, max_chars: int = 1200,
    progress: Progress | None = None, in_place: bool = False,
) -> RefreshReport:
    """Index every served version again.

    From scratch (default): drop the collections, then fill them; only safe when nothing
    reads the index meanwhile (an embedded index with no server running). ``in_place``:
    every article's chunks are written over the live collections, new ones before old ones
    go, and articles the database no longer serves are removed, so processes reading the
    index (servers on a shared Chroma server) keep answering throughout."""
    if not in_place:
        index.clear()
        return refresh(session, index, max_chars=max_chars, progress=progress)
    served = served_numbers(session)
    indexed = index.manifest()
    return _reindex(session, index, sorted(set(served) | set(indexed)), served=served,
                    indexed=indexed, max_chars=max_chars, progress=progress)
