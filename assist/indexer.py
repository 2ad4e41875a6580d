"""Keep the index in step with governance: only served versions are indexed.

``refresh`` compares what the database serves with what the index holds and re-indexes only
the articles that differ (new approval, retirement, crash mid-update); ``rebuild`` starts
from scratch. Embedding and writing to Chroma overlap (a producer thread embeds the next
batch while the current one is written), so a full ingest costs little more than embedding.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
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
                                            max_chars=max_chars))
    return chunks


def _embed_pipelined(
    index: ChunkIndex, chunks: Sequence[Chunk], article_ids: Sequence[str],
    batch: int, progress: Progress | None, indexed: set[str],
) -> None:
    """Embed batch i+1 while batch i is written to the index. Old chunks are deleted only
    for articles the index holds (``indexed``): a full rebuild deletes nothing."""
    if not chunks:
        index.replace(article_ids, [], np.zeros((0, index.embedder.dim), dtype=np.float32))
        return
    by_article: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_article.setdefault(c.article_id, []).append(c)
    groups: list[tuple[list[str], list[Chunk]]] = []
    cur_ids: list[str] = []
    cur: list[Chunk] = []
    for art_id in article_ids:
        cur_ids.append(art_id)
        cur.extend(by_article.get(art_id, []))
        if len(cur) >= batch:
            groups.append((cur_ids, cur))
            cur_ids, cur = [], []
    if cur_ids:
        groups.append((cur_ids, cur))

    work: queue.Queue[tuple[list[str], list[Chunk], NDArray[np.float32]] | None] = (
        queue.Queue(maxsize=2))
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for ids, group in groups:
                vecs = index.embedder.embed([c.embedding_text() for c in group], batch_size=64)
                work.put((ids, group, vecs))
        except BaseException as exc:  # handed to the consumer below
            errors.append(exc)
        finally:
            work.put(None)

    thread = threading.Thread(target=produce, name="canon-embed", daemon=True)
    thread.start()
    done = 0
    while (item := work.get()) is not None:
        ids, group, vecs = item
        index.write(sorted(set(ids) & indexed), group, vecs)
        done += len(group)
        if progress:
            progress(done, len(chunks))
    thread.join()
    index.bump()
    if errors:
        raise errors[0]


def refresh(
    session: Session, index: ChunkIndex, *, article_ids: Sequence[str] | None = None,
    max_chars: int = 1200, progress: Progress | None = None,
) -> RefreshReport:
    """Bring the index in line with the database (all articles, or just ``article_ids``)."""
    served = served_numbers(session)
    indexed = index.manifest()
    scope = set(article_ids) if article_ids is not None else set(served) | set(indexed)
    stale = sorted(a for a in scope if served.get(a) != indexed.get(a))
    report = RefreshReport()
    if not stale:
        return report
    wanted = {a: served[a] for a in stale if a in served}
    chunks = _chunks_for(session, wanted, max_chars)
    _embed_pipelined(index, chunks, stale, batch=256, progress=progress,
                     indexed=set(indexed))
    report.indexed = sorted(wanted.items())
    report.removed = [a for a in stale if a not in served]
    report.chunks = len(chunks)
    return report


def rebuild(
    session: Session, index: ChunkIndex, *, max_chars: int = 1200,
    progress: Progress | None = None,
) -> RefreshReport:
    """Drop the index and index every served version again."""
    index.clear()
    return refresh(session, index, max_chars=max_chars, progress=progress)
