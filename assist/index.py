"""The search index of approved text: dense vectors in Chroma, lexical BM25 in memory.

This is the only module that talks to Chroma. It speaks domain types outward (``Chunk``).

Scoping without filters: Chroma ``where`` filters cost time in proportion to the collection,
so chunks are partitioned into one collection per *view* x locale. A view is one audience
label: ``internal``, ``vendors`` (every vendor) or ``vendor:<name>`` (one vendor only). A
chunk is stored once in each view its audience names, so ``[internal, vendors]`` costs two
vectors, not one per vendor. A caller queries only views it may see: staff ``internal``; a
vendor's agent ``vendors`` plus its own ``vendor:<name>`` view (small, so the second query is
cheap), merged by similarity. No collection ever holds a chunk its readers may not see. The
collection names start with a prefix derived from the embedding model, the chunking
parameters and this storage layout, so a changed model never mixes vectors.

BM25 is rebuilt in memory from the chunks stored in Chroma whenever the index generation
(kept in a small state collection, so every worker and machine sees it) changes.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import bm25s
import numpy as np
import Stemmer
from numpy.typing import NDArray

from assist.batching import Batcher
from assist.chunks import CHUNKER_VERSION, Chunk, parse_chunk_id
from kb.audience import chunk_views
from kb.settings import IndexSettings

_TOKEN = re.compile(r"(?u)\b\w\w+\b")
LAYOUT_VERSION = 2  # 2: one copy per audience label, chunk fields packed in one metadata key
_STOPWORDS = frozenset(bm25s.stopwords.STOPWORDS_EN)


class Embedder(Protocol):
    @property
    def model_name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> NDArray[np.float32]: ...

    def embed_query(self, text: str) -> NDArray[np.float32]: ...


def _slug(value: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", value).strip("-").lower()


def collection_prefix(model_name: str, settings: IndexSettings) -> str:
    """Encodes model + chunking parameters: a different model never shares vectors."""
    model = _slug(model_name.split("/")[-1])
    return (f"canon-{model}-c{settings.chunk_max_chars}-k{CHUNKER_VERSION}"
            f"-l{LAYOUT_VERSION}")


class LexicalTokenizer:
    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS]
        return list(self._stemmer.stemWords(words))


@dataclass
class _Catalog:
    generation: str
    chunks: list[Chunk]
    ids: dict[str, int]
    bm25: bm25s.BM25 | None
    masks: dict[tuple[str, str], NDArray[np.float32]]
    sizes: dict[tuple[str, str], int]  # chunks per (view, locale) collection
    views: set[str]
    idf: dict[str, float]
    terms: list[frozenset[str]]  # lexical terms of each chunk
    empty: dict[str, int]  # indexed versions with no chunks


@dataclass(frozen=True)
class _Search:
    question: str
    views: tuple[str, ...]
    locale: str
    n: int


def make_chroma_client(data_dir: Path, chroma_url: str | None) -> Any:
    """Embedded persistent Chroma under ``data_dir`` or a Chroma server; telemetry off."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        url = urlparse(chroma_url)
        return chromadb.HttpClient(host=url.hostname or "127.0.0.1", port=url.port or 8000,
                                   ssl=url.scheme == "https", settings=chroma_settings)
    path = data_dir / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


def _meta(chunk: Chunk) -> dict[str, Any]:
    """Chroma metadata: ``article_id`` (for deletes) and every other field packed in one
    JSON value. Chroma stores and indexes one row per metadata key, so packing makes writes
    markedly cheaper; nothing ever filters on the packed fields."""
    packed = [chunk.version, chunk.content_sha256, chunk.start, chunk.end,
              list(chunk.heading_path), chunk.anchor, chunk.approved, chunk.title,
              list(chunk.audience), chunk.locale, chunk.risk, list(chunk.tags)]
    return {"article_id": chunk.article_id,
            "chunk": json.dumps(packed, ensure_ascii=False, separators=(",", ":"))}


