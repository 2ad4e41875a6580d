"""The Chroma store of approved chunks: collections, writes, dense queries, the generation.

This is the only module that talks to Chroma; it takes and returns domain types (``Chunk``,
chunk ids with similarities).

Scoping without filters: Chroma ``where`` filters cost time in proportion to the collection,
so chunks are partitioned into one collection per *view* x locale. A view is one audience
label: ``internal``, ``vendors`` (every vendor) or ``vendor:<name>`` (one vendor only). A
chunk is stored once in each view its audience names, so ``[internal, vendors]`` costs two
vectors, not one per vendor. A caller queries only views it may see: staff ``internal``; a
vendor's agent ``vendors`` plus its own ``vendor:<name>`` view (small, so the second query is
cheap), merged by similarity. No collection ever holds a chunk its readers may not see. The
collection names start with a prefix derived from the embedding model, the chunking
parameters and this storage layout, so a changed model never mixes vectors.

A small state collection holds the index *generation* (changed after every write, so every
worker and machine sees it) and the served versions that have nothing to index.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlparse

import numpy as np
from numpy.typing import NDArray

from assist.chunks import CHUNKER_VERSION, Chunk
from kb.audience import chunk_views
from kb.errors import Unavailable
from kb.settings import IndexSettings

log = logging.getLogger("canon.index")

LAYOUT_VERSION = 2  # 2: one copy per audience label, chunk fields packed in one metadata key


def _slug(value: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", value).strip("-").lower()


def collection_prefix(model_name: str, settings: IndexSettings) -> str:
    """Encodes model + chunking parameters: a different model never shares vectors."""
    model = _slug(model_name.split("/")[-1])
    return (f"canon-{model}-c{settings.chunk_max_chars}-k{CHUNKER_VERSION}"
            f"-l{LAYOUT_VERSION}")


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


P = ParamSpec("P")
R = TypeVar("R")


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the Chroma server could not be reached (refused, reset, timed
    out), as opposed to a refusal by a server that answered."""
    import httpx

    return isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError)


