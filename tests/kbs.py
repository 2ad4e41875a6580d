"""The one place tests build a synced, approved, indexed knowledge base.

Time is an input: the KB is built with an explicit clock, and the demo content's review
dates are replayed relative to it (kb/demo.py), so every test tells the same story whatever
today's date is. ``CANON_TEST_NOW`` (ISO date-time) pins that clock for a whole run; CI
also runs the end-to-end tests under faketime a year and three years ahead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine
from sqlmodel import Session

from assist import indexer
from assist.answer import Assistant
from assist.embedder import MiniLMEmbedder
from assist.index import Embedder
from assist.runtime import make_assistant, make_index
from kb import db
from kb.clock import Clock, fixed_clock
from kb.demo import bootstrap
from kb.settings import Settings

DEMO_CONTENT = Path(__file__).resolve().parent.parent / "content"


def test_clock() -> Clock:
    """A clock pinned at the start of the test (or at ``CANON_TEST_NOW``)."""
    pinned = os.environ.get("CANON_TEST_NOW")
    at = datetime.fromisoformat(pinned) if pinned else datetime.now(UTC)
    return fixed_clock(at)


test_clock.__test__ = False  # type: ignore[attr-defined]  # not a test function


class CachingEmbedder(MiniLMEmbedder):
    """The real model, with each passage's vector kept for the rest of the test run: the
    demo knowledge base is indexed by several test modules, and embedding its passages
    again each time is most of their setup. Questions (``embed_queries``, at query
    precision) are never cached."""

    def __init__(self) -> None:
        super().__init__()
        self._vectors: dict[str, NDArray[np.float32]] = {}

    def embed(self, texts: Sequence[str], *, batch_size: int = 32,
              _query: bool = False) -> NDArray[np.float32]:
        if _query or isinstance(texts, str):
            return super().embed(texts, batch_size=batch_size, _query=_query)
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            for text, vector in zip(missing, super().embed(missing, batch_size=batch_size),
                                    strict=True):
                self._vectors[text] = vector
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self._vectors[text]
        return out


_SHARED: list[CachingEmbedder] = []


def shared_embedder() -> CachingEmbedder:
    """One model for the whole test run, its passage vectors cached (see CachingEmbedder)."""
    if not _SHARED:
        _SHARED.append(CachingEmbedder())
    return _SHARED[0]


@dataclass
class BuiltKB:
    settings: Settings
    engine: Engine
    assistant: Assistant
    clock: Clock
    content: Path
    approved: list[str]


def build_kb(root: Path, *, content: Path = DEMO_CONTENT, clock: Clock | None = None,
             embedder: Embedder | None = None, **settings: object) -> BuiltKB:
    """Copy ``content`` under ``root``, sync it, approve the import, replay its review dates
    relative to ``clock`` and index it; returns the parts. Without ``embedder``: the run's
    shared model (default index settings) or, with ``index`` settings, a model of its own."""
    clock = clock or test_clock()
    if embedder is None and "index" not in settings:
        embedder = shared_embedder()
    target = root / "content"
    shutil.copytree(content, target)
    s = Settings(data_dir=root / ".canon", database_url=f"sqlite:///{root}/canon.db",
                 content_dir=target, **settings)  # type: ignore[arg-type]
    engine = db.open_engine(s)
    with Session(engine, expire_on_commit=False) as session:
        approved = bootstrap(session, root=target, now=clock(),
                             author="writer@brightwave.example",
                             approver="lead@brightwave.example")
    assistant = make_assistant(s, engine, make_index(s, embedder), clock=clock)
    with Session(engine) as session:
        indexer.refresh(session, assistant.index, max_chars=s.index.chunk_max_chars)
    return BuiltKB(s, engine, assistant, clock, target, approved)