def _from_meta(meta: dict[str, Any], text: str) -> Chunk:
    (version, sha, start, end, path, anchor, approved, title, audience, locale, risk,
     tags) = json.loads(meta["chunk"])
    return Chunk(
        article_id=meta["article_id"], version=int(version), content_sha256=sha,
        start=int(start), end=int(end), heading_path=tuple(path), anchor=anchor,
        approved=bool(approved), title=title, audience=tuple(audience), locale=locale,
        risk=risk, tags=tuple(tags), text=text,
    )


class ChunkIndex:
    """Chroma (dense) + BM25 (lexical) over the chunks of served versions."""

    def __init__(self, *, client: Any, embedder: Embedder, settings: IndexSettings,
                 refresh_seconds: float = 1.0) -> None:
        self.client = client
        self.embedder = embedder
        self.settings = settings
        self.prefix = collection_prefix(embedder.model_name, settings)
        self.refresh_seconds = refresh_seconds
        self._tokenize = LexicalTokenizer()
        self._lock = threading.Lock()
        self._catalog: _Catalog | None = None
        self._checked_at = 0.0
        self._collections: dict[str, Any] = {}
        self._searches: Batcher[_Search, tuple[NDArray[np.float32], list[tuple[str, float]]]] = (
            Batcher(self._search_batch))

    # --- collections -----------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        s = self.settings
        return {"hnsw": {"space": "cosine", "ef_search": s.hnsw_ef_search,
                         "ef_construction": s.hnsw_ef_construction,
                         "max_neighbors": s.hnsw_max_neighbors}}

    def _name(self, view: str, locale: str) -> str:
        return f"{self.prefix}--{_slug(view)}--{_slug(locale)}"

    def _collection(self, view: str, locale: str, *, create: bool) -> Any | None:
        name = self._name(view, locale)
        col = self._collections.get(name)
        if col is not None:
            return col
        if create:
            col = self.client.get_or_create_collection(
                name, embedding_function=None, configuration=self._config(),
                metadata={"view": view, "locale": locale})
        else:
            try:
                col = self.client.get_collection(name, embedding_function=None)
            except Exception:  # chromadb raises NotFoundError/ValueError by version
                return None
        self._collections[name] = col
        return col

    def _all_collections(self) -> list[Any]:
        out = []
        for c in self.client.list_collections():
            name = c if isinstance(c, str) else c.name
            if name.startswith(self.prefix + "--"):
                out.append(self.client.get_collection(name, embedding_function=None))
        return out

    def _state(self) -> Any:
        return self.client.get_or_create_collection(
            f"{self.prefix}--state", embedding_function=None,
            metadata={"generation": "0"})

    def generation(self) -> str:
        meta = self._state().metadata or {}
        return str(meta.get("generation", "0"))

    def _empty(self, meta: dict[str, Any]) -> dict[str, int]:
        try:
            raw = json.loads(str(meta.get("empty") or "{}"))
        except ValueError:
            return {}
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def bump(self, empty: dict[str, int | None] | None = None) -> None:
        """Tell every process the index changed. ``empty`` records served versions that
        have nothing to index (a high-risk article without an approved block), so they do
        not look forever out of date; ``None`` as a value clears an entry."""
        state = self._state()
        meta = dict(state.metadata or {})
        held = self._empty(meta)
        for article_id, version in (empty or {}).items():
            if version is None:
                held.pop(article_id, None)
            else:
                held[article_id] = version
        state.modify(metadata={"generation": f"{time.time_ns()}",
                               "empty": json.dumps(held, sort_keys=True)})
        self._catalog = None

    # --- catalog (chunk metadata + BM25) ----------------------------------------------

    def catalog(self, *, check: bool = False) -> _Catalog:
        """The in-memory catalog, rebuilt when another process changed the index (looked up
        at most every ``refresh_seconds``, or now with ``check``)."""
        now = time.monotonic()
        cat = self._catalog
        if cat is not None and not check and now - self._checked_at < self.refresh_seconds:
            return cat
        with self._lock:
            gen = self.generation()
            self._checked_at = time.monotonic()
            if self._catalog is not None and self._catalog.generation == gen:
                return self._catalog
            self._catalog = self._load(gen)
            return self._catalog

    def _load(self, generation: str) -> _Catalog:
        chunks: list[Chunk] = []
        ids: dict[str, int] = {}
        membership: dict[tuple[str, str], list[int]] = {}
        views: set[str] = set()
        self._collections.clear()
        for col in self._all_collections():
            if col.name.endswith("--state"):
                continue
            meta = col.metadata or {}
            key = (str(meta.get("view")), str(meta.get("locale")))
            views.add(key[0])
            got = col.get(include=["metadatas", "documents"])
            rows = membership.setdefault(key, [])
            for cid, m, doc in zip(got["ids"], got["metadatas"], got["documents"], strict=True):
                if cid not in ids:
                    ids[cid] = len(chunks)
                    chunks.append(_from_meta(dict(m), doc))
                rows.append(ids[cid])
        bm25 = None
        corpus = [self._tokenize(c.lexical_text()) or ["_"] for c in chunks]
        if chunks:
            bm25 = bm25s.BM25()
            bm25.index(corpus, show_progress=False)
        terms = [frozenset(t) for t in corpus]
        df: dict[str, int] = {}
        for ts in terms:
            for t in ts:
                df[t] = df.get(t, 0) + 1
        n = len(chunks)
        idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        masks = {}
        for key, rows in membership.items():
            mask = np.zeros(len(chunks), dtype=np.float32)
            mask[rows] = 1.0
            masks[key] = mask
        sizes = {key: len(rows) for key, rows in membership.items()}
        empty = self._empty(dict(self._state().metadata or {}))
        return _Catalog(generation, chunks, ids, bm25, masks, sizes, views, idf, terms, empty)

    def manifest(self) -> dict[str, int]:
        """Article id -> version number currently indexed (including served versions that
        have nothing to index)."""
        cat = self.catalog()
        return {**cat.empty, **{c.article_id: c.version for c in cat.chunks}}

    def coverage(self, question: str, cid: str) -> float:
        """Share of the question's IDF-weighted terms that occur in the chunk (its title,
        headings and tags included). Terms the knowledge base has never seen weigh most."""
        cat = self.catalog()
        i = cat.ids.get(cid)
        q = set(self._tokenize(question))
        if i is None or not q:
            return 0.0
        unseen = max(cat.idf.values(), default=1.0)
        weights = {t: cat.idf.get(t, unseen) for t in q}
        total = sum(weights.values())
        return sum(w for t, w in weights.items() if t in cat.terms[i]) / total if total else 0.0

    def views(self) -> set[str]:
        return self.catalog().views

    def chunk(self, cid: str) -> Chunk | None:
        cat = self.catalog()
        i = cat.ids.get(cid)
        if i is None and time.monotonic() - self._checked_at > 0.05:
            # Chroma found a chunk this catalog has not loaded yet: another process (or a
            # writer thread) has just indexed it. Look for a newer generation once.
            cat = self.catalog(check=True)
            i = cat.ids.get(cid)
        return cat.chunks[i] if i is not None else None

    # --- writes -----------------------------------------------------------------------

    def replace(
        self,
        article_ids: Iterable[str],
        chunks: Sequence[Chunk],
        vectors: NDArray[np.float32] | None = None,
    ) -> None:
        """Replace every chunk of ``article_ids`` by ``chunks`` (embedding them unless
        ``vectors`` is given), then bump the generation so all workers reload."""
        ids = sorted(set(article_ids))
        if vectors is None:
            vectors = self.embedder.embed([c.embedding_text() for c in chunks])
        self.write(ids, chunks, vectors)
        self.bump()

    def write(self, article_ids: list[str], chunks: Sequence[Chunk],
              vectors: NDArray[np.float32]) -> None:
        """Store ``chunks`` once in each view their audience names, then delete every other
        chunk of ``article_ids`` the index holds.

        New chunks go in before old ones go out (chunk ids carry the version), so a query
        running meanwhile finds the old version or the new one, never nothing: the answer
        path serves one version per article and never a mix."""
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, c in enumerate(chunks):
            for view in chunk_views(c.audience):
                by_key.setdefault((view, c.locale), []).append(i)
        for (view, locale), rows in sorted(by_key.items()):
            col = self._collection(view, locale, create=True)
            assert col is not None
            for s in range(0, len(rows), 2000):
                part = rows[s:s + 2000]
                col.upsert(ids=[chunks[i].id for i in part], embeddings=vectors[part],
                           metadatas=[_meta(chunks[i]) for i in part],
                           documents=[chunks[i].text for i in part])
        if not article_ids:
            return
        self.bump()  # every reader learns the new chunks before the old ones go
        keep = {c.id for c in chunks}
        for col in self._all_collections():
            if col.name.endswith("--state"):
                continue
            for i in range(0, len(article_ids), 500):
                held = col.get(where={"article_id": {"$in": article_ids[i:i + 500]}},
                               include=[])["ids"]
                old = [cid for cid in held if cid not in keep]
                if old:
                    col.delete(ids=old)

    def clear(self) -> None:
        """Drop every collection of this model/chunking (``kb index rebuild``)."""
        for col in self._all_collections():
            self.client.delete_collection(col.name)
        self._collections.clear()
        self.bump()

    # --- reads ------------------------------------------------------------------------

    def dense(self, vector: NDArray[np.float32], *, views: Sequence[str], locale: str,
              n: int) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity), best first, from the caller's collections."""
        return self._dense_many(vector[None, :], [(tuple(views), locale, n)])[0]

    def search(self, question: str, *, views: Sequence[str], locale: str,
               n: int) -> tuple[NDArray[np.float32], list[tuple[str, float]]]:
        """Embed ``question`` and run :meth:`dense` with it: (vector, hits).

        Concurrent callers are micro-batched: one forward pass for all their questions and
        one Chroma query per collection for all their vectors (a batched query costs about
        60% of separate ones)."""
        return self._searches.submit(_Search(question, tuple(views), locale, n))

    def _search_batch(
        self, items: list[_Search],
    ) -> list[tuple[NDArray[np.float32], list[tuple[str, float]]]]:
        vectors = self.embedder.embed([s.question for s in items], batch_size=len(items))
        hits = self._dense_many(vectors, [(s.views, s.locale, s.n) for s in items])
        return list(zip(vectors, hits, strict=True))

    def _dense_many(self, vectors: NDArray[np.float32],
                    asks: list[tuple[tuple[str, ...], str, int]]) -> list[list[tuple[str, float]]]:
        """For each vector and its (views, locale, n): hits from those collections, one
        Chroma query per collection for every vector that reads it."""
        sizes = self.catalog().sizes
        found: list[dict[str, float]] = [{} for _ in asks]
        readers: dict[tuple[str, str], list[int]] = {}
        for i, (views, locale, _) in enumerate(asks):
            for view in views:
                readers.setdefault((view, locale), []).append(i)
        for (view, locale), rows in readers.items():
            size = sizes.get((view, locale), 0)
            col = self._collection(view, locale, create=False) if size else None
            if col is None:
                continue
            n = min(max(asks[i][2] for i in rows), size)
            res = col.query(query_embeddings=vectors[rows], n_results=n, include=["distances"])
            for i, ids, dists in zip(rows, res["ids"], res["distances"], strict=True):
                hits = found[i]
                for cid, d in zip(ids, dists, strict=True):
                    hits[cid] = max(hits.get(cid, -1.0), 1.0 - float(d))
        return [sorted(hits.items(), key=lambda t: -t[1])[:n]
                for hits, (_, _, n) in zip(found, asks, strict=True)]

    def lexical(self, query: str, *, views: Sequence[str], locale: str,
                n: int) -> list[tuple[str, float]]:
        """(chunk id, BM25 score), best first, within the caller's views and locale."""
        cat = self.catalog()
        masks = [m for v in views if (m := cat.masks.get((v, locale))) is not None]
        tokens = self._tokenize(query)
        if cat.bm25 is None or not masks or not tokens:
            return []
        mask = masks[0] if len(masks) == 1 else np.minimum(np.sum(masks, axis=0), 1.0)
        ids = cat.bm25.get_tokens_ids(tokens)
        if not ids:
            return []
        scores = cat.bm25.get_scores_from_ids(ids, weight_mask=mask)
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top])]
        return [(cat.chunks[i].id, float(scores[i])) for i in top if scores[i] > 0]


def article_of(cid: str) -> str:
    return parse_chunk_id(cid)[0]
