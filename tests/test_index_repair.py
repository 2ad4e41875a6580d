"""A writer killed between putting a version's chunks in and taking the old ones out leaves
an article indexed at two versions at once (found by tests/test_kill9.py on PostgreSQL + a
Chroma server). The manifest calls it mixed, the lag lists it, and the next refresh leaves
only the served version's chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from assist import indexer
from assist.catalog import MIXED
from assist.embedder import MiniLMEmbedder
from assist.follower import index_lag
from assist.runtime import make_index
from kb import governance
from kb.clock import system_clock
from kb.settings import Settings
from kb.sync import sync_folder

from .conftest import write_article

pytestmark = pytest.mark.slow


def test_half_written_article_is_mixed_and_repaired(settings: Settings, engine: Engine,
                                                    content_dir: Path) -> None:
    write_article(content_dir, "refunds", body="# Refunds\n## Rule\nThe window is 30 days.\n")
    write_article(content_dir, "router", body="# Router\n## Lights\nWhite means it works.\n")
    index = make_index(settings, embedder=MiniLMEmbedder())
    with Session(engine, expire_on_commit=False) as s:
        sync_folder(s, root=content_dir, author="writer")
        governance.approve_all(s, approver="lead")
        indexer.refresh(s, index)
        write_article(content_dir, "refunds", body="# Refunds\n## Rule\nThe window is 45 days.\n")
        sync_folder(s, root=content_dir, author="writer")
        governance.approve(s, article_id="refunds", approver="lead")
        # What the killed writer got done: v2's chunks in, v1's still there.
        chunks = indexer._chunks_for(s, {"refunds": 2}, settings.index.chunk_max_chars)
        index.store.upsert(chunks, index.embedder.embed([c.embedding_text() for c in chunks]))
        index.bump()
        assert {c.version for c in index.catalog(check=True).chunks
                if c.article_id == "refunds"} == {1, 2}
        assert index.manifest() == {"refunds": MIXED, "router": 1}
        assert index_lag(s, index, now=system_clock()).behind == ["refunds"]

        report = indexer.refresh(s, index)
        assert report.indexed == [("refunds", 2)]
        held = index.catalog(check=True).chunks
        assert {(c.article_id, c.version) for c in held} == {("refunds", 2), ("router", 1)}
        assert index.manifest() == {"refunds": 2, "router": 1}
        assert indexer.refresh(s, index).indexed == []  # nothing left to do
