"""The search index of approved text: one interface over the Chroma store of dense vectors
(:mod:`assist.store`) and the in-memory lexical catalog (:mod:`assist.catalog`).

The rest of the code uses :class:`ChunkIndex` only; it speaks domain types outward
(``Chunk``, chunk ids with scores). The catalog (chunk metadata + BM25) is rebuilt from the
chunks stored in Chroma whenever the index generation (kept in the store, so every worker and
machine sees it) changes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from assist.acronyms import expand, used
from assist.batching import Batcher
from assist.catalog import Catalog, LexicalTokenizer, build_catalog
from assist.chunks import Chunk
from assist.sentences import pack
from assist.store import ChromaStore, collection_prefix
from kb.errors import Unavailable
from kb.settings import IndexSettings

log = logging.getLogger("canon.index")


class Embedder(Protocol):
    @property
    def model_name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> NDArray[np.float32]: ...

    def embed_query(self, text: str) -> NDArray[np.float32]: ...

    def embed_queries(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def words(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class _Search:
    question: str
    views: tuple[str, ...]
    locale: str
    n: int
    catalog: Catalog  # the one its caller holds


@dataclass(frozen=True)
class _Reading:
    """How retrieval reads a question (:meth:`ChunkIndex.mend`)."""

    text: str  # mended, abbreviations followed by their long forms
    terms: list[str]  # the lexical terms of ``text`` (BM25, the ceiling)
    asked: frozenset[str]  # the terms as asked (mended only): what coverage weighs
    alternatives: dict[str, frozenset[str]]  # abbreviation term -> its long form's terms


class ChunkIndex:
    """Chroma (dense) + BM25 (lexical) over the chunks of served versions."""

    def __init__(self, *, client: Any, embedder: Embedder, settings: IndexSettings,
                 refresh_seconds: float = 1.0) -> None:
        self.client = client
        self.embedder = embedder
        self.settings = settings
        self.prefix = collection_prefix(embedder.model_name, settings)
        self.store = ChromaStore(client=client, settings=settings, prefix=self.prefix)
        self.refresh_seconds = refresh_seconds
        self._tokenize = LexicalTokenizer()
        self._lock = threading.Lock()
        self._reload_guard = threading.Lock()
        self._reloading = False
        self._catalog: Catalog | None = None
        # The last catalog loaded, kept when a write of this process drops the current one:
        # what a reader answers from while the index server is away (see catalog).
        self._held: Catalog | None = None
        self._writes = 0  # this process's bumps: a load a write overtook is not installed
        self._install = threading.Lock()  # bump() against installing a loaded catalog
        self._checked_at = 0.0
        # (generation, typo tolerance, acronyms, question) -> (mended text, lexical terms):
        # one answer reads them five times (the vector, BM25, coverage, article coverage,
        # the ceiling).
        self._reads: dict[tuple[str, bool, bool, str], _Reading] = {}
        self._dictionary: frozenset[str] | None = None  # real words (the model's vocabulary)
        self._searches: Batcher[_Search, tuple[NDArray[np.float32], list[tuple[str, float]]]] = (
            Batcher(self._search_batch))

    def bump(self, empty: dict[str, int | None] | None = None) -> None:
        """Tell every process the index changed. ``empty`` records served versions that
        have nothing to index (no text to chunk at all), so they do
        not look forever out of date; ``None`` as a value clears an entry."""
        self.store.bump(empty)
        with self._install:
            self._writes += 1
            if self._catalog is not None:
                self._held = self._catalog
            self._catalog = None

    # --- catalog (chunk metadata + BM25) ----------------------------------------------

    def catalog(self, *, check: bool = False) -> Catalog:
        """The in-memory catalog, rebuilt when another process changed the index (looked up
        at most every ``refresh_seconds``, or now with ``check``).

        A reader (no ``check``: the answer path) that finds the index changed by another
        process keeps the catalog it holds while the new one loads on another thread, so
        it does not wait for the reload (seconds on a large index, more through a Chroma
        server). Meanwhile the database re-check still decides what may be served: a new
        approval serves the previous version for at most ``index.max_lag_seconds``, a
        retirement stops at once. ``check`` (writers, and anyone comparing with what the
        index holds now) waits for the current catalog, and so does every caller after
        this process's own write (:meth:`bump` drops the catalog). A reader whose catalog
        holds the vectors keeps answering from it while the index server is away, and so
        does a reader after this process's own write, from the last catalog loaded."""
        now = time.monotonic()
        cat = self._catalog
        if cat is not None and not check:
            if now - self._checked_at < self.refresh_seconds:
                return cat
            self._checked_at = now
            try:
                gen = self.store.generation()
            except Unavailable:
                if cat.vectors is None:
                    raise  # Chroma answers this catalog's dense queries: 503
                # The vectors are here: keep answering from them (re-checked against the
                # database as always) while the index server is away; /readyz says so.
                return cat
            if gen != cat.generation:
                self._reload_in_background()
            return cat
        try:
            return self._current()
        except Unavailable:
            held = self._held  # (here: a writer, or a reader that holds no catalog)
            if check or held is None or held.vectors is None:
                raise
            # This process's own write dropped the catalog and the index server went away
            # before the new one loaded: answer from the last one loaded, as a reader whose
            # catalog holds the vectors does (what may be served is re-checked against the
            # database as always; /readyz says the index is away).
            return held

    def _current(self) -> Catalog:
        """The catalog of the index's current generation, loaded if this process does not
        hold it (asks the index server)."""
        with self._lock:
            writes = self._writes
            gen = self.store.generation()
            self._checked_at = time.monotonic()
            current = self._catalog
            if current is not None and current.generation == gen:
                return current
            loaded = self._load(gen)
            # A write of this process while it loaded (a reload on another thread, say)
            # must not be hidden behind the older catalog: then the caller gets what it
            # loaded, and the next caller loads again.
            with self._install:
                if self._writes == writes:
                    self._catalog = loaded
                self._held = loaded
            return loaded

    def _load(self, generation: str) -> Catalog:
        held = self.store.contents(vectors_up_to=self.settings.memory_search_max_chunks)
        cat = build_catalog(generation, chunks=held.chunks, ids=held.ids,
                            membership=held.membership, views=held.views,
                            empty=self.store.empty(), tokenize=self._tokenize,
                            sentences=held.sentences, dim=self.embedder.dim,
                            vectors=held.vectors)
        if self.settings.expand_acronyms:
            cat.acronyms  # noqa: B018  (built with the catalog, not on a question)
        if len({loc for _, loc in cat.masks}) > 1:
            cat.view_terms  # noqa: B018  (read by every question: built with the catalog)
        return cat

    def _reload_in_background(self) -> None:
        """Load the current catalog on a thread of its own (one at a time)."""
        with self._reload_guard:
            if self._reloading:
                return
            self._reloading = True
        threading.Thread(target=self._reload, name="canon-catalog", daemon=True).start()

    def _reload(self) -> None:
        try:
            self.catalog(check=True)
        except Exception as exc:  # e.g. the index server is away: the next look retries
            log.warning("catalog reload failed", extra={"fields": {"error": str(exc)[:500]}})
        finally:
            with self._reload_guard:
                self._reloading = False

    def manifest(self, *, check: bool = True) -> dict[str, int]:
        """Article id -> version number currently indexed (including served versions that
        have nothing to index), as the index holds them now (``check=False``: as this
        process's catalog holds them, which may be up to a reload behind)."""
        return self.catalog(check=check).manifest()

    def warm(self) -> None:
        """Load what the first question would otherwise wait for: the question graph, the
        catalog and, with typo tolerance on, the words misspellings are mended to. A server
        must start while the index server is away (it answers 503 until it is back), so
        only the graph is required here."""
        self.embedder.embed_queries(["warm up"])  # needs no index server
        if self.settings.typo_tolerance:
            # The index server may be away: then the words are built on first use.
            with contextlib.suppress(Unavailable):
                self.catalog().word_index  # noqa: B018  (builds it)

    def mend(self, question: str, catalog: Catalog | None = None) -> str:
        """The question as retrieval reads it: misspelt words mended against this index's
        words (:meth:`assist.catalog.Catalog.mend`, unless ``index.typo_tolerance`` is
        off), and the abbreviations it uses followed by the long forms this knowledge base
        defines (:mod:`assist.acronyms`, unless ``index.expand_acronyms`` is off). Only
        finding passages uses it; answers, logs and audits keep the question as asked."""
        if not (self.settings.typo_tolerance or self.settings.expand_acronyms):
            return question
        return self._read(question, catalog).text

    def query_terms(self, question: str, catalog: Catalog | None = None) -> list[str]:
        """The question's lexical terms as every lexical step reads them (BM25, coverage,
        the ceiling, the approval simulation): mended (:meth:`mend`), stemmed, stop words
        out. Callers must not change the list (it is cached)."""
        return self._read(question, catalog).terms

    def question_locale(self, question: str, *, views: Sequence[str], default: str,
                        catalog: Catalog | None = None) -> str:
        """The locale ``question`` is written in, among those of this knowledge base's
        texts the caller may see (:meth:`assist.catalog.Catalog.question_locale`); its
        words as asked, not mended: mending would turn words of another language into the
        default locale's."""
        cat = catalog or self.catalog()
        return cat.question_locale(lambda: frozenset(self._tokenize(question)), views,
                                   default)

    def asked_locale(self, question: str, locale: str | None, *, views: Sequence[str],
                     default: str, detect: bool, catalog: Catalog | None = None) -> str:
        """The locale a question is asked in: the one it names, else (``detect``) the one
        its words read as among the texts its caller may see (:meth:`question_locale`),
        else ``default``."""
        if locale:
            return locale
        if not detect:
            return default
        return self.question_locale(question, views=views, default=default, catalog=catalog)

    def coverage_terms(self, question: str, catalog: Catalog | None = None,
                       ) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
        """What coverage reads of ``question``: its terms as asked (mended, abbreviations
        not expanded), and for each abbreviation it uses, the terms of the long form that
        count in its place (a passage may use either)."""
        read = self._read(question, catalog)
        return read.asked, read.alternatives

    def _read(self, question: str, catalog: Catalog | None) -> _Reading:
        """How retrieval reads ``question``, cached per index generation and settings
        (``evals.typos`` switches typo tolerance on a running index)."""
        cat = catalog or self.catalog()
        tolerant = self.settings.typo_tolerance
        acronyms = self.settings.expand_acronyms
        key = (cat.generation, tolerant, acronyms, question)
        found = self._reads.get(key)
        if found is None:
            mended = question
            if tolerant:
                if self._dictionary is None:
                    self._dictionary = self.embedder.words()
                mended = cat.mend(question, self._dictionary)
            asked = self._tokenize(mended)
            alternatives: dict[str, frozenset[str]] = {}
            if acronyms and (short := used(mended, cat.acronyms)):
                for abbr, long in short.items():
                    for term in self._tokenize(abbr):
                        alternatives[term] = frozenset(self._tokenize(long))
                mended = expand(mended, cat.acronyms)
            found = _Reading(mended, self._tokenize(mended) if alternatives else asked,
                             frozenset(asked), alternatives)
            if len(self._reads) >= 4096:
                self._reads.clear()
            self._reads[key] = found
        return found

    def embed_questions(self, questions: Sequence[str],
                        catalog: Catalog | None = None) -> NDArray[np.float32]:
        """Question vectors as the answer path makes them: mended, at query precision."""
        cat = catalog or self.catalog()
        return self.embedder.embed_queries([self.mend(q, cat) for q in questions])

    # Every read below takes the ``catalog`` its caller holds: one question reads one
    # catalog from start to end (:meth:`catalog` may swap in a newer one at any moment, on
    # another thread), so the ids one step found are the ids the next step looks up.

    def coverage(self, question: str, cid: str, catalog: Catalog | None = None) -> float:
        """Share of the question's IDF-weighted terms that occur in the chunk (its title,
        headings and tags included). Terms the knowledge base has never seen weigh most."""
        cat = self.holding((cid,), catalog)
        asked, alternatives = self.coverage_terms(question, cat)
        return cat.coverage(asked, cid, alternatives)

    def article_coverage(self, question: str, cid: str,
                         catalog: Catalog | None = None) -> float:
        """Share of the question's IDF-weighted terms that occur anywhere in the chunk's
        article version (see :meth:`assist.catalog.Catalog.article_coverage`)."""
        cat = self.holding((cid,), catalog)
        asked, alternatives = self.coverage_terms(question, cat)
        return cat.article_coverage(asked, cid, alternatives)

    def lexical_ceiling(self, question: str, catalog: Catalog | None = None) -> float:
        """The most BM25 score a passage can get for the question (see
        :meth:`assist.catalog.Catalog.lexical_ceiling`)."""
        cat = catalog or self.catalog()
        return cat.lexical_ceiling(self.query_terms(question, cat))

    def views(self, catalog: Catalog | None = None) -> set[str]:
        return (catalog or self.catalog()).views

    def chunk(self, cid: str, catalog: Catalog | None = None) -> Chunk | None:
        """The chunk ``cid`` (``catalog``: the one the caller already holds)."""
        cat = self.holding((cid,), catalog)
        i = cat.ids.get(cid)
        if i is None and time.monotonic() - self._checked_at > 0.05:
            # Chroma found a chunk this catalog has not loaded yet: another process (or a
            # writer thread) has just indexed it. Look for a newer generation once.
            cat = self.catalog(check=True)
            i = cat.ids.get(cid)
        return cat.chunks[i] if i is not None else None

    def holding(self, ids: Iterable[str], catalog: Catalog | None = None) -> Catalog:
        """The catalog to read chunks ``ids`` in: the caller's (``catalog``), or, when it
        does not know one of them (Chroma answers dense queries above the memory cap, and
        can return a chunk indexed after that catalog loaded), the newest this process
        holds if that one knows them all."""
        cat = catalog or self.catalog()
        missing = [cid for cid in ids if cid not in cat.ids]
        if missing:
            newer = self._catalog
            if newer is not None and all(cid in newer.ids for cid in missing):
                return newer
        return cat

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
        self.store.upsert(chunks, vectors, self.sentence_vectors(chunks))
        if not article_ids:
            return
        self.bump()  # every reader learns the new chunks before the old ones go
        self.store.delete_except(article_ids, keep={c.id for c in chunks})

    def sentence_vectors(self, chunks: Sequence[Chunk]) -> list[str | None]:
        """Each chunk's sentence vectors, packed (:func:`assist.sentences.pack`), or None
        for a chunk of one sentence (:meth:`assist.chunks.Chunk.sentence_texts`)."""
        texts = [c.sentence_texts() for c in chunks]
        flat = [t for ts in texts for t in ts]
        if not flat:
            return [None] * len(chunks)
        vectors = self.embedder.embed(flat, batch_size=64)
        out: list[str | None] = []
        at = 0
        for ts in texts:
            out.append(pack(vectors[at:at + len(ts)]) if ts else None)
            at += len(ts)
        return out

    def sentence_scores(self, vector: NDArray[np.float32], chunk_ids: Iterable[str],
                        catalog: Catalog | None = None) -> dict[str, float]:
        """Chunk id -> cosine of the question ``vector`` to the chunk's closest sentence,
        for the chunks that have sentence vectors (:mod:`assist.sentences`)."""
        cat = catalog or self.catalog()
        # each chunk in the catalog that holds it (see :meth:`holding`)
        groups: dict[int, tuple[Catalog, list[str]]] = {}
        for cid in chunk_ids:
            held = cat if cid in cat.ids else self.holding((cid,), cat)
            if cid in held.ids:
                groups.setdefault(id(held), (held, []))[1].append(cid)
        out: dict[str, float] = {}
        for held, ids in groups.values():
            out.update(held.sentences.best_by_id(vector, ids, [held.ids[c] for c in ids]))
        return out

    def clear(self) -> None:
        """Drop every collection of this model/chunking (``kb index rebuild``)."""
        self.store.clear()
        self.bump()

    # --- reads ------------------------------------------------------------------------

    def dense(self, vector: NDArray[np.float32], *, views: Sequence[str], locale: str,
              n: int, catalog: Catalog | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine similarity), best first, from the caller's collections."""
        return self._dense_many(vector[None, :], [(tuple(views), locale, n)], catalog)[0]

    def search(self, question: str, *, views: Sequence[str], locale: str, n: int,
               catalog: Catalog | None = None,
               ) -> tuple[NDArray[np.float32], list[tuple[str, float]]]:
        """Embed ``question`` and run :meth:`dense` with it: (vector, hits).

        Concurrent callers are micro-batched: one forward pass for all their questions and
        one Chroma query per collection for all their vectors (a batched query costs about
        60% of separate ones)."""
        return self._searches.submit(_Search(question, tuple(views), locale, n,
                                             catalog or self.catalog()))

    def _search_batch(
        self, items: list[_Search],
    ) -> list[tuple[NDArray[np.float32], list[tuple[str, float]]]]:
        # Each question is read with the catalog its caller holds (concurrent callers may
        # hold different ones while a new catalog comes in).
        groups: dict[int, list[int]] = {}
        for i, s in enumerate(items):
            groups.setdefault(id(s.catalog), []).append(i)
        vectors = np.empty((len(items), self.embedder.dim), dtype=np.float32)
        hits: list[list[tuple[str, float]]] = [[] for _ in items]
        for rows in groups.values():
            cat = items[rows[0]].catalog
            vectors[rows] = self.embed_questions([items[i].question for i in rows], cat)
            found = self._dense_many(vectors[rows],
                                     [(items[i].views, items[i].locale, items[i].n)
                                      for i in rows], cat)
            for i, h in zip(rows, found, strict=True):
                hits[i] = h
        return list(zip(vectors, hits, strict=True))

    def _dense_many(self, vectors: NDArray[np.float32],
                    asks: list[tuple[tuple[str, ...], str, int]],
                    catalog: Catalog | None = None) -> list[list[tuple[str, float]]]:
        """For each vector and its (views, locale, n): hits from those collections; searched
        in this process's memory when the ``catalog`` held holds the vectors
        (``index.memory_search_max_chunks``), else by Chroma."""
        cat = catalog or self.catalog()
        if cat.vectors is not None:
            return cat.dense(vectors, asks)
        return self.store.query(vectors, asks, sizes=cat.sizes)

    def lexical(self, query: str, *, views: Sequence[str], locale: str, n: int,
                catalog: Catalog | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25 score), best first, within the caller's views and locale."""
        cat = catalog or self.catalog()
        return cat.lexical(self.query_terms(query, cat), views=views, locale=locale, n=n)