def _reachable(method: Callable[P, R]) -> Callable[P, R]:
    """A Chroma server that does not answer becomes :class:`Unavailable` (503 with the
    reason, ``/readyz`` names it), never a 500 and never an empty result. The HTTP client
    reconnects by itself, so service resumes when the server is back."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except Unavailable:
            raise
        except Exception as exc:
            if _unreachable(exc):
                raise Unavailable(f"the index server (Chroma) does not answer "
                                  f"({type(exc).__name__}); retry shortly") from exc
            raise

    return call


def _meta(chunk: Chunk, sentences: str | None = None) -> dict[str, Any]:
    """Chroma metadata: ``article_id`` (for deletes) and every other field packed in one
    JSON value. Chroma stores and indexes one row per metadata key, so packing makes writes
    markedly cheaper; nothing ever filters on the packed fields. ``sentences``: the chunk's
    packed sentence vectors (:mod:`assist.sentences`), if it has any."""
    packed = [chunk.version, chunk.content_sha256, chunk.start, chunk.end,
              list(chunk.heading_path), chunk.anchor, chunk.approved, chunk.title,
              list(chunk.audience), chunk.locale, chunk.risk, list(chunk.tags)]
    meta = {"article_id": chunk.article_id,
            "chunk": json.dumps(packed, ensure_ascii=False, separators=(",", ":"))}
    if sentences:
        meta["sentences"] = sentences
    return meta


def _from_meta(meta: dict[str, Any], text: str) -> Chunk:
    (version, sha, start, end, path, anchor, approved, title, audience, locale, risk,
     tags) = json.loads(meta["chunk"])
    return Chunk(
        article_id=meta["article_id"], version=int(version), content_sha256=sha,
        start=int(start), end=int(end), heading_path=tuple(path), anchor=anchor,
        approved=bool(approved), title=title, audience=tuple(audience), locale=locale,
        risk=risk, tags=tuple(tags), text=text,
    )


@dataclass
class Contents:
    """Every chunk the store holds (once each) and where."""

    chunks: list[Chunk]
    ids: dict[str, int]  # chunk id -> position in ``chunks``
    membership: dict[tuple[str, str], list[int]]  # (view, locale) -> positions
    views: set[str]
    sentences: list[str | None]  # packed sentence vectors, by position
    # every chunk's vector as a column, by position (unit length: dim x chunks), if they
    # were asked for
    vectors: NDArray[np.float32] | None = None


MAX_BATCH_ROWS = 2000
# A Chroma server refuses requests over 40 MiB; passages with many sentence vectors carry
# kilobytes of metadata each, so writes are cut by size as well as by rows.
MAX_BATCH_BYTES = 8 * 2**20


def _row_bytes(chunk: Chunk, sentences: str | None, dim: int) -> int:
    """About what one passage weighs in a write request (its vector travels as JSON)."""
    return len(chunk.text.encode("utf-8")) + len(sentences or "") + 24 * dim + 1024


def write_batches(rows: list[int], sizes: list[int], *, max_rows: int = MAX_BATCH_ROWS,
                  max_bytes: int = MAX_BATCH_BYTES) -> list[list[int]]:
    """``rows`` cut into consecutive batches of at most ``max_rows`` rows and about
    ``max_bytes`` (``sizes``: each row's weight; a heavier row goes alone)."""
    batches: list[list[int]] = []
    current: list[int] = []
    weight = 0
    for row, size in zip(rows, sizes, strict=True):
        if current and (len(current) >= max_rows or weight + size > max_bytes):
            batches.append(current)
            current, weight = [], 0
        current.append(row)
        weight += size
    if current:
        batches.append(current)
    return batches


class ChromaStore:
    """The collections of one model/chunking (``prefix``) in a Chroma client."""

    def __init__(self, *, client: Any, settings: IndexSettings, prefix: str) -> None:
        self.client = client
        self.settings = settings
        self.prefix = prefix
        self._collections: dict[str, Any] = {}

    # --- collections -----------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        s = self.settings
        return {"hnsw": {"space": "cosine", "ef_search": s.hnsw_ef_search,
                         "ef_construction": s.hnsw_ef_construction,
                         "max_neighbors": s.hnsw_max_neighbors}}

    def _name(self, view: str, locale: str) -> str:
        return f"{self.prefix}--{_slug(view)}--{_slug(locale)}"

    @_reachable
    def collection(self, view: str, locale: str, *, create: bool) -> Any | None:
        """The collection of one view and locale (None if it does not exist and not
        ``create``)."""
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
            except Exception as exc:  # chromadb raises NotFoundError/ValueError by version
                if _unreachable(exc):  # not "no such collection": the server is away
                    raise
                return None
        self._collections[name] = col
        return col

    @_reachable
    def _all_collections(self) -> list[Any]:
        out = []
        for c in self.client.list_collections():
            name = c if isinstance(c, str) else c.name
            if name.startswith(self.prefix + "--"):
                out.append(self.client.get_collection(name, embedding_function=None))
        return out

    # --- state: generation and versions with nothing to index -------------------------

    @_reachable
    def _state(self) -> Any:
        return self.client.get_or_create_collection(
            f"{self.prefix}--state", embedding_function=None,
            metadata={"generation": "0"})

    def generation(self) -> str:
        meta = self._state().metadata or {}
        return str(meta.get("generation", "0"))

    @staticmethod
    def _empty(meta: dict[str, Any]) -> dict[str, int]:
        try:
            raw = json.loads(str(meta.get("empty") or "{}"))
        except ValueError:
            return {}
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def empty(self) -> dict[str, int]:
        """Article id -> served version that has nothing to index."""
        return self._empty(dict(self._state().metadata or {}))

    @_reachable
    def bump(self, empty: dict[str, int | None] | None = None) -> None:
        """A new generation; ``empty`` updates the versions with nothing to index (``None``
        as a value clears an entry)."""
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

    # --- reads ------------------------------------------------------------------------

    @_reachable
    def contents(self, *, vectors_up_to: int = 0) -> Contents:
        """Every chunk of every collection (a chunk in several views is read once), and
        their vectors too when the collections hold at most ``vectors_up_to`` rows."""
        chunks: list[Chunk] = []
        ids: dict[str, int] = {}
        membership: dict[tuple[str, str], list[int]] = {}
        views: set[str] = set()
        sentences: list[str | None] = []
        self._collections.clear()
        cols = [c for c in self._all_collections() if not c.name.endswith("--state")]
        want = 0 < sum(c.count() for c in cols) <= vectors_up_to
        found: list[NDArray[np.float32]] = []
        for col in cols:
            meta = col.metadata or {}
            key = (str(meta.get("view")), str(meta.get("locale")))
            views.add(key[0])
            got = None
            if want:
                try:
                    got = col.get(include=["metadatas", "documents", "embeddings"])
                except Exception as exc:
                    from chromadb.errors import ChromaError  # (chromadb loads lazily)

                    if not isinstance(exc, ChromaError):
                        raise
                    # Embedded Chroma opened by a second process (a CLI command while a
                    # server writes) can hold ids whose vectors it has not loaded yet
                    # ("Error finding id"): this catalog goes without vectors, and Chroma
                    # answers its dense queries.
                    log.info("chunk vectors not loaded; Chroma answers dense queries",
                             extra={"fields": {"error": str(exc)[:300]}})
                    want = False
            if got is None:
                got = col.get(include=["metadatas", "documents"])
            rows = membership.setdefault(key, [])
            embedded = np.asarray(got["embeddings"], dtype=np.float32) if want else None
            for j, (cid, m, doc) in enumerate(zip(got["ids"], got["metadatas"],
                                                  got["documents"], strict=True)):
                if cid not in ids:
                    ids[cid] = len(chunks)
                    chunks.append(_from_meta(dict(m), doc))
                    sentences.append(m.get("sentences"))
                    if embedded is not None:
                        found.append(embedded[j])
                rows.append(ids[cid])
        matrix = None
        if want and found and len(found) == len(chunks):
            matrix = np.stack(found, axis=1)  # one copy, already as the search reads it
            norms = np.linalg.norm(matrix, axis=0, keepdims=True)
            matrix /= np.where(norms > 0, norms, 1.0)
        return Contents(chunks, ids, membership, views, sentences, matrix)

    @_reachable
    def query(self, vectors: NDArray[np.float32], asks: list[tuple[tuple[str, ...], str, int]],
              *, sizes: dict[tuple[str, str], int]) -> list[list[tuple[str, float]]]:
        """For each vector and its (views, locale, n): (chunk id, cosine similarity), best
        first, from those collections; one Chroma query per collection for every vector that
        reads it. ``sizes`` (chunks per collection, from the catalog) skips empty ones."""
        found: list[dict[str, float]] = [{} for _ in asks]
        readers: dict[tuple[str, str], list[int]] = {}
        for i, (views, locale, _) in enumerate(asks):
            for view in views:
                readers.setdefault((view, locale), []).append(i)
        for (view, locale), rows in readers.items():
            size = sizes.get((view, locale), 0)
            col = self.collection(view, locale, create=False) if size else None
            if col is None:
                continue
            # Not capped by ``size``: while another process or thread writes, the collection
            # can hold more than the catalog counted (Chroma clamps n itself), and a cap would
            # let a new version's chunks crowd the old ones out before the catalog knows them.
            n = max(asks[i][2] for i in rows)
            res = col.query(query_embeddings=vectors[rows], n_results=n, include=["distances"])
            for i, ids, dists in zip(rows, res["ids"], res["distances"], strict=True):
                hits = found[i]
                for cid, d in zip(ids, dists, strict=True):
                    hits[cid] = max(hits.get(cid, -1.0), 1.0 - float(d))
        return [sorted(hits.items(), key=lambda t: -t[1])[:n]
                for hits, (_, _, n) in zip(found, asks, strict=True)]

    # --- writes -----------------------------------------------------------------------

    @_reachable
    def upsert(self, chunks: Sequence[Chunk], vectors: NDArray[np.float32],
               sentences: Sequence[str | None] | None = None) -> None:
        """Store ``chunks`` once in each view their audience names (``sentences``: each
        chunk's packed sentence vectors, or None)."""
        packed = list(sentences) if sentences is not None else [None] * len(chunks)
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, c in enumerate(chunks):
            for view in chunk_views(c.audience):
                by_key.setdefault((view, c.locale), []).append(i)
        for (view, locale), rows in sorted(by_key.items()):
            col = self.collection(view, locale, create=True)
            assert col is not None
            for part in write_batches(rows, [_row_bytes(chunks[i], packed[i], vectors.shape[1])
                                             for i in rows]):
                col.upsert(ids=[chunks[i].id for i in part], embeddings=vectors[part],
                           metadatas=[_meta(chunks[i], packed[i]) for i in part],
                           documents=[chunks[i].text for i in part])

    @_reachable
    def delete_except(self, article_ids: list[str], keep: set[str]) -> None:
        """Delete every chunk of ``article_ids`` whose id is not in ``keep``."""
        for col in self._all_collections():
            if col.name.endswith("--state"):
                continue
            for i in range(0, len(article_ids), 500):
                held = col.get(where={"article_id": {"$in": article_ids[i:i + 500]}},
                               include=[])["ids"]
                old = [cid for cid in held if cid not in keep]
                if old:
                    col.delete(ids=old)

    @_reachable
    def clear(self) -> None:
        """Drop every collection of this prefix, the state included."""
        for col in self._all_collections():
            self.client.delete_collection(col.name)
        self._collections.clear()


# --- generations: the collection sets of every prefix in one Chroma ------------------------

PREFIX_START = "canon-"
_SEGMENT_DIR = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Generation:
    """One index generation: the collections of one prefix (model, chunking, layout)."""

    prefix: str
    collections: list[str]
    chunks: int  # vectors held, a chunk counted once per view it is stored in
    last_write_ns: int  # the state's generation stamp (time of the last write); 0: unknown


@_reachable
def list_generations(client: Any) -> list[Generation]:
    """Every Canon index generation the Chroma client holds, most recently written first."""
    by_prefix: dict[str, list[str]] = {}
    for c in client.list_collections():
        name = c if isinstance(c, str) else c.name
        prefix, sep, _ = name.partition("--")
        if sep and prefix.startswith(PREFIX_START):
            by_prefix.setdefault(prefix, []).append(name)
    out = []
    for prefix, names in by_prefix.items():
        chunks, stamp = 0, 0
        for name in names:
            col = client.get_collection(name, embedding_function=None)
            if name == f"{prefix}--state":
                try:
                    stamp = int(str((col.metadata or {}).get("generation", "0")))
                except ValueError:
                    stamp = 0
            else:
                chunks += int(col.count())
        out.append(Generation(prefix, sorted(names), chunks, stamp))
    out.sort(key=lambda g: (-g.last_write_ns, g.prefix))
    return out


def prune_plan(generations: Sequence[Generation], current: str, *,
               keep_previous: bool = True) -> tuple[list[Generation], list[Generation]]:
    """(kept, dropped): the ``current`` generation is always kept; with ``keep_previous``
    the most recently written other one is kept as well (what the previous release serves
    while a rollout or a rollback is under way). Everything older is dropped."""
    kept: list[Generation] = []
    dropped: list[Generation] = []
    previous_kept = not keep_previous
    for g in generations:  # most recently written first
        if g.prefix == current:
            kept.append(g)
        elif not previous_kept:
            kept.append(g)
            previous_kept = True
        else:
            dropped.append(g)
    return kept, dropped


@_reachable
def drop_generation(client: Any, generation: Generation) -> None:
    """Delete the collections of one generation, its state last (so a prune cut short is
    still listed, and finished by the next one)."""
    names = sorted(generation.collections, key=lambda n: n.endswith("--state"))
    for name in names:
        try:
            client.delete_collection(name)
        except Exception as exc:  # already gone (another prune): fine
            if _unreachable(exc):
                raise


def remove_orphan_segments(path: Path) -> tuple[int, int]:
    """Embedded Chroma (1.x) keeps each collection's vector segment in a folder named by
    its id and leaves the folder behind when the collection is deleted. Remove the folders
    that no segment of ``chroma.sqlite3`` names; returns (folders, bytes) removed.

    Only for a persist directory no other process writes (the embedded index's writer lock
    held): a segment's row is committed before its folder is made, so a folder without a row
    belongs to a deleted collection."""
    db = path / "chroma.sqlite3"
    if not db.is_file():
        return 0, 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        live = {str(r[0]) for r in conn.execute("SELECT id FROM segments")}
    except sqlite3.Error:
        return 0, 0  # not a layout this knows: leave it alone
    finally:
        conn.close()
    folders = size = 0
    for entry in path.iterdir():
        if entry.is_dir() and _SEGMENT_DIR.match(entry.name) and entry.name not in live:
            size += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
            shutil.rmtree(entry, ignore_errors=True)
            folders += 1
    return folders, size
