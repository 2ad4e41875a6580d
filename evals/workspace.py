"""A scratch workspace: a folder of articles synced, bootstrapped and indexed in a temporary
data directory, so a suite can run on any content without touching the real database. Review
dates are replayed relative to the clock (see kb/demo.py), so a suite scores the same on any
date."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from assist import indexer
from assist.answer import Assistant
from assist.index import Embedder
from assist.runtime import make_assistant, make_index
from kb import db
from kb.clock import clock_for
from kb.demo import bootstrap
from kb.settings import Settings


def known_articles(engine: Engine) -> set[str]:
    """Ids of the articles this database holds: a suite case naming another is refused."""
    from kb.models import Article

    with Session(engine) as s:
        return set(s.exec(select(Article.id)).all())


@dataclass
class Workspace:
    settings: Settings
    engine: Engine
    assistant: Assistant


@contextmanager
def scratch_workspace(content: Path, base: Settings,
                      embedder: Embedder | None = None) -> Iterator[Workspace]:
    tmp = Path(tempfile.mkdtemp(prefix="canon-eval-"))
    settings = base.model_copy(update={"data_dir": tmp, "database_url": None,
                                       "content_dir": content})
    engine = db.open_engine(settings)
    try:
        clock = clock_for(settings.now)
        with Session(engine, expire_on_commit=False) as s:
            bootstrap(s, root=content, now=clock(), author="eval-import",
                      approver="eval-bootstrap")
        assistant = make_assistant(settings, engine, make_index(settings, embedder),
                                   clock=clock)
        with Session(engine) as s:
            indexer.refresh(s, assistant.index, max_chars=settings.index.chunk_max_chars)
        yield Workspace(settings, engine, assistant)
    finally:
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
